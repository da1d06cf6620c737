"""The ``Restorer`` contract and the registry that lists every baseline by name.

Every method takes a float32 grayscale image ``(H, W)`` on the 0..255 scale, of any size, and
returns a float32 image of the same shape and scale. Learned methods also ``fit``, ``save`` and
``load``; everything they store is JSON (the config) plus safetensors (the weights), never a
pickle.

The registry is the single source of truth about a method, including how it is fitted
(:data:`Fitting`):

* ``"none"``: fixed parameters, or a model used as it is loaded;
* ``"fit"``: ``restorer.fit(train_images, val_images=..., options=FitOptions(...))``;
* ``"pretrained"``: the restorer loads a model from the config field named by
  ``checkpoint_field``; a caller with a training pipeline fills that field when it is empty;
* ``"finetune"``: the restorer is built from its checkpoint or weights, then a caller with a
  training pipeline fine-tunes its ``network`` (a :class:`sem_models.RestorationModel`) on the
  protocol's training images with the paper's fine-tuning protocol and hands the result back
  through ``restorer.load_network(folder, **config)``. With ``finetune_field`` (a boolean
  config field) the fine-tune happens only when that field is true
  (:meth:`RegistryEntry.fine_tunes`).

``checkpoint_field`` names the config field holding the method's weights source (required for
``"pretrained"``, allowed for any method that loads weights). Callers dispatch on
:func:`registry_entry`, never on a name. A restorer may carry ``notes`` (a list of strings):
facts about the model it loaded that an evaluation report should show.

Other packages add methods through the ``sem_baselines.restorers`` entry points
(:mod:`sem_baselines.plugins`), loaded once, when the registry is first asked for a name it
does not know or for the full list; a name is never registered twice, and a built-in's name
belongs to its built-in module.
"""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sem_physics import ParameterRanges
from sem_physics.cli_support import validation_message
from sem_physics.fields import NoBoolNumbers
from sem_physics.validation import (
    MAX_GREY,
    is_real_numeric,
    refuse_sem_image,
    scale_hint,
    warn_if_unit_scale,
)

__all__ = [
    "BUILTIN_MODULES",
    "CONFIG_FILE",
    "TRAINABLE_BUILTINS",
    "FitOptions",
    "Fitting",
    "LearnedRestorer",
    "RegistryEntry",
    "Restorer",
    "RestorerConfigError",
    "check_image",
    "declared_trainable",
    "get_restorer",
    "list_restorers",
    "load_restorer",
    "register",
    "registry_entry",
    "restorer_config",
    "unknown_restorers",
]

CONFIG_FILE = "config.json"


class RestorerConfigError(ValueError):
    """A restorer name or configuration that the registry cannot accept."""


@runtime_checkable
class Restorer(Protocol):
    """Maps a degraded image to a restored one: float32 (H, W), 0..255, same shape."""

    name: str

    def restore(self, image: np.ndarray) -> np.ndarray: ...


#: How a registered method gets its parameters (see the module docstring).
Fitting = Literal["none", "fit", "pretrained", "finetune"]


class FitOptions(NoBoolNumbers):
    """The training budget a caller gives every learned method's ``fit`` (typed, validated).

    A method's own fit keywords (patch size, learning rate, ...) stay in its ``fit`` signature;
    these are the ones an evaluation sets for all methods alike.
    """

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(default=1, ge=1, le=100_000, description="training epochs")
    batch_size: int | None = Field(
        default=None, ge=1, le=65_536, description="None = method default"
    )
    steps_per_epoch: int | None = Field(
        default=None, ge=1, le=10_000_000, description="None = one pass over the training pixels"
    )
    seed: int = Field(default=0, ge=0, description="seed of patches, degradations and masks")
    ranges: ParameterRanges = Field(
        default_factory=ParameterRanges, description="degradation ranges of the synthetic pairs"
    )
    progress: bool = Field(default=True, description="show a progress bar")

    def keywords(self) -> dict[str, Any]:
        """The options as ``fit`` keywords, leaving out the ones left to the method (None)."""
        return {
            k: getattr(self, k) for k in type(self).model_fields if getattr(self, k) is not None
        }


@runtime_checkable
class LearnedRestorer(Restorer, Protocol):
    """A restorer with weights: trained by ``fit``, persisted by ``save``/``load``."""

    def fit(
        self,
        train_images: list[np.ndarray],
        val_images: list[np.ndarray] | None = None,
        options: FitOptions | None = None,
        **kwargs: Any,
    ) -> Any: ...

    def save(self, path: str | Path) -> Path: ...

    def load(self, path: str | Path) -> LearnedRestorer: ...


