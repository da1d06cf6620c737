"""Typed training configurations (pydantic v2), loaded from YAML/JSON or from a named preset.

Every section rejects unknown keys (``extra="forbid"``) so that a typo in a config file fails
loudly instead of being ignored. Three presets ship with the package:

* ``paper`` — the paper's hyperparameters (arXiv 2604.05960, Sec. 2.1 and 2.4): ViT-L/16 at
  224 px, 400 epochs, batch 64 (32 per process on 2 GPUs), AdamW lr 1e-4 / no weight decay (Stage 1), 8 experts top-1 with
  load balancing 0.01 (Stage 2), lr 1e-5 / wd 0.05 with frequency weights 0.1 (Stage 3),
  fine-tuning 400 epochs, lr 1e-4, batch 1 per process. Where the paper is silent the preset
  fills in (ours, not the paper's): 2000 warm-up steps then cosine decay to 0, AdamW betas
  (0.9, 0.95), gradient clipping at norm 1, Stage 2 for 50 epochs at lr 1e-4, and the balance
  term in the Switch form ``K Σ f_k P_k`` summed over the MoE layers (measured to see hard
  collapse, which the paper's eq. 9 on mean gate probabilities does not: sem-models README;
  ``moe.balance_loss: paper`` selects eq. 9).
* ``cpu-small`` — a tiny model on 64 px images (patch 8) that finishes each stage within a few
  minutes on two CPU cores for a folder of about 50 micrographs (decoded images kept in memory).
* ``cpu-base`` — the recipe of the model shipped with sem-models (``sem train recipe``): all
  three stages and the 10-image fine-tune in about 1.5 hours on two CPU cores.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated, Any, Literal, cast

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from sem_models.config import MoEConfig, check_preset
from sem_physics import ParameterRanges
from sem_physics.cli_support import validation_message
from sem_physics.fields import NoBoolNumbers, bool_for_number, empty_path, refuse_taken_as_another
from sem_physics.io import DEFAULT_CROP_FRACTION
from sem_physics.samples import SAMPLE_KINDS, SampleKind

from .yaml_strict import duplicate_key, safe_yaml_loader

__all__ = [
    "PRESETS",
    "AugmentConfig",
    "BaselineTrainConfig",
    "ConfigError",
    "DataConfig",
    "FinetuneConfig",
    "GeneratedData",
    "LossConfig",
    "ModelSpec",
    "OptimConfig",
    "RunConfig",
    "Stage1Config",
    "Stage2Config",
    "Stage3Config",
    "check_model_and_data",
    "check_overrides",
    "config_class",
    "config_kind",
    "load_config",
    "moe_size_notes",
    "preset",
    "read_config_file",
    "warn_moe_size",
]


log = logging.getLogger(__name__)
#: Warnings already given (a config is validated again on resume, by a recipe's next stage, ...).
_WARNED: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _WARNED:
        _WARNED.add(message)
        log.warning("%s", message)


def moe_size_notes(
    moe: MoEConfig, tokens_per_batch: int | None = None, where: str = "moe"
) -> list[str]:
    """What is absurd about ``moe``'s expert count (warnings, not errors: a run can still
    train): one expert (the router has nothing to choose), or more experts than the
    ``tokens_per_batch`` tokens x ``top_k`` assignments one step routes through a MoE layer
    (some experts receive no token in any step, by construction)."""
    notes = []
    k = moe.num_experts
    if k == 1:
        notes.append(
            f"{where}.num_experts=1: a one-expert MoE sends every token to that expert, so the "
            "router has nothing to learn (Stage 2 trains nothing useful); use 2 or more"
        )
    if tokens_per_batch is not None and k > tokens_per_batch * moe.top_k:
        idle = k - tokens_per_batch * moe.top_k
        notes.append(
            f"{where}.num_experts={k} with {tokens_per_batch} tokens per batch and top_k="
            f"{moe.top_k}: at least {idle} of the {k} experts of each MoE layer receive no token "
            "in any step (every expert parameter is still stored and checkpointed); use fewer "
            "experts or a larger batch"
        )
    return notes


def warn_moe_size(moe: MoEConfig, tokens_per_batch: int | None = None) -> None:
    """Log :func:`moe_size_notes` (each once per process)."""
    for note in moe_size_notes(moe, tokens_per_batch):
        _warn_once(note)


#: The largest run and split seed: the seeds derived from it (``seed * 1_000_003 + epoch``
#: for the data loaders) stay within torch's 64-bit seeds, and numpy takes no negative one.
SEED_MAX = 2**32 - 1


class ConfigError(ValueError):
    """A config file or mapping that cannot be used; the message names the file, line and field."""


class _Strict(NoBoolNumbers):
    """Unknown keys, non-finite numbers (``.inf``, ``.nan``), a bool given for a number
    (``epochs: true``, which pydantic would take as 1) and an empty path (the current folder)
    are refused everywhere."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=(), allow_inf_nan=False)
    value_rules = (bool_for_number, empty_path)


