"""Atomic training checkpoints: weights in safetensors, the rest loadable with ``weights_only``.

Layout inside ``<run>/checkpoints/``::

    step-00000120.safetensors   model weights (all parameters and buffers)
    step-00000120.state.pt      optimizer, scheduler, RNG states, progress (torch.save of
                                tensors, numbers, strings, lists, dicts only)
    latest.json                 pointer to the newest complete pair
    best.json                   pointer to the best (minimum validation loss) weights

Every file is written to a temporary name in the same folder and renamed with ``os.replace``;
the pointer is replaced only after both files are complete. A crash at any moment leaves the
previous pointer valid; a full disk raises :class:`CheckpointWriteError` naming the folder.
"""

from __future__ import annotations

import errno
import json
import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

__all__ = [
    "CheckpointWriteError",
    "atomic_write",
    "capture_rng",
    "load_training_state",
    "load_weights",
    "read_pointer",
    "restore_rng",
    "save_state",
    "save_weights",
    "write_pointer",
]


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (typically: no space left on the device)."""


def atomic_write(path: Path, writer: Callable[[Path], None]) -> None:
    """Call ``writer(tmp)`` then ``os.replace(tmp, path)``; clean up and explain on failure."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        writer(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            raise CheckpointWriteError(
                err.errno,
                f"no space left on the device while writing {path}; free space or choose "
                f"another run.output_dir (the previous checkpoint in {path.parent} is intact)",
            ) from err
        raise CheckpointWriteError(
            err.errno or 0, f"could not write checkpoint {path}: {err.strerror or err}"
        ) from err
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


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
    atomic_write(path, lambda tmp: save_file(state, str(tmp), metadata=metadata))


def load_weights(module: torch.nn.Module, path: Path, strict: bool = True) -> None:
    """Load safetensors weights into ``module`` (shapes and names checked when ``strict``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint weights {path} do not exist")
    state = load_file(str(path))
    missing, unexpected = module.load_state_dict(state, strict=False)
    if strict and (missing or unexpected):
        raise ValueError(
            f"{path} does not match the model: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )


def capture_rng() -> dict[str, Any]:
    """Python, numpy and torch (CPU and CUDA) RNG states as weights_only-loadable objects."""
    np_state = np.random.get_state()  # noqa: NPY002 (global state is what we restore)
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
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng`."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state(  # noqa: NPY002
        ("MT19937", n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_state(state: dict[str, Any], path: Path) -> None:
    """Atomically ``torch.save`` a dict of plain objects (loadable with ``weights_only=True``)."""
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_training_state(path: Path) -> dict[str, Any]:
    """``torch.load(path, weights_only=True)`` with a clear error if the file is missing."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"training state {path} does not exist")
    return torch.load(path, map_location="cpu", weights_only=True)


def write_pointer(path: Path, record: dict[str, Any]) -> None:
    """Atomically write a small JSON pointer file."""
    text = json.dumps(record, indent=1)
    atomic_write(path, lambda tmp: tmp.write_text(text))


def read_pointer(path: Path) -> dict[str, Any] | None:
    """Read a pointer file, or None if it does not exist."""
    path = Path(path)
    if not path.is_file():
        return None
    return json.loads(path.read_text())