@dataclass(frozen=True)
class RegistryEntry:
    """One registered method: its class, its typed config and how it is fitted."""

    name: str
    cls: type
    config_cls: type[BaseModel]
    fitting: Fitting
    checkpoint_field: str | None = None
    psf_from_case: bool = False  # an oracle row: each input is restored with its true PSF
    finetune_field: str | None = None  # "finetune" only when this boolean setting is true

    def fine_tunes(self, config: BaseModel) -> bool:
        """Whether a "finetune" method with validated ``config`` is fine-tuned by the caller."""
        if self.fitting != "finetune":
            return False
        return self.finetune_field is None or bool(getattr(config, self.finetune_field))


_REGISTRY: dict[str, RegistryEntry] = {}

#: Whether the installed plugins have been loaded (:func:`_load_plugins`).
_plugins_loaded = False

#: The module that registers each built-in method, in the paper's table order (Table 2;
#: restorers registered by others follow in their order). Each is imported on the method's
#: first use: a command that restores with Wiener loads neither torch nor timm nor bm3d.
BUILTIN_MODULES: dict[str, str] = {
    "input": "sem_baselines.identity",
    "richardson-lucy": "sem_baselines.classical.richardson_lucy",
    "wiener": "sem_baselines.classical.wiener",
    "bm3d": "sem_baselines.classical.bm3d",
    "n2v": "sem_baselines.learned.noise2void",
    "n2n": "sem_baselines.learned.noise2noise",
    "mrn": "sem_baselines.learned.mrn",
    "mae-imagenet": "sem_baselines.mae",
    "mae-sem": "sem_baselines.mae",  # the paper's ablation: SEM-pretrained, no MoE
    "sem-foundation-zero-shot": "sem_baselines.foundation",  # the paper's "ours zero-shot"
    "sem-foundation": "sem_baselines.foundation",  # the paper's "ours few-shot"
    # reference rows: the classical methods given the true PSF
    "richardson-lucy-true-psf": "sem_baselines.classical.richardson_lucy",
    "wiener-true-psf": "sem_baselines.classical.wiener",
}
TABLE_ORDER = tuple(BUILTIN_MODULES)

#: The built-in methods a training loop can drive (what
#: :func:`sem_baselines.trainable_restorers` finds once it has imported every method: fitted by
#: ``fit``, with ``make_batch`` and ``training_loss``), declared here so that a command can
#: check a method's name before it imports any (torch); a test keeps the two equal.
TRAINABLE_BUILTINS: frozenset[str] = frozenset({"n2v", "n2n", "mrn"})