class AugmentConfig(_Strict):
    """Pretraining augmentations (arXiv 2604.05960, Sec. 2.1): random resized crop, rotation, flips, mild jitter."""

    crop_scale: tuple[float, float] = Field(
        default=(0.2, 1.0), description="area fraction range of the random resized crop"
    )
    crop_ratio: tuple[float, float] = Field(
        default=(3 / 4, 4 / 3), description="aspect-ratio range of the random resized crop"
    )
    rotation: bool = Field(default=True, description="full-range rotation, angle ~ U(0, 2 pi)")
    hflip: bool = True
    vflip: bool = True
    brightness: float = Field(default=0.1, ge=0, le=1, description="gain factor ~ U(1 - b, 1 + b)")
    contrast: float = Field(
        default=0.1, ge=0, le=1, description="contrast factor ~ U(1 - c, 1 + c)"
    )

    @model_validator(mode="after")
    def _check(self) -> AugmentConfig:
        lo, hi = self.crop_scale
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"crop_scale=({lo}, {hi}) must satisfy 0 < low <= high <= 1")
        lo, hi = self.crop_ratio
        if not 0 < lo <= hi:
            raise ValueError(f"crop_ratio=({lo}, {hi}) must satisfy 0 < low <= high")
        return self


class GeneratedData(_Strict):
    """Focused images from the built-in sample generator, added to (or instead of) a folder.

    Image ``i`` of kind ``k`` (0 lines, 1 contacts, 2 texture, 3 resist) is rendered with seed
    ``seed + 10_000 * k + i``; the default ``seed`` keeps them apart from every image an
    evaluation protocol generates (seeds below 1 000 000), so training never sees them.
    """

    n_per_kind: int = Field(default=0, ge=0, le=10_000, description="images per kind; 0 = none")
    kinds: tuple[SampleKind, ...] = Field(
        default=cast("tuple[SampleKind, ...]", SAMPLE_KINDS),
        min_length=1,
        description="sample kinds (sem_physics.samples), no repeats",
    )
    shape: tuple[int, int] = Field(default=(480, 640), description="image size (rows, cols), px")
    seed: int = Field(
        default=1_000_000, ge=0, description="seed of the first image of the first kind"
    )

    @model_validator(mode="after")
    def _check(self) -> GeneratedData:
        if min(self.shape) < 32 or max(self.shape) > 8192:
            raise ValueError(f"shape={self.shape}: each side must be in [32, 8192] px")
        if len(set(self.kinds)) != len(self.kinds):
            raise ValueError(f"kinds={list(self.kinds)}: each kind at most once")
        return self


class DataConfig(_Strict):
    """An unlabeled SEM image folder tree and how it is read, split and augmented."""

    root: Path | None = Field(
        default=None, description="folder tree of images (TIFF, PNG, JPEG, BMP)"
    )
    generated: GeneratedData = Field(
        default_factory=GeneratedData, description="generated sample images added to root's"
    )
    cache_dir: Path | None = Field(
        default=None, description="where the file index is cached (default ~/.cache/sem-train)"
    )
    refresh_index: bool = Field(
        default=False, description="check every file again (the cache already sees changed files)"
    )
    verify: Literal["none", "header", "full"] = Field(
        default="header", description="how much of every file is read while indexing"
    )
    val_fraction: float = Field(default=0.05, ge=0, lt=1)
    split_seed: int = Field(default=0, ge=0, le=SEED_MAX, description="seed of the split")
    max_images: int | None = Field(
        default=None, ge=1, description="use only the first N indexed files"
    )
    channels: Literal[1, 3] = Field(
        default=1, description="1 = grayscale, 3 = gray replicated to RGB"
    )
    image_size_px: int = Field(default=224, ge=8, description="model input side length")
    info_bar_fraction: float = Field(
        default=DEFAULT_CROP_FRACTION, ge=0, lt=1, description="bottom crop (SEM info bar)"
    )
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    num_workers: int = Field(default=0, ge=0, description="DataLoader worker processes")
    cache_in_memory: bool = Field(
        default=False,
        description="keep decoded images in memory (small data sets; per worker process)",
    )


class ModelSpec(_Strict):
    """Which sem_models MAE to build: a preset name plus field overrides."""

    preset: str = "tiny"
    overrides: dict[str, Any] = Field(default_factory=dict)

    @field_validator("overrides", mode="before")
    @classmethod
    def _nothing_taken_as_another_by_the_mae(cls, value: Any) -> Any:
        from sem_models.config import MAEConfig

        # the fields they override
        refuse_taken_as_another(value, MAEConfig, cls.__name__, cls.value_rules)
        return value

    @model_validator(mode="after")
    def _known_preset(self) -> ModelSpec:
        check_preset(self.preset, self.overrides)  # before any model code is imported
        return self


class OptimConfig(_Strict):
    """AdamW with linear warm-up and cosine (or constant) schedule, per optimizer step.

    Every value is bounded to where AdamW means something: a learning rate above 1 (or
    ``.inf``) only produces NaN weights, so it is refused before training starts.
    """

    lr: float = Field(default=1e-4, gt=0, le=1, description="peak learning rate, in (0, 1]")
    min_lr: float = Field(default=0.0, ge=0, le=1, description="cosine floor, in [0, lr]")
    weight_decay: float = Field(
        default=0.0, ge=0, le=1, description="decoupled weight decay, [0, 1]"
    )
    betas: tuple[Annotated[float, Field(ge=0, lt=1)], Annotated[float, Field(ge=0, lt=1)]] = Field(
        default=(0.9, 0.95), description="Adam moment decays, each in [0, 1)"
    )
    warmup_steps: int = Field(default=0, ge=0, le=10_000_000)
    schedule: Literal["cosine", "constant"] = "cosine"
    grad_clip_norm: float | None = Field(
        default=1.0, gt=0, le=1e6, description="max gradient norm, in (0, 1e6]; None = no clipping"
    )

    @model_validator(mode="after")
    def _check(self) -> OptimConfig:
        if self.min_lr > self.lr:
            raise ValueError(f"min_lr={self.min_lr} must not exceed lr={self.lr}")
        return self


