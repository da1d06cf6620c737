"""Checkpoints: ``model.safetensors`` (weights) + ``config.json`` (everything to rebuild).

Works for a dense MAE, an upcycled MAE + MoE (the config carries ``moe``) and a
:class:`~sem_models.restoration.RestorationModel` (kind ``restoration``). Loading never
unpickles anything: weights come from safetensors and the config from JSON. Both files are
written atomically (temporary name in the same folder, fsync, rename): a crash or a full disk
leaves either the previous file or the new one, never a truncated one, and no temporary file.
Only ``kill -9`` can leave a temporary; it is named as ``sem_physics.atomic.atomic_write``
names its own (``.model.<pid>.tmp.safetensors``, ``.config.<pid>.tmp.json``), so
``sem_physics.atomic.remove_stale_temporaries`` removes it (a training run does so in its
``checkpoints/best-*`` exports when it starts).

Torch and the model classes are imported by the functions that need them: finding the export
a folder names (:func:`best_export`) and reading its checked ``config.json``
(:func:`read_export_meta`, :func:`export_has_moe`, :func:`export_model_kind`) load neither torch
nor timm, so a command can refuse a wrong model path before seconds of imports.
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from safetensors import SafetensorError

from .config import MAEConfig

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = [
    "CONFIG_NAME",
    "FORMAT",
    "WEIGHTS_NAME",
    "CheckpointError",
    "CheckpointWriteError",
    "NonFiniteWeightsError",
    "annotate_export",
    "describe_nonfinite",
    "export_has_moe",
    "export_model_kind",
    "load_model",
    "nonfinite_message",
    "nonfinite_tensors",
    "read_export_meta",
    "save_model",
]

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
FORMAT = "sem-models/1"
KINDS = ("mae", "restoration")  # what an export's config.json says it holds


class CheckpointError(ValueError):
    """A checkpoint directory that is missing files, or whose contents do not match."""


class NonFiniteWeightsError(CheckpointError):
    """Weights of the right kind holding NaN or inf (a diverged training, a damaged file): the
    message names the file and the tensors."""


class CheckpointWriteError(OSError):
    """A checkpoint file could not be written; the message names the file and the cause."""


def _umask() -> int:
    """The process's umask (as ``sem_physics.atomic.process_umask``; no sem-physics here)."""
    try:
        for line in Path("/proc/self/status").read_text(encoding="utf-8").splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _atomic_write(path: Path, writer: Callable[[Path], object]) -> None:
    """``writer(tmp)``, fsync, ``os.replace(tmp, path)``; the temporary never survives.

    The temporary's name is the one ``sem_physics.atomic.atomic_write`` gives (kept equal, so
    that its stale-temporary sweep recognises it; this package does not import sem-physics).
    """
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        # a fresh regular file of this process at that predictable name: a link planted there
        # would have the writer write through it
        if os.path.lexists(tmp):
            tmp.unlink()
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
        os.close(os.open(tmp, flags, 0o600))
        writer(tmp)
        if os.name == "posix":  # safetensors creates its file readable by the owner only
            try:
                os.chmod(tmp, 0o666 & ~_umask())
            except OSError:  # a file system without POSIX modes: as written
                pass
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except (OSError, SafetensorError) as err:
        tmp.unlink(missing_ok=True)
        code = getattr(err, "errno", None) or 0
        if code in (errno.ENOSPC, errno.EDQUOT) or "No space left" in str(err):
            why = "no space left on the device"
        else:
            why = getattr(err, "strerror", None) or str(err)
        raise CheckpointWriteError(code, f"cannot write {path}: {why}") from err
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


#: Parameter dtypes an export may record (``dtype`` in config.json; absent: float32).
DTYPES = ("float32", "bfloat16", "float16", "float64")


def _unwrap(model: nn.Module) -> nn.Module:
    """The model inside ``torch.compile`` (``_orig_mod``) and DDP / DataParallel (``module``)
    wrappers, whose own state-dict keys carry a prefix."""
    from torch import nn
    from torch.nn.parallel import DataParallel, DistributedDataParallel

    while True:
        inner = getattr(model, "_orig_mod", None)
        if isinstance(inner, nn.Module):
            model = inner
        elif isinstance(model, (DistributedDataParallel, DataParallel)):
            model = model.module
        else:
            return model


def _param_dtype(model: nn.Module) -> str | None:
    """The one dtype of the model's parameters as a name of :data:`DTYPES` (None if mixed)."""
    names = {str(p.dtype).removeprefix("torch.") for p in model.parameters()}
    return names.pop() if len(names) == 1 and names <= set(DTYPES) else None


