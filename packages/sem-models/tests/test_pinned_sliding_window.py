"""Pinned against independent computations and closed forms (the sliding-window blend weights)."""

from __future__ import annotations

import math

import pytest
import torch
from sem_models.sliding_window import hann_weights


@pytest.mark.parametrize("window", [8, 15, 224])
def test_hann_weights_are_the_mirror_symmetric_sampled_hann_window(window):
    """w(u, v) = max(hann(u) hann(v), eps) with hann sampled at pixel centres,
    hann(n) = sin^2(pi (n + 1/2) / window): mirror-symmetric, so both sides of a window weigh
    alike in the blend (the identity and seam tests cannot see which Hann is used, since any
    positive weights cancel for an identity model)."""
    eps = 1e-3
    w = hann_weights(window, eps).double()
    n = torch.arange(window, dtype=torch.float64)
    h = torch.sin(math.pi * (n + 0.5) / window) ** 2
    torch.testing.assert_close(w, torch.outer(h, h).clamp_min(eps), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(w, w.flip(0), rtol=0, atol=1e-7)
    torch.testing.assert_close(w, w.T, rtol=0, atol=0)


def test_window_more_than_twice_the_image_side_is_refused_beyond_the_padded_limit():
    """window > max(MAX_PADDED_WINDOW, 2 * side) is refused: a 300-px image allows 600 px and
    refuses 601 (the guard's boundary; no existing test reaches it with side > 256)."""
    import numpy as np
    from sem_models.sliding_window import MAX_PADDED_WINDOW, sliding_window

    assert 2 * 300 > MAX_PADDED_WINDOW
    img = np.zeros((300, 300), dtype=np.float32)
    with pytest.raises(ValueError, match="window=601"):
        sliding_window(lambda x: x, img, window=601, overlap=8)
