"""Training losses: restoration (eq. 17-20), masked distillation (eq. 7), frequency (eq. 11-15).

Images are (N, C, H, W) tensors; masks are pixel masks of the same spatial size with 1 where
a pixel was masked (MAE convention: 1 = removed, supervised). Means replace the paper's sums
in eq. 18-20 so that loss weights do not depend on the crop size.
"""

from __future__ import annotations

import torch

from .config import LossConfig

__all__ = [
    "affine_matched",
    "charbonnier_loss",
    "distillation_loss",
    "edge_loss",
    "fft_amplitude_loss",
    "frequency_loss",
    "level_set_loss",
    "masked_l1",
    "psd_loss",
    "radial_psd",
    "restoration_loss",
    "tv_loss",
]


def charbonnier_loss(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """``mean sqrt((x_hat - x)^2 + eps^2)`` (eq. 18): a smooth, outlier-robust L1."""
    return torch.sqrt((pred - target).square() + eps * eps).mean()


def _dx(x: torch.Tensor) -> torch.Tensor:
    return x[..., :, 1:] - x[..., :, :-1]


def _dy(x: torch.Tensor) -> torch.Tensor:
    return x[..., 1:, :] - x[..., :-1, :]


def edge_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``mean|grad_x x_hat - grad_x x| + mean|grad_y x_hat - grad_y x|`` (eq. 19), forward differences."""
    return (_dx(pred) - _dx(target)).abs().mean() + (_dy(pred) - _dy(target)).abs().mean()


def tv_loss(pred: torch.Tensor) -> torch.Tensor:
    """Anisotropic total variation ``mean|x(u+1,v) - x(u,v)| + mean|x(u,v+1) - x(u,v)|`` (eq. 20)."""
    return _dy(pred).abs().mean() + _dx(pred).abs().mean()


def restoration_loss(
    pred: torch.Tensor, target: torch.Tensor, cfg: LossConfig | None = None
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Eq. 17: ``L_Charb + lambda_e L_edge + lambda_tv L_TV`` ("L1+TV") or ``L_Charb`` ("L1"),
    plus ``structure_weight`` times the Charbonnier loss after affine matching and
    ``level_set_weight`` times :func:`level_set_loss` of the affine-matched prediction when set.

    Returns the total and its detached parts for logging.
    """
    cfg = cfg or LossConfig()
    charb = charbonnier_loss(pred, target, cfg.charbonnier_eps)
    parts = {"charbonnier": charb.detach()}
    total = charb
    matched = (
        affine_matched(pred, target)
        if cfg.structure_weight > 0 or cfg.level_set_weight > 0
        else None
    )
    if cfg.structure_weight > 0 and matched is not None:
        structure = charbonnier_loss(matched, target, cfg.charbonnier_eps)
        parts["structure"] = structure.detach()
        total = total + cfg.structure_weight * structure
    if cfg.level_set_weight > 0 and matched is not None:
        level = level_set_loss(matched, target)
        parts["level_set"] = level.detach()
        total = total + cfg.level_set_weight * level
    if cfg.variant == "L1":
        return total, parts
    edge = edge_loss(pred, target)
    tv = tv_loss(pred)
    parts.update(edge=edge.detach(), tv=tv.detach())
    return total + cfg.edge_weight * edge + cfg.tv_weight * tv, parts


def level_set_loss(
    pred: torch.Tensor, target: torch.Tensor, steepness: float = 8.0, tail: float = 0.02
) -> torch.Tensor:
    """``mean|s(pred) - s(target)|`` with ``s(x) = sigmoid(k (x - m) / (hi - lo))``.

    ``lo`` and ``hi`` are the target's ``tail`` and ``1 - tail`` quantiles per image and
    channel, ``m`` their mean: ``s`` is a soft map of which side of the half level each pixel
    lies on, so the loss weighs where the contours lie (what a threshold edge detector, and the
    CD read from it, see) and not the grey levels away from them.
    """
    t = target.float().flatten(-2)
    q = torch.quantile(t, torch.tensor([tail, 1.0 - tail], device=t.device), dim=-1)
    lo, hi = q[0][..., None, None], q[1][..., None, None]
    mid, scale = 0.5 * (lo + hi), (hi - lo).clamp_min(1e-3)

    def soft(x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(steepness * (x.float() - mid) / scale)

    return (soft(pred) - soft(target)).abs().mean()


def affine_matched(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``a * pred + b`` per image and channel, ``(a, b)`` the least-squares fit to ``target``.

    The PSNR after affine matching of the evaluation tables, made differentiable: a loss on it
    sees the structure of a prediction and not its brightness (gain and offset of a defocused
    image cannot be read from the image alone).
    """
    p, t = pred.float(), target.float()
    pc = p - p.mean(dim=(-2, -1), keepdim=True)
    tc = t - t.mean(dim=(-2, -1), keepdim=True)
    a = (pc * tc).mean(dim=(-2, -1), keepdim=True) / pc.square().mean(
        dim=(-2, -1), keepdim=True
    ).clamp_min(1e-12)
    return (a * pc + t.mean(dim=(-2, -1), keepdim=True)).to(pred.dtype)


def masked_l1(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``sum M |pred - target| / sum M`` (eq. 4 and 7), ``mask`` broadcastable to ``pred``.

    Works on pixels (N, C, H, W) with a pixel mask, or on patches (N, L, D) with a patch mask
    (N, L, 1): patches have equal pixel counts, so both give the same value.
    """
    mask = mask.to(pred.dtype)
    weight = mask.expand_as(pred)
    return (weight * (pred - target).abs()).sum() / weight.sum().clamp_min(1.0)


def distillation_loss(
    student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Eq. 7: masked L1 between the student's and the (detached) teacher's reconstructions."""
    return masked_l1(student, teacher.detach(), mask)


def fft_amplitude_loss(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Eq. 11-12: ``e = M (x_hat - x)``, ``L_FFT = (1/HW) sum |F(e)|``, averaged over N, C.

    ``F`` is the orthonormal DFT (``norm="ortho"``), our reading of the paper's unspecified
    normalisation: it makes the loss independent of the crop size and puts it on the pixel
    error's scale (Parseval: ``mean |F(e)|^2 = mean e^2``), so the paper's weight 0.1 keeps
    it a refinement term instead of one growing with ``sqrt(HW)``. Zero exactly when the
    masked error is zero; an error impulse of height ``d`` gives ``|d| / sqrt(HW)``.
    """
    e = mask.to(pred.dtype) * (pred - target)
    spec = torch.fft.fft2(e.float(), norm="ortho")
    return spec.abs().mean(dim=(-2, -1)).mean()


def _ring_index(h: int, w: int, bins: int, device: torch.device) -> torch.Tensor:
    fy = torch.fft.fftfreq(h, device=device)
    fx = torch.fft.fftfreq(w, device=device)
    r = torch.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2)  # cycles / px, 0 .. 0.707
    return (r / 0.5 * bins).long().clamp_max(bins - 1).flatten()


def radial_psd(x: torch.Tensor, bins: int | None = None, include_dc: bool = False) -> torch.Tensor:
    """Radially averaged power spectrum (eq. 13) of (N, C, H, W) -> (N, C, R).

    ``|DFT_ortho(x)|^2`` averaged over rings of equal width in radial frequency up to Nyquist
    (0.5 cycles/px; the corner frequencies beyond it join the last ring). The orthonormal DFT
    keeps the values on the scale of the image's mean power (Parseval). The zero frequency is
    left out by default: its power ``HW mean(x)^2`` grows with the image size and would swamp
    every texture ring, while the mean intensity is already supervised by the pixel loss.
    """
    h, w = x.shape[-2:]
    bins = bins or max(1, min(h, w) // 2)
    power = torch.fft.fft2(x.float(), norm="ortho").abs().square().flatten(-2)  # (N, C, HW)
    idx = _ring_index(h, w, bins, x.device)
    weight = torch.ones(h * w, device=x.device, dtype=power.dtype)
    if not include_dc:
        weight[0] = 0.0
    sums = torch.zeros(*power.shape[:-1], bins, device=x.device, dtype=power.dtype)
    sums = sums.index_add(-1, idx, power * weight)
    counts = torch.zeros(bins, device=x.device, dtype=power.dtype).index_add(0, idx, weight)
    return sums / counts.clamp_min(1.0)


def psd_loss(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, bins: int | None = None
) -> torch.Tensor:
    """Eq. 14: ``(1/R) sum_r |PSD(M x_hat)(r) - PSD(M x)(r)|``, averaged over N, C."""
    m = mask.to(pred.dtype)
    return (radial_psd(m * pred, bins) - radial_psd(m * target, bins)).abs().mean()


def frequency_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor,
    *,
    fft_weight: float = 0.1,
    psd_weight: float = 0.1,
    bins: int | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``nu (L_FFT + eta L_PSD)`` of eq. 15-16 with ``nu = fft_weight``, ``nu eta = psd_weight``."""
    fft = fft_amplitude_loss(pred, target, mask)
    psd = psd_loss(pred, target, mask, bins)
    return fft_weight * fft + psd_weight * psd, {"fft": fft.detach(), "psd": psd.detach()}