def _describe(model: nn.Module) -> dict[str, Any]:
    meta = _describe_arch(model)
    dtype = _param_dtype(model)
    if dtype not in (None, "float32"):  # float32: as files without the key
        meta["dtype"] = dtype
    return meta


def _describe_arch(model: nn.Module) -> dict[str, Any]:
    from .mae import MaskedAutoencoder
    from .restoration import RestorationModel

    if isinstance(model, RestorationModel):
        return {
            "format": FORMAT,
            "kind": "restoration",
            "freeze_encoder": bool(model.freeze_encoder),
            "residual": bool(model.residual),
            "refiner_width": model.refiner_width,
            "masked_ensemble": model.masked_ensemble,
            "guide_balances": list(model.guide_balances),
            "mae": model.mae.config.model_dump(mode="json"),
        }
    if isinstance(model, MaskedAutoencoder):
        return {"format": FORMAT, "kind": "mae", "mae": model.config.model_dump(mode="json")}
    raise TypeError(
        f"save_model supports MaskedAutoencoder and RestorationModel; got {type(model).__name__}"
    )


def save_model(model: nn.Module, directory: str | Path) -> None:
    """Write ``directory/model.safetensors`` and ``directory/config.json`` (creates the folder).

    A model wrapped by ``torch.compile`` or DDP is saved as the model inside. A model whose
    parameters are not float32 (e.g. bf16) records its dtype, and loads in it again. Each file
    is replaced atomically; a failed write raises :class:`CheckpointWriteError` naming the
    file and leaves no temporary file behind.
    """
    from safetensors.torch import save_file

    model = _unwrap(model)
    meta = _describe(model)
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CheckpointWriteError(
            err.errno or 0, f"cannot create the checkpoint folder {directory}: {err.strerror}"
        ) from err
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    text = json.dumps(meta, indent=2) + "\n"
    _atomic_write(
        directory / WEIGHTS_NAME,
        lambda tmp: save_file(state, str(tmp), metadata={"format": FORMAT}),
    )
    _atomic_write(directory / CONFIG_NAME, lambda tmp: tmp.write_text(text, encoding="utf-8"))


#: The keys :func:`save_model` writes into ``config.json`` (what rebuilds the model).
_MODEL_KEYS = frozenset(
    {"format", "kind", "mae", "freeze_encoder", "residual", "refiner_width"}
    | {"masked_ensemble", "guide_balances", "dtype"}
)


def annotate_export(directory: str | Path, key: str, value: Any) -> None:
    """Add ``key: value`` (JSON) to the ``config.json`` of the export in ``directory``, e.g.
    where a training run's model came from (``training``: run, step, data). The weights file is
    not touched; :func:`load_model` reads the architecture keys only. ``format``, ``kind`` and
    the other keys :func:`save_model` writes cannot be replaced this way."""
    if key in _MODEL_KEYS:
        raise ValueError(f"annotate_export cannot replace {key!r} of an export's config.json")
    path = Path(directory) / CONFIG_NAME
    meta = json.loads(path.read_text(encoding="utf-8"))
    meta[key] = value
    text = json.dumps(meta, indent=2) + "\n"
    _atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def best_export(directory: str | Path) -> Path:
    """A training run folder (``checkpoints/best.json`` naming its best export) -> that export;
    any other folder is returned as it is."""
    directory = Path(directory)
    pointer = directory / "checkpoints" / "best.json"
    if (directory / WEIGHTS_NAME).is_file() or not pointer.is_file():  # run folders hold
        return directory  # their own config.json (the run's settings), never weights
    try:
        best = json.loads(pointer.read_text(encoding="utf-8"))["dir"]
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{pointer}: not a best-model pointer ({exc})") from None
    if not (isinstance(best, str) and re.fullmatch(r"best-\d{8}", best)):
        # a pointer names a folder beside it, never a path that leaves the run folder
        raise CheckpointError(f"{pointer}: 'dir' must name a best-NNNNNNNN folder, got {best!r}")
    return directory / "checkpoints" / best


def _checked_meta(directory: Path) -> tuple[dict[str, Any], MAEConfig]:
    """``config.json`` of export ``directory`` and its MAE config; CheckpointError naming the
    file and what is wrong."""
    path = directory / CONFIG_NAME
    if not path.is_file():
        raise CheckpointError(f"{path} not found; expected a folder written by save_model()")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a valid sem-models config ({exc})") from None
    kind = meta.get("kind") if isinstance(meta, dict) else None
    if kind not in KINDS:
        raise CheckpointError(f"{path}: unknown kind {kind!r} ({', '.join(KINDS)})")
    try:
        cfg = MAEConfig(**meta["mae"])
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{path}: not a valid sem-models config ({exc})") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(
            f"{path}: unknown format {meta.get('format')!r} (this version reads {FORMAT!r})"
        )
    if meta.get("dtype", "float32") not in DTYPES:
        raise CheckpointError(f"{path}: unknown dtype {meta['dtype']!r} ({', '.join(DTYPES)})")
    if kind == "restoration":
        _check_restoration_fields(meta, path)
    return meta, cfg


