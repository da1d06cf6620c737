"""Building any registered restorer for user images: its PSF or its checkpoint.

What a method needs is read from its typed config in the ``sem_baselines`` registry, never
from its name:

* a ``psf`` field: a classical deconvolution; it gets the given or blind-estimated PSF;
* a ``checkpoint_dir`` field: a sem-models restoration checkpoint (a ``sem train`` run folder,
  resolved to its best export, or an export folder, or its ``model.safetensors``);
* a ``weights_path`` field: one local weights file;
* a learned config (saved as ``config.json`` + ``model.safetensors``): a saved restorer
  folder, a ``sem train baseline`` run folder (its ``model/``), or the weights file in it;
* anything else (the defocused input, BM3D): no PSF, no checkpoint.

Both folder loaders read ``model.safetensors`` beside ``config.json`` and no other file: any
other file given as the checkpoint is refused, never replaced by the folder holding it.
"""

from __future__ import annotations

import json
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ValidationError
from sem_physics.cli_support import validation_message

__all__ = [
    "CheckpointMismatchError",
    "MethodNeeds",
    "build_restorer",
    "check_checkpoint_exists",
    "check_method_name",
    "check_options",
    "load_checkpoint",
    "method_needs",
    "missing_weights_message",
    "model_export_dir",
    "reads_guides",
    "weights_file",
]

CheckpointKind = Literal["none", "restorer", "checkpoint_dir", "weights_path"]
_CONFIG = "config.json"
_WEIGHTS = "model.safetensors"
_RUN_MODEL_DIR = "model"  # where ``sem train baseline`` saves the restorer in its run folder


class CheckpointMismatchError(ValueError):
    """A checkpoint that is missing, of another kind, or of another shape than the method."""


@dataclass(frozen=True)
class MethodNeeds:
    """What building registered method ``name`` requires."""

    name: str
    config_cls: type[BaseModel]
    takes_psf: bool
    checkpoint: CheckpointKind
    true_psf: bool = False  # an evaluation's reference row: needs each image's true PSF

    @property
    def learned(self) -> bool:
        return self.checkpoint != "none"


def check_method_name(name: str) -> None:
    """A ValueError listing every registered method when ``name`` is none of them (without
    importing any method's code)."""
    from sem_baselines import unknown_restorers

    problem = unknown_restorers([name], noun="method")
    if problem:
        raise ValueError(problem)


def method_needs(name: str) -> MethodNeeds:
    """Inspect the registered config of ``name``; unknown names raise a ValueError listing all."""
    from sem_baselines import registry_entry, restorer_config

    check_method_name(name)
    cls = type(restorer_config(name))
    fields = cls.model_fields
    entry = registry_entry(name)
    kind: CheckpointKind = "none"
    if "checkpoint_dir" in fields:
        kind = "checkpoint_dir"
    elif "weights_path" in fields:
        kind = "weights_path"
    elif entry.fitting == "fit":  # trained by fit(), saved with save()
        kind = "restorer"
    return MethodNeeds(
        name=name,
        config_cls=cls,
        takes_psf="psf" in fields,
        checkpoint=kind,
        true_psf=entry.psf_from_case,
    )


def check_options(needs: MethodNeeds, options: dict[str, Any]) -> BaseModel:
    """Validate ``options`` against the method's config; one-line ValueError naming the field
    (an unknown one with the settings the method accepts there)."""
    try:
        return needs.config_cls(**options)
    except ValidationError as err:  # "method 'wiener', setting balance must be in (0, 1e6], got -1"
        unknown = [e["loc"] for e in err.errors() if e.get("type") == "extra_forbidden"]
        if unknown:
            loc = tuple(map(str, unknown[0]))
            accepted = ", ".join(_accepted_settings(needs, loc[:-1]))
            raise ValueError(
                f"method {needs.name!r}, setting {'.'.join(loc)}: not a setting of this "
                f"method (accepted: {accepted})"
            ) from None
        message = validation_message(err, needs.config_cls)
        raise ValueError(f"method {needs.name!r}, setting {message}") from None


def _accepted_settings(needs: MethodNeeds, group: tuple[str, ...]) -> list[str]:
    """The field names of the method's config (of its nested settings ``group``), sorted; the
    PSF is given with ``--psf``, not as a setting."""
    model = needs.config_cls
    for name in group:
        field = model.model_fields.get(name)
        inner = _model_of(field.annotation) if field is not None else None
        if inner is None:
            return []
        model = inner
    names = sorted(model.model_fields)
    return [n for n in names if not (not group and needs.takes_psf and n == "psf")]


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model in a field's annotation (``Model`` or ``Model | None``)."""
    for cand in (annotation, *typing.get_args(annotation)):
        if isinstance(cand, type) and issubclass(cand, BaseModel):
            return cand
    return None


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


