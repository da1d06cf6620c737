"""Batched tiled inference: one forward per batch of equal windows, same result as one by one."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from baselines_testkit import lines_image
from sem_baselines import get_restorer, tiled_apply
from sem_baselines.learned.base import LearnedConfig
from sem_baselines.tiling import GPU_TILE_BATCH, default_tile_batch, tile_layout, window_size


@pytest.mark.filterwarnings("ignore:.*has no trained weights:UserWarning")
@pytest.mark.parametrize("name", ["n2n", "n2v", "mrn"])
def test_batched_tiles_restore_as_one_tile_per_forward(name):
    """Random weights (the seeded initialisation); 4 x 4 tiles of 64 px, 12 px context."""
    img = lines_image((150, 170), seed=3)
    cfg = dict(tile_px=64, margin_px=12)
    one = get_restorer(name, tile_batch_size=1, **cfg)
    many = get_restorer(name, tile_batch_size=32, **cfg)
    calls: list[int] = []
    many.network.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    a, b = one.restore(img), many.restore(img)
    n_tiles = len(tile_layout(150, 64, 12)) * len(tile_layout(170, 64, 12))
    assert calls == [n_tiles] and n_tiles == 4 * 4  # (150 - 24) / 40 -> 4, (170 - 24) / 40 -> 4
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
    n = len(tile_layout(130, 48, 8)) * len(tile_layout(75, 48, 8))
    assert [s[0] for s in shapes] == [5] * (n // 5) + ([n % 5] if n % 5 else [])
    assert {s[1:] for s in shapes} == {(1, window_size(130, 48, 8), window_size(75, 48, 8))}
    assert len(shapes) == math.ceil(n / 5)


@pytest.mark.parametrize(("tile", "margin"), [(512, 32), (64, 12), (48, 8), (40, 0)])
def test_tile_layout_covers_once_with_margin_context_and_no_spare_window(tile, margin):
    for n in (tile - 1, tile, tile + 1, 300, 960, 1280, 2 * tile - 2 * margin, 2 * tile):
        layout = tile_layout(n, tile, margin)
        size, count = window_size(n, tile, margin), len(layout)
        assert size <= tile and size <= n
        if count > 1:  # as short as the overlap allows (+1 px for integer window starts)
            assert size <= math.ceil((n + 2 * margin * (count - 1)) / count) + 1
        assert next(c0 for _, c0, _ in layout) == 0 and layout[-1][2] == n
        for (s, c0, c1), nxt in zip(layout, [*layout[1:], None], strict=True):
            assert 0 <= s and s + size <= n and s <= c0 < c1 <= s + size
            assert c0 == 0 or c0 - s >= margin  # context before, unless at the border
            assert c1 == n or s + size - c1 >= margin  # context after, unless at the border
            if nxt is not None:
                assert nxt[1] == c1  # cores tile the axis without gap or overlap
        # one window fewer could not keep 2 * margin of overlap between all neighbours
        if len(layout) > 1:
            assert (len(layout) - 2) * (tile - 2 * margin) < n - 2 * margin
    # 1280 x 960 with 512-px tiles: 3 x 2 windows of 470 x 512 px (not 512 x 512)
    assert len(tile_layout(1280, 512, 32)) == 3 and len(tile_layout(960, 512, 32)) == 2
    assert window_size(1280, 512, 32) == 470 and window_size(960, 512, 32) == 512
    # a 640-px side with 512-px tiles: two windows of 352 px = (640 + 2 * 32) / 2
    assert window_size(640, 512, 32) == 352 and len(tile_layout(640, 512, 32)) == 2


def test_tiled_output_is_an_ordinary_tensor_value_under_inference_mode():
    x = torch.rand(1, 1, 100, 100)
    out = tiled_apply(lambda t: t + 1, x, tile=40, margin=4, batch_size=3)
    assert torch.is_inference(out) and not out.requires_grad
    assert LearnedConfig().tile_batch_size is None
    assert LearnedConfig().tile_px >= 640  # a 640 x 480 frame goes through in one pass
    assert default_tile_batch("cpu") == 1 and default_tile_batch("cuda:0") == GPU_TILE_BATCH
    with pytest.raises(ValueError, match="batch_size"):
        tiled_apply(lambda t: t, x, tile=40, margin=4, batch_size=0)


@pytest.mark.parametrize("name", ["n2n", "mrn"])
def test_channels_last_weights_restore_as_the_standard_layout(name):
    """The weights are kept channels-last (faster oneDNN convolutions on a CPU); the output
    equals that of the same network in the standard (NCHW) layout to float rounding."""
    img = lines_image((70, 90), seed=4)
    r = get_restorer(name)
    convs = [m.weight for m in r.network.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    assert not all(w.is_contiguous() for w in convs)  # really another layout than NCHW
    x = torch.from_numpy(img)[None, None] / 255.0
    with torch.no_grad():
        fast = r.network(x.contiguous(memory_format=torch.channels_last))
        r.network.to(memory_format=torch.contiguous_format)
        plain = r.network(x)
    fast = fast[-1] if isinstance(fast, list) else fast
    plain = plain[-1] if isinstance(plain, list) else plain
    assert float((plain - x).abs().max()) > 1e-3  # the random network changes the image
    torch.testing.assert_close(fast, plain, rtol=1e-4, atol=1e-5)
