"""Training checkpoints: weights in safetensors, the rest loadable with ``weights_only``.

Layout inside ``<run>/checkpoints/``::

    step-00000120.safetensors   model weights (all parameters and buffers)
    step-00000120.state.pt      optimizer, scheduler, RNG states, progress (torch.save of
                                tensors, numbers, strings, lists, dicts only)
    latest.json                 the newest complete pair, and the pairs this run keeps
    best.json                   the best (minimum validation loss) exported model
    best-00000120/              that export (``model.safetensors`` + ``config.json``),
                                written as ``.partial-best-00000120/`` and renamed when complete

Every file goes through :func:`sem_physics.atomic.atomic_write` (temporary name, fsync,
rename) and a pointer is replaced only after the files it names are complete, so a crash at
any moment leaves the previous pointer valid; the temporaries a killed run leaves behind (its
own and safetensors' ``.tmpXXXXXX``) are removed when a run starts in the folder
(:meth:`Checkpointer.remove_stale_temporaries`).
:class:`Checkpointer` owns the folder: it refuses to start a fresh run over an existing one,
resumes (a run interrupted before its first checkpoint starts again from step 0), prunes only
the checkpoints its own record lists (never by file-name patterns) and keeps the best model.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import pickle
import random
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from sem_models.checkpoint import nonfinite_message, nonfinite_tensors
from sem_models.external_weights import refusal_reason
from sem_physics.atomic import (
    OutputWriteError,
    atomic_write,
    free_bytes,
    remove_stale_temporaries,
)
from sem_physics.cli_support import first_line

from .runfolder import CheckpointError, RunExistsError, RunFolder, read_json, read_pointer

__all__ = [
    "CheckpointError",
    "CheckpointWriteError",
    "Checkpointer",
    "RunExistsError",
    "load_weights",
    "read_pointer",
    "save_weights",
]


def split_summary(path: Path) -> dict[str, Any] | None:
    """``{"train": n, "validation": n, "skipped": n, "train_sha256": ...}`` of a run's
    ``data_split.json`` (the hash is of its training paths, one per line, in order); None
    without a readable one."""
    record = read_json(path)
    if not isinstance(record, dict) or not isinstance(record.get("train"), list):
        return None
    train = [str(p) for p in record["train"]]
    text = "\n".join(train).encode("utf-8")
    return {
        "kind": record.get("kind"),
        "data_root": record.get("data_root"),
        "train": len(train),
        "validation": len(record.get("validation") or []),
        "skipped": len(record.get("skipped") or {}),
        "train_sha256": hashlib.sha256(text).hexdigest(),
    }


class CheckpointWriteError(OutputWriteError):
    """A checkpoint could not be written (typically: no space left on the device)."""


#: The temporary that safetensors' ``save_file`` writes through (Rust ``tempfile``: ``.tmp``
#: and six alphanumerics, in the destination's folder) before renaming it to its name.
_SAFETENSORS_TEMPORARY = re.compile(r"\.tmp[A-Za-z0-9]{6}")
#: What a pointer file may name: a file or folder this module writes beside it, never a path
#: (a crafted latest.json listing "../x" under "kept" would have a resume delete x).
_STEP_FILE = re.compile(r"step-\d{8}\.(safetensors|state\.pt)")
_BEST_DIR = re.compile(r"best-\d{8}")
#: Prefix of a best-model export being written (``.partial-best-00000120``), renamed when done.
_PARTIAL_PREFIX = ".partial-"


def _check_own_file(pointer: Path, name: object, pattern: re.Pattern[str] = _STEP_FILE) -> None:
    """Refuse a name in ``pointer`` that is not one this module writes beside it."""
    if not (isinstance(name, str) and pattern.fullmatch(name)):
        raise CheckpointError(
            f"{pointer} names {name!r}, not a file of this run's checkpoints folder "
            f"({pattern.pattern}); the folder was not written by sem train"
        )


def _intact(folder: Path) -> str:
    """What a failed write leaves of the run's checkpoints in ``folder``."""
    if (folder / "latest.json").is_file():
        return f"the previous checkpoint in {folder} is intact"
    return f"no earlier checkpoint in {folder}: the run starts again from step 0 on --resume"