def _check_restoration_fields(meta: dict[str, Any], path: Path) -> None:
    """CheckpointError naming the field of a restoration export's ``config.json`` that is not
    of its type (a ``"false"`` string would read as true, a float width be truncated)."""
    for key in ("freeze_encoder", "residual"):
        if key in meta and not isinstance(meta[key], bool):
            raise CheckpointError(f"{path}: {key} must be true or false; got {meta[key]!r}")
    for key, accepted in (("refiner_width", "a whole number >= 0"), ("masked_ensemble", "0 or 4")):
        value = meta.get(key, 0)
        whole = isinstance(value, int) and not isinstance(value, bool)
        if not whole or value < 0 or (key == "masked_ensemble" and value not in (0, 4)):
            raise CheckpointError(f"{path}: {key} must be {accepted}; got {value!r}")
    balances = meta.get("guide_balances", [])
    if not isinstance(balances, list) or not all(
        isinstance(b, (int, float)) and not isinstance(b, bool) and math.isfinite(b) and b > 0
        for b in balances
    ):
        raise CheckpointError(
            f"{path}: guide_balances must be a list of finite numbers > 0; got {balances!r}"
        )


def read_export_meta(directory: str | Path) -> dict[str, Any]:
    """The ``config.json`` of the export in ``directory``, checked (a known ``kind``, a valid
    ``mae`` architecture) without torch; CheckpointError naming the file and what is wrong."""
    return _checked_meta(Path(directory))[0]


def export_has_moe(meta: dict[str, Any]) -> bool:
    """Whether the export described by ``meta`` (:func:`read_export_meta`) has MoE layers."""
    return meta["mae"].get("moe") is not None


def export_model_kind(meta: dict[str, Any]) -> Literal["dense", "moe", "restoration"]:
    """What the export described by ``meta`` holds: a dense or MoE MAE, or a restoration model."""
    if meta["kind"] == "restoration":
        return "restoration"
    return "moe" if export_has_moe(meta) else "dense"