def _load_plugins() -> None:
    """Register the methods of the installed plugins, once per process (reading every
    installed distribution's metadata waits until a name is not a built-in)."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True  # first: a plugin that lists the restorers must not recurse
    from .plugins import load_plugins

    load_plugins(_REGISTRY)


def _known(name: Any) -> bool:
    """Whether ``name`` is a built-in or registered method (looks for no plugin)."""
    return isinstance(name, str) and (name in _REGISTRY or name in BUILTIN_MODULES)


def _entry(name: str) -> RegistryEntry | None:
    """The entry of ``name``, importing its built-in module or the installed plugins on first
    use; None if unknown."""
    if name not in _REGISTRY:
        if name in BUILTIN_MODULES:
            importlib.import_module(BUILTIN_MODULES[name])
        else:
            _load_plugins()
    return _REGISTRY.get(name)


def _owner(name: str) -> str | None:
    """Who holds ``name`` already (a class, or a built-in's module), else None."""
    if name in _REGISTRY:
        cls = _REGISTRY[name].cls
        return f"{cls.__module__}.{cls.__qualname__}"
    if name in BUILTIN_MODULES:
        return f"the built-in method of {BUILTIN_MODULES[name]}"
    return None


def register(
    name: str,
    config_cls: type[BaseModel],
    *,
    fitting: Fitting | None = None,
    checkpoint_field: str | None = None,
    psf_from_case: bool = False,
    finetune_field: str | None = None,
) -> Callable[[type], type]:
    """Class decorator: make ``cls(config)`` available as ``get_restorer(name, **config)``.

    ``fitting`` defaults to ``"fit"`` for a class with a ``fit`` method, else ``"none"``;
    ``"pretrained"`` needs ``checkpoint_field``, a field of ``config_cls``; ``"finetune"``
    needs a class with ``network`` and ``load_network`` and takes an optional
    ``finetune_field`` (a boolean config field switching the fine-tune on). With
    ``psf_from_case`` an evaluation builds the restorer per input with that input's true PSF
    (config field ``psf``): a reference row showing what a blind PSF estimate costs.
    """

    def deco(cls: type) -> type:
        taken_by = _owner(name)
        builtin_home = name not in _REGISTRY and BUILTIN_MODULES.get(name) == cls.__module__
        if taken_by is not None and not builtin_home:
            raise RuntimeError(
                f"restorer {name!r} of {cls.__module__}.{cls.__qualname__} refused: the name is "
                f"taken by {taken_by}; register it under another name"
            )
        how: Fitting = fitting or ("fit" if callable(getattr(cls, "fit", None)) else "none")
        fields = config_cls.model_fields
        if how == "pretrained" and checkpoint_field is None:
            raise RuntimeError(f"restorer {name!r}: fitting='pretrained' needs checkpoint_field")
        if checkpoint_field is not None and checkpoint_field not in fields:
            raise RuntimeError(f"restorer {name!r}: {checkpoint_field!r} is not a config field")
        if how == "finetune" and not callable(getattr(cls, "load_network", None)):
            raise RuntimeError(f"restorer {name!r}: fitting='finetune' needs load_network()")
        if finetune_field is not None and (
            how != "finetune"
            or finetune_field not in fields
            or fields[finetune_field].annotation is not bool
        ):
            raise RuntimeError(
                f"restorer {name!r}: finetune_field must name a bool config field of a "
                "fitting='finetune' method"
            )
        if psf_from_case and "psf" not in fields:
            raise RuntimeError(f"restorer {name!r}: psf_from_case needs a 'psf' config field")
        _REGISTRY[name] = RegistryEntry(
            name, cls, config_cls, how, checkpoint_field, psf_from_case, finetune_field
        )
        cls.name = name  # type: ignore[attr-defined]
        cls.config_cls = config_cls  # type: ignore[attr-defined]
        return cls

    return deco


def registry_entry(name: str) -> RegistryEntry:
    """The registry entry of ``name``; RestorerConfigError listing the names when unknown."""
    entry = _entry(name) if isinstance(name, str) else None
    if entry is None:
        raise RestorerConfigError(unknown_restorers([name]) or f"unknown restorer {name!r}")
    return entry


def unknown_restorers(
    names: Iterable[Any], *, noun: str = "restorer", where: str = ""
) -> str | None:
    """``"unknown restorers 'x', 'y' in WHERE; available: ..."`` for those of ``names`` that
    are not registered (each once, in order); None when every one is. The one wording of the
    registry's, ``sem restore``'s and the benchmark's unknown-name errors (``noun``: what the
    caller calls them). Names that are all built-in or registered look for no plugin."""
    names = list(names)
    if all(_known(n) for n in names):
        return None
    registered = list_restorers()
    unknown = list(dict.fromkeys(n for n in names if n not in registered))
    if not unknown:
        return None
    plural = "s" if len(unknown) > 1 else ""
    place = f" in {where}" if where else ""
    listed = ", ".join(map(repr, unknown))
    return f"unknown {noun}{plural} {listed}{place}; available: {', '.join(registered)}"


def list_restorers() -> list[str]:
    """Names of every restorer: the built-ins in the paper's table order (identity first),
    then the registered ones, the installed plugins' included (which this loads; it imports
    no built-in method)."""
    _load_plugins()
    names = dict.fromkeys([*BUILTIN_MODULES, *_REGISTRY])
    return [n for n in TABLE_ORDER if n in names] + [n for n in names if n not in TABLE_ORDER]


def declared_trainable() -> list[str]:
    """The methods that may be trainable, known without importing any, in table order: the
    built-ins of :data:`TRAINABLE_BUILTINS`, then the methods registered by others, plugins
    included (whether those train, :func:`sem_baselines.trainable_restorers` tells). A name
    missing here is not trainable; with only the built-ins registered the list is
    ``trainable_restorers()``."""
    return [n for n in list_restorers() if n in TRAINABLE_BUILTINS or n not in BUILTIN_MODULES]


def restorer_config(name: str, **config: Any) -> BaseModel:
    """Validate ``config`` against the typed config of restorer ``name``; RestorerConfigError
    naming each bad setting and, for a number, its accepted range (``balance must be a number
    in (0, 1e6], got True``)."""
    config_cls = registry_entry(name).config_cls
    try:
        return config_cls(**config)
    except ValidationError as err:
        reason = validation_message(err, config_cls)
        raise RestorerConfigError(f"invalid config for restorer {name!r}: {reason}") from None


def get_restorer(name: str, **config: Any) -> Any:
    """Build restorer ``name`` from keyword config (validated; unknown keys are rejected).

    Examples
    --------
    >>> r = get_restorer("wiener", balance=0.01)
    >>> r.config.balance
    0.01
    """
    cfg = restorer_config(name, **config)
    return registry_entry(name).cls(cfg)


def load_restorer(path: str | Path, device: str | None = None) -> Any:
    """Rebuild a saved learned restorer from its folder (``config.json`` + weights), on
    ``device`` (default: CUDA where present, else the CPU; not the device it was saved from)."""
    path = Path(path)
    cfg_file = path / CONFIG_FILE
    if not cfg_file.is_file():
        raise FileNotFoundError(f"{cfg_file} not found: not a saved restorer folder")
    try:
        meta = json.loads(cfg_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise RestorerConfigError(f"{cfg_file}: not valid JSON ({err})") from None
    if not isinstance(meta, dict) or "restorer" not in meta:
        raise RestorerConfigError(f"{cfg_file} has no 'restorer' field")
    if not isinstance(meta.get("config", {}), dict):
        raise RestorerConfigError(f"{cfg_file}: 'config' must be a mapping of settings")
    name = meta["restorer"]
    entry = _entry(name) if isinstance(name, str) else None
    cls: Any = entry.cls if entry is not None else None
    if cls is not None and not hasattr(cls, "from_saved") and not hasattr(cls, "load"):
        raise RestorerConfigError(f"{cfg_file}: restorer {name!r} has no saved weights to load")
    # the device the saving run used is not this machine's: None picks CUDA where present
    config = {**meta.get("config", {}), "device": device}
    if hasattr(cls, "from_saved"):  # restorers built from external weights: skip the source
        return cls.from_saved(path, restorer_config(name, **config))
    return get_restorer(name, **config).load(path)


#: Modules whose frames a warning of :func:`check_image` passes over to reach its user: this
#: package's and torch's (``torch.no_grad`` wraps a ``restore`` in a frame of its own).
_LIBRARY_MODULES = ("sem_baselines", "torch")


def _user_stacklevel() -> int:
    """The ``stacklevel`` that makes a warning issued by a function :func:`check_image` calls
    name the first line outside :data:`_LIBRARY_MODULES` (``restorer.restore(img)`` or
    ``restorer.fit(images)`` in the user's code, however deep the method's own calls go);
    the caller of ``check_image`` when every frame is the library's."""
    frame: FrameType | None = sys._getframe(2)  # the caller of check_image
    level = 3  # that frame, seen from the function check_image calls
    while frame is not None:
        module = str(frame.f_globals.get("__name__", ""))
        if module.partition(".")[0] not in _LIBRARY_MODULES:
            return level
        frame, level = frame.f_back, level + 1
    return 3


def check_image(image: np.ndarray, name: str = "image") -> np.ndarray:
    """Return ``image`` as C-contiguous float32 (H, W) on the 0..255 grey scale, or raise a
    ValueError saying why not. A 0..1 image (a likely scale slip) gets a warning that names
    the user's line calling the library (``restorer.restore(img)``), not the library's."""
    refuse_sem_image(image, name)
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D grayscale array (H, W), got shape {arr.shape}")
    if arr.size == 0 or min(arr.shape) < 1:
        raise ValueError(f"{name} is empty, shape {arr.shape}")
    if not is_real_numeric(arr):
        raise ValueError(f"{name} must be real numeric, got dtype {arr.dtype}")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or inf values")
    peak = float(arr.max())
    if peak > MAX_GREY:
        raise ValueError(
            f"{name} reaches {peak:g}, beyond the 0..255 grey scale the restorers work on "
            f"({scale_hint(peak)})"
        )
    below = np.count_nonzero(arr < 0) / arr.size  # (a median would sort a 16-Mpx frame)
    if below > 0.5:  # a deconvolution would return zeros, the models clipped garbage
        raise ValueError(
            f"more than half of {name} is below 0 ({below:.0%} of the pixels, minimum "
            f"{float(arr.min()):g}): an inverted image or one with a negative pedestal, not "
            "0..255 grey levels (add the offset back)"
        )
    warn_if_unit_scale(arr, name, stacklevel=_user_stacklevel())  # restorers return 0..255
    return arr