@contextmanager
def _writing(path: Path) -> Iterator[None]:
    """Turn a failed write of ``path`` (OS or safetensors error) into CheckpointWriteError."""
    intact = _intact(Path(path).parent)
    try:
        yield
    except CheckpointWriteError:
        raise
    except OSError as err:
        reason = err.strerror or str(err)
        if err.filename is not None and str(err.filename) not in reason:
            reason = f"cannot write {err.filename}: {reason}"
        raise CheckpointWriteError(err.errno or 0, f"{reason}; {intact}") from err
    except SafetensorError as err:  # safetensors reports I/O errors as its own type
        full = "StorageFull" in str(err) or "code: 28" in str(err)
        code = errno.ENOSPC if full else errno.EIO
        what = "no space left on the device while writing" if full else "cannot write"
        raise CheckpointWriteError(code, f"{what} {path} ({err}); {intact}") from err


def _write(path: Path, writer) -> None:
    with _writing(path):
        atomic_write(path, writer)


def _plain_state_dict(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """CPU, contiguous tensors; storage shared between entries is cloned (safetensors needs it)."""
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for k, v in module.state_dict().items():
        t = v.detach().to("cpu").contiguous()
        ptr = t.untyped_storage().data_ptr() if t.numel() else -1
        if ptr in seen:
            t = t.clone()
        seen.add(ptr)
        out[k] = t
    return out


def save_weights(
    module: torch.nn.Module, path: Path, metadata: dict[str, str] | None = None
) -> None:
    """Atomically save ``module.state_dict()`` as safetensors."""
    state = _plain_state_dict(module)
    _write(path, lambda tmp: save_file(state, str(tmp), metadata=metadata))


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of safetensors file ``path``; a missing or foreign file is a clear error."""
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint weights {path} do not exist")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path} is not a safetensors checkpoint: {err}") from None


def load_weights(module: torch.nn.Module, path: Path, strict: bool = True) -> None:
    """Load safetensors weights into ``module`` (shapes and names checked when ``strict``).

    Weights holding NaN or inf are refused (:class:`CheckpointError` naming the file and the
    tensors) before ``module`` is touched.
    """
    path = Path(path)
    state = _read_weights(path)
    found = nonfinite_tensors(state)
    if found:
        raise CheckpointError(nonfinite_message(path, found, "the model would compute NaN"))
    _load_into(module, path, state, strict)


def _load_into(
    module: torch.nn.Module, path: Path, state: dict[str, torch.Tensor], strict: bool = True
) -> None:
    """``module.load_state_dict(state)``; a mismatch is a CheckpointError naming ``path``."""
    try:
        missing, unexpected = module.load_state_dict(state, strict=False)
    except RuntimeError as err:  # a shape mismatch
        first = str(err).strip().splitlines()[-1].strip()
        raise CheckpointError(f"{path} does not match the model: {first}") from None
    if strict and (missing or unexpected):
        raise CheckpointError(
            f"{path} does not match the model: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )


def capture_rng(device: torch.device | str = "cpu") -> dict[str, Any]:
    """Python, numpy and torch RNG states as weights_only-loadable objects: the CPU generator
    and the generator of ``device``, the run's own (``cuda``: this process's GPU; ``mps``).

    Only the run's device is touched: querying CUDA in a CPU run would open a CUDA context
    (memory on GPU 0, seconds of start-up) for a generator the run never draws from.
    """
    # numpy's stubs type this call (legacy=True, the default) as returning the dict form
    np_state = cast(
        "tuple[str, np.ndarray, int, int, float]",
        np.random.get_state(),  # noqa: NPY002 (global state is what we restore)
    )
    state: dict[str, Any] = {
        "python": [list(x) if isinstance(x, tuple) else x for x in random.getstate()],
        "numpy": {
            "key": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    kind = torch.device(device).type
    if kind == "cuda":  # this process's device only: a resume may see fewer GPUs
        state["cuda_current"] = torch.cuda.get_rng_state()
    elif kind == "mps":
        state["mps"] = torch.mps.get_rng_state()
    return state


def restore_rng(state: dict[str, Any], device: torch.device | str = "cpu") -> None:
    """Inverse of :func:`capture_rng` for a run on ``device``: a generator the checkpoint has
    no state for (saved by a run on another device, or before ``mps`` was saved) keeps the
    one the run seeded."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state(  # noqa: NPY002
        ("MT19937", n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"])
    )
    torch.set_rng_state(state["torch"])
    kind = torch.device(device).type
    if kind == "mps":
        if "mps" in state:
            torch.mps.set_rng_state(state["mps"])
        return
    if kind != "cuda":
        return
    if "cuda_current" in state:
        torch.cuda.set_rng_state(state["cuda_current"])
    elif "cuda" in state:  # older checkpoints: one state per GPU the saving run saw
        index = torch.cuda.current_device()
        if index < len(state["cuda"]):
            torch.cuda.set_rng_state(state["cuda"][index])