def _check_against_weights(skeleton: nn.Module, w_path: Path, cfg_path: Path) -> None:
    """Compare the tensors the model ``config.json`` describes (built on the meta device) with
    the header of the weights file, before any memory is allocated: an edited config.json
    cannot ask for a model of 150 GB, and integer tensors do not pass for float weights."""
    from safetensors import safe_open

    try:
        with safe_open(str(w_path), framework="pt") as f:
            found = {
                k: (tuple(f.get_slice(k).get_shape()), f.get_slice(k).get_dtype()) for k in f.keys()
            }
    except Exception as exc:  # SafetensorError: truncated or not a safetensors file
        raise CheckpointError(f"{w_path}: not a readable safetensors file ({exc})") from None
    wanted = skeleton.state_dict()
    missing, unexpected = sorted(set(wanted) - set(found)), sorted(set(found) - set(wanted))
    if missing or unexpected:
        raise CheckpointError(
            f"{w_path} does not match {cfg_path}: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    for key, tensor in wanted.items():
        shape, dtype = found[key]
        if shape != tuple(tensor.shape):
            raise CheckpointError(
                f"{w_path} does not match {cfg_path}: {key} is {list(shape)} in the weights, "
                f"{list(tensor.shape)} in the model config.json describes"
            )
        if tensor.is_floating_point() and not dtype.startswith(("F", "BF")):
            raise CheckpointError(f"{w_path}: {key} holds {dtype} values, not floating point")


def _nonfinite(tensor: torch.Tensor) -> int:
    """How many values of floating-point ``tensor`` are NaN or infinite.

    On the CPU, IEEE formats are read through their bits (exponent all ones), with numpy:
    about 10 ms for the shipped 6-million-value models, where ``torch.isfinite`` takes 10-100
    times longer on a CPU; other formats (float8) are converted to float32 first. A tensor on
    another device is counted there by ``torch.isfinite``.
    """
    import numpy as np
    import torch

    tensor = tensor.detach()
    if tensor.device.type != "cpu":
        return int((~torch.isfinite(tensor)).sum())
    masks = {
        torch.float16: (torch.int16, 0x7C00),
        torch.bfloat16: (torch.int16, 0x7F80),
        torch.float32: (torch.int32, 0x7F800000),
        torch.float64: (torch.int64, 0x7FF0000000000000),
    }
    if tensor.dtype in masks:
        as_int, mask = masks[tensor.dtype]
        bits = tensor.view(as_int).numpy()
        return int(np.count_nonzero((bits & mask) == mask))
    return int(np.count_nonzero(~np.isfinite(tensor.float().numpy())))


def nonfinite_tensors(state: Mapping[str, torch.Tensor]) -> list[tuple[str, int, int]]:
    """``(name, count, size)`` of each floating-point tensor of ``state`` that holds NaN or
    inf (``count`` of its ``size`` values), in ``state``'s order; empty when all are finite.

    The one check of every weights loader (exports, saved restorers, external MAE weights,
    training checkpoints and their optimizer state): such weights give NaN images or NaN
    losses without complaint. Non-floating tensors (integer buffers, RNG states) are skipped.
    """
    found = []
    for name, tensor in state.items():
        if tensor.is_floating_point():
            count = _nonfinite(tensor)
            if count:
                found.append((name, count, tensor.numel()))
    return found


def describe_nonfinite(found: list[tuple[str, int, int]], limit: int = 3) -> str:
    """``a (2 of 64), b (1 of 3), c (1 of 8) and 4 more tensors``: the first ``limit`` entries of
    :func:`nonfinite_tensors` and how many more there are, for a one-line error."""
    text = ", ".join(f"{name} ({count} of {size})" for name, count, size in found[:limit])
    more = len(found) - limit
    return text + (f" and {more} more tensor{'s' if more > 1 else ''}" if more > 0 else "")


def nonfinite_message(
    path: str | os.PathLike[str],
    found: list[tuple[str, int, int]],
    consequence: str,
    *,
    what: str = "weights",
) -> str:
    """The one-line error of every weights loader for the tensors ``found`` by
    :func:`nonfinite_tensors` in file ``path``: ``PATH: NaN or infinite WHAT in a (2 of 64),
    ...; CONSEQUENCE`` (what such weights would do, and what to do about it)."""
    return f"{path}: NaN or infinite {what} in {describe_nonfinite(found)}; {consequence}"


def load_model(directory: str | Path, device: torch.device | str = "cpu") -> nn.Module:
    """Rebuild the model saved by :func:`save_model` (same class, config and weights).

    ``directory`` is the saved folder, or a training run folder whose
    ``checkpoints/best.json`` names its best export (what ``sem train`` writes). The
    parameters get the dtype config.json records (float32 when it records none). Weights
    that hold NaN or inf (once in that dtype) are refused (:class:`CheckpointError` naming
    the file and the tensors).
    """
    import torch
    from safetensors.torch import load_file

    from .mae import MaskedAutoencoder
    from .precision import checked_device
    from .restoration import RestorationModel

    directory = best_export(directory)
    cfg_path, w_path = directory / CONFIG_NAME, directory / WEIGHTS_NAME
    for path in (cfg_path, w_path):
        if not path.is_file():
            raise CheckpointError(f"{path} not found; expected a folder written by save_model()")
    meta, cfg = _checked_meta(directory)

    def build() -> nn.Module:
        mae = MaskedAutoencoder(cfg)
        if meta["kind"] != "restoration":
            return mae
        return RestorationModel(
            mae,
            freeze_encoder=meta.get("freeze_encoder", True),
            residual=meta.get("residual", False),
            refiner_width=meta.get("refiner_width", 0),
            masked_ensemble=meta.get("masked_ensemble", 0),
            guide_balances=[float(v) for v in meta.get("guide_balances", [])],
        )

    with torch.device("meta"):  # no memory: config.json's model checked against the weights
        try:
            skeleton = build()
        except ValueError as exc:  # settings that do not go together (a guided model, no refiner)
            raise CheckpointError(f"{cfg_path}: {exc}") from None
        _check_against_weights(skeleton, w_path, cfg_path)
    with torch.random.fork_rng(devices=[]):  # the random init, overwritten next, leaves the
        model = build()  # caller's global torch RNG where it was
    model = model.to(getattr(torch, meta.get("dtype", "float32")))
    try:
        state = load_file(str(w_path))
    except Exception as exc:  # SafetensorError: truncated or not a safetensors file
        raise CheckpointError(f"{w_path}: not a readable safetensors file ({exc})") from None
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches
        raise CheckpointError(f"{w_path} does not match {cfg_path}: {exc}") from None
    if missing or unexpected:
        raise CheckpointError(
            f"{w_path} does not match {cfg_path}: missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]}"
        )
    # a diverged run's weights, or values beyond the dtype config.json asks for
    found = nonfinite_tensors(model.state_dict())
    if found:
        raise NonFiniteWeightsError(
            nonfinite_message(
                w_path,
                found,
                "the model would return NaN images (export a checkpoint from before training "
                "diverged)",
            )
        )
    return model.to(checked_device(device))
