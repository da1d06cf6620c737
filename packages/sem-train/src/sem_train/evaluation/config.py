"""The one evaluation config: ``sem benchmark`` reads it from a file, ``sem demo`` is a preset.

Example (YAML; every key is a :class:`BenchmarkConfig` field)::

    protocol: s2s                 # or s2r (with defocused: and focused: folders)
    images: /data/sem_focused     # pool: n_train + n_val training images, up to n_eval evaluated
    # train_images: /data/other   # or: evaluate every `images` file, train on these instead
    out: runs/bench-s2s
    n_train: 10
    n_val: 2
    n_eval: 100
    seed: 0
    pixel_size_nm: 0.827          # metrology; else read from each file
    epochs: 500                   # every learned baseline (the paper's MRN count)
    methods: [input, richardson-lucy, wiener, bm3d, n2v, n2n, mrn, mae-imagenet, mae-sem]
    method_config:
      mae-imagenet: {weights_path: /weights/mae_pretrain_vit_large.pth}
      mae-sem: {checkpoint_dir: runs/ft/checkpoints/best-00001000}

then ``sem benchmark --config bench.yaml`` (rerun the same command to resume). Without
``images`` an S→S run uses the project's generated sample images (``generated``). Method names
(``methods``, ``exclude``, ``method_config`` keys and settings), metric names and every
checkpoint or weights file a method to run names (``checkpoint_dir``, ``weights_path``) are
checked when the config is made, before any work, and so is the kind of a given sem-models
export (a pretrained MAE given to ``sem-foundation`` without ``finetune_here``, a fine-tuned
model given to ``sem-foundation-zero-shot``, an MoE model given to ``mae-sem``: read from its
``config.json``); an unset one means "trained here" (or the model shipped with the toolkit).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError
from sem_physics import ParameterRanges
from sem_physics.cli_support import validation_message
from sem_physics.io import DEFAULT_CROP_FRACTION
from sem_physics.samples import SAMPLE_KINDS, SampleKind

from ..config import SEED_MAX, read_config_file, safe_yaml_loader
from ..yaml_strict import duplicate_key
from .methods import check_method_config, select_methods
from .protocols import SETTINGS
from .quality import QUALITY_METRICS, check_metrics
from .sources import check_output_folder
from .weights import check_checkpoint_kind

__all__ = [
    "BenchmarkConfig",
    "FoundationConfig",
    "GeneratedImages",
    "check_method_names",
    "check_method_settings",
    "check_weights",
    "demo_config",
    "load_benchmark_config",
    "make_config",
    "parse_method_settings",
]

Setting = Literal["random", "midpoint"]


class _NumbersNotBool(BaseModel):
    """A config whose number fields refuse ``true``/``false``: pydantic takes them as 1 and 0,
    so ``seed: true`` ran seed 1 and ``crop_fraction: false`` cropped nothing, silently."""

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool(cls, value: Any, info: ValidationInfo) -> Any:
        if not isinstance(value, bool) or info.field_name is None:
            return value
        annotation = cls.model_fields[info.field_name].annotation
        kinds = get_args(annotation) or (annotation,)
        if bool in kinds or not ({int, float} & set(kinds)):
            return value
        kind = "int_type" if int in kinds else "float_type"
        raise PydanticCustomError(kind, "Input should be a number, not true/false")


class FoundationConfig(_NumbersNotBool):
    """Size and budget of a model pretrained during an evaluation (``pretrain_epochs``,
    ``preset``) and the fine-tuning budget of every method fine-tuned there (the rest; input
    side ``image_size_px`` is also the restoring window afterwards)."""

    model_config = ConfigDict(extra="forbid")

    image_size_px: int = Field(
        default=64, ge=16, le=1024, description="model input side (px) = window"
    )
    preset: str = Field(default="tiny", description="sem-models architecture preset")
    pretrain_epochs: int = Field(default=6, ge=1, le=100_000)
    finetune_epochs: int = Field(default=6, ge=1, le=100_000)
    batch_size: int = Field(default=8, ge=1, le=4096)
    pairs_per_image: int = Field(
        default=16, ge=1, le=10_000, description="fine-tune crops per image"
    )
    val_pairs_per_image: int = Field(
        default=8, ge=1, le=1024, description="fixed degradations per validation image"
    )
    lr: float = Field(default=1e-3, gt=0, le=1.0)
    loss_variant: str = Field(
        default="L1", description="fine-tune loss: 'L1' (Charbonnier) or 'L1+TV' (paper's variants)"
    )


class GeneratedImages(_NumbersNotBool):
    """The generated sample set used when an S→S run has no ``images`` folder."""

    model_config = ConfigDict(extra="forbid")

    n_per_kind: int = Field(default=1, ge=1, le=50, description="evaluation images per kind")
    shape: tuple[int, int] = Field(default=(480, 640), description="image size (rows, cols), px")
    kinds: tuple[SampleKind, ...] = Field(
        default=SAMPLE_KINDS,
        min_length=1,
        description="sample kinds (sem_physics.samples; resist: rounded low-voltage lines)",
    )

    @field_validator("shape")
    @classmethod
    def _big_enough(cls, v: tuple[int, int]) -> tuple[int, int]:
        if min(v) < 64 or max(v) > 8192:
            raise ValueError(f"each side must be in [64, 8192] px, got {v}")
        return v


class BenchmarkConfig(_NumbersNotBool):
    """An evaluation run: protocol, data, methods, their training budget, the report.

    S→S uses ``images`` (focused images: ``n_train`` + ``n_val`` for training and validation,
    up to ``n_eval`` evaluated) or, without it, ``generated`` samples. With ``train_images`` as
    well, every ``images`` file is evaluated and learned methods train on a seeded sample of
    ``n_train`` + ``n_val`` images from ``train_images`` (held-out evaluation images). S→R
    evaluates real ``defocused`` images against ``focused`` ones (paired by sorted order, or
    one reference for all) and trains learned methods on ``train_images``.
    """

    model_config = ConfigDict(extra="forbid")

    title: str = Field(default="Evaluation", description="report title")
    protocol: Literal["s2s", "s2r"] = "s2s"
    out: Path = Path("sem-benchmark")
    images: Path | None = None
    generated: GeneratedImages = Field(default_factory=GeneratedImages)
    defocused: Path | None = None
    focused: Path | None = None
    train_images: Path | None = None
    n_train: int = Field(default=10, ge=0, le=100_000)
    n_val: int = Field(
        default=2, ge=0, le=100_000, description="validation images (model selection)"
    )
    n_eval: int = Field(
        default=100,
        ge=1,
        le=100_000,
        description="most images evaluated (a cap: generated ones number n_per_kind x kinds)",
    )
    shrink_split: bool = Field(
        default=False,
        description="fewer images than n_train + n_val + 1: use fewer (else an error)",
    )
    seed: int = Field(default=0, ge=0, le=SEED_MAX, description="also the trainings' run.seed")
    settings: tuple[Setting, ...] = SETTINGS  # type: ignore[assignment]
    ranges: ParameterRanges = Field(default_factory=ParameterRanges)
    crop_fraction: float = Field(default=DEFAULT_CROP_FRACTION, ge=0, lt=1)
    pixel_size_nm: float | None = Field(
        default=None, ge=1e-3, le=1e6, description="override for metrology (1 pm .. 1 mm per pixel)"
    )
    metrology_convention: Literal["smile", "truth"] = Field(
        default="smile",
        description="line metrology convention: smile (SMILE3, as the paper's Table 4) or "
        "truth (edges at the image's own half-level)",
    )
    methods: list[str] | None = Field(default=None, description="None: every registered method")
    exclude: list[str] = Field(default_factory=list)
    method_config: dict[str, dict[str, Any]] = Field(default_factory=dict)
    epochs: int = Field(
        default=500,
        ge=1,
        le=100_000,
        description="training epochs of every learned baseline (the paper's MRN count, as the "
        "paper preset's baseline runs; N2V and N2N have none of their own)",
    )
    batch_size: int = Field(default=4, ge=1, le=65_536)
    steps_per_epoch: int | None = Field(
        default=None, ge=1, description="None: one pass over the pixels"
    )
    foundation: FoundationConfig = Field(
        default_factory=FoundationConfig,
        description="model trained for a 'pretrained' method without a checkpoint; the "
        "fine-tuning budget of every 'finetune' method",
    )
    quality_metrics: tuple[str, ...] = QUALITY_METRICS
    figure_cases: int | None = Field(
        default=None,
        ge=0,
        description="cases with panels and edge overlays (the first N); None: one per "
        "kind/setting, for a folder of your own images also one the line metrology measured",
    )
    figure_images: tuple[str, ...] | None = Field(
        default=None,
        description="images (file names, with or without extension) whose cases get panels "
        "and edge overlays, every setting; instead of figure_cases",
    )
    strict: bool = Field(default=False, description="an unreadable input file is an error")
    workers: int = Field(
        default=1,
        ge=1,
        le=64,
        description="methods fitted and run at once, each in its own process with "
        "cores / workers torch threads (1: one after the other in this process)",
    )

    @field_validator("quality_metrics")
    @classmethod
    def _metrics(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return check_metrics(v)

    @field_validator("figure_images")
    @classmethod
    def _figure_images(cls, v: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if v is None:
            return None
        names = tuple(dict.fromkeys(str(x).strip() for x in v))
        if not names or any(not x for x in names):
            raise ValueError(
                "give one or more image names (e.g. [ls_0, ch_2.tif]), or leave it out"
            )
        return names

    @field_validator("settings")
    @classmethod
    def _settings(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v:
            raise ValueError(f"give at least one of {', '.join(SETTINGS)}")
        return tuple(dict.fromkeys(v))

    @model_validator(mode="after")
    def _names_and_folders(self) -> BenchmarkConfig:
        if self.figure_images is not None and self.figure_cases is not None:
            raise ValueError("figure_images and figure_cases: give one of them, not both")
        names = select_methods(self.methods, self.exclude)
        check_method_config(self.method_config)
        for name in names:  # the weights a method to run is given: there, and of its kind
            settings = self.method_config.get(name, {})
            check_weights(name, settings, f"method_config.{name}")
            check_checkpoint_kind(name, settings, f"method_config.{name}")
        check_output_folder(
            self.out, [self.images, self.defocused, self.focused, self.train_images]
        )
        return self

    def method_names(self) -> list[str]:
        """The registry names to run, in table order."""
        return select_methods(self.methods, self.exclude)


_, _NoAliasLoader = safe_yaml_loader()


def parse_method_settings(items: list[str] | None) -> dict[str, dict[str, Any]]:
    """``["mae-imagenet.weights_path=/w.pth", ...]`` -> ``{"mae-imagenet": {"weights_path": ...}}``.

    Values are read as YAML scalars (numbers, booleans), otherwise kept as text; an empty value
    (``mae-sem.checkpoint_dir=``) is None, the setting left unset. A setting given twice is
    refused (the last one would win silently).
    """
    out: dict[str, dict[str, Any]] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        method, dot, name = key.partition(".")
        if not (sep and dot and method and name):
            raise ValueError(f"--set {item!r}: expected METHOD.FIELD=VALUE")
        try:
            parsed = yaml.load(value, Loader=_NoAliasLoader) if value else None
        except yaml.YAMLError:
            parsed = value
        given = out.setdefault(method, {})
        if name in given:
            raise ValueError(
                f"--set {method}.{name} is given twice ({given[name]!r}, then {parsed!r}); "
                "give it once"
            )
        given[name] = parsed
    return out


def check_method_names(option: str, names: Sequence[str] | None) -> None:
    """A method list given with ``option`` (``--methods``, ``--exclude``): ValueError naming the
    option and the unknown names, listing the registered ones."""
    from sem_baselines import unknown_restorers

    problem = unknown_restorers(names or [], noun="method")
    if problem:
        raise ValueError(f"{option}: {problem}")


def check_weights(name: str, settings: Mapping[str, Any], where: str) -> None:
    """The checkpoint folder or weights file that ``settings`` of method ``name`` give must be
    one (``sem restore --checkpoint``'s check); unset, the method is trained here or uses the
    shipped model. ``where`` names the settings in the error (``--set mae-sem``)."""
    if not settings:
        return  # nothing given: no path to check (and no method module to import)
    from ..restoration.methods import load_checkpoint, method_needs

    needs = method_needs(name)
    if needs.checkpoint not in ("checkpoint_dir", "weights_path"):
        return  # no weights setting (a method trained here is saved, never given a path)
    given = settings.get(needs.checkpoint)
    if given is None:
        return
    setting = f"{where}.{needs.checkpoint}"
    load_checkpoint(needs, str(given), setting=setting)
    if needs.checkpoint == "checkpoint_dir" and Path(given).is_file():
        # the restorer reads a folder; resolved here, the run's config (and with it what a
        # resumed run compares) would differ from what was given
        raise ValueError(
            f"{setting}={given} is a file; give its folder {Path(given).parent} (or the "
            "'sem train' run folder)"
        )


def check_method_settings(settings: Mapping[str, Mapping[str, Any]], option: str = "--set") -> None:
    """``--set`` settings (from :func:`parse_method_settings`) before any work: each method
    registered, each setting one of its config's fields with a valid value, each checkpoint or
    weights file it names there. One-line ValueError naming ``option``, the method and the
    setting."""
    from sem_baselines import registry_entry, unknown_restorers

    for name, conf in settings.items():
        first = f"{option} {name}.{next(iter(conf), '')}"
        problem = unknown_restorers([name], noun="method")
        if problem:
            raise ValueError(f"{first}: {problem}")
        cls = registry_entry(name).config_cls
        unknown = [k for k in conf if k not in cls.model_fields]
        if unknown:
            raise ValueError(
                f"{option} {name}.{unknown[0]}: unknown setting of {name}; its settings: "
                + ", ".join(cls.model_fields)
            )
        try:
            cls(**dict(conf))
        except ValidationError as err:  # "--set wiener.balance must be > 0, got -1"
            sep = "." if err.errors()[0]["loc"] else ": "
            raise ValueError(f"{option} {name}{sep}{_problems(err)}") from None
        check_weights(name, conf, f"{option} {name}")


def _merge_settings(base: Any, given: Mapping[str, Mapping[str, Any]] | None) -> Any:
    """A copy of ``base``'s per-method settings updated by ``given``, setting by setting."""
    if base is not None and not isinstance(base, dict):
        return base  # not a mapping: the config's own error names it
    merged = {m: dict(v) if isinstance(v, dict) else v for m, v in (base or {}).items()}
    for method, conf in (given or {}).items():
        old = merged.get(method)
        merged[method] = {**(old if isinstance(old, dict) else {}), **conf}
    return merged


def _problems(err: ValidationError, names: Mapping[str, str] | None = None) -> str:
    """One line for ``err`` (:func:`sem_physics.cli_support.validation_message`). ``names``:
    what to call a top-level field (a command's option, ``quality_metrics`` -> ``--metrics``)."""

    def label(loc: tuple[Any, ...]) -> str:
        if names and loc and str(loc[0]) in names:
            return names[str(loc[0])]  # the option names the whole list (settings.0 -> --settings)
        return ".".join(str(x) for x in loc)

    return validation_message(err, BenchmarkConfig, label=label)


def make_config(
    data: dict[str, Any], where: str | None = "config", names: Mapping[str, str] | None = None
) -> BenchmarkConfig:
    """:class:`BenchmarkConfig` from a mapping; ValueError naming the field (as ``names`` call
    it) and the rule, after ``where:`` when given."""
    try:
        return BenchmarkConfig(**data)
    except ValidationError as err:
        problems = _problems(err, names)
        raise ValueError(f"{where}: {problems}" if where else problems) from None


def load_benchmark_config(
    path: str | Path,
    method_settings: Mapping[str, Mapping[str, Any]] | None = None,
    **overrides: Any,
) -> BenchmarkConfig:
    """Read a YAML or JSON benchmark config; ``overrides`` (not None) replace its keys,
    ``method_settings`` (``--set``) update its ``method_config`` setting by setting. A key given
    twice in one mapping is refused with its line, as an unknown key is."""
    p = Path(path)
    data, _ = read_config_file(p, "benchmark config")
    if not data:
        raise ValueError(f"{p}: the config file is empty (give at least `protocol:` or `images:`)")
    duplicate = duplicate_key(p.read_text(encoding="utf-8"), p)
    data.update({k: v for k, v in overrides.items() if v is not None})
    if method_settings:
        data["method_config"] = _merge_settings(data.get("method_config"), method_settings)
    try:
        cfg = make_config(data, str(p))
    except ValueError as err:  # the value the parser kept may be the duplicate's: name both
        if duplicate:
            raise ValueError(f"{err}; and {duplicate}") from None
        raise
    if duplicate:
        raise ValueError(duplicate)
    return cfg


#: The demo's budget: full (about 430 CPU-seconds in all, two worker processes) and quick (the
#: tests' reduced mode).
_DEMO = {
    "title": "SEM restoration demo",
    "out": "sem-demo-report",
    "n_train": 10,
    "n_val": 2,
    "n_eval": 100,
    "shrink_split": True,
    # The generated frames have lines up to the border, where SMILE's zero-padded 5x5 median
    # sets the dark level to 0 and its threshold falls below the space level: no line is
    # measurable in the smile convention, so the demo measures with edges at the true half-level.
    "metrology_convention": "truth",
    "epochs": 4,
    "steps_per_epoch": 15,
    "batch_size": 4,
    "foundation": {"image_size_px": 128, "pretrain_epochs": 100, "finetune_epochs": 60},
    "workers": 2,
    # BM3D's fast profile: on the demo's defocused frames the same PSNR as the standard
    # profile (to 0.001 dB on all six cases) in a third of the time; `sem benchmark` configs
    # keep the standard one unless they say otherwise.
    "method_config": {"bm3d": {"profile": "lc"}},
}
_QUICK = {
    "generated": {"n_per_kind": 1, "shape": (128, 160)},
    "n_train": 2,
    "n_val": 1,
    "settings": ("midpoint",),
    "workers": 1,
    "epochs": 1,
    "steps_per_epoch": 2,
    "foundation": {
        "pretrain_epochs": 1,
        "finetune_epochs": 1,
        "pairs_per_image": 2,
        "batch_size": 4,
    },
}


def demo_config(
    *, quick: bool = False, option_names: Mapping[str, str] | None = None, **overrides: Any
) -> BenchmarkConfig:
    """The ``sem demo`` preset (``quick``: the tests' reduced mode); ``overrides`` (not None)
    replace its keys. ``option_names``: a command line's names of the keys, used in errors."""
    data: dict[str, Any] = {**_DEMO, **(_QUICK if quick else {})}
    if quick:
        data["title"] = "SEM restoration demo (quick mode)"
    given = {k: v for k, v in overrides.items() if v is not None}
    # a method's settings given by the user are merged into the preset's, key by key
    merged = _merge_settings(data["method_config"], given.pop("method_config", None))
    data.update(given, method_config=merged)
    return make_config(data, None if option_names else "sem demo", option_names)
