"""What the self-supervised baselines train on, checked directly: Noise2Void's blind-spot
masking (the reference scheme: random pixels replaced by a random other pixel of the 11 x 11
window around them, loss on those pixels only) and Noise2Noise's pairs (two independent noise
draws of the same blurred patch)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from baselines_testkit import TINY, lines_image
from scipy.stats import chi2
from sem_baselines import get_restorer
from sem_baselines.learned.noise2void import blind_spot_mask
from sem_physics import ParameterRanges, degrade_torch
from torch import nn

RADIUS = 5  # careamics' roi_size 11, juglab/n2v's neighborhood radius 5


def test_blind_spot_replacements_are_uniform_over_the_window_without_its_centre():
    """Every value is unique, so each replacement names its source pixel. Per patch exactly
    ``round(0.1 H W)`` pixels are masked, uniformly over the rows; the others are untouched;
    each masked pixel takes the value of an unmasked pixel other than itself within ±5 px
    (reflected at the border), and for pixels 5 px or more inside the offsets are uniform over
    the 120 positions of the window without its centre (chi-square, p = 1e-6)."""
    n, h, w = 24, 64, 60
    y = torch.randperm(n * h * w, generator=torch.Generator().manual_seed(1)).double()
    y = y.view(n, 1, h, w)
    masked, mask = blind_spot_mask(y, 0.1, RADIUS, torch.Generator().manual_seed(2))
    count = round(0.1 * h * w)
    assert mask.sum(dim=(1, 2, 3)).tolist() == [count] * n
    torch.testing.assert_close(masked[~mask], y[~mask])
    # where each value sits in y: (patch, row, col)
    where = torch.empty(n * h * w, 3, dtype=torch.long)
    idx = torch.arange(n * h * w)
    where[y.view(-1).long()] = torch.stack([idx // (h * w), idx % (h * w) // w, idx % w], 1)
    pn, py, px = mask[:, 0].nonzero(as_tuple=True)
    src = where[masked[pn, 0, py, px].long()]
    assert torch.equal(src[:, 0], pn)  # from the same patch
    assert not mask[src[:, 0], 0, src[:, 1], src[:, 2]].any()  # never another masked pixel
    dy, dx = src[:, 1] - py, src[:, 2] - px
    assert not ((dy == 0) & (dx == 0)).any()  # never itself
    assert int(dy.abs().max()) <= RADIUS and int(dx.abs().max()) <= RADIUS
    inside = (py >= RADIUS) & (py < h - RADIUS) & (px >= RADIUS) & (px < w - RADIUS)
    side = 2 * RADIUS + 1
    cells = ((dy[inside] + RADIUS) * side + dx[inside] + RADIUS).bincount(minlength=side * side)
    centre = side * side // 2
    assert cells[centre] == 0
    observed = torch.cat([cells[:centre], cells[centre + 1 :]]).double()
    expected = observed.sum() / observed.numel()
    stat = float(((observed - expected) ** 2 / expected).sum())
    assert stat < chi2.ppf(1 - 1e-6, observed.numel() - 1)
    rows = mask.sum(dim=(0, 1, 3)).double()  # masked pixels per row, all patches
    stat = float(((rows - rows.mean()) ** 2 / rows.mean()).sum())
    assert stat < chi2.ppf(1 - 1e-6, h - 1)


class _Output(nn.Module):
    """A 'network' whose output is a free tensor, to read the loss's gradient per pixel."""

    def __init__(self, out: torch.Tensor) -> None:
        super().__init__()
        self.out = nn.Parameter(out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out


def test_noise2void_trains_on_the_masked_pixels_only_against_their_noisy_values():
    """The loss is ``mean over masked pixels of (f(masked input) - y)^2`` with ``y`` the
    degraded patch: its gradient is zero off the mask and ``2 (f - y) / count`` on it."""
    r = get_restorer("n2v", **TINY["n2v"])
    clean = torch.from_numpy(np.stack([lines_image((32, 32), seed=s) for s in range(3)]))
    params = ParameterRanges().sample_many(np.random.default_rng(0), 3)
    batch = r.make_batch(clean[:, None], params, torch.Generator().manual_seed(0))
    mask, target = batch["mask"], batch["target"]
    assert not torch.equal(batch["input"][mask], target[mask])  # the masked values replaced
    r.network = _Output(torch.rand_like(target))
    loss = r.training_loss(batch)
    loss.backward()
    out = r.network.out.detach()
    assert float(loss.detach()) == pytest.approx(
        float(((out - target)[mask] ** 2).mean()), rel=1e-6
    )
    grad = r.network.out.grad
    assert torch.equal(grad != 0, mask)
    torch.testing.assert_close(grad[mask], 2 * (out - target)[mask] / int(mask.sum()))


def test_noise2noise_pairs_are_independent_draws_around_the_same_blurred_patch():
    """Textured patches, one setting each: both members of a pair scatter around the same
    ``a (x ⊛ h) + b`` (mean difference 0 within 5 standard errors, variance that of the
    forward model's Poisson-Gaussian noise within 10 %), and their noises are uncorrelated
    (|r| < 5 / sqrt(pixels) per patch; one draw used twice would give r = 1)."""
    r = get_restorer("n2n", **TINY["n2n"])
    clean = torch.from_numpy(np.stack([lines_image((64, 64), seed=s) for s in range(4)]))
    clean = clean[:, None].double()
    params = ParameterRanges().sample_many(np.random.default_rng(3), 4)
    batch = r.make_batch(clean, params, torch.Generator().manual_seed(4))
    z = degrade_torch(clean, params, poisson=False, gaussian=False)
    n1, n2 = batch["input"] * 255 - z, batch["target"] * 255 - z
    pixels = 64 * 64
    for i, p in enumerate(params):
        var = float((z[i].clamp_min(0) / p.dose + p.sigma**2).mean())
        for noise in (n1[i], n2[i]):
            assert abs(float(noise.mean())) < 5 * np.sqrt(var / pixels)
            assert float(noise.var()) == pytest.approx(var, rel=0.1)
        corr = float(torch.corrcoef(torch.stack([n1[i].flatten(), n2[i].flatten()]))[0, 1])
        assert abs(corr) < 5 / np.sqrt(pixels)
