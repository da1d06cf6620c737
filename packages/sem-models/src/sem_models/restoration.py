"""Defocus-to-focus restoration with a pretrained MAE (arXiv 2604.05960, downstream fine-tune).

The encoder sees *all* patches of the defocused image (no masking) and the decoder predicts
every patch of the focused image. By default the encoder is frozen and the decoder (plus, for
MoE models, whatever the trainer re-enables, e.g. the routers) is trained.

A direct (``residual=False``) model whose MAE was trained with ``norm_pix_loss`` predicts
per-patch standardised patches; each gets the mean and variance of its input patch back.

With ``residual=True`` the decoder predicts the correction to the (normalised) input instead
of the focused image itself; :meth:`RestorationModel.start_as_identity` zeroes the decoder's
output layer so that fine-tuning starts from "return the input" rather than from the
pretrained reconstruction. Small models trained briefly otherwise regress to blurry, blocky
patch averages; the residual form keeps the input's detail from the first step.

With ``refiner_width > 0`` a small two-scale convolutional U-Net (:class:`RefinerHead`) runs
at full resolution on the input and the transformer's output and adds its own correction.
The transformer sees the image in 16-px (or 8-px) tokens: it carries the global context a
30-px defocus blur needs, but its patch-wise output leaves a visible patch grid and little
sub-patch detail; the refiner's 3x3 convolutions cross every patch border and put back the
fine edges. Its output layer starts at zero, so adding it leaves the model's function
unchanged until it is trained.

With ``guide_balances`` (physics guidance) the refiner also sees Wiener-Hunt deconvolutions of
the input, one per balance, computed by the caller with the input's PSF (its blind estimate at
inference, ``sem_physics.batched.wiener_batch``) and appended to the input as extra channels:
``(N, C + G, H, W)`` in, ``(N, C, H, W)`` out. A transformer of 16-px tokens cannot invert a
30-px Airy blur from a few fine-tuning steps; the deconvolutions hand the refiner the
physically exact inverse at several noise trade-offs, and it learns which to trust where
(edges, flat areas, noise) and the nonlinear corrections no linear filter makes. A residual
guided model adds its corrections to the middle guide instead of the input: started as the
identity it returns that deconvolution, and fine-tuning starts from the physics estimate.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from numbers import Integral

import numpy as np
import torch
from torch import nn

from .config import MAEConfig
from .imaging import (
    as_model_input,
    check_finite,
    denormalize,
    float32_or_wider,
    match_channels,
    normalize,
    reflect_pad,
)
from .mae import MaskedAutoencoder

__all__ = ["RefinerHead", "RestorationModel"]


def _flag(value: object, name: str) -> bool:
    """``value`` as a bool: True, False (or 1, 0); anything else (a ``"no"`` string, which is
    truthy) is refused naming ``name``."""
    if isinstance(value, (bool, np.bool_)) or (isinstance(value, Integral) and value in (0, 1)):
        return bool(value)
    raise ValueError(f"{name} must be True or False; got {value!r}")


def _numbers(values: Iterable[object], name: str) -> tuple[float, ...]:
    """``values`` as floats; a bool or a string among them is refused naming ``name``."""
    items = list(values)  # a generator is read once
    try:
        if any(isinstance(v, (bool, np.bool_, str, bytes)) for v in items):
            raise TypeError
        return tuple(float(v) for v in items)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be numbers; got {values!r}") from None


def _conv(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1), nn.GELU())


class RefinerHead(nn.Module):
    """Full-resolution correction from (input, transformer output): a two-level U-Net.

    ``forward(x, y)`` takes both ``(N, C, H, W)`` (normalised, H and W divisible by 4) and
    returns the correction to add to ``y``. The last convolution starts at zero.
    """

    def __init__(self, channels: int, width: int = 32, extra: int = 0) -> None:
        super().__init__()
        if width < 1:
            raise ValueError(f"refiner width must be >= 1, got {width}")
        w = int(width)
        self.enc1 = nn.Sequential(_conv(2 * channels + int(extra), w), _conv(w, w))
        self.enc2 = nn.Sequential(_conv(w, 2 * w, stride=2), _conv(2 * w, 2 * w))
        self.enc3 = nn.Sequential(_conv(2 * w, 4 * w, stride=2), _conv(4 * w, 4 * w))
        self.up2 = nn.ConvTranspose2d(4 * w, 2 * w, 2, stride=2)
        self.dec2 = _conv(4 * w, 2 * w)
        self.up1 = nn.ConvTranspose2d(2 * w, w, 2, stride=2)
        self.dec1 = _conv(2 * w, w)
        self.out = nn.Conv2d(w, channels, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        assert self.out.bias is not None
        nn.init.zeros_(self.out.bias)

    def forward(
        self, x: torch.Tensor, y: torch.Tensor, guides: torch.Tensor | None = None
    ) -> torch.Tensor:
        a = self.enc1(torch.cat([x, y] if guides is None else [x, y, guides], dim=1))
        b = self.enc2(a)
        c = self.enc3(b)
        d = self.dec2(torch.cat([self.up2(c), b], dim=1))
        return self.out(self.dec1(torch.cat([self.up1(d), a], dim=1)))


class RestorationModel(nn.Module):
    """``y = denorm(decoder(encoder(norm(x))))`` for ``x`` of any size, 1 or 3 channels.

    With ``residual`` the decoder's output is added to ``norm(x)`` before ``denorm``; with
    ``refiner_width > 0`` a :class:`RefinerHead` of that width adds its full-resolution
    correction (sizes are then padded to a multiple of the patch and of 4).

    Inputs ``(N, C, H, W)`` in ``[0, 1]``; the output has the same shape, on the same scale
    (not clamped). Channels are matched to the MAE's (gray replicated to RGB, RGB averaged
    to gray) and back; sizes not divisible by the patch are padded at the bottom and right
    by symmetric reflection (:func:`~sem_models.imaging.reflect_indices`, the padding of
    :func:`~sem_models.sliding_window.sliding_window`), then cropped.
    """

    def __init__(
        self,
        mae: MaskedAutoencoder,
        freeze_encoder: bool = True,
        residual: bool = False,
        refiner_width: int = 0,
        masked_ensemble: int = 0,
        guide_balances: tuple[float, ...] | list[float] = (),
    ) -> None:
        super().__init__()
        if not isinstance(mae, MaskedAutoencoder):
            raise TypeError(f"RestorationModel needs a MaskedAutoencoder; got {type(mae).__name__}")
        self.mae = mae
        self.freeze_encoder = _flag(freeze_encoder, "freeze_encoder")
        self.residual = _flag(residual, "residual")
        self.patch_size = mae.patch_size
        whole = isinstance(refiner_width, Integral) and not isinstance(refiner_width, bool)
        if not whole or refiner_width < 0:  # a fractional width was truncated
            raise ValueError(
                f"refiner_width must be a whole number >= 0 (0 = no refiner), got {refiner_width!r}"
            )
        self.refiner_width = int(refiner_width)
        if isinstance(masked_ensemble, bool) or masked_ensemble not in (0, 4):
            raise ValueError(f"masked_ensemble must be 0 (off) or 4, got {masked_ensemble!r}")
        if masked_ensemble and residual:
            raise ValueError("masked_ensemble is the zero-shot reconstruction: residual=False")
        self.masked_ensemble = int(masked_ensemble)
        if isinstance(guide_balances, (str, bytes)) or not isinstance(guide_balances, Iterable):
            raise ValueError(
                "guide_balances is a sequence of Wiener-Hunt balances, e.g. (0.03, 0.3, 3.0); "
                f"got {guide_balances!r}"
            )
        self.guide_balances = _numbers(guide_balances, "guide_balances")
        if any(not (v > 0 and math.isfinite(v)) for v in self.guide_balances):
            raise ValueError(f"guide_balances must be finite and > 0, got {guide_balances}")
        if self.guide_balances and not refiner_width:
            raise ValueError("guide_balances need a refiner (refiner_width > 0) to read them")
        extra = len(self.guide_balances)
        self.refiner = RefinerHead(mae.in_chans, refiner_width, extra) if refiner_width else None
        if freeze_encoder:
            for p in mae.encoder_parameters():
                p.requires_grad_(False)

    def start_as_identity(self) -> RestorationModel:
        """Zero the decoder's output layer: a residual model then returns its input exactly.

        Only the output layer is zeroed; its gradient is non-zero, so training moves away from
        the identity at the first step. Returns ``self``. Raises for a non-residual model,
        which would then output a constant image.
        """
        if not self.residual:
            raise ValueError("start_as_identity() needs residual=True (else the output is flat)")
        with torch.no_grad():
            self.mae.decoder_pred.weight.zero_()
            self.mae.decoder_pred.bias.zero_()
        return self

    def _masked_reconstruction(self, zn: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """Every patch predicted while it is masked: 4 passes, each showing the encoder one
        interleaved quarter of the patches ((row % 2, col % 2) groups), each patch's
        predictions from the 3 passes that hide it averaged.

        An MAE's decoder is trained on masked patches only; its output for visible patches is
        untrained, so an unmasked pass does not reconstruct the image.
        """
        p = self.mae.patch_size
        gh, gw = zn.shape[-2] // p, zn.shape[-1] // p
        rows = torch.arange(gh, device=zn.device)[:, None] % 2
        cols = torch.arange(gw, device=zn.device)[None, :] % 2
        group = (2 * rows + cols).reshape(-1)  # (L,)
        length = gh * gw
        total = zn.new_zeros(zn.shape[0], length, p * p * self.mae.in_chans)
        count = zn.new_zeros(zn.shape[0], length, 1)
        hw = (gh, gw)
        for k in range(4):
            keep = group == k
            n_keep = int(keep.sum())
            if n_keep == 0 or n_keep == length:
                continue
            noise = (~keep).float() + torch.linspace(0, 0.5, length, device=zn.device)
            noise = noise.expand(zn.shape[0], -1)
            ratio = 1.0 - (n_keep + 0.5) / length
            latent, mask, ids_restore, hw = self.mae.forward_encoder(zn, ratio, noise)
            pred = self.mae.forward_decoder(latent, ids_restore, hw)
            total = total + pred * mask[..., None]
            count = count + mask[..., None]
        return total / count.clamp_min(1), hw

    @property
    def config(self) -> MAEConfig:
        """The wrapped MAE's config (what checkpoints and upcycling read)."""
        return self.mae.config

    @property
    def guide_channels(self) -> int:
        """Extra input channels the model expects (one Wiener-Hunt guide per balance)."""
        return len(self.guide_balances)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Restore ``x`` ``(N, C [+ G], H, W)`` in ``[0, 1]`` -> ``(N, C, H, W)``, same scale.

        ``G`` guide channels follow the image for a guided model (:attr:`guide_channels`).
        Any float dtype is cast to the parameters' (under autocast float32 and the autocast
        dtype are left to it); the output is float32 (also under bf16 autocast; float64 for a
        float64 model). Integer and empty images are refused, and NaN or
        inf on the CPU (:func:`~sem_models.imaging.check_finite`).
        """
        x = as_model_input(x, self.mae.cls_token.dtype, "x")
        if x.ndim != 4:
            raise ValueError(f"x must be images (N, C, H, W); got shape {tuple(x.shape)}")
        if x.shape[-2] == 0 or x.shape[-1] == 0:
            raise ValueError(f"x is an empty image ({x.shape[-2]}x{x.shape[-1]} px)")
        check_finite(x, "x")
        n_guides = self.guide_channels
        if x.shape[1] - n_guides not in (1, 3):  # gray or RGB, matched to the MAE's channels
            accepted = f"{1 + n_guides} or {3 + n_guides}"
            if n_guides:
                accepted += (
                    f" (a gray or RGB image plus {n_guides} guide channel(s), Wiener-Hunt at "
                    f"balances {list(self.guide_balances)})"
                )
            else:
                accepted += " (gray or RGB)"
            raise ValueError(f"x has {x.shape[1]} channel(s); this model takes {accepted}")
        guides = x[:, x.shape[1] - n_guides :] if n_guides else None
        x = x[:, : x.shape[1] - n_guides]
        c_in, h, w = x.shape[1:]
        p = self.patch_size
        if self.refiner is not None:
            p = math.lcm(p, 4)  # the refiner halves the resolution twice
        pad_h, pad_w = (-h) % p, (-w) % p
        z = match_channels(x, self.mae.in_chans)
        if pad_h or pad_w:
            z = reflect_pad(z, pad_h, pad_w)
            if guides is not None:
                guides = reflect_pad(guides, pad_h, pad_w)
        zn = normalize(z)
        if guides is not None:  # on the normalised scale of the image's first channel
            gn = normalize(guides.reshape(-1, 1, *guides.shape[-2:])).reshape(guides.shape)
        if self.masked_ensemble:
            patches, hw = self._masked_reconstruction(zn)
        else:
            latent, _, ids_restore, hw = self.mae.forward_encoder(zn, 0.0)
            patches = self.mae.forward_decoder(latent, ids_restore, hw)  # (N, L, p*p*C)
        if self.mae.norm_pix_loss and not self.residual:
            # The decoder was trained on per-patch standardised targets: give every patch the
            # mean and variance of the corresponding input patch (MAE's convention).
            ref = self.mae.patchify(zn)
            mean, var = ref.mean(-1, keepdim=True), ref.var(-1, keepdim=True)
            patches = patches * (var + 1e-6).sqrt() + mean
        # fp32 under bf16 autocast too; a float64 model's prediction is not rounded to fp32
        pred = self.mae.unpatchify(float32_or_wider(patches), hw)
        if self.residual and guides is not None:
            # Guided: the correction is added to the middle guide (the deconvolved input), so
            # that a model starting as the identity starts at the physics estimate.
            mid = gn[:, self.guide_channels // 2 : self.guide_channels // 2 + 1]
            out = mid.expand_as(zn) + pred
        else:
            out = zn + pred if self.residual else pred
        if self.refiner is not None:
            r_in = [zn, out, gn if guides is not None else None]
            if not torch.is_autocast_enabled(out.device.type):  # e.g. a bf16 model
                dt = self.refiner.out.weight.dtype
                r_in = [t if t is None else t.to(dt) for t in r_in]
            out = out + self.refiner(*r_in)
        y = denormalize(out)
        return match_channels(y[..., :h, :w], c_in)
