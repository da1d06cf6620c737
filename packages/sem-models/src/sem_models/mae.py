"""ViT masked autoencoder (He et al., MAE) for 1- or 3-channel images of any patch grid.

Structure after facebookresearch/mae ``models_mae.py`` (re-implemented, built on timm's
``PatchEmbed`` and ``Block``): patchify, per-sample random masking, an encoder that sees
only the visible patches, a light decoder that fills in mask tokens, and a loss on the
masked patches only. Differences: 1 or 3 input channels, non-square inputs (position
embeddings resampled to the grid), inputs in ``[0, 1]`` normalised inside the model
(:mod:`sem_models.imaging`), the paper's L1 loss next to MAE's per-patch-normalised MSE,
and optional Mixture-of-Experts feed-forward layers (:mod:`sem_models.moe`).
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any, cast

import torch
from timm.layers import Mlp, PatchEmbed
from timm.models.vision_transformer import Block
from torch import nn

from .config import MAEConfig, MoEConfig, mae_config
from .imaging import as_model_input, check_finite, float32_or_wider, normalize
from .moe import MoEMlp
from .pos_embed import resize_pos_embed, sincos_2d
from .precision import checked_device

__all__ = ["MaskedAutoencoder", "build_mae", "moe_block_indices"]


#: LayerNorm with eps 1e-6, as in MAE and timm's ViT (so public weights behave identically).
_norm_layer = partial(nn.LayerNorm, eps=1e-6)


def moe_block_indices(depth: int, every_n: int) -> list[int]:
    """Blocks that get MoE layers: ``n-1, 2n-1, ...`` (every block for ``n = 1``)."""
    return [i for i in range(depth) if (i + 1) % every_n == 0]


def _moe_layer(moe: MoEConfig) -> Any:
    return partial(
        MoEMlp,
        num_experts=moe.num_experts,
        top_k=moe.top_k,
        capacity_factor=moe.capacity_factor,
        balance_loss=moe.balance_loss,
        z_loss_weight=moe.z_loss_weight,
        gate_weighting=moe.gate_weighting,
    )


def _blocks(
    cfg: MAEConfig, dim: int, depth: int, heads: int, moe_here: bool, dd: dict[str, Any]
) -> nn.ModuleList:
    moe_idx = set(moe_block_indices(depth, cfg.moe.every_n)) if (moe_here and cfg.moe) else set()
    return nn.ModuleList(
        Block(
            dim,
            heads,
            mlp_ratio=cfg.mlp_ratio,
            qkv_bias=cfg.qkv_bias,
            norm_layer=_norm_layer,  # type: ignore[arg-type]
            mlp_layer=_moe_layer(cfg.moe) if (i in moe_idx and cfg.moe) else Mlp,
            **dd,
        )
        for i in range(depth)
    )


class MaskedAutoencoder(nn.Module):
    """MAE with a ViT encoder and a transformer decoder; see :class:`MAEConfig`.

    Parameter names follow the MAE/timm layout (``patch_embed.proj``, ``cls_token``,
    ``blocks.i.attn.qkv``, ``decoder_pred`` ...), so public checkpoints map almost 1:1.
    """

    def __init__(self, config: MAEConfig, device: torch.device | str | None = None) -> None:
        super().__init__()
        self.config = config
        cfg = config
        dd: dict[str, Any] = {"device": device} if device is not None else {}
        self.patch_size = cfg.patch_size
        self.in_chans = cfg.in_chans
        self.norm_pix_loss = cfg.norm_pix_loss
        g = cfg.grid_size

        # Encoder ------------------------------------------------------------
        self.patch_embed = PatchEmbed(
            cfg.img_size, cfg.patch_size, cfg.in_chans, cfg.embed_dim, strict_img_size=False, **dd
        )
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.embed_dim, **dd))
        self.register_buffer("pos_embed", sincos_2d(cfg.embed_dim, (g, g)).to(**dd))
        place = cfg.moe.placement if cfg.moe else None
        self.blocks = _blocks(
            cfg, cfg.embed_dim, cfg.depth, cfg.num_heads, place in ("encoder", "both"), dd
        )
        self.norm = _norm_layer(cfg.embed_dim, **dd)

        # Decoder ------------------------------------------------------------
        d = cfg.decoder_embed_dim
        self.decoder_embed = nn.Linear(cfg.embed_dim, d, **dd)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, d, **dd))
        self.register_buffer("decoder_pos_embed", sincos_2d(d, (g, g)).to(**dd))
        self.decoder_blocks = _blocks(
            cfg, d, cfg.decoder_depth, cfg.decoder_num_heads, place in ("decoder", "both"), dd
        )
        self.decoder_norm = _norm_layer(d, **dd)
        self.decoder_pred = nn.Linear(d, cfg.patch_size**2 * cfg.in_chans, **dd)

        if self.cls_token.device.type != "meta":
            self._init_weights()

    # ------------------------------------------------------------------ init
    def _init_weights(self) -> None:
        w = self.patch_embed.proj.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))  # like a Linear on flattened patches
        nn.init.normal_(self.cls_token, std=0.02)
        nn.init.normal_(self.mask_token, std=0.02)
        for name, m in self.named_modules():
            if isinstance(m, nn.Linear) and not name.endswith(".gate"):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    # ------------------------------------------------------------------ patches
    def _grid(self, h: int, w: int) -> tuple[int, int]:
        p = self.patch_size
        if h % p or w % p or h == 0 or w == 0:
            raise ValueError(
                f"imgs of {h}x{w} px: height and width must each be a multiple of the patch "
                f"size {p} px, at least one patch; crop or pad the input (RestorationModel pads "
                "any size)"
            )
        return h // p, w // p

    def patchify(self, imgs: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` -> ``(N, L, p*p*C)``, row-major patches, channel fastest."""
        n, c, hh, ww = imgs.shape
        p = self.patch_size
        h, w = self._grid(hh, ww)
        x = imgs.reshape(n, c, h, p, w, p)
        x = torch.einsum("nchpwq->nhwpqc", x)
        return x.reshape(n, h * w, p * p * c)

    def unpatchify(self, x: torch.Tensor, hw: tuple[int, int] | None = None) -> torch.Tensor:
        """``(N, L, p*p*C)`` -> ``(N, C, H, W)``; grid ``hw`` in patches (square if omitted)."""
        n, length, d = x.shape
        p = self.patch_size
        c = d // (p * p)
        if hw is None:
            h = w = math.isqrt(length)
            if h * w != length:
                raise ValueError(f"{length} patches do not form a square grid; pass hw=(h, w)")
        else:
            h, w = hw
        x = x.reshape(n, h, w, p, p, c)
        x = torch.einsum("nhwpqc->nchpwq", x)
        return x.reshape(n, c, h * p, w * p)

    def _pos(self, name: str, hw: tuple[int, int]) -> torch.Tensor:
        g = self.config.grid_size
        return resize_pos_embed(getattr(self, name), (g, g), hw)

    def _input(self, x: torch.Tensor, name: str = "imgs") -> torch.Tensor:
        """``x`` as the model takes it: a float tensor ``(N, in_chans, H, W)`` in the
        parameters' dtype (:func:`~sem_models.imaging.as_model_input`); another channel count
        is refused naming ``name`` (normalising would otherwise fail on its statistics)."""
        x = as_model_input(x, self.cls_token.dtype, name)
        if x.ndim != 4 or x.shape[1] != self.in_chans:
            raise ValueError(
                f"{name} must be images (N, {self.in_chans}, H, W) for this "
                f"{self.in_chans}-channel model; got shape {tuple(x.shape)}"
            )
        return x

    # ------------------------------------------------------------------ masking
    @staticmethod
    def random_masking(
        x: torch.Tensor, mask_ratio: float, noise: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Keep the ``L (1 - r)`` tokens with the smallest noise, per sample.

        x: ``(N, L, D)``; noise: ``(N, L)`` uniform (drawn if None). Returns the kept tokens
        ``(N, L_keep, D)``, the mask ``(N, L)`` (1 = removed) and ``ids_restore`` ``(N, L)``.
        """
        if not 0 <= mask_ratio < 1:  # (NaN too) else the slices below keep a wrong count
            raise ValueError(f"mask_ratio={mask_ratio} must be in [0, 1)")
        n, length, d = x.shape
        len_keep = int(length * (1 - mask_ratio))
        if noise is None:
            noise = torch.rand(n, length, device=x.device)
        elif noise.shape != (n, length):
            raise ValueError(f"noise must have shape {(n, length)}; got {tuple(noise.shape)}")
        ids_shuffle = torch.argsort(noise, dim=1)  # ascending: first ones are kept
        ids_restore = torch.argsort(ids_shuffle, dim=1)
        ids_keep = ids_shuffle[:, :len_keep]
        kept = torch.gather(x, 1, ids_keep[..., None].expand(-1, -1, d))
        mask = torch.ones(n, length, device=x.device, dtype=x.dtype)
        mask[:, :len_keep] = 0
        mask = torch.gather(mask, 1, ids_restore)
        return kept, mask, ids_restore

    # ------------------------------------------------------------------ encoder / decoder
    def forward_encoder(
        self, imgs: torch.Tensor, mask_ratio: float, noise: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, tuple[int, int]]:
        """Normalised images -> latent ``(N, 1 + L_keep, D)``, mask, ids_restore, grid."""
        imgs = self._input(imgs)
        hw = self._grid(imgs.shape[-2], imgs.shape[-1])
        x = self.patch_embed(imgs)  # (N, L, D)
        x = x + self._pos("pos_embed", hw)[:, 1:]
        if mask_ratio > 0 or noise is not None:
            x, mask, ids_restore = self.random_masking(x, mask_ratio, noise)
        else:  # every patch visible, in order
            n, length = x.shape[:2]
            mask = x.new_zeros(n, length)
            ids_restore = torch.arange(length, device=x.device).expand(n, -1)
        cls_pos = cast(torch.Tensor, self.pos_embed)[:, :1]
        cls = (self.cls_token + cls_pos).expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1)  # (N, 1 + L_keep, D)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x), mask, ids_restore, hw

    def forward_decoder(
        self, latent: torch.Tensor, ids_restore: torch.Tensor, hw: tuple[int, int]
    ) -> torch.Tensor:
        """Latent ``(N, 1 + L_keep, D)`` -> predictions ``(N, L, p*p*C)`` for every patch."""
        x = self.decoder_embed(latent)  # (N, 1 + L_keep, Dd)
        n, length = ids_restore.shape
        mask_tokens = self.mask_token.expand(n, length + 1 - x.shape[1], -1)
        body = torch.cat([x[:, 1:], mask_tokens], dim=1)  # (N, L, Dd), shuffled order
        body = torch.gather(body, 1, ids_restore[..., None].expand(-1, -1, x.shape[2]))
        x = torch.cat([x[:, :1], body], dim=1) + self._pos("decoder_pos_embed", hw)
        for blk in self.decoder_blocks:
            x = blk(x)
        return self.decoder_pred(self.decoder_norm(x))[:, 1:]

    def target(self, imgs: torch.Tensor) -> torch.Tensor:
        """The reconstruction target ``(N, L, p*p*C)`` in the space of ``pred``.

        ``[0, 1]`` images are normalised (ViT-MAE statistics) and patchified; with
        ``norm_pix_loss`` each patch is further standardised (mean 0, variance 1).
        """
        target = self.patchify(normalize(imgs))
        if self.norm_pix_loss:
            mean = target.mean(dim=-1, keepdim=True)
            var = target.var(dim=-1, keepdim=True)
            target = (target - mean) / (var + 1e-6) ** 0.5
        return target

    def forward_loss(
        self, imgs: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """Mean per-pixel error over the masked patches only.

        ``l1_norm`` (paper eq. 4): ``sum(M |x_hat - x|) / sum(M)`` in normalised pixels;
        ``mse_norm_pix`` (MAE): the same with squared error and per-patch targets. Computed in
        float32 (under bf16 autocast too), in float64 for a float64 model.
        """
        err = float32_or_wider(pred) - float32_or_wider(self.target(imgs))
        err = err.abs() if self.config.loss == "l1_norm" else err**2
        per_patch = err.mean(dim=-1)  # (N, L)
        return (per_patch * mask).sum() / mask.sum().clamp_min(1)

    def forward(
        self, imgs: torch.Tensor, mask_ratio: float | None = None, noise: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``[0, 1]`` images ``(N, C, H, W)`` -> (loss, pred ``(N, L, p*p*C)``, mask ``(N, L)``).

        Any float dtype is cast to the parameters' (under autocast float32 and the autocast
        dtype are left to it); integer images are refused (:func:`~sem_models.imaging.as_model_input`), and so are NaN or inf on the
        CPU (:func:`~sem_models.imaging.check_finite`).
        """
        imgs = self._input(imgs)
        check_finite(imgs, "imgs")
        ratio = self.config.mask_ratio if mask_ratio is None else mask_ratio
        if not 0 <= ratio < 1:
            raise ValueError(f"mask_ratio={ratio} must be in [0, 1)")
        latent, mask, ids_restore, hw = self.forward_encoder(normalize(imgs), ratio, noise)
        pred = self.forward_decoder(latent, ids_restore, hw)
        return self.forward_loss(imgs, pred, mask), pred, mask

    def encoder_parameters(self) -> list[nn.Parameter]:
        """Parameters of the encoder (patch embedding, class token, blocks, final norm)."""
        mods = [self.patch_embed, self.blocks, self.norm]
        return [self.cls_token] + [p for m in mods for p in m.parameters()]


def build_mae(
    preset: str, device: torch.device | str | None = None, **overrides: Any
) -> MaskedAutoencoder:
    """A fresh :class:`MaskedAutoencoder` from a preset (``tiny`` ... ``huge``).

    ``overrides`` are :class:`MAEConfig` fields (``in_chans``, ``img_size``, ``loss``,
    ``moe`` ...); an unknown key raises :class:`~sem_models.config.ModelConfigError`.
    ``device="meta"`` builds the architecture without allocating weights.
    """
    if device is not None:
        device = checked_device(device)
    return MaskedAutoencoder(mae_config(preset, **overrides), device=device)
