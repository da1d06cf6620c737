"""Batched tiled inference: one forward per batch of equal windows, same result as one by one."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from baselines_testkit import lines_image
from sem_baselines import get_restorer, tiled_apply
from sem_baselines.learned.base import LearnedConfig
from sem_baselines.tiling import DEFAULT_TILE_BATCH, tile_starts


@pytest.mark.parametrize("name", ["n2n", "n2v", "mrn"])
def test_batched_tiles_restore_as_one_tile_per_forward(name):
    """Random weights (the seeded initialisation); 3 x 3 tiles of 64 px, 12 px context."""
    img = lines_image((150, 170), seed=3)
    cfg = dict(tile_px=64, margin_px=12)
    one = get_restorer(name, tile_batch_size=1, **cfg)
    many = get_restorer(name, tile_batch_size=32, **cfg)
    calls: list[int] = []
    many.network.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    a, b = one.restore(img), many.restore(img)
    n_tiles = len(tile_starts(150, 40)) * len(tile_starts(170, 40))
    assert calls == [n_tiles] and n_tiles == 4 * 5
    assert np.abs(a - img).max() > 0.1  # the random network changes the image
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-3)


def test_every_window_has_the_full_shape_and_batches_are_bounded():
    shapes: list[tuple[int, ...]] = []

    def record(x):
        shapes.append(tuple(x.shape))
        return x * 2

    x = torch.rand(1, 1, 130, 75)
    out = tiled_apply(record, x, tile=48, margin=8, batch_size=5)
    torch.testing.assert_close(out, 2 * x)
    n = len(tile_starts(130, 32)) * len(tile_starts(75, 32))
    assert [s[0] for s in shapes] == [5] * (n // 5) + ([n % 5] if n % 5 else [])
    assert {s[1:] for s in shapes} == {(1, 48, 48)}
    assert len(shapes) == math.ceil(n / 5)


def test_tiled_output_is_an_ordinary_tensor_value_under_inference_mode():
    x = torch.rand(1, 1, 100, 100)
    out = tiled_apply(lambda t: t + 1, x, tile=40, margin=4, batch_size=3)
    assert torch.is_inference(out) and not out.requires_grad
    assert LearnedConfig().tile_batch_size == DEFAULT_TILE_BATCH
    with pytest.raises(ValueError, match="batch_size"):
        tiled_apply(lambda t: t, x, tile=40, margin=4, batch_size=0)
