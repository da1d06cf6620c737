"""Pairs synthesised by the training step for a whole batch on its device."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sem_physics import ParameterRanges
from sem_train.config import LossConfig
from sem_train.data import DefocusPairDataset
from sem_train.data.pairs import PairSynthesizer, synthesize_pairs
from sem_train.finetune import RestorationTask
from torch.utils.data import default_collate


def test_constant_images_come_out_at_gain_times_level_plus_offset_per_sample():
    """E[y] = a x + b for a constant x (blur keeps constants), each sample its own a and b."""
    level = torch.tensor([0.2, 0.5, 0.8, 0.4]).view(4, 1, 1, 1)
    focused = level.expand(4, 1, 96, 96).contiguous()
    g = torch.Generator().manual_seed(0)
    x, y, p = synthesize_pairs(focused, None, g)
    assert y is focused and x.shape == focused.shape and 0 <= x.min() and x.max() <= 1
    mean_255 = p.gain * level.view(4).double() * 255 + p.offset
    var = mean_255 / p.dose + p.sigma**2
    got = x.double().mean(dim=(1, 2, 3)) * 255
    assert torch.all((got - mean_255).abs() < 5 * torch.sqrt(var / 96**2))
    assert len({round(v, 6) for v in p.rx_px.tolist()}) == 4  # one setting per image


def test_pairs_are_blurred_in_range_reproducible_and_gray_replicated():
    rng = np.random.default_rng(1)
    focused = torch.from_numpy(rng.uniform(0.2, 0.8, (6, 1, 64, 64)).astype(np.float32))
    ranges = ParameterRanges(rx_px=(3.0, 6.0), ry_px=(3.0, 6.0), sigma=(1.0, 2.0), dose=(40, 50))
    a, _, pa = synthesize_pairs(focused, ranges, torch.Generator().manual_seed(5))
    b, _, _ = synthesize_pairs(focused, ranges, torch.Generator().manual_seed(5))
    c, _, _ = synthesize_pairs(focused, ranges, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert ((pa.rx_px >= 3) & (pa.rx_px <= 6)).all() and ((pa.dose >= 40) & (pa.dose <= 50)).all()

    def hf(t):
        return float((t[..., 1:] - t[..., :-1]).abs().mean())

    assert hf(a) < 0.5 * hf(focused)  # blur removes most of the white-noise texture
    rgb, _, _ = synthesize_pairs(
        focused.expand(-1, 3, -1, -1), ranges, torch.Generator().manual_seed(5)
    )
    assert torch.equal(rgb[:, 0], a[:, 0]) and torch.equal(rgb[:, 2], a[:, 0])
    with pytest.raises(ValueError, match="N, 1 or 3"):
        synthesize_pairs(torch.rand(2, 2, 8, 8))


def test_step_mode_items_carry_the_same_target_and_the_step_fills_the_input():
    img = torch.from_numpy(np.random.default_rng(2).uniform(0, 1, (1, 90, 120)).astype(np.float32))
    kw = dict(input_size_px=32, crop_sizes_px=(16, 64), pairs_per_image=4)
    loader = DefocusPairDataset([img], **kw)
    step = DefocusPairDataset([img], synthesis="step", **kw)
    keys = [(0, 11), (0, 12), (0, 13)]
    items = [step[k] for k in keys]
    assert all("input" not in it for it in items)
    for k, it in zip(keys, items, strict=True):
        assert torch.equal(it["target"], loader[k]["target"])
    batch = default_collate(items)
    synth = PairSynthesizer()
    first, again = synth(batch), synth(batch)
    assert first["input"].shape == batch["target"].shape
    assert torch.equal(first["input"], again["input"])  # seeded by the items' seeds
    other = synth(default_collate([step[(0, 14)], *items[1:]]))
    assert not torch.equal(other["input"][:1], first["input"][:1])  # another item, another pair
    # the other items keep their pairs (each drawn from its own seed; float rounding aside)
    torch.testing.assert_close(other["input"][1:], first["input"][1:], atol=1e-3, rtol=0)
    # validation items stay pairs with fixed degradations
    assert "input" in DefocusPairDataset([img], synthesis="step", train=False, **kw)[(0, 3)]
    with pytest.raises(ValueError, match="synthesis"):
        DefocusPairDataset([img], synthesis="worker", **kw)


def test_the_restoration_step_trains_on_pairs_it_synthesises():
    img = torch.rand(1, 80, 80, generator=torch.Generator().manual_seed(3))
    ds = DefocusPairDataset([img], input_size_px=32, crop_sizes_px=(32,), synthesis="step")
    batch = default_collate([ds[(0, s)] for s in range(4)])
    torch.manual_seed(0)
    model = torch.nn.Conv2d(1, 1, 3, padding=1)
    task = RestorationTask(model, LossConfig(), PairSynthesizer())
    loss, _ = task.training_loss(model, batch)
    expected, _ = task.training_loss(model, PairSynthesizer()(batch))
    assert math.isfinite(loss.item()) and loss.item() == pytest.approx(expected.item(), rel=1e-6)
    loss.backward()
    assert model.weight.grad is not None and model.weight.grad.abs().sum() > 0