def _tensor_bytes(obj: Any) -> int:
    """Bytes of the tensors in ``obj`` (nested dicts, lists, tuples): what saving it needs."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_tensor_bytes(v) for v in obj.values())
    if isinstance(obj, list | tuple):
        return sum(_tensor_bytes(v) for v in obj)
    return 0


def save_state(state: dict[str, Any], path: Path) -> None:
    """Atomically ``torch.save`` a dict of plain objects (loadable with ``weights_only=True``).

    torch reports a failed write as a RuntimeError (``[enforce fail at inline_container.cc]
    ... unexpected pos``): a :class:`CheckpointWriteError` naming ``path``, "no space left"
    when the folder has less free space than the state's tensors take.
    """
    path = Path(path)
    try:
        _write(path, lambda tmp: torch.save(state, tmp))
    except RuntimeError as err:
        free, need = free_bytes(path.parent), _tensor_bytes(state)
        intact = _intact(path.parent)
        first = first_line(err)
        if free is not None and free < need + (1 << 20):
            raise CheckpointWriteError(
                errno.ENOSPC,
                f"no space left on the device while writing {path} ({free} bytes free, "
                f"{need} needed); {intact}",
            ) from err
        raise CheckpointWriteError(errno.EIO, f"cannot write {path} ({first}); {intact}") from err


def load_training_state(path: Path) -> dict[str, Any]:
    """``torch.load(path, weights_only=True)``; a missing or foreign file is a clear error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"training state {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as err:
        reason = refusal_reason(err)
        raise CheckpointError(f"{path} is not a training-state checkpoint: {reason}") from None
    if not isinstance(state, dict) or "progress" not in state:
        raise CheckpointError(f"{path} is not a training-state checkpoint (no 'progress' entry)")
    return state


def _optimizer_tensors(
    saved: Any, optimizer: torch.optim.Optimizer, model: torch.nn.Module
) -> dict[str, torch.Tensor]:
    """The tensors of a saved optimizer state (``optimizer.state_dict()`` of a run), each
    named by its entry and the parameter it belongs to (``exp_avg of blocks.0.norm1.weight``):
    saved indices are matched with ``optimizer``'s parameters group by group, in order, as
    ``optimizer.load_state_dict`` matches them, and those with ``model``'s names."""
    if not isinstance(saved, dict) or not isinstance(saved.get("state"), dict):
        return {}
    names = {id(p): n for n, p in model.named_parameters()}
    owner: dict[Any, str] = {}
    groups = saved.get("param_groups")
    saved_groups = groups if isinstance(groups, list) else []
    for saved_group, group in zip(saved_groups, optimizer.param_groups, strict=False):
        indices = saved_group.get("params", []) if isinstance(saved_group, dict) else []
        for index, param in zip(indices, group["params"], strict=False):
            if id(param) in names:
                owner[index] = names[id(param)]
    out: dict[str, torch.Tensor] = {}
    for index, entry in saved["state"].items():
        if isinstance(entry, dict):
            param = owner.get(index, f"parameter {index}")
            for key, value in entry.items():
                if isinstance(value, torch.Tensor):
                    out[f"{key} of {param}"] = value
    return out


def write_pointer(path: Path, record: dict[str, Any]) -> None:
    """Atomically write a small JSON pointer file."""
    text = json.dumps(record, indent=1)
    _write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def _schedule_text(state: Any) -> str:
    """``peak lr 0.001, warm-up 10, 40 steps, cosine, floor 0.1`` from a LambdaLR state of a
    WarmupCosine: every field :func:`_check_schedule` compares."""
    try:
        peak = ", ".join(f"{lr:g}" for lr in state["base_lrs"])
        return f"peak lr {peak}, " + "; ".join(_shape_text(s) for s in state["lr_lambdas"])
    except (KeyError, TypeError, AttributeError, ValueError):
        return "unknown"


