"""The ``Restorer`` contract and the registry that lists every baseline by name.

Every method takes a float32 grayscale image ``(H, W)`` on the 0..255 scale, of any size, and
returns a float32 image of the same shape and scale. Learned methods also ``fit``, ``save`` and
``load``; everything they store is JSON (the config) plus safetensors (the weights), never a
pickle.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from pydantic import BaseModel, ValidationError

__all__ = [
    "CONFIG_FILE",
    "LearnedRestorer",
    "Restorer",
    "RestorerConfigError",
    "check_image",
    "get_restorer",
    "list_restorers",
    "load_restorer",
    "register",
    "restorer_config",
]

CONFIG_FILE = "config.json"


class RestorerConfigError(ValueError):
    """A restorer name or configuration that the registry cannot accept."""


@runtime_checkable
class Restorer(Protocol):
    """Maps a degraded image to a restored one: float32 (H, W), 0..255, same shape."""

    name: str

    def restore(self, image: np.ndarray) -> np.ndarray: ...


@runtime_checkable
class LearnedRestorer(Restorer, Protocol):
    """A restorer with weights: trained by ``fit``, persisted by ``save``/``load``."""

    def fit(self, train_images: list[np.ndarray], **kwargs: Any) -> Any: ...

    def save(self, path: str | Path) -> Path: ...

    def load(self, path: str | Path) -> LearnedRestorer: ...


_REGISTRY: dict[str, tuple[type, type[BaseModel]]] = {}


def register(name: str, config_cls: type[BaseModel]) -> Callable[[type], type]:
    """Class decorator: make ``cls(config)`` available as ``get_restorer(name, **config)``."""

    def deco(cls: type) -> type:
        if name in _REGISTRY:
            raise RuntimeError(f"restorer {name!r} registered twice")
        _REGISTRY[name] = (cls, config_cls)
        cls.name = name  # type: ignore[attr-defined]
        cls.config_cls = config_cls  # type: ignore[attr-defined]
        return cls

    return deco


#: The paper's table order (Table 2); restorers registered by others follow in their order.
TABLE_ORDER = (
    "input",
    "richardson-lucy",
    "wiener",
    "bm3d",
    "n2v",
    "n2n",
    "mrn",
    "mae-imagenet",
    "mae-sem",
)


def list_restorers() -> list[str]:
    """Names of every registered restorer, in the paper's table order (identity first)."""
    known = [n for n in TABLE_ORDER if n in _REGISTRY]
    return known + [n for n in _REGISTRY if n not in TABLE_ORDER]


def restorer_config(name: str, **config: Any) -> BaseModel:
    """Validate ``config`` against the typed config of restorer ``name``."""
    if name not in _REGISTRY:
        raise RestorerConfigError(f"unknown restorer {name!r}; available: {', '.join(_REGISTRY)}")
    config_cls = _REGISTRY[name][1]
    try:
        return config_cls(**config)
    except ValidationError as err:
        raise RestorerConfigError(f"invalid config for restorer {name!r}: {err}") from None


def get_restorer(name: str, **config: Any) -> Any:
    """Build restorer ``name`` from keyword config (validated; unknown keys are rejected).

    Examples
    --------
    >>> r = get_restorer("wiener", balance=0.01)
    >>> r.config.balance
    0.01
    """
    cfg = restorer_config(name, **config)
    return _REGISTRY[name][0](cfg)


def load_restorer(path: str | Path) -> Any:
    """Rebuild a saved learned restorer from its folder (``config.json`` + weights)."""
    path = Path(path)
    cfg_file = path / CONFIG_FILE
    if not cfg_file.is_file():
        raise FileNotFoundError(f"{cfg_file} not found: not a saved restorer folder")
    meta = json.loads(cfg_file.read_text())
    if not isinstance(meta, dict) or "restorer" not in meta:
        raise RestorerConfigError(f"{cfg_file} has no 'restorer' field")
    name = meta["restorer"]
    cls: Any = _REGISTRY[name][0] if name in _REGISTRY else None
    if hasattr(cls, "from_saved"):  # restorers built from external weights: skip the source
        return cls.from_saved(path, restorer_config(name, **meta.get("config", {})))
    return get_restorer(name, **meta.get("config", {})).load(path)


def check_image(image: np.ndarray, name: str = "image") -> np.ndarray:
    """Return ``image`` as C-contiguous float32 (H, W) or raise a ValueError saying why not."""
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D grayscale array (H, W), got shape {arr.shape}")
    if arr.size == 0 or min(arr.shape) < 1:
        raise ValueError(f"{name} is empty, shape {arr.shape}")
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise ValueError(f"{name} must be real numeric, got dtype {arr.dtype}")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or inf values")
    return arr
