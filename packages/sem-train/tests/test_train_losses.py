"""Restoration, distillation and frequency losses: closed forms, zeros, signs, gradients."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sem_train.config import LossConfig
from sem_train.losses import (
    charbonnier_loss,
    distillation_loss,
    edge_loss,
    fft_amplitude_loss,
    frequency_loss,
    masked_l1,
    psd_loss,
    radial_psd,
    restoration_loss,
    tv_loss,
)


def _mask(n=2, c=1, h=16, w=16, p=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    m = (torch.rand(n, 1, h // p, w // p, generator=g) < 0.75).float()
    return m.repeat_interleave(p, -2).repeat_interleave(p, -1).expand(n, c, h, w)


def test_charbonnier_closed_form_and_l1_limit():
    x = torch.zeros(1, 1, 4, 4)
    y = torch.full((1, 1, 4, 4), 0.3)
    assert charbonnier_loss(x, x, eps=0.01).item() == pytest.approx(0.01, rel=1e-6)
    assert charbonnier_loss(y, x, eps=0.01).item() == pytest.approx(
        math.sqrt(0.09 + 1e-4), rel=1e-6
    )
    assert charbonnier_loss(y, x, eps=1e-6).item() == pytest.approx(0.3, rel=1e-5)


def test_edge_and_tv_on_a_ramp():
    ramp = torch.arange(8.0).view(1, 1, 1, 8).expand(1, 1, 8, 8)
    assert tv_loss(ramp).item() == pytest.approx(1.0)  # |dx| = 1, |dy| = 0
    assert edge_loss(ramp, torch.zeros_like(ramp)).item() == pytest.approx(1.0)
    assert edge_loss(ramp + 5.0, ramp).item() == 0.0  # constant offsets have no edges
    down = ramp.transpose(-1, -2)  # the same ramp along y: |dx| = 0, |dy| = 1
    assert tv_loss(down).item() == pytest.approx(1.0)
    assert edge_loss(down, torch.zeros_like(down)).item() == pytest.approx(1.0)


def test_edge_and_tv_against_numpy_differences():
    g = torch.Generator().manual_seed(1)
    a, b = torch.rand(2, 1, 9, 13, generator=g), torch.rand(2, 1, 9, 13, generator=g)
    na, nb = a.numpy(), b.numpy()
    tv = np.abs(np.diff(na, axis=-1)).mean() + np.abs(np.diff(na, axis=-2)).mean()
    edge = (
        np.abs(np.diff(na, axis=-1) - np.diff(nb, axis=-1)).mean()
        + np.abs(np.diff(na, axis=-2) - np.diff(nb, axis=-2)).mean()
    )
    assert tv_loss(a).item() == pytest.approx(tv, rel=1e-6)
    assert edge_loss(a, b).item() == pytest.approx(edge, rel=1e-6)


def test_restoration_variants():
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(2, 1, 12, 12, generator=g), torch.rand(2, 1, 12, 12, generator=g)
    l1, parts1 = restoration_loss(x, y, LossConfig(variant="L1"))
    full, parts = restoration_loss(x, y, LossConfig(variant="L1+TV"))
    assert set(parts1) == {"charbonnier"} and set(parts) == {"charbonnier", "edge", "tv"}
    expect = parts["charbonnier"] + 3 * parts["edge"] + 10 * parts["tv"]
    assert full.item() == pytest.approx(expect.item(), rel=1e-6) and l1 < full


def test_masked_l1_and_distillation_ignore_visible_pixels():
    m = _mask()
    a = torch.rand(2, 1, 16, 16)
    b = a + (1 - m) * 5.0  # differs only where visible
    assert masked_l1(b, a, m).item() == 0.0
    c = a + m * 0.25
    assert masked_l1(c, a, m).item() == pytest.approx(0.25, rel=1e-6)
    t = a.clone().requires_grad_(True)
    s = c.clone().requires_grad_(True)
    distillation_loss(s, t, m).backward()
    assert t.grad is None  # the teacher is detached
    assert torch.equal(s.grad != 0, m.bool())  # the student gets gradient on masked pixels only


def test_frequency_losses_zero_for_perfect_and_positive_otherwise():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, 1, 16, 16, generator=g)
    m = _mask()
    pred = x.clone().requires_grad_(True)
    total, parts = frequency_loss(pred, x, m, fft_weight=0.1, psd_weight=0.1)
    assert total.item() == 0.0 and parts["fft"].item() == 0.0 and parts["psd"].item() == 0.0
    total.backward()
    assert torch.isfinite(pred.grad).all()
    # Errors on visible pixels only are ignored, masked errors are not.
    assert fft_amplitude_loss(x + (1 - m) * 0.3, x, m).item() == 0.0
    noisy = (x + 0.1 * torch.randn(x.shape, generator=g)).requires_grad_(True)
    total, parts = frequency_loss(noisy, x, m)
    assert parts["fft"] > 0 and parts["psd"] > 0
    total.backward()
    assert torch.isfinite(noisy.grad).all() and noisy.grad.abs().sum() > 0


def test_fft_loss_closed_form_impulse():
    e = torch.zeros(1, 1, 8, 8)
    e[..., 3, 5] = 0.5  # |DFT_ortho| = 0.5 / sqrt(64) everywhere
    ones = torch.ones_like(e)
    assert fft_amplitude_loss(e, torch.zeros_like(e), ones).item() == pytest.approx(0.5 / 8)
    # White error of std s: mean |F_ortho(e)| -> s sqrt(pi) / 2 (Rayleigh mean), any size.
    g = torch.Generator().manual_seed(3)
    for side in (32, 128):
        w = 0.2 * torch.randn(2, 1, side, side, generator=g)
        val = fft_amplitude_loss(w, torch.zeros_like(w), torch.ones_like(w)).item()
        assert val == pytest.approx(0.2 * math.sqrt(math.pi) / 2, rel=0.05)


def test_radial_psd_parseval_and_white_noise_flatness():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(4, 1, 64, 64, generator=g)
    psd = radial_psd(x, bins=8)
    assert psd.shape == (4, 1, 8)
    # White noise of unit variance: every ring's mean power is about 1 (ortho DFT).
    assert torch.allclose(psd.mean(0), torch.ones(1, 8), atol=0.15)
    # A pure cosine puts its power in the ring of its frequency.
    xx = torch.arange(64.0)
    cos = torch.cos(2 * math.pi * 8 / 64 * xx).expand(1, 1, 64, 64)  # 0.125 cycles/px
    ring = int(radial_psd(cos, bins=8)[0, 0].argmax())
    assert ring == 2  # rings of width 0.0625 cycles/px: 0.125 falls in ring 2
    assert psd_loss(x, x, torch.ones_like(x)).item() == 0.0


def test_radial_psd_leaves_out_the_mean_intensity_by_default():
    flat = torch.full((1, 1, 16, 16), 0.7)
    assert radial_psd(flat, bins=4).abs().max().item() < 1e-9
    with_dc = radial_psd(flat, bins=4, include_dc=True)
    # Ortho DFT: the DC power of a constant c is HW c^2, shared by the pixels of ring 0.
    fy = torch.fft.fftfreq(16)
    r = torch.sqrt(fy[:, None] ** 2 + fy[None, :] ** 2)
    ring0 = int(((r / 0.5 * 4).long() == 0).sum())
    assert with_dc[0, 0, 0].item() == pytest.approx(256 * 0.49 / ring0, rel=1e-5)
    # Two images that differ only by their mean have the same (default) PSD.
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 1, 16, 16, generator=g)
    assert torch.allclose(radial_psd(x), radial_psd(x + 0.3), atol=1e-5)


def test_l1_tv_prefers_a_flat_image_to_the_truth_which_is_why_l1_is_the_default():
    from sem_physics.samples import make_sample

    for kind in ("lines", "contacts", "texture"):
        x = torch.from_numpy(make_sample(kind, (64, 64), seed=1) / 255.0)[None, None].float()
        flat = torch.full_like(x, float(x.mean()))
        tv_cfg = LossConfig(variant="L1+TV")
        assert restoration_loss(flat, x, tv_cfg)[0] < restoration_loss(x, x, tv_cfg)[0], kind
        assert restoration_loss(x, x)[0] < restoration_loss(flat, x)[0]  # default "L1"
    assert LossConfig().variant == "L1"


def test_structure_term_ignores_gain_and_offset_and_sees_structure():
    from sem_train.losses import affine_matched

    g = torch.Generator().manual_seed(0)
    target = torch.rand(3, 1, 32, 32, generator=g)
    gain = torch.tensor([0.5, 1.0, 2.0]).view(3, 1, 1, 1)
    brighter = gain * target + torch.tensor([0.3, -0.1, 0.05]).view(3, 1, 1, 1)
    assert torch.allclose(affine_matched(brighter, target), target, atol=1e-5)
    cfg = LossConfig(structure_weight=2.0)
    total, parts = restoration_loss(brighter, target, cfg)
    assert parts["structure"] < 2e-3  # the Charbonnier floor eps only
    assert total == pytest.approx(float(parts["charbonnier"]) + 2.0 * float(parts["structure"]))
    # a structural error survives the matching: a shifted copy is scored like its own error
    shifted = torch.roll(target, 3, dims=-1)
    _, parts = restoration_loss(shifted, target, cfg)
    assert parts["structure"] > 0.5 * (shifted - target).abs().mean()
    # and the term's gradient reaches the prediction
    pred = brighter.clone().requires_grad_(True)
    restoration_loss(torch.roll(pred, 1, dims=-1), target, cfg)[0].backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0
    assert "structure" not in restoration_loss(brighter, target, LossConfig())[1]


def _bars(shift: float = 0.0, width: float = 6.0, n: int = 2) -> torch.Tensor:
    """Soft vertical bars of a 16-px pitch (grey levels 0.2 / 0.8), centre moved by ``shift``."""
    x = torch.arange(64, dtype=torch.float32)
    d = torch.remainder(x - 8.0 - shift, 16.0)
    d = torch.minimum(d, 16.0 - d)  # distance to the nearest bar centre
    profile = 0.2 + 0.6 * torch.sigmoid(4.0 * (width / 2 - d))
    return profile.expand(n, 1, 32, 64).clone()


def test_level_set_term_sees_where_the_contours_lie_not_the_grey_levels():
    from sem_train.losses import level_set_loss

    target = _bars()
    assert level_set_loss(target, target) == 0
    # grey levels changed away from the half level (flattened plateaus): small
    plateaus = target.clone()
    plateaus[target > 0.7] = 0.75
    # the same bars 1 px wider (both edges move by half a pixel): several times larger
    wider = _bars(width=7.0)
    assert level_set_loss(wider, target) > 4 * level_set_loss(plateaus, target)
    # it grows with the edge displacement
    losses = [float(level_set_loss(_bars(shift=s), target)) for s in (0.25, 0.5, 1.0, 2.0)]
    assert losses == sorted(losses) and losses[0] > 0
    # in restoration_loss it scores the affine-matched prediction: gain and offset are free
    cfg = LossConfig(level_set_weight=1.0)
    _, parts = restoration_loss(1.7 * target - 0.2, target, cfg)
    assert parts["level_set"] < 1e-5
    pred = wider.clone().requires_grad_(True)
    restoration_loss(pred, target, cfg)[0].backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0
    assert "level_set" not in restoration_loss(target, target, LossConfig())[1]
