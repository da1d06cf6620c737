"""The two ViT-MAE baselines of the paper as registry entries.

* ``"mae-imagenet"``: a ViT-MAE initialised from the public ImageNet MAE weights, read from a
  local file (facebookresearch ``mae_pretrain_vit_large.pth`` or timm's
  ``vit_large_patch16_224.mae``; CC-BY-NC 4.0, never downloaded here) by
  :func:`sem_models.load_external_mae`. Those files hold the encoder only; the decoder starts
  from a seeded initialisation. Its registry entry says ``fitting="finetune"``: an evaluation
  with a training pipeline (sem-train) adapts it with the same fine-tuning protocol as the
  paper's model (arXiv 2604.05960, Sec. 2.4) before restoring.
* ``"mae-sem"``: the SEM-pretrained MAE without Mixture-of-Experts (the paper's ablation row),
  from a sem-models checkpoint folder (a pretrained MAE or an already fine-tuned restoration
  model). Its registry entry says ``fitting="pretrained"``: an evaluation with a training
  pipeline pretrains and fine-tunes one when ``checkpoint_dir`` is empty.

Both wrap a :class:`sem_models.RestorationModel` (encoder sees all patches, decoder predicts
the focused image) and restore full-size images with :func:`sem_models.sliding_window`
(Hann-blended windows of the model's input size; by default about half a window of overlap,
consecutive windows a quarter patch apart on the patch grid so that it averages out; the paper
uses 8 px, ``overlap_px=8``); the paper's
own model (``sem_baselines.foundation``) shares that inference. Fine-tuning is sem-train's job:
``network`` is the ``RestorationModel`` it trains, ``load_network`` takes the result back.
Saved form: ``config.json`` (restorer name, config and ``notes``) and ``network/`` (a
sem-models checkpoint), so a saved restorer reloads without the original weights file and
still says what it said of its model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from sem_models import (
    RestorationModel,
    build_mae,
    grid_averaging_overlap,
    load_external_mae,
    load_model,
    read_state_dict,
    save_model,
    sliding_window,
)
from sem_models.mae import MaskedAutoencoder
from sem_physics import PSFParams
from sem_physics.atomic import atomic_write_text
from sem_physics.fields import NoBoolNumbers
from torch import nn

from .checkpoint_kinds import export_kind_problem
from .classical.deconv import PSFChoice, choose_psf
from .guides import guide_channels
from .learned.base import resolve_device
from .restorer import CONFIG_FILE, RestorerConfigError, check_image, register, restorer_config

__all__ = ["MAEImageNetConfig", "MAEImageNetRestorer", "MAESEMConfig", "MAESEMRestorer"]

NETWORK_DIR = "network"


class _MAEInferenceConfig(NoBoolNumbers):
    model_config = ConfigDict(extra="forbid")

    window_px: int | None = Field(
        default=None, ge=8, le=4096, description="sliding window side (px); None = model input"
    )
    overlap_px: int | None = Field(
        default=None,
        ge=0,
        le=4095,
        description="window overlap (px); None = about half a window, windows a quarter patch "
        "apart on the patch grid so that the blend averages it out "
        "(sem_models.grid_averaging_overlap); the paper: 8",
    )
    batch_size: int = Field(default=8, ge=1, le=4096, description="windows per forward pass")
    device: str | None = Field(default=None, description="torch device; None = cuda if present")
    clip: bool = Field(default=True, description="clip restored images to 0..255")


class MAEImageNetConfig(_MAEInferenceConfig):
    """ImageNet MAE from a local weights file."""

    weights_path: str | None = Field(
        default=None,
        description="the ImageNet MAE weights file (.pth or .safetensors), e.g. "
        "facebookresearch/mae's mae_pretrain_vit_large.pth or timm's vit_large_patch16_224.mae "
        "model.safetensors; read locally, nothing is downloaded",
    )
    preset: Literal["tiny", "small", "base", "large", "huge"] = Field(
        default="large", description="sem-models architecture preset matching the file"
    )
    in_chans: Literal[1, 3] = Field(
        default=3, description="3 keeps the RGB weights (gray replicated); 1 folds them to gray"
    )
    overrides: dict[str, Any] = Field(
        default_factory=dict, description="extra sem-models MAEConfig fields (img_size, ...)"
    )
    init_seed: int = Field(default=0, ge=0, description="seed of parts absent from the file")
    freeze_encoder: bool = Field(default=True, description="encoder frozen for fine-tuning")


class MAESEMConfig(_MAEInferenceConfig):
    """SEM-pretrained MAE (no MoE) from a sem-models checkpoint folder."""

    checkpoint_dir: str | None = Field(
        default=None, description="folder written by sem_models.save_model (MAE or restoration)"
    )
    freeze_encoder: bool = Field(default=True, description="encoder frozen for fine-tuning")


def load_mae_checkpoint(folder: str | Path, name: str) -> tuple[nn.Module, MaskedAutoencoder]:
    """``(model, mae)`` of a sem-models checkpoint folder: a pretrained MAE (then both are the
    MAE) or a restoration model and its MAE; RestorerConfigError when it holds neither."""
    model = load_model(folder)
    mae = model.mae if isinstance(model, RestorationModel) else model
    if not isinstance(mae, MaskedAutoencoder):
        raise RestorerConfigError(f"{name}: {folder} holds no MAE")
    return model, mae


def _restoration_checkpoint(folder: Path) -> RestorationModel:
    net = load_model(folder)
    if not isinstance(net, RestorationModel):
        raise RestorerConfigError(f"{folder} is not a restoration checkpoint")
    return net


def _placed(net: RestorationModel, device: str | None) -> RestorationModel:
    """The network on ``device`` in eval mode, its convolutional refiner in channels-last
    memory (1.7x faster on a CPU; outputs equal to float rounding, tested)."""
    net = net.to(resolve_device(device)).eval()
    refiner = getattr(net, "refiner", None)
    if refiner is not None:
        refiner.to(memory_format=torch.channels_last)
    return net


class _MAERestorer:
    """Shared inference, save and load of the MAE restorers (baselines and the paper's model).

    ``notes`` collects what a report should say about the loaded model (e.g. a dense model
    where MoE is expected).
    """

    name: ClassVar[str]
    config_cls: ClassVar[type[_MAEInferenceConfig]]
    config: Any  # the subclass's config (an _MAEInferenceConfig)

    def __init__(self, config: Any = None, *, network: RestorationModel | None = None) -> None:
        self.config = config or self.config_cls()
        self.notes: list[str] = []
        self.last_params: dict[str, Any] = {}  # the PSF a guided model's guides used
        self.last_choice: PSFChoice | None = None  # the same, as chosen (with the estimate)
        self.last_estimate_s = 0.0  # seconds the last restore spent on the guides' estimate
        self.guide_psf: PSFParams | None = None  # a known PSF for the guides; None = blind
        net = network if network is not None else self._build()
        self.network: RestorationModel = _placed(net, self.config.device)
        self._check_overlap()

    def _build(self) -> RestorationModel:
        raise NotImplementedError

    def _check_kind(self, folder: str | Path, hint: str, *, fine_tunes: bool = False) -> None:
        """RestorerConfigError (the problem, then ``hint``) when the export in ``folder`` is of
        a kind this restorer does not take (:func:`export_kind_problem`; no weights read)."""
        problem = export_kind_problem(self.name, folder, fine_tunes=fine_tunes)
        if problem is not None:
            raise RestorerConfigError(f"{self.name}: {problem}; {hint}")

    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device

    @property
    def guided(self) -> bool:
        """Whether the model reads physics guides (deconvolutions made with a PSF)."""
        return bool(getattr(self.network, "guide_balances", ()))

    @property
    def window_px(self) -> int:
        """Sliding-window side (px): the configured one, else the model's input size."""
        return self.config.window_px or int(self.network.config.img_size)

    def _check_overlap(self) -> None:
        """Refuse a configured overlap of a window or more when the restorer is made or
        loaded, not at its first restore (:attr:`overlap_px`)."""
        _ = self.overlap_px

    @property
    def overlap_px(self) -> int:
        """Window overlap (px): the configured one, else :func:`grid_averaging_overlap`.

        A configured overlap of the window or more is refused (RestorerConfigError): the
        windows would advance by one pixel, tens of thousands of forward passes per frame."""
        win = self.window_px
        if self.config.overlap_px is not None:
            if self.config.overlap_px >= win:
                source = "window_px" if self.config.window_px else "the model's input size"
                raise RestorerConfigError(
                    f"{self.name}: overlap_px={self.config.overlap_px} must be smaller than the "
                    f"{win}-px window ({source}): accepted 0..{win - 1}, or None (about half "
                    "a window)"
                )
            return int(self.config.overlap_px)
        return grid_averaging_overlap(win, int(self.network.config.patch_size))

    @torch.no_grad()
    def restore(self, image: np.ndarray) -> np.ndarray:
        image = check_image(image)
        unit = image / np.float32(255.0)
        x: np.ndarray | torch.Tensor = unit
        balances = getattr(self.network, "guide_balances", ())
        if balances:  # a guided model: append the image's deconvolutions (given or blind PSF)
            if self.guide_psf is not None:  # the guides take balances, no noise level
                choice = PSFChoice(self.guide_psf, "given", None)
            else:
                choice = choose_psf(image, "adaptive", None, None)
            self.last_params, self.last_choice = choice.as_dict(), choice
            self.last_estimate_s = choice.estimate_s
            x = guide_channels(unit, choice.psf, balances, self.device)
        cfg, win = self.config, self.window_px
        y = sliding_window(self.network, x, win, self.overlap_px, cfg.batch_size)
        arr = y.cpu().numpy() if isinstance(y, torch.Tensor) else y
        out = np.asarray(arr, dtype=np.float32) * np.float32(255.0)
        if balances:
            out = out[0]  # (1, H, W): the image channel
        return np.clip(out, 0.0, 255.0) if cfg.clip else out

    def load_network(self, folder: str | Path, **config: Any) -> _MAERestorer:
        """Use the restoration model saved in ``folder`` (e.g. fine-tuned by sem-train), with
        ``config`` updating this restorer's settings (e.g. ``window_px``); returns ``self``."""
        self.config = restorer_config(self.name, **{**self.config.model_dump(), **config})
        net = _restoration_checkpoint(Path(folder))
        self.network = _placed(net, self.config.device)
        self._check_overlap()
        return self

    def save(self, path: str | Path) -> Path:
        """Write ``config.json`` (name, config and ``notes``) and the sem-models checkpoint
        ``network/`` into ``path``."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        meta = {
            "restorer": self.name,
            "config": self.config.model_dump(mode="json"),
            "notes": list(self.notes),  # what was said of the model when it was built
        }
        atomic_write_text(path / CONFIG_FILE, json.dumps(meta, indent=2))
        save_model(self.network, path / NETWORK_DIR)
        return path

    def load(self, path: str | Path) -> _MAERestorer:
        """Replace config, network and ``notes`` by those saved in ``path``; returns this
        restorer. The device stays this restorer's (``config.device``), whatever the saving
        run used."""
        path = Path(path)
        cfg_file = path / CONFIG_FILE
        if not cfg_file.is_file():
            raise FileNotFoundError(f"{cfg_file} not found: not a saved {self.name!r} restorer")
        meta = json.loads(cfg_file.read_text(encoding="utf-8"))
        if meta.get("restorer") != self.name:
            raise RestorerConfigError(
                f"{cfg_file} holds restorer {meta.get('restorer')!r}, not {self.name!r}"
            )
        notes = meta.get("notes", [])  # absent from a folder saved without them
        if not isinstance(notes, list) or not all(isinstance(n, str) for n in notes):
            raise RestorerConfigError(f"{cfg_file}: 'notes' must be a list of strings")
        # the device is this restorer's, not the saving machine's (a GPU's weights load here)
        self.config = self.config_cls(**{**meta.get("config", {}), "device": self.config.device})
        net = _restoration_checkpoint(path / NETWORK_DIR)
        self.network = _placed(net, self.config.device)
        self._check_overlap()
        self.notes = list(notes)
        return self

    @classmethod
    def from_saved(cls, path: str | Path, config: BaseModel) -> _MAERestorer:
        """Rebuild from a saved folder without touching the original weights source."""
        net = _restoration_checkpoint(Path(path) / NETWORK_DIR)
        return cls(config, network=net).load(path)


@register("mae-imagenet", MAEImageNetConfig, fitting="finetune", checkpoint_field="weights_path")
class MAEImageNetRestorer(_MAERestorer):
    """ViT-MAE with public ImageNet weights (local file), restoring by sliding windows.

    The files hold the encoder only. The restoration head is the fine-tuning protocol's:
    residual, its output layer zeroed, so that as built (not yet adapted) it returns its input;
    an evaluation fine-tunes the seeded decoder on the protocol's training images before
    restoring, exactly as the SEM models are fine-tuned.
    """

    config: MAEImageNetConfig

    def _build(self) -> RestorationModel:
        cfg = self.config
        if cfg.weights_path is None:
            raise RestorerConfigError(
                "mae-imagenet needs weights_path=<local MAE weights file>, e.g. "
                "mae_pretrain_vit_large.pth (facebookresearch/mae) or timm's "
                "vit_large_patch16_224.mae model.safetensors; nothing is downloaded at run time"
            )
        if not Path(cfg.weights_path).is_file():  # fail before building a large model
            read_state_dict(cfg.weights_path)  # raises MissingWeightsError naming the file
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.init_seed)
            mae = build_mae(cfg.preset, in_chans=cfg.in_chans, **cfg.overrides)
        load_external_mae(cfg.weights_path, mae)
        return RestorationModel(
            mae, freeze_encoder=cfg.freeze_encoder, residual=True
        ).start_as_identity()


@register("mae-sem", MAESEMConfig, fitting="pretrained", checkpoint_field="checkpoint_dir")
class MAESEMRestorer(_MAERestorer):
    """SEM-pretrained ViT-MAE without MoE (sem-models checkpoint), sliding-window restore."""

    config: MAESEMConfig

    def _build(self) -> RestorationModel:
        cfg = self.config
        if cfg.checkpoint_dir is None:
            raise RestorerConfigError(
                "mae-sem needs checkpoint_dir=<folder written by sem_models.save_model> "
                "(config.json + model.safetensors of the SEM-pretrained MAE)"
            )
        self._check_kind(
            cfg.checkpoint_dir,
            "give a dense model: a Stage-1 MAE (a benchmark fine-tunes it) or a dense "
            "fine-tune (sem train recipe --dense, or a fine-tune of a dense Stage-3 run); "
            "sem-foundation takes the MoE one",
        )
        model, mae = load_mae_checkpoint(cfg.checkpoint_dir, self.name)
        if isinstance(model, RestorationModel):
            return model
        return RestorationModel(mae, freeze_encoder=cfg.freeze_encoder)
