"""Fixed 2-D sine-cosine position embeddings and their resampling to other grids.

For a token at grid row ``r`` and column ``c`` and width ``D`` (a multiple of 4), the first
``D/2`` channels encode ``c`` and the last ``D/2`` encode ``r``, each as
``[sin(pos * w_i), cos(pos * w_i)]`` with ``w_i = 10000^(-i / (D/4))``, ``i < D/4``
(Vaswani et al.; the 2-D form of MAE). A class token, when present, gets zeros.
"""

from __future__ import annotations

import torch
from timm.layers import resample_abs_pos_embed

__all__ = ["resize_pos_embed", "sincos_1d", "sincos_2d"]


def sincos_1d(dim: int, pos: torch.Tensor) -> torch.Tensor:
    """``(M,)`` positions -> ``(M, dim)`` embeddings ``[sin(pos w), cos(pos w)]``."""
    if dim % 2:
        raise ValueError(f"sin-cos embedding width must be even; got {dim}")
    omega = torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0)
    omega = 1.0 / 10000**omega  # (D/2,)
    out = pos.to(torch.float64).reshape(-1, 1) * omega[None]  # (M, D/2)
    return torch.cat([out.sin(), out.cos()], dim=1)


def sincos_2d(dim: int, grid_hw: tuple[int, int], cls_token: bool = True) -> torch.Tensor:
    """``(1, [1 +] h*w, dim)`` float32 embeddings for a ``h x w`` patch grid, row-major."""
    if dim % 4:
        raise ValueError(f"2-D sin-cos embedding width must be a multiple of 4; got {dim}")
    h, w = grid_hw
    rows, cols = torch.meshgrid(
        torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij"
    )
    emb = torch.cat([sincos_1d(dim // 2, cols), sincos_1d(dim // 2, rows)], dim=1)  # (h*w, D)
    if cls_token:
        emb = torch.cat([torch.zeros(1, dim, dtype=emb.dtype), emb], dim=0)
    return emb.float()[None]


def resize_pos_embed(
    pos_embed: torch.Tensor, old_hw: tuple[int, int], new_hw: tuple[int, int], prefix: int = 1
) -> torch.Tensor:
    """Bicubic resampling of ``(1, prefix + h*w, D)`` embeddings to a new patch grid."""
    if tuple(old_hw) == tuple(new_hw):
        return pos_embed
    return resample_abs_pos_embed(
        pos_embed, list(new_hw), list(old_hw), num_prefix_tokens=prefix, verbose=False
    )
