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
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .imaging import denormalize, match_channels, normalize
from .mae import MaskedAutoencoder

__all__ = ["RestorationModel"]


class RestorationModel(nn.Module):
    """``y = denorm(decoder(encoder(norm(x))))`` for ``x`` of any size, 1 or 3 channels.

    With ``residual`` the decoder's output is added to ``norm(x)`` before ``denorm``.

    Inputs ``(N, C, H, W)`` in ``[0, 1]``; the output has the same shape, on the same scale
    (not clamped). Channels are matched to the MAE's (gray replicated to RGB, RGB averaged
    to gray) and back; sizes not divisible by the patch are reflect-padded, then cropped.
    """

    def __init__(
        self, mae: MaskedAutoencoder, freeze_encoder: bool = True, residual: bool = False
    ) -> None:
        super().__init__()
        if not isinstance(mae, MaskedAutoencoder):
            raise TypeError(f"RestorationModel needs a MaskedAutoencoder; got {type(mae).__name__}")
        self.mae = mae
        self.freeze_encoder = freeze_encoder
        self.residual = residual
        self.patch_size = mae.patch_size
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

    @property
    def config(self):  # the wrapped MAE's config (used by checkpoints and upcycling)
        return self.mae.config

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4:
            raise ValueError(f"expected images (N, C, H, W); got {tuple(x.shape)}")
        c_in, h, w = x.shape[1:]
        p = self.patch_size
        pad_h, pad_w = (-h) % p, (-w) % p
        z = match_channels(x, self.mae.in_chans)
        if pad_h or pad_w:
            z = F.pad(z, (0, pad_w, 0, pad_h), mode="reflect" if min(h, w) > p else "replicate")
        zn = normalize(z)
        latent, _, ids_restore, hw = self.mae.forward_encoder(zn, 0.0)
        patches = self.mae.forward_decoder(latent, ids_restore, hw)  # (N, L, p*p*C)
        if self.mae.norm_pix_loss and not self.residual:
            # The decoder was trained on per-patch standardised targets: give every patch the
            # mean and variance of the corresponding input patch (MAE's convention).
            ref = self.mae.patchify(zn)
            mean, var = ref.mean(-1, keepdim=True), ref.var(-1, keepdim=True)
            patches = patches * (var + 1e-6).sqrt() + mean
        pred = self.mae.unpatchify(patches, hw)
        y = denormalize(zn + pred if self.residual else pred)
        return match_channels(y[..., :h, :w], c_in)
