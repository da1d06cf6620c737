"""Validation image metrics in torch (PSNR, SSIM) and the metrics log (JSONL + TensorBoard).

PSNR and SSIM are computed on the training device for monitoring only (model selection uses
the validation loss, as in the paper). Images are in [0, 1].
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from sem_physics.atomic import atomic_write_text

__all__ = ["MetricsLogger", "psnr", "ssim"]


def _tensors(name: str, *xs: object) -> None:
    """Refuse what is not a tensor, naming the image metric to use instead."""
    if not all(isinstance(x, torch.Tensor) for x in xs):
        kinds = ", ".join(sorted({type(x).__name__ for x in xs}))
        raise TypeError(
            f"sem_train.{name} scores batches of torch tensors (N, C, H, W) on 0..data_range "
            f"during training; got {kinds}: for images use sem_metrology.{name}(reference, "
            "image) (0..255 by default)"
        )


def psnr(pred: torch.Tensor, target: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Per-image PSNR in dB of (N, C, H, W) tensors: ``10 log10(range^2 / mse)``, shape (N,).
    The training loop's metric (0..1 by default); images: :func:`sem_metrology.psnr`."""
    _tensors("psnr", pred, target)
    mse = (pred.float() - target.float()).square().flatten(1).mean(1)
    return 10.0 * torch.log10(data_range**2 / mse.clamp_min(1e-12))


def _gauss(size: int, sigma: float, device: torch.device) -> torch.Tensor:
    x = torch.arange(size, device=device, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def ssim(
    pred: torch.Tensor,
    target: torch.Tensor,
    data_range: float = 1.0,
    win: int = 11,
    sigma: float = 1.5,
) -> torch.Tensor:
    """Per-image SSIM (Wang et al. 2004; Gaussian window 11 / 1.5, valid region) of (N, C, H, W)
    tensors, shape (N,). The training loop's metric; images: :func:`sem_metrology.ssim`."""
    _tensors("ssim", pred, target)
    x, y = pred.float(), target.float()
    c = x.shape[1]
    win = min(win, x.shape[-1], x.shape[-2])
    g = _gauss(win, sigma, x.device)
    k = (g[:, None] * g[None, :]).expand(c, 1, win, win)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, k, groups=c)

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mx, my = blur(x), blur(y)
    sxx = blur(x * x) - mx * mx
    syy = blur(y * y) - my * my
    sxy = blur(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return s.flatten(1).mean(1)


class MetricsLogger:
    """Append-only JSONL metrics (one object per line) and, when installed, TensorBoard scalars.

    On resume, :meth:`truncate_after` drops lines logged after the checkpoint being resumed so
    that the file reads like one uninterrupted run.
    """

    def __init__(self, path: Path, *, tensorboard_dir: Path | None = None, enabled: bool = True):
        self.path = Path(path)
        self.enabled = enabled
        self._tb: Any = None
        self._tb_dir = tensorboard_dir
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._tb = self._writer()

    def _writer(self, purge_step: int | None = None) -> Any:
        """A TensorBoard writer (None without tensorboard: JSONL only); with ``purge_step``,
        TensorBoard hides the events of that step and later that the folder already holds."""
        if self._tb_dir is None:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter

            return SummaryWriter(str(self._tb_dir), purge_step=purge_step)
        except Exception:  # tensorboard not installed or broken: JSONL only
            return None

    def truncate_after(self, step: int) -> None:
        """Keep only records with ``step <= step``, in the JSONL file and as TensorBoard shows
        them (its events after ``step`` are purged, so the curves have no step twice)."""
        if not self.enabled:
            return
        if self._tb is not None:
            self._tb.close()
            self._tb = self._writer(purge_step=max(step + 1, 0))
        if not self.path.is_file():
            return
        kept = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                if json.loads(line).get("step", 0) <= step:
                    kept.append(line)
            except ValueError:
                continue
        atomic_write_text(self.path, "".join(k + "\n" for k in kept))

    def log(self, record: dict[str, Any]) -> None:
        """Write one record (floats rounded to 7 significant digits, tensors converted)."""
        if not self.enabled:
            return
        clean: dict[str, Any] = {}
        for k, v in record.items():
            if isinstance(v, torch.Tensor):
                v = v.item()
            if isinstance(v, float):
                v = float(f"{v:.7g}") if math.isfinite(v) else str(v)
            clean[k] = v
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(clean) + "\n")
        if self._tb is not None:
            split = clean.get("split", "train")
            step = int(clean.get("step", 0))
            for k, v in clean.items():
                if isinstance(v, int | float) and k not in ("step", "epoch"):
                    self._tb.add_scalar(f"{split}/{k}", v, step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.flush()
            self._tb.close()
            self._tb = None
