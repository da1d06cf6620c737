"""What every learned baseline shares: config fields, tiled inference, save/load, ``fit``.

A learned restorer owns a torch ``network`` and defines two per-step pieces that any training
loop can drive:

* ``make_batch(clean, params, generator) -> dict[str, Tensor]``: synthesise the training pair
  from focused patches ``clean`` (N, 1, P, P) on the 0..255 scale and one
  :class:`sem_physics.DegradationParams` per patch;
* ``training_loss(batch) -> Tensor``: the scalar loss of the network on that batch.

``fit`` runs the compact standalone loop of :mod:`.training`; ``sem train baseline`` drives
the same two pieces with the toolkit's training loop (checkpoints, resume, multi-GPU).
Networks see intensities divided by 255. Weights are kept channels-last (NHWC): oneDNN's
convolutions run about 1.2x (training) to 1.4x (inference) faster on a CPU that way, with the
same arithmetic up to float rounding (``benchmarks/bench_demo.py`` measures it).
Saved form: a folder with ``config.json`` (restorer name + config) and ``model.safetensors``.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import ConfigDict, Field, model_validator
from safetensors.torch import load_file, save_file
from sem_models.checkpoint import NonFiniteWeightsError, nonfinite_message, nonfinite_tensors
from sem_physics import DegradationParams, image_to_tensor, tensor_to_image
from sem_physics.atomic import atomic_write, atomic_write_text
from sem_physics.fields import NoBoolNumbers
from torch import nn

from ..restorer import CONFIG_FILE, FitOptions, RestorerConfigError, check_image
from ..tiling import tiled_apply
from .training import fit_restorer, resolve_device

__all__ = ["WEIGHTS_FILE", "LearnedConfig", "NetworkRestorer", "resolve_device"]

WEIGHTS_FILE = "model.safetensors"
SCALE = 255.0


class LearnedConfig(NoBoolNumbers):
    """Fields common to the learned restorers (inference tiling, device, init seed)."""

    model_config = ConfigDict(extra="forbid")

    tile_px: int = Field(
        default=640, ge=16, le=8192, description="largest inference window side (px)"
    )
    margin_px: int = Field(default=32, ge=0, le=1024, description="context per tile side (px)")
    tile_batch_size: int | None = Field(
        default=None, ge=1, le=1024, description="tiles per forward pass; None: 1 on CPU, 8 on GPU"
    )
    device: str | None = Field(default=None, description="torch device; None = cuda if present")
    init_seed: int = Field(default=0, ge=0, description="seed of the weight initialisation")
    train_precision: Literal["auto", "fp32", "bf16"] = Field(
        default="auto",
        description="arithmetic of fit's forward passes: auto = bf16 autocast where the device "
        "computes bf16 in hardware (CUDA with bf16; a CPU with AVX512-BF16 or AMX, about 2x "
        "faster there), fp32 elsewhere; bf16 = bf16 autocast on any device; fp32 = full fp32 "
        "(fp32 weights and losses either way)",
    )
    clip: bool = Field(default=True, description="clip restored images to 0..255")

    @model_validator(mode="after")
    def _check_tiles(self) -> LearnedConfig:
        if self.tile_px <= 2 * self.margin_px:
            raise ValueError(
                f"tile_px={self.tile_px} must exceed 2 * margin_px={2 * self.margin_px}"
            )
        return self


class NetworkRestorer:
    """Base class of Noise2Noise, Noise2Void and MRN (see the module docstring)."""

    name: ClassVar[str]
    config_cls: ClassVar[type[LearnedConfig]]
    config: LearnedConfig
    default_lr: ClassVar[float] = 4e-4
    default_batch_size: ClassVar[int] = 16

    def __init__(self, config: LearnedConfig | None = None) -> None:
        self.config = config or self.config_cls()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.config.init_seed)
            self.network: nn.Module = self.build_network()
        # torch's stubs lack the (device, memory_format) form that Module.to accepts
        self.network.to(  # type: ignore[call-overload]
            resolve_device(self.config.device), memory_format=torch.channels_last
        )
        self.network.eval()
        self.history: list[dict[str, float]] = []
        self.trained = False  # fitted or loaded: restoring before either gets a warning

    # --- pieces each method defines -------------------------------------------------------
    def build_network(self) -> nn.Module:
        raise NotImplementedError

    def make_batch(
        self, clean: torch.Tensor, params: list[DegradationParams], generator: torch.Generator
    ) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def training_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Restored (N, 1, H, W) from degraded ``x`` (N, 1, H, W), both divided by 255."""
        return self.network(x)

    # --- the Restorer contract ------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device

    @torch.no_grad()
    def restore(self, image: np.ndarray) -> np.ndarray:
        x = image_to_tensor(check_image(image), device=self.device) / SCALE
        if not self.trained:
            warnings.warn(
                f"{self.name} has no trained weights (call fit() or load()): restoring with "
                "its randomly initialised network",
                stacklevel=3,  # the caller of restore (below torch's no_grad wrapper)
            )
        self.network.eval()
        cfg = self.config
        y = tiled_apply(self.predict, x, cfg.tile_px, cfg.margin_px, cfg.tile_batch_size)
        out = tensor_to_image(y) * SCALE
        if self.config.clip:
            out = np.clip(out, 0.0, SCALE)
        return out.astype(np.float32)

    def fit(
        self,
        train_images: list[np.ndarray],
        val_images: list[np.ndarray] | None = None,
        options: FitOptions | None = None,
        **kwargs: Any,
    ) -> Any:
        """Train on synthetic degradations of focused ``train_images``: ``options`` is the
        budget a caller gives every method, ``kwargs`` this loop's own :class:`.FitConfig`
        keywords (patch_size, lr, ...; they win over ``options``). Keeps the weights of the
        epoch with the lowest loss on ``val_images``; returns a FitResult."""
        if isinstance(train_images, np.ndarray):
            raise TypeError(
                f"train_images must be a list of (H, W) arrays, got one array of shape "
                f"{train_images.shape} (wrap a single image as [image], a stack as list(stack))"
            )
        if options is not None and not hasattr(options, "keywords"):
            raise TypeError(
                f"options must be a FitOptions, got {type(options).__name__} (FitOptions(...) "
                "or this method's keywords: fit(images, epochs=...))"
            )
        keywords = {**(options.keywords() if options is not None else {}), **kwargs}
        result = fit_restorer(self, train_images, val_images, **keywords)
        self.trained = True
        return result

    def save(self, path: str | Path) -> Path:
        """Write ``config.json`` and ``model.safetensors`` into folder ``path``."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        meta = {
            "restorer": self.name,
            "config": self.config.model_dump(mode="json"),
            "history": self.history,
        }
        state = {k: v.detach().cpu().contiguous() for k, v in self.network.state_dict().items()}
        atomic_write(
            path / WEIGHTS_FILE,
            lambda tmp: save_file(state, str(tmp), metadata={"restorer": self.name}),
        )
        atomic_write_text(path / CONFIG_FILE, json.dumps(meta, indent=2))
        return path

    def load(self, path: str | Path) -> NetworkRestorer:
        """Load config and weights saved by :meth:`save` into this restorer; returns it. The
        device stays this restorer's (``config.device``), whatever the saving run used.
        Weights holding NaN or inf (a diverged training) are refused with a
        :class:`sem_models.CheckpointError` naming the file and the tensors, before this
        restorer is changed: its network would return NaN images."""
        path = Path(path)
        cfg_file, weights = path / CONFIG_FILE, path / WEIGHTS_FILE
        for f in (cfg_file, weights):
            if not f.is_file():
                raise FileNotFoundError(f"{f} not found: not a saved {self.name!r} restorer")
        meta = json.loads(cfg_file.read_text(encoding="utf-8"))
        if meta.get("restorer") != self.name:
            raise RestorerConfigError(
                f"{cfg_file} holds restorer {meta.get('restorer')!r}, not {self.name!r}"
            )
        state = load_file(str(weights))  # on the CPU: load_state_dict copies to the device
        found = nonfinite_tensors(state)
        if found:
            why = (
                f"the {self.name} network would return NaN images (a training that diverged, "
                "or a damaged file: train it again, with a lower learning rate)"
            )
            raise NonFiniteWeightsError(nonfinite_message(weights, found, why))
        # the device is this restorer's, not the saving machine's (a GPU's weights load here)
        saved = {**meta.get("config", {}), "device": self.config.device}
        self.__init__(self.config_cls(**saved))  # type: ignore[misc]
        self.network.load_state_dict(state)
        self.history = list(meta.get("history", []))
        self.trained = True
        return self