class RunConfig(_Strict):
    """The generic loop: epochs, batching, devices, checkpoints, logging."""

    epochs: int = Field(default=1, ge=1, le=1_000_000)
    batch_size_per_process: int = Field(default=8, ge=1, le=65_536)
    grad_accum_steps: int = Field(default=1, ge=1, le=65_536)
    device: Literal["auto", "cpu", "cuda", "mps"] = Field(  # sem_train.device_names.DEVICES
        default="auto",
        description="auto: CUDA where present, else CPU; mps: an Apple GPU, one process",
    )
    bf16: bool = Field(
        default=True,
        description="bf16 autocast (CUDA only; ignored on CPU; a distillation term keeps "
        "Stages 2-3 in fp32)",
    )
    seed: int = Field(
        default=0, ge=0, le=SEED_MAX, description="weights, data order, masks, augmentations"
    )
    output_dir: Path = Path("runs/run")
    checkpoint_every_steps: int = Field(default=100, ge=1)
    keep_last: int = Field(default=2, ge=1, description="step checkpoints kept besides the best")
    log_every_steps: int = Field(default=10, ge=1)
    validate_every_epochs: int = Field(default=1, ge=1)
    validate_at_start: bool = Field(
        default=False, description="also validate the initial model (logged at step 0, a reference)"
    )
    max_steps: int | None = Field(
        default=None, ge=1, description="stop (and checkpoint) after N steps"
    )
    find_unused_parameters: bool = Field(
        default=False,
        description="DDP flag: a traversal of the graph every step to find parameters without "
        "a gradient; this toolkit's models give every trainable parameter one (MoE experts "
        "that receive no token included, see sem_models.moe), so only a custom model needs it",
    )
    progress: bool | None = Field(
        default=None,
        description="per-epoch progress bars on stderr; unset: on only when stderr is a "
        "terminal (not in the log file of nohup or a batch system)",
    )
    tensorboard: bool = True


class LossConfig(_Strict):
    """Restoration loss (eq. 17-20): Charbonnier (+ lambda_e edge + lambda_tv TV).

    The default is ``"L1"``: with the paper's ``lambda_tv = 10`` a flat image scores lower
    under ``"L1+TV"`` than the exact focused image itself (the TV of a real micrograph times 10
    outweighs the pixel error of predicting its mean), so at small scale the decoder collapses
    to a flat output. ``"L1+TV"`` stays available with the paper's weights.
    """

    variant: Literal["L1", "L1+TV"] = "L1"
    charbonnier_eps: float = Field(default=1e-3, gt=0)
    edge_weight: float = Field(default=3.0, ge=0, description="lambda_e")
    tv_weight: float = Field(default=10.0, ge=0, description="lambda_tv")
    structure_weight: float = Field(
        default=0.0,
        ge=0,
        description="weight of a second Charbonnier term after least-squares affine matching "
        "of each prediction to its target: structure, not brightness (0: off, the paper's loss)",
    )
    level_set_weight: float = Field(
        default=0.0,
        ge=0,
        description="weight of an L1 loss between soft half-level maps of the affine-matched "
        "prediction and the target: where their contours lie, what CD and edge metrology "
        "read (0: off, the paper's loss)",
    )


def _model_field(name: str, spec: ModelSpec) -> str:
    """Where the value of MAE field ``name`` comes from in a training config."""
    if name in spec.overrides:
        return f"model.overrides.{name}"
    return {"img_size": "data.image_size_px", "in_chans": "data.channels"}.get(
        name, f"{name} of model preset {spec.preset!r}"
    )


#: ``model.overrides`` keys set elsewhere in a training config: where to set them instead.
_OWNED_ELSEWHERE = {
    "img_size": "data.image_size_px",
    "in_chans": "data.channels",
    "mask_ratio": "mask_ratio",
}


def check_overrides(
    spec: ModelSpec, data: DataConfig, kind: str, mask_ratio: float | None = None
) -> None:
    """ValueError for a ``model.overrides`` key that contradicts the setting that owns it
    (``img_size``/``in_chans``/``mask_ratio``: the model would be built with the override
    while the data and the task use the top-level value) or that the stage ``kind`` does not
    take (``moe``: Stage 1 trains a dense MAE, Stage 2 upcycles it; ``mask_ratio`` in a
    fine-tune, which masks nothing). An override equal to its top-level value is accepted
    (nothing contradicts; older configs and presets give ``img_size`` so)."""
    top = {"img_size": data.image_size_px, "in_chans": data.channels, "mask_ratio": mask_ratio}
    for key, value in spec.overrides.items():
        if key == "moe":
            if value is None:
                continue
            where = (
                "Stage 2's `moe` section (Stage 1 trains the dense MAE that Stage 2 upcycles)"
                if kind == "stage1"
                else "the pretraining stages (Stage 2's `moe` section; init_from a Stage-3 run)"
            )
            raise ValueError(f"model.overrides.moe is not taken here: set it in {where}")
        if key == "mask_ratio" and kind == "finetune":
            raise ValueError(
                "model.overrides.mask_ratio is not taken by the fine-tune (the restoration "
                "model masks nothing): remove it (the pretraining stages set mask_ratio at "
                "the top level)"
            )
        if key in _OWNED_ELSEWHERE and top.get(key) is not None and value != top[key]:
            raise ValueError(
                f"model.overrides.{key}={value!r} contradicts {_OWNED_ELSEWHERE[key]}="
                f"{top[key]!r} (the model would be built with one and trained with the other): "
                f"remove model.overrides.{key} and set {_OWNED_ELSEWHERE[key]} instead"
            )