def _weights_folder(path: Path, given: str, accepted: str) -> Path:
    """The folder the loaders read for ``path``: ``path`` itself, or for a file the folder it
    is the ``model.safetensors`` of (beside a ``config.json``); any other file is refused with
    :class:`CheckpointMismatchError` (``given``: how the path was given; ``accepted``: what
    the option takes), as the loaders would read another file than the one named."""
    if not path.is_file():
        return path
    if path.name == _WEIGHTS and (path.parent / _CONFIG).is_file():
        return path.parent
    if path.name == _WEIGHTS:
        why = f"no {_CONFIG} beside it"
    else:
        why = f"not {_WEIGHTS}: a model is read from the {_CONFIG} and {_WEIGHTS} of its folder"
    raise CheckpointMismatchError(f"{given}: {why}; {accepted}")


def _saved_restorer_dir(path: Path) -> Path:
    """The saved-restorer folder behind ``path`` (folder, run folder or weights file)."""
    folder = _weights_folder(
        path,
        f"--checkpoint {path}",
        f"--checkpoint takes a 'sem train baseline' run folder, a saved restorer folder "
        f"({_CONFIG} + {_WEIGHTS}) or its {_WEIGHTS}",
    )
    for cand in (folder, folder / _RUN_MODEL_DIR):
        cfg = cand / _CONFIG
        if cfg.is_file():
            try:
                meta = json.loads(cfg.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if isinstance(meta, dict) and "restorer" in meta:
                return cand
    raise CheckpointMismatchError(
        f"--checkpoint {path}: no saved restorer there (expected a 'sem train baseline' run "
        f"folder, a folder with {_CONFIG} naming the restorer and {_WEIGHTS}, or that "
        "weights file)"
    )


def model_export_dir(path: Path, what: str = "--checkpoint") -> Path:
    """The sem-models export behind ``path`` (run folder, export folder or its weights file);
    :class:`CheckpointMismatchError` when there is none (paths only: no torch)."""
    from ..runfolder import resolve_model_dir

    folders = f"a 'sem train' run folder or an export folder ({_CONFIG} + {_WEIGHTS})"
    if what == "--checkpoint":  # a config's checkpoint_dir setting takes only the folder
        folders = (
            f"a 'sem train' run folder, an export folder ({_CONFIG} + {_WEIGHTS}) or its {_WEIGHTS}"
        )
    path = _weights_folder(path, f"{what}={path}", f"{what} takes {folders}")
    try:
        return resolve_model_dir(path, what=what)
    except FileNotFoundError as err:
        raise CheckpointMismatchError(str(err)) from None


def check_checkpoint_exists(checkpoint: str | Path, *, setting: str | None = None) -> Path:
    """``checkpoint`` as a path; :class:`CheckpointMismatchError` when nothing is there (a
    command checks this before it imports the method's model code)."""
    path = Path(checkpoint)
    if not path.exists():
        given = f"{setting}={path}" if setting else f"--checkpoint {path}"
        raise CheckpointMismatchError(f"{given} does not exist")
    return path


def missing_weights_message(needs: MethodNeeds) -> str:
    """What a learned method without weights says: what it loads and how to give it.

    A ``weights_path`` method names its file as its config field describes it (e.g. the
    ImageNet MAE weights of ``mae-imagenet``) and both ways to give it; the folder kinds name
    the run and export folders they read."""
    name = needs.name
    if needs.checkpoint == "weights_path":
        field = needs.config_cls.model_fields["weights_path"]
        what = field.description or "a local weights file"
        return (
            f"method {name!r} needs its weights, given as --checkpoint FILE or "
            f"--set weights_path=FILE: {what}"
        )
    if needs.checkpoint == "restorer":
        return (
            f"method {name!r} needs --checkpoint: a 'sem train baseline' run folder, a saved "
            f"restorer folder ({_CONFIG} + {_WEIGHTS}) or its {_WEIGHTS}"
        )
    return (
        f"method {name!r} needs --checkpoint: a 'sem train' run folder, an export folder "
        f"({_CONFIG} + {_WEIGHTS}) or its {_WEIGHTS}"
    )


def load_checkpoint(
    needs: MethodNeeds, checkpoint: str | Path | None, *, setting: str | None = None
) -> dict[str, Any]:
    """Config entries pointing the method at its weights (empty for a saved restorer).

    ``setting`` names where the path was given (e.g. ``--set mae-sem.checkpoint_dir``): its
    errors then read ``SETTING=PATH ...`` instead of ``--checkpoint PATH ...``.
    """
    if needs.checkpoint == "none":
        if checkpoint is not None:
            raise ValueError(f"method {needs.name!r} takes no --checkpoint (it has no weights)")
        return {}
    if checkpoint is None:
        from sem_baselines.checkpoint_kinds import shipped_default

        if shipped_default(needs.name) is not None:  # the model shipped with the toolkit
            return {}
        raise ValueError(missing_weights_message(needs))
    path = check_checkpoint_exists(checkpoint, setting=setting)
    given = f"{setting}={path}" if setting else f"--checkpoint {path}"
    if needs.checkpoint == "checkpoint_dir":
        return {"checkpoint_dir": str(model_export_dir(path, setting or "--checkpoint"))}
    if needs.checkpoint == "weights_path":
        if not path.is_file():
            raise CheckpointMismatchError(f"{given}: {needs.name} needs a weights file")
        return {"weights_path": str(path)}
    return {}


def reads_guides(
    needs: MethodNeeds, options: dict[str, Any], checkpoint: str | Path | None
) -> bool | None:
    """Whether the model ``needs.name`` would load reads physics guides (deconvolutions made
    with a PSF), from its export's ``config.json`` alone (no torch, no weights): False for
    methods without a sem-models export, None when the export cannot be read here (loading it
    then says why)."""
    if needs.checkpoint != "checkpoint_dir":
        return False
    folder = checkpoint if checkpoint is not None else options.get("checkpoint_dir")
    try:
        if folder is None:
            from sem_baselines.checkpoint_kinds import shipped_default
            from sem_models.pretrained import shipped_model_dir

            name = shipped_default(needs.name)
            if name is None:
                return None
            folder = shipped_model_dir(name)
        from sem_models.checkpoint import best_export, read_export_meta

        meta = read_export_meta(best_export(model_export_dir(Path(folder))))
    except Exception:  # missing or malformed: the load reports it with its own message
        return None
    return bool(meta.get("guide_balances"))


def _apply_options(restorer: Any, options: dict[str, Any], source: Path) -> None:
    """Inference settings (tile size, device, ...) on a restorer loaded from ``source``."""
    if not options:
        return
    cfg = restorer.config
    merged = type(cfg)(**{**cfg.model_dump(), **options})
    for key in options:
        if isinstance(getattr(cfg, key), BaseModel) and getattr(cfg, key) != getattr(merged, key):
            raise ValueError(f"--set {key}: the architecture is fixed by the checkpoint {source}")
    restorer.config = merged
    if "device" in options and hasattr(restorer, "network"):
        from sem_baselines.learned.base import resolve_device

        restorer.network.to(resolve_device(merged.device))


def weights_file(
    needs: MethodNeeds, options: dict[str, Any], checkpoint: str | Path | None
) -> Path | None:
    """The weights file the method loads (``--checkpoint`` resolved, else the shipped model);
    None for a method without weights or when it cannot be told from the paths."""
    from sem_models.checkpoint import WEIGHTS_NAME, best_export

    if needs.checkpoint == "none":
        return None
    try:
        if needs.checkpoint == "weights_path":
            given = checkpoint if checkpoint is not None else options.get("weights_path")
            return None if given is None else Path(given)
        if needs.checkpoint == "restorer":
            if checkpoint is None:
                return None
            folder = _saved_restorer_dir(Path(checkpoint))
        else:
            given = checkpoint if checkpoint is not None else options.get("checkpoint_dir")
            if given is None:
                from sem_baselines.checkpoint_kinds import shipped_default
                from sem_models.pretrained import shipped_model_dir

                name = shipped_default(needs.name)
                if name is None:
                    return None
                given = shipped_model_dir(name)
            folder = best_export(model_export_dir(Path(given)))
    except Exception:  # the load itself says what is wrong with a path
        return None
    return folder / WEIGHTS_NAME if (folder / WEIGHTS_NAME).is_file() else None


def build_restorer(
    needs: MethodNeeds, options: dict[str, Any], checkpoint: str | Path | None = None
) -> Any:
    """The restorer of ``needs.name`` with ``options`` and its weights from ``checkpoint``.

    Option errors are ValueErrors naming the field; a checkpoint that cannot be loaded as this
    method raises :class:`CheckpointMismatchError` with one line saying why.
    """
    from sem_baselines import get_restorer
    from sem_models.checkpoint import NonFiniteWeightsError

    paths = load_checkpoint(needs, checkpoint)
    clash = sorted(set(paths) & set(options))
    if clash:
        raise ValueError(f"--set {clash[0]} conflicts with --checkpoint; give only one")
    check_options(needs, {**options, **paths})  # option errors first, naming the field
    if needs.checkpoint == "none" or checkpoint is None:  # no weights, or the shipped model
        return get_restorer(needs.name, **options)
    source = Path(checkpoint)
    try:
        if needs.checkpoint == "restorer":
            folder = _saved_restorer_dir(source)
            device = {"device": options["device"]} if "device" in options else {}
            restorer = get_restorer(needs.name, **device).load(folder)
        else:
            restorer = get_restorer(needs.name, **options, **paths)
    except CheckpointMismatchError:
        raise
    except NonFiniteWeightsError as err:  # the right kind of file, its weights unusable
        raise CheckpointMismatchError(f"--checkpoint {source}: {err}") from err
    except Exception as err:  # torch, safetensors and json raise many types for a wrong file
        raise CheckpointMismatchError(
            f"--checkpoint {source}: cannot load it as method {needs.name!r}: {_first_line(err)}"
        ) from err
    if needs.checkpoint == "restorer":
        _apply_options(restorer, options, source)
    return restorer