def _shape_text(shape: dict[str, Any]) -> str:
    """``warm-up 10, 40 steps, cosine, floor 0.1`` and any further field of a WarmupCosine."""
    rest = {k: v for k, v in shape.items() if k not in ("warmup", "total", "constant", "floor")}
    words = [
        f"warm-up {shape['warmup']}",
        f"{shape['total']} steps",
        "constant" if shape.get("constant") else "cosine",
        f"floor {shape['floor']:g}",
        *(f"{key} {value}" for key, value in sorted(rest.items())),
    ]
    return ", ".join(words)


def _check_schedule(path: Path, saved: Any, expected: dict[str, Any]) -> None:
    """CheckpointError when the checkpoint's learning-rate schedule is not this run's."""
    if not isinstance(saved, dict):
        return  # a state without a scheduler: its loading reports it
    keys = ("base_lrs", "lr_lambdas")
    if all(saved.get(k) == expected.get(k) for k in keys):
        return
    raise CheckpointError(
        f"{path} was saved with another learning-rate schedule ({_schedule_text(saved)}) than "
        f"this run's ({_schedule_text(expected)}); resume with the settings the run started "
        f"with, or start a new run with --init-from"
    )


class Checkpointer(RunFolder):
    """The ``checkpoints/`` folder of one run: resume, periodic saves, pruning, best model.

    The checks of the folder before a run (:meth:`check_start`, :meth:`check_fresh`,
    :meth:`check_resumable`, ...) are :class:`~sem_train.runfolder.RunFolder`'s, which looks
    at paths only and loads no torch.

    ``latest.json`` records the step checkpoints this run wrote and keeps (``kept``, oldest
    first); pruning deletes only entries that fall out of that list, after the new pointer
    is in place, so ``latest.json`` never names a deleted file and files this record does
    not list are never touched. The pointer lists those entries under ``dropped`` (``best.json``
    the export it replaced), and :meth:`resume` deletes what a killed run left of them.
    """

    def __init__(
        self, run_dir: Path, keep_last: int = 2, device: torch.device | str = "cpu"
    ) -> None:
        if keep_last < 1:
            raise ValueError(f"keep_last={keep_last} must be >= 1")
        super().__init__(run_dir)
        self.keep_last = keep_last
        #: the run's device: its generator (besides the CPU's) is saved and restored
        self.device = torch.device(device)
        self._kept: list[list[str]] = []
        self._split_summary: dict[str, Any] | None = None

    @property
    def latest_path(self) -> Path | None:
        """The newest step checkpoint's weights file written or resumed by this checkpointer."""
        return self.dir / self._kept[-1][0] if self._kept else None

    def remove_stale_temporaries(self) -> list[Path]:
        """Remove the temporaries a run killed while writing left in the run folder,
        ``checkpoints/`` and its ``best-*`` exports; return their paths.

        Atomic-write temporaries of processes no longer running are removed
        (:func:`~sem_physics.atomic.remove_stale_temporaries`), and in ``checkpoints/`` and the
        exports the ``.tmpXXXXXX`` files of safetensors' ``save_file`` (only rank 0 writes
        there and the run holds the folder's lock, so none of them is being written).
        """
        weights = [self.dir]  # the folders safetensors writes into
        partial: list[Path] = []
        if self.dir.is_dir():
            weights += sorted(
                p for p in self.dir.glob("best-*") if p.is_dir() and not p.is_symlink()
            )
            partial = sorted(
                p
                for p in self.dir.glob(f"{_PARTIAL_PREFIX}best-*")
                if _BEST_DIR.fullmatch(p.name[len(_PARTIAL_PREFIX) :])
                and p.is_dir()
                and not p.is_symlink()
            )
        for folder in partial:  # an export killed before its rename: never pointed at
            shutil.rmtree(folder, ignore_errors=True)
        return (
            remove_stale_temporaries(self.run_dir)
            + [
                path
                for folder in weights
                for path in remove_stale_temporaries(folder, unowned=_SAFETENSORS_TEMPORARY)
            ]
            + partial
        )

    def resume(self, model: torch.nn.Module, optimizer: Any, scheduler: Any) -> dict[str, Any]:
        """Load weights, optimizer, scheduler and RNG of ``latest.json``; return its progress.

        The saved schedule must be the one ``scheduler`` was built with (same peak learning
        rate, warm-up and length): restoring another would silently train on the old one
        (the run's settings are compared with its record before, see
        :meth:`~sem_train.runfolder.RunFolder.check_resume`; this also covers a changed
        number of processes).
        """
        pointer = read_pointer(self.dir / "latest.json")
        if pointer is None:
            raise FileNotFoundError(
                f"--resume: no checkpoint in {self.dir} (expected latest.json); start without "
                f"--resume in an empty output folder"
            )
        try:
            weights, state_name = pointer["weights"], pointer["state"]
        except KeyError as err:
            raise CheckpointError(f"{self.dir / 'latest.json'} lacks the field {err}") from None
        kept = pointer.get("kept", [[weights, state_name]])
        if not isinstance(kept, list) or not all(isinstance(k, list) and len(k) == 2 for k in kept):
            raise CheckpointError(f"{self.dir / 'latest.json'}: 'kept' must list [weights, state]")
        dropped = pointer.get("dropped", [])
        if not isinstance(dropped, list) or not all(isinstance(k, list) for k in dropped):
            raise CheckpointError(
                f"{self.dir / 'latest.json'}: 'dropped' must list [weights, state]"
            )
        for name in [weights, state_name, *(f for k in kept + dropped for f in k)]:
            _check_own_file(self.dir / "latest.json", name)
        # NaN weights or AdamW moments resume into NaN losses (or frozen weights: an infinite
        # second moment makes that weight's update 0), blamed on the steps after the resume
        tensors = _read_weights(self.dir / weights)
        found = nonfinite_tensors(tensors)
        if found:
            why = self._diverged_advice()
            raise CheckpointError(nonfinite_message(self.dir / weights, found, why))
        state = load_training_state(self.dir / state_name)
        found = nonfinite_tensors(_optimizer_tensors(state.get("optimizer"), optimizer, model))
        if found:
            why = self._diverged_advice()
            path = self.dir / state_name
            raise CheckpointError(nonfinite_message(path, found, why, what="optimizer state"))
        _load_into(model, self.dir / weights, tensors)
        _check_schedule(self.dir / state_name, state.get("scheduler"), scheduler.state_dict())
        try:
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            restore_rng(state["rng"], self.device)
        except (KeyError, ValueError, TypeError, RuntimeError) as err:
            raise CheckpointError(
                f"{self.dir / state_name} does not match this run's optimizer: {err}"
            ) from None
        self._kept = [list(k) for k in kept]
        named = {weights, state_name, *(f for k in kept for f in k)}
        self._finish_removals([f for k in dropped for f in k if f not in named])
        return dict(state["progress"])

    def _diverged_advice(self) -> str:
        """What a user can do with a run whose newest checkpoint holds NaN or inf: it cannot
        be resumed; a new run starts from its best model where the run's kind can start from
        its own model (Stage 1, Stage 3, fine-tuning), else from the beginning."""
        kind = (read_json(self.run_dir / "data_split.json") or {}).get("kind")
        best = read_pointer(self.dir / "best.json") or {}
        if kind in ("stage1", "stage3", "finetune") and best.get("dir"):
            start = (
                f"from its best model (step {best.get('global_step')}: --init-from "
                f"{self.run_dir} --output-dir NEW_FOLDER)"
            )
        else:
            start = "from the beginning (--output-dir NEW_FOLDER)"
        return (
            "the run had diverged when this checkpoint was written (or the file is damaged) and "
            f"--resume would go on from it; start a new run {start} with a lower optim.lr"
        )

    def _finish_removals(self, step_files: list[str]) -> None:
        """Remove what a run killed between moving a pointer and deleting what it no longer
        names left behind: ``step_files`` (``latest.json``'s ``dropped``) and the export
        ``best.json`` lists as ``dropped``; never a file or folder a pointer names."""
        for name in step_files:
            (self.dir / name).unlink(missing_ok=True)
        best = read_pointer(self.dir / "best.json") or {}
        gone = best.get("dropped")
        if gone is not None:
            _check_own_file(self.dir / "best.json", gone, _BEST_DIR)
            if gone != best.get("dir"):
                shutil.rmtree(self.dir / gone, ignore_errors=True)

    def save(
        self, model: torch.nn.Module, optimizer: Any, scheduler: Any, progress: dict[str, Any]
    ) -> Path:
        """Write the step checkpoint of ``progress['global_step']``, move the pointer, prune."""
        step = int(progress["global_step"])
        name = f"step-{step:08d}"
        weights, state_path = self.dir / f"{name}.safetensors", self.dir / f"{name}.state.pt"
        save_weights(model, weights, metadata={"global_step": str(step)})
        state = {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": capture_rng(self.device),
            "progress": dict(progress),
        }
        try:
            save_state(state, state_path)
        except BaseException:  # no half checkpoint: the weights go unless a pointer names them
            pointed = read_pointer(self.dir / "latest.json") or {}
            if pointed.get("weights") != weights.name:
                weights.unlink(missing_ok=True)
            raise
        entry = [weights.name, state_path.name]
        kept = [k for k in self._kept if k != entry] + [entry]
        dropped, kept = kept[: -self.keep_last], kept[-self.keep_last :]
        record = {"weights": weights.name, "state": state_path.name, **progress, "kept": kept}
        # what is deleted next, so a resume finishes it when the run is killed before
        write_pointer(self.dir / "latest.json", {**record, "dropped": dropped})
        self._kept = kept
        for files in dropped:
            for f in files:
                (self.dir / f).unlink(missing_ok=True)
        return weights

    def save_best(self, export: Any, step: int, val_loss: float | None) -> Path:
        """``export(folder)`` the best model, point ``best.json`` at it, remove the previous one."""
        new_dir = self.dir / f"best-{step:08d}"
        partial = self.dir / f"{_PARTIAL_PREFIX}{new_dir.name}"  # renamed once complete
        old = read_pointer(self.dir / "best.json")
        for left in (new_dir, partial):  # a crash of this run before the pointer was written
            if left.exists():
                shutil.rmtree(left)
        with _writing(new_dir):
            export(partial)
            self._record_provenance(partial, step, val_loss)
            os.replace(partial, new_dir)
        gone = old.get("dir") if old else None
        if not (isinstance(gone, str) and gone != new_dir.name and _BEST_DIR.fullmatch(gone)):
            gone = None
        record = {"dir": new_dir.name, "global_step": step, "val_loss": val_loss}
        # the export deleted next, so a resume finishes it when the run is killed before
        write_pointer(self.dir / "best.json", {**record, "dropped": gone} if gone else record)
        if gone is not None:
            shutil.rmtree(self.dir / gone, ignore_errors=True)
        return new_dir

    def _record_provenance(self, export_dir: Path, step: int, val_loss: float | None) -> None:
        """Add ``training`` to the export's ``config.json``: the run folder's name, the global
        step, the validation loss and the summary of the run's ``data_split.json`` (image
        counts and the SHA-256 of its list of training files), so a copied export still says
        where it came from. The weights file is not touched."""
        from sem_models.checkpoint import (
            CONFIG_NAME,
            CheckpointError,
            annotate_export,
            read_export_meta,
        )

        if not (export_dir / CONFIG_NAME).is_file():
            return  # a task's own export format: nothing to annotate
        try:
            read_export_meta(export_dir)
        except CheckpointError:
            return  # a config.json that is no sem_models export's: left as the task wrote it
        record: dict[str, Any] = {
            "run": self.run_dir.name,
            "global_step": int(step),
            "val_loss": None if val_loss is None else float(val_loss),
        }
        if self._split_summary is None:  # written once before the first step, never changed
            self._split_summary = split_summary(self.run_dir / "data_split.json")
        summary = self._split_summary
        if summary is not None:
            record["data_split"] = summary
        annotate_export(export_dir, "training", record)

    @property
    def best_dir(self) -> Path | None:
        """The folder ``best.json`` points at, or None."""
        best = read_pointer(self.dir / "best.json")
        if not best or "dir" not in best:
            return None
        _check_own_file(self.dir / "best.json", best["dir"], _BEST_DIR)
        return self.dir / best["dir"]