def check_model_and_data(spec: ModelSpec, data: DataConfig) -> None:
    """ValueError naming the fields when ``spec`` cannot be built for ``data``'s images (an
    image size that is no multiple of the patch size, a value out of range), so a config is
    refused when it is read, not when the model is built."""
    from sem_models.config import PRESETS as MODEL_PRESETS
    from sem_models.config import MAEConfig

    fields = {
        **MODEL_PRESETS[spec.preset],
        "in_chans": data.channels,
        "img_size": data.image_size_px,
        **spec.overrides,
    }
    size, patch = fields.get("img_size"), fields.get("patch_size", 16)
    if isinstance(size, int) and isinstance(patch, int) and patch > 0 and size % patch:
        raise ValueError(
            f"{_model_field('img_size', spec)}={size} px must be a multiple of the patch size, "
            f"{_model_field('patch_size', spec)}={patch} px (e.g. {max(patch, size // patch * patch)})"
        )

    def label(loc: tuple[Any, ...]) -> str:
        return _model_field(str(loc[0]), spec)

    try:
        MAEConfig(**fields)
    except ValidationError as err:
        text = validation_message(err, MAEConfig, label=label)
        raise ValueError(
            text if text.startswith(("model.", "data.")) else f"model: {text}"
        ) from None


class _StageBase(_Strict):
    data: DataConfig = Field(default_factory=DataConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    run: RunConfig = Field(default_factory=RunConfig)
    mask_ratio: float = Field(default=0.75, gt=0, lt=1)


class Stage1Config(_StageBase):
    """Stage 1: dense MAE pretraining."""

    stage: Literal[1] = 1
    model: ModelSpec = Field(default_factory=ModelSpec)
    init_from: Path | None = Field(
        default=None,
        description="a Stage-1 run or export to start from instead of random weights (a new "
        "run that trains an earlier one longer; its model must be the one `model` and `data` "
        "describe)",
    )

    @model_validator(mode="after")
    def _check(self) -> Stage1Config:
        check_overrides(self.model, self.data, "stage1", self.mask_ratio)
        check_model_and_data(self.model, self.data)
        return self


class Stage2Config(_StageBase):
    """Stage 2: MoE upcycling, gates only, KD from the frozen Stage-1 teacher + load balancing.

    ``L_joint = L_MAE + kd_weight * L_KD + lb_weight * L_LB`` (eq. 10).
    """

    stage: Literal[2] = 2
    init_from: Path | None = Field(default=None, description="Stage-1 run directory or checkpoint")
    moe: MoEConfig = Field(default_factory=MoEConfig, description="sem_models' MoE options")
    kd_weight: float = Field(default=1.0, ge=0, description="lambda (eq. 10)")
    lb_weight: float = Field(default=0.01, ge=0, description="mu (eq. 10)")
    router_calibration_images: int = Field(
        default=64,
        ge=0,
        description="training images whose tokens initialise the routers before the first "
        "step (balanced, content-dependent routing); 0 = random router initialisation",
    )

    @model_validator(mode="after")
    def _check(self) -> Stage2Config:
        if self.init_from is None:
            raise ValueError("stage 2 needs init_from: the Stage-1 run directory")
        warn_moe_size(self.moe)  # the tokens per batch need the Stage-1 model: preflight
        return self


class Stage3Config(_StageBase):
    """Stage 3: all parameters, ``L = L_joint + nu (L_FFT + eta L_PSD)`` (eq. 15-16), with
    ``L_joint = L_MAE + kd_weight * L_KD + lb_weight * L_LB`` as in Stage 2."""

    stage: Literal[3] = 3
    init_from: Path | None = Field(default=None, description="Stage-2 run directory or checkpoint")
    teacher_from: Path | None = Field(
        default=None,
        description="frozen Stage-1 model for the distillation term (default: the Stage-1 run "
        "recorded as init_from in the Stage-2 run's config.json)",
    )
    kd_weight: float = Field(default=1.0, ge=0, description="lambda (eq. 10), kept in eq. 16")
    lb_weight: float = Field(default=0.01, ge=0)
    fft_weight: float = Field(default=0.1, ge=0, description="nu: weight of L_FFT")
    psd_weight: float = Field(default=0.1, ge=0, description="nu * eta: weight of L_PSD")
    psd_bins: int | None = Field(default=None, ge=1, description="rings R; None = min(H, W) // 2")

    @model_validator(mode="after")
    def _check(self) -> Stage3Config:
        if self.init_from is None:
            raise ValueError("stage 3 needs init_from: the Stage-2 run directory")
        return self


class FinetuneConfig(_Strict):
    """Low-shot defocus-to-focus fine-tuning on synthetic pairs (arXiv 2604.05960, Sec. 2.4)."""

    init_from: Path | None = Field(
        default=None, description="pretrained run directory or checkpoint"
    )
    model: ModelSpec | None = Field(
        default=None,
        description="build a fresh MAE instead of init_from (tests, ablations; not with it)",
    )
    data: DataConfig = Field(default_factory=DataConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    run: RunConfig = Field(default_factory=RunConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    n_train_images: int = Field(
        default=10, ge=1, description="focused training images (paper: 10 or 2)"
    )
    n_val_images: int = Field(default=4, ge=0)
    crop_sizes_px: tuple[int, ...] = (128, 256, 512, 1024)
    pairs_per_image: int = Field(default=16, ge=1, description="random crops per image per epoch")
    val_pairs_per_image: int = Field(
        default=8,
        ge=1,
        le=1024,
        description="fixed degradations of each validation image's centred crop (the best "
        "checkpoint is chosen on n_val_images x this many pairs)",
    )
    ranges: ParameterRanges = Field(default_factory=ParameterRanges)
    train_routing: bool = Field(default=True, description="also train MoE gates (MoE models)")
    lb_weight: float = Field(
        default=0.0,
        ge=0,
        description="balance term (Stage 2's) on the trained MoE routers, the paper's fine-tune "
        "regulariser; 0, the shipped recipe: the routers train on the restoration loss alone",
    )
    freeze_encoder: bool = True
    residual: bool = Field(
        default=True,
        description="decoder predicts the correction to the input, starting as the identity "
        "(False: it predicts the focused image from the pretrained reconstruction head)",
    )
    refiner_width: int = Field(
        default=0,
        ge=0,
        le=512,
        description="channels of the full-resolution convolutional refiner added to the "
        "restoration model (0 = none; it removes the patch grid and restores sub-patch edges)",
    )
    dihedral_augment: bool = Field(
        default=False, description="random 90-degree rotations and flips of the training crops"
    )
    guide_balances: list[float] = Field(
        default_factory=list,
        max_length=8,
        description="physics guidance: Wiener-Hunt balances whose deconvolutions of the input "
        "(with its PSF) the refiner also reads (empty = none; needs refiner_width > 0)",
    )
    guide_psf_jitter: float = Field(
        default=0.1,
        ge=0,
        le=1,
        description="training guides use the true PSF with its radii scaled by exp(N(0, s^2)) "
        "and its angle moved by N(0, (s/2)^2) rad: the error of a blind estimate at inference",
    )
    synthesis: Literal["loader", "step"] = Field(
        default="loader",
        description="where defocused inputs are synthesised: per item in the data loader, or "
        "for the whole batch on the training device in the step (same forward model)",
    )

    @field_validator("crop_sizes_px")
    @classmethod
    def _crops(cls, v: tuple[int, ...]) -> tuple[int, ...]:  # a field rule: its line is named
        if not v or min(v) < 8:
            raise ValueError(f"must be non-empty, each >= 8 px, got {list(v)}")
        return v

    @field_validator("guide_balances")
    @classmethod
    def _balances(cls, v: list[float]) -> list[float]:
        if any(not 0 < b <= 1e6 for b in v):
            raise ValueError(f"each must be in (0, 1e6], got {v}")
        return v

    @model_validator(mode="after")
    def _check(self) -> FinetuneConfig:
        if self.guide_balances and not self.refiner_width:
            raise ValueError("guide_balances need refiner_width > 0 (the refiner reads them)")
        if self.init_from is None and self.model is None:
            raise ValueError("fine-tuning needs init_from (a pretrained run) or model (a preset)")
        if self.init_from is not None and self.model is not None:
            raise ValueError(
                "fine-tuning takes init_from (a pretrained run) or model (a fresh MAE), not "
                "both: the fine-tune would start from init_from's model and ignore model; "
                "remove model (a pretraining config's) or init_from"
            )
        if self.init_from is None and self.model is not None:
            check_overrides(self.model, self.data, "finetune")
            check_model_and_data(self.model, self.data)
        return self


class BaselineTrainConfig(_Strict):
    """Training of a learned sem-baselines restorer (n2v, n2n, mrn) with the engine's loop.

    Each epoch draws ``patches_per_image`` random ``patch_size_px`` patches (random
    position, 90-degree rotation and flip, fixed by the sample seed) from every training
    image; the restorer synthesises its input/target pair from each (``make_batch``).
    """

    method: str | None = Field(
        default=None,
        description="a trainable sem-baselines method (sem_baselines.trainable_restorers)",
    )
    data: DataConfig = Field(default_factory=DataConfig)
    optim: OptimConfig | None = Field(
        default=None,
        description="None = the method's default lr, no weight decay, constant schedule",
    )
    run: RunConfig = Field(default_factory=RunConfig)
    n_train_images: int = Field(default=10, ge=1)
    ranges: ParameterRanges = Field(default_factory=ParameterRanges)
    params: dict[str, Any] = Field(
        default_factory=dict, description="the restorer's config fields (checked by its registry)"
    )
    patch_size_px: int | None = Field(
        default=None,
        ge=16,
        le=4096,
        multiple_of=8,
        description="training patch side; None = image_size_px",
    )
    patches_per_image: int = Field(default=16, ge=1, le=100_000, description="per image and epoch")
    val_patches: int = Field(default=16, ge=1, le=100_000, description="fixed validation patches")


# ----------------------------------------------------------------------------------- presets


def _paper() -> dict[str, dict[str, Any]]:
    data = {"channels": 3, "image_size_px": 224, "num_workers": 8}
    run = {"epochs": 400, "batch_size_per_process": 32, "checkpoint_every_steps": 1000}
    return {
        "stage1": {
            "model": {"preset": "large"},
            "data": data,
            "optim": {"lr": 1e-4, "weight_decay": 0.0, "warmup_steps": 2000},
            "run": {**run, "output_dir": "runs/paper/stage1"},
        },
        "stage2": {
            "init_from": "runs/paper/stage1",
            "data": data,
            "moe": {"num_experts": 8, "top_k": 1, "placement": "encoder"},
            "lb_weight": 0.01,
            "optim": {"lr": 1e-4, "weight_decay": 0.0},
            # Every expert is in the graph whatever the routing: DDP needs no unused-parameter scan.
            "run": {
                **run,
                "epochs": 50,
                "output_dir": "runs/paper/stage2",
                "find_unused_parameters": False,
            },
        },
        "stage3": {
            "init_from": "runs/paper/stage2",
            "data": data,
            "lb_weight": 0.01,
            "fft_weight": 0.1,
            "psd_weight": 0.1,
            "optim": {"lr": 1e-5, "weight_decay": 0.05},
            "run": {**run, "output_dir": "runs/paper/stage3", "find_unused_parameters": False},
        },
        "finetune": {
            "init_from": "runs/paper/stage3",
            "data": {"channels": 1, "image_size_px": 224, "val_fraction": 0.5},
            "optim": {"lr": 1e-4, "weight_decay": 0.0},
            "run": {"epochs": 400, "batch_size_per_process": 1, "output_dir": "runs/paper/ft"},
            "n_train_images": 10,
        },
        "baseline": {
            "data": {"channels": 1, "image_size_px": 128},
            "run": {"epochs": 500, "batch_size_per_process": 4, "output_dir": "runs/paper/base"},
        },
    }


def _cpu_small() -> dict[str, dict[str, Any]]:
    data = {"channels": 1, "image_size_px": 64, "val_fraction": 0.1, "cache_in_memory": True}
    run = {
        "epochs": 30,
        "batch_size_per_process": 8,
        "device": "cpu",
        "checkpoint_every_steps": 50,
        "log_every_steps": 5,
    }
    return {
        "stage1": {
            "model": {"preset": "tiny", "overrides": {"patch_size": 8}},
            "data": data,
            "optim": {"lr": 1e-3, "warmup_steps": 10},
            "run": {**run, "output_dir": "runs/cpu-small/stage1"},
        },
        "stage2": {
            "init_from": "runs/cpu-small/stage1",
            "data": data,
            "moe": {"num_experts": 4, "top_k": 1},
            "optim": {"lr": 1e-3},
            "run": {
                **run,
                "epochs": 8,
                "output_dir": "runs/cpu-small/stage2",
                "find_unused_parameters": False,
            },
        },
        "stage3": {
            "init_from": "runs/cpu-small/stage2",
            "data": data,
            "optim": {"lr": 1e-4, "weight_decay": 0.05},
            "run": {
                **run,
                "epochs": 8,
                "output_dir": "runs/cpu-small/stage3",
                "find_unused_parameters": False,
            },
        },
        "finetune": {
            "init_from": "runs/cpu-small/stage3",
            "data": {**data, "val_fraction": 0.5},
            "optim": {"lr": 1e-3},
            "run": {
                **run,
                "epochs": 10,
                "batch_size_per_process": 4,
                "output_dir": "runs/cpu-small/ft",
            },
            "n_train_images": 2,
            "n_val_images": 2,
            "crop_sizes_px": (64, 128, 256),
            "pairs_per_image": 8,
        },
        "baseline": {
            "data": {**data},
            "run": {**run, "epochs": 2, "output_dir": "runs/cpu-small/baseline"},
            "n_train_images": 4,
        },
    }


def _cpu_base() -> dict[str, dict[str, Any]]:
    """The shipped model's recipe: Stages 1-3 and the 10-image fine-tune in <= 2 h on 2 cores.

    ViT-tiny (width 192, 6 blocks) on 128-px inputs with 16-px patches; MoE with 4 experts in
    every second encoder block; a 24-channel convolutional refiner in the restoration model.
    Data: ``--data`` (the real corpus) plus 20 generated images per kind (seeds from 1 000 000,
    never used by an evaluation protocol). Fine-tuning crops at the native pixel scale (the
    blur a window sees at inference), in all 8 orientations, pairs synthesised in the step.
    """
    gen = {"n_per_kind": 20, "shape": (480, 640)}
    data = {
        "channels": 1,
        "image_size_px": 128,
        "val_fraction": 0.1,
        "cache_in_memory": True,
        "generated": gen,
    }
    run = {
        "batch_size_per_process": 32,
        "device": "auto",
        "checkpoint_every_steps": 200,
        "log_every_steps": 20,
        "validate_every_epochs": 25,
        "validate_at_start": True,
        "tensorboard": False,
    }
    model = {"preset": "tiny", "overrides": {"patch_size": 16, "img_size": 128}}
    return {
        "stage1": {
            "model": model,
            "data": data,
            "optim": {"lr": 1e-3, "weight_decay": 0.05, "warmup_steps": 100, "min_lr": 1e-5},
            "run": {**run, "epochs": 600, "output_dir": "runs/cpu-base/stage1"},
        },
        "stage2": {
            "init_from": "runs/cpu-base/stage1",
            "data": data,
            "moe": {"num_experts": 4, "top_k": 1, "every_n": 2},
            "optim": {"lr": 1e-3, "warmup_steps": 20},
            "run": {
                **run,
                "epochs": 150,
                "output_dir": "runs/cpu-base/stage2",
                "find_unused_parameters": False,
            },
        },
        "stage3": {
            "init_from": "runs/cpu-base/stage2",
            "data": data,
            "optim": {"lr": 1e-4, "weight_decay": 0.05, "warmup_steps": 20},
            "run": {
                **run,
                "epochs": 150,
                "output_dir": "runs/cpu-base/stage3",
                "find_unused_parameters": False,
            },
        },
        "finetune": {
            "init_from": "runs/cpu-base/stage3",
            "data": {**data, "val_fraction": 0.0},
            "optim": {"lr": 5e-4, "warmup_steps": 50, "min_lr": 1e-5},
            "run": {
                **run,
                "epochs": 24,
                "batch_size_per_process": 12,
                "validate_every_epochs": 2,
                "output_dir": "runs/cpu-base/finetune",
            },
            "n_train_images": 10,
            "n_val_images": 4,
            "crop_sizes_px": (128,),
            "pairs_per_image": 48,
            "freeze_encoder": False,
            "refiner_width": 24,
            "guide_balances": [0.03, 0.3, 3.0],
            "dihedral_augment": True,
            "synthesis": "step",
        },
        "baseline": {
            "data": data,
            "run": {**run, "epochs": 20, "output_dir": "runs/cpu-base/baseline"},
        },
    }


PRESETS: dict[str, Any] = {"paper": _paper, "cpu-small": _cpu_small, "cpu-base": _cpu_base}

_KIND_CLASSES: dict[str, type[BaseModel]] = {
    "stage1": Stage1Config,
    "stage2": Stage2Config,
    "stage3": Stage3Config,
    "finetune": FinetuneConfig,
    "baseline": BaselineTrainConfig,
}


def config_class(kind: str) -> type[BaseModel]:
    """The config model of ``kind`` (stage1..3, finetune, baseline)."""
    if kind not in _KIND_CLASSES:
        raise ValueError(f"unknown config kind {kind!r}; choose one of {sorted(_KIND_CLASSES)}")
    return _KIND_CLASSES[kind]


def config_kind(cfg: BaseModel) -> str:
    """The kind (stage1..3, finetune, baseline) of a config object."""
    for kind, cls in _KIND_CLASSES.items():
        if isinstance(cfg, cls):
            return kind
    raise ValueError(f"not a training config: {type(cfg).__name__}")


def preset(name: str, kind: str) -> BaseModel:
    """The preset ``name`` (``paper``, ``cpu-base`` or ``cpu-small``) for ``kind`` (stage1..3, finetune, baseline)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return config_class(kind).model_validate(PRESETS[name]()[kind])


#: Config files are small; a larger one is refused before parsing.
MAX_CONFIG_BYTES = 1 << 20


def _key_lines(node: Any, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], int]:
    """1-based line of every key path in a composed YAML node tree."""
    import yaml

    out: dict[tuple[str, ...], int] = {}
    if isinstance(node, yaml.MappingNode):
        children = [(str(k.value), k, v) for k, v in node.value]
    elif isinstance(node, yaml.SequenceNode):
        children = [(str(i), v, v) for i, v in enumerate(node.value)]
    else:
        return out
    for name, key_node, value in children:
        out[(*prefix, name)] = key_node.start_mark.line + 1
        out.update(_key_lines(value, (*prefix, name)))
    return out


def _position(line0: int, column0: int) -> str:
    """``, line L, column C`` (1-based) of a 0-based parser position."""
    return f", line {line0 + 1}, column {column0 + 1}"


def _parse_yaml(text: str, path: Path, what: str) -> tuple[Any, dict[tuple[str, ...], int]]:
    yaml, loader_cls = safe_yaml_loader()
    loader = None
    try:
        loader = loader_cls(text)  # checks for control characters
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = _position(mark.line, mark.column) if mark is not None else ""
        problem = err.problem or err.context or "malformed YAML"
        raise ConfigError(f"{what} {path}{where}: {problem}") from None
    except yaml.YAMLError as err:  # e.g. control characters (ReaderError)
        raise ConfigError(f"{what} {path}: {str(err).splitlines()[0]}") from None
    finally:
        if loader is not None:
            loader.dispose()
    return data, _key_lines(node)


def _config_files_in(folder: Path, limit: int = 8) -> str:
    """``", e.g. one of: a.yaml, b.json"`` for the YAML/JSON files in ``folder`` (or "")."""
    try:
        names = sorted(
            f.name
            for f in folder.iterdir()
            if f.suffix.lower() in (".yaml", ".yml", ".json") and f.is_file()
        )
    except OSError:
        return ""
    if not names:
        return ""
    more = f" (and {len(names) - limit} more)" if len(names) > limit else ""
    return f", e.g. one of: {', '.join(names[:limit])}{more}"


def read_config_file(
    path: str | Path, what: str = "config file"
) -> tuple[dict[str, Any] | None, dict[tuple[str, ...], int]]:
    """The mapping in a YAML/JSON file (None when the file is empty) and the 1-based line of
    each key path (YAML only): the one reader of the training and the benchmark configs.

    Every problem is one line naming ``what`` and the file: missing (FileNotFoundError), a
    folder (with the YAML/JSON files in it), too large, not UTF-8, not a mapping, or malformed
    (:class:`ConfigError` with the line and column where the parser stopped).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} {path} does not exist")
    if path.is_dir():
        raise ConfigError(
            f"{what} {path} is not a file but a folder; give a YAML/JSON file"
            + _config_files_in(path)
        )
    if not path.is_file():
        raise ConfigError(f"{what} {path} is not a file")
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise ConfigError(f"{what} {path} is larger than {MAX_CONFIG_BYTES} bytes")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{what} {path} is not UTF-8 text ({err.reason})") from None
    lines: dict[tuple[str, ...], int] = {}
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            data, lines = _parse_yaml(text, path, what)
    except json.JSONDecodeError as err:
        where = _position(err.lineno - 1, err.colno - 1)
        raise ConfigError(f"{what} {path}{where}: {err.msg}") from None
    except RecursionError:
        raise ConfigError(f"{what} {path} is nested too deeply") from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{what} {path} must hold a mapping, got {type(data).__name__}")
    return data, lines


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = (
            _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
        )
    return out


def _merge_overrides(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` merged into ``base``; a section ``base`` gives as a non-mapping is kept as
    given, so validation refuses it whatever ``over`` sets in it."""
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and k in out:
            out[k] = _merge_overrides(out[k], v) if isinstance(out[k], dict) else out[k]
        else:
            out[k] = v
    return out


def _leaf_paths(tree: dict[str, Any], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """The key path of every non-mapping value in ``tree``."""
    out: list[tuple[str, ...]] = []
    for k, v in tree.items():
        out += _leaf_paths(v, (*prefix, k)) if isinstance(v, dict) else [(*prefix, k)]
    return out


def _value_at(data: Any, key: tuple[str, ...]) -> Any:
    """The value at ``key`` in nested mappings/lists (None when absent)."""
    for part in key:
        if isinstance(data, dict):
            data = data.get(part)
        elif isinstance(data, list) and part.isdigit() and int(part) < len(data):
            data = data[int(part)]
        else:
            return None
    return data


def load_config(
    source: str | Path | dict[str, Any] | None,
    kind: str,
    overrides: dict[str, Any] | None = None,
    options: dict[tuple[str, ...], str] | None = None,
    *,
    lines: dict[tuple[str, ...], int] | None = None,
    label: str = "mapping",
) -> BaseModel:
    """Load a config of ``kind`` from a preset name, a YAML/JSON file or a mapping.

    A file may start from a preset with the key ``preset: cpu-small``; its other keys override
    the preset's. ``overrides`` (e.g. ``{"run": {"epochs": 3}}``, from command-line options)
    are merged over the result before it is validated, so a field the source leaves out may
    come from them; an error in one of them names its option from ``options`` (key path to
    option, e.g. ``{("run", "epochs"): "--epochs"}``), else "from the command line". A section
    the source gives as a non-mapping stays so and is refused. YAML anchors/aliases,
    ``!!python`` tags and a key given twice in one mapping are refused. Every problem is a
    :class:`ConfigError` (a ValueError) naming the file, the line and the field. A mapping
    read from a file (e.g. a recipe's step) is named ``label`` in errors, with its keys'
    ``lines`` (key path -> 1-based line).
    """
    cls = config_class(kind)
    if source is None:
        data: dict[str, Any] = {}
        label, lines = "defaults", {}
    elif isinstance(source, dict):
        data, lines = dict(source), dict(lines or {})
    elif isinstance(source, str) and source in PRESETS:
        data, label, lines = PRESETS[source]()[kind], f"preset {source!r}", {}
    else:
        path = Path(source)
        if isinstance(source, str) and not path.suffix and not path.exists():
            raise ConfigError(
                f"unknown preset {source!r}; choose from {sorted(PRESETS)} or give a YAML/JSON file"
            )
        found, lines = read_config_file(path)
        duplicate = duplicate_key(path.read_text(encoding="utf-8"), path) if found else None
        if duplicate:  # the parser kept the last value silently; an unknown key is refused
            raise ConfigError(f"invalid {kind} config: {duplicate}")
        data, label = found or {}, str(path)
    given = data  # the source's own keys: a field absent from it has no line
    if "preset" in data:  # `preset:` left empty is no preset name either
        base_name = data.pop("preset")
        if not isinstance(base_name, str) or base_name not in PRESETS:
            line = lines.get(("preset",))
            where = "" if line is None else f", line {line}"
            what = "preset is empty" if base_name is None else f"unknown preset {base_name!r}"
            raise ConfigError(f"{label}{where}: {what}; choose from {sorted(PRESETS)}")
        data = _deep_merge(PRESETS[base_name]()[kind], data)
    if overrides:
        data = _merge_overrides(data, overrides)
    named = {
        p: (options or {}).get(p, "from the command line") for p in _leaf_paths(overrides or {})
    }
    try:
        return cls.model_validate(data)
    except ValidationError as err:
        why = problems(err, lines, cls, given=given, overridden=named)
        raise ConfigError(f"invalid {kind} config ({label}): {why}") from None


def problems(
    err: ValidationError,
    lines: dict[tuple[str, ...], int] | None = None,
    model: type[BaseModel] | None = None,
    *,
    given: Any = None,
    overridden: dict[tuple[str, ...], str] | None = None,
) -> str:
    """One line listing every field error of ``err``: the field (with its line when ``lines``
    knows it, or the option that set it from ``overridden``), the accepted range of a number
    (``model``'s bounds) and the value given. With ``given`` (the parsed file), a field absent
    from a mapping of the file gets no line (not the line of its parent key)."""
    known, over = lines or {}, overridden or {}

    def where(loc: tuple[Any, ...]) -> str:
        key = tuple(str(p) for p in loc)
        name = ".".join(key) or "<root>"
        for i in range(len(key), 0, -1):
            if key[:i] in over:  # set on the command line: its line in the file is not the value
                return f"{name} ({over[key[:i]]})"
        for i in range(len(key), 0, -1):
            if key[:i] in known:
                # a deeper loc under a scalar is pydantic's (e.g. a union member), not a key
                if i == len(key) or not isinstance(_value_at(given, key[:i]), dict):
                    return f"{name} (line {known[key[:i]]})"
                break
        return name

    return validation_message(err, model, label=where)
