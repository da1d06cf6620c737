"""The batched torch forward model agrees with the numpy one and samples what it claims."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sem_physics import DegradationParams, ParameterRanges, airy_psf, degrade, degrade_torch
from sem_physics.batched import (
    BatchParams,
    ParameterSampler,
    airy_psf_batch,
    poisson_gaussian_batch,
)


def _sampled(n: int, seed: int, ranges: ParameterRanges | None = None) -> BatchParams:
    return ParameterSampler(ranges).step(n, torch.Generator().manual_seed(seed))


def test_batch_kernels_are_the_numpy_kernels_zero_padded_to_the_largest():
    params = _sampled(12, 0)
    kernels = airy_psf_batch(params, dtype=torch.float64)
    sizes = [airy_psf(p.psf).shape[0] for p in params.to_params()]
    assert kernels.shape[-1] == max(sizes) and len(set(sizes)) > 3
    for kern, p in zip(kernels.numpy(), params.to_params(), strict=True):
        ref = airy_psf(p.psf)
        s, o = ref.shape[0], (kern.shape[0] - ref.shape[0]) // 2
        # torch's float64 J1 is accurate to ~5e-7 absolute: tolerance relative to the peak
        np.testing.assert_allclose(kern[o : o + s, o : o + s], ref, rtol=0, atol=1e-5 * ref.max())
        outside = kern.copy()
        outside[o : o + s, o : o + s] = 0.0
        assert not outside.any()


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float64, 1e-3), (torch.float32, 0.05)])
def test_noise_free_batch_equals_numpy_degrade_per_image(dtype, tol):
    """Per-sample Rx, Ry, theta, beta, gain, offset from the sampler; 0..255 images."""
    params = _sampled(8, 1)
    imgs = np.random.default_rng(2).uniform(0, 255, (8, 50, 70))
    out = degrade_torch(
        torch.as_tensor(imgs, dtype=dtype)[:, None], params, poisson=False, gaussian=False
    )
    assert out.dtype == dtype
    for i, p in enumerate(params.to_params()):
        # numpy reference in float64 (degrade returns float32: rounding is 1e-5 at 255)
        ref = degrade(imgs[i], p, poisson=False, gaussian=False).astype(np.float64)
        assert np.abs(out[i, 0].double().numpy() - ref).max() < tol


def test_degrade_torch_accepts_batch_params_and_settings_alike():
    params = _sampled(3, 3)
    x = torch.rand(3, 1, 40, 40) * 255
    a = degrade_torch(x, params, poisson=False, gaussian=False)
    b = degrade_torch(x, params.to_params(), poisson=False, gaussian=False)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-3)


def test_sampler_is_uniform_on_every_range_and_reproducible():
    ranges = ParameterRanges()
    n = 4000
    p = _sampled(n, 4)
    for name in ParameterRanges.model_fields:
        lo, hi = getattr(ranges, name)
        v = getattr(p, name).numpy()
        assert v.min() >= lo and v.max() <= hi
        # uniform: mean (lo + hi)/2 and std (hi - lo)/sqrt(12), checked to 5 standard errors
        se_mean = (hi - lo) / math.sqrt(12 * n)
        assert abs(v.mean() - (lo + hi) / 2) < 5 * se_mean
        assert abs(v.std() - (hi - lo) / math.sqrt(12)) < 0.05 * (hi - lo)
    again, other = _sampled(n, 4), _sampled(n, 5)
    assert torch.equal(p.rx_px, again.rx_px) and not torch.equal(p.rx_px, other.rx_px)
    # draws are independent across parameters
    assert abs(np.corrcoef(p.rx_px.numpy(), p.dose.numpy())[0, 1]) < 5 / math.sqrt(n)


def test_noise_moments_follow_each_samples_dose_and_sigma():
    """Mean max(z, 0) and variance max(z, 0)/dose + sigma^2, per sample; z < 0 is clipped."""
    z = torch.tensor([40.0, 40.0, -10.0]).view(3, 1, 1, 1).expand(3, 1, 128, 128)
    dose = torch.tensor([2.0, 30.0, 5.0]).view(3, 1, 1, 1)
    sigma = torch.tensor([1.0, 6.0, 3.0]).view(3, 1, 1, 1)
    y = poisson_gaussian_batch(z, dose, sigma, torch.Generator().manual_seed(6)).double()
    n = 128 * 128
    for i, (m, var) in enumerate([(40, 40 / 2 + 1), (40, 40 / 30 + 36), (0, 9)]):
        assert abs(y[i].mean().item() - m) < 5 * math.sqrt(var / n)
        assert abs(y[i].var().item() - var) < 6 * var * math.sqrt(2 / n)


def test_same_generator_seed_same_pairs_and_another_seed_differs():
    params = _sampled(4, 7)
    x = torch.rand(4, 1, 48, 64) * 255
    a = degrade_torch(x, params, torch.Generator().manual_seed(1))
    b = degrade_torch(x, params, torch.Generator().manual_seed(1))
    c = degrade_torch(x, params, torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_batch_params_round_trip_and_range_errors_name_the_field():
    settings = [ParameterRanges().midpoint(), ParameterRanges().sample(np.random.default_rng(0))]
    batch = BatchParams.from_params(settings)
    assert batch.to_params() == settings and len(batch) == 2
    assert len(BatchParams.from_params(settings[0], n=5)) == 5
    bad = BatchParams(*(torch.ones(2) for _ in range(8)))
    bad = BatchParams(**{**bad.__dict__, "dose": torch.tensor([1.0, -1.0])})
    with pytest.raises(ValueError, match="dose"):
        bad.check()
    with pytest.raises(ValueError, match="dose"):
        degrade_torch(torch.zeros(2, 1, 8, 8), bad)
    with pytest.raises(ValueError, match="1-D tensor"):
        BatchParams(*(torch.ones(2) for _ in range(7)), torch.ones(3))
    with pytest.raises(ValueError, match="3 images"):
        degrade_torch(torch.zeros(3, 1, 8, 8), batch)


def test_bf16_images_are_degraded_in_float32_and_returned_as_bf16():
    p = BatchParams.from_params(
        DegradationParams(
            rx_px=2, ry_px=3, beta=2, theta_rad=0.3, gain=1, offset=0, sigma=1, dose=9
        ),
        n=2,
    )
    x = torch.rand(2, 1, 32, 32) * 255
    ref = degrade_torch(x, p, poisson=False, gaussian=False)
    out = degrade_torch(x.bfloat16(), p, poisson=False, gaussian=False)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref, rtol=2e-2, atol=2.0)
