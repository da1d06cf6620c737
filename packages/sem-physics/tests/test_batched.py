"""The batched torch forward model agrees with the numpy one and samples what it claims."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sem_physics import (
    DegradationParams,
    ParameterRanges,
    PSFParams,
    airy_psf,
    degrade,
    degrade_torch,
)
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


def test_one_generator_per_image_makes_each_image_independent_of_its_batch():
    """With N generators an image's setting and noise are its own: degraded in a batch of
    four or alone with the same generator seeds, bit-identical (the kernels made one size
    here: a batch pads every kernel to its largest, whose float rounding could move a Poisson
    draw); one shared generator draws other noise everywhere."""
    from dataclasses import replace

    x = torch.rand(4, 1, 40, 56, generator=torch.Generator().manual_seed(0)) * 255

    def gens(seeds):
        return [torch.Generator().manual_seed(s) for s in seeds]

    sampler = ParameterSampler()
    both = sampler.step(4, gens([10, 11, 12, 13]))
    params = [sampler.step(1, gens([s])) for s in (10, 11, 12, 13)]
    for i, p in enumerate(params):  # each setting drawn from its own stream
        assert float(both.rx_px[i]) == float(p.rx_px[0]) and float(both.dose[i]) == float(p.dose[0])
    radius = torch.full((4,), 5.0, dtype=both.rx_px.dtype)
    both = replace(both, rx_px=radius, ry_px=radius)
    params = [replace(p, rx_px=radius[:1], ry_px=radius[:1]) for p in params]
    batch = degrade_torch(x, both, gens([20, 21, 22, 23]))
    for i, s in enumerate((20, 21, 22, 23)):
        assert torch.equal(batch[i : i + 1], degrade_torch(x[i : i + 1], params[i], gens([s])))
    shared = degrade_torch(x, both, torch.Generator().manual_seed(20))
    alone = degrade_torch(x[1:2], params[1], gens([20]))
    assert float(((shared[1:2] - alone).abs() > 1e-3).float().mean()) > 0.5
    with pytest.raises(ValueError, match=r"one torch\.Generator per image: 4 expected, got 3"):
        degrade_torch(x, both, gens([1, 2, 3]))


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


def _wiener_numpy(image: np.ndarray, kernel: np.ndarray, lam: float) -> np.ndarray:
    """Independent reference: half-sample symmetric extension, periodic FFT, crop."""
    from sem_physics.convolution import symmetric_indices

    p = kernel.shape[0] // 2
    h, w = image.shape
    ext = image[np.ix_(symmetric_indices(h, p), symmetric_indices(w, p))]
    fh, fw = ext.shape
    buf = np.zeros((fh, fw))
    rows = (np.arange(-p, p + 1) % fh)[:, None]
    cols = (np.arange(-p, p + 1) % fw)[None, :]
    np.add.at(buf, (rows, cols), kernel)
    lap = np.zeros((fh, fw))
    for (dy, dx), v in {
        (0, 0): 4.0,
        (1, 0): -1.0,
        (-1, 0): -1.0,
        (0, 1): -1.0,
        (0, -1): -1.0,
    }.items():
        lap[dy % fh, dx % fw] += v
    hh, dd = np.fft.fft2(buf), np.fft.fft2(lap)
    out = np.fft.ifft2(np.conj(hh) * np.fft.fft2(ext) / (np.abs(hh) ** 2 + lam * np.abs(dd) ** 2))
    return out.real[p : p + h, p : p + w]


def test_wiener_batch_matches_an_independent_numpy_deconvolution_per_image_and_balance():
    from sem_physics.batched import wiener_batch

    rng = np.random.default_rng(3)
    imgs = rng.random((2, 40, 52)) * 200
    psfs = [
        PSFParams(rx_px=2.5, ry_px=1.2, beta=1.95, theta_rad=0.7),
        PSFParams(rx_px=9.0, ry_px=9.0, beta=1.95, theta_rad=0.0),  # kernel larger than the image
    ]
    kernels = [torch.from_numpy(airy_psf(p)) for p in psfs]
    big = kernels[1].shape[-1]  # the batch extends every image by half the largest kernel
    o = (big - kernels[0].shape[-1]) // 2
    padded = [torch.nn.functional.pad(kernels[0], (o, o, o, o)), kernels[1]]
    balances = (0.01, 0.5, 4.0)
    out = wiener_batch(torch.from_numpy(imgs)[:, None], kernels, balances).numpy()
    assert out.shape == (2, 3, 40, 52)
    for i in range(2):
        for j, lam in enumerate(balances):
            ref = _wiener_numpy(imgs[i], padded[i].numpy(), lam)
            np.testing.assert_allclose(out[i, j], ref, atol=1e-8 * 255)


def test_wiener_batch_with_an_asymmetric_kernel_matches_the_numpy_reference():
    """Kernels whose spectrum is complex (here an off-centre 5 x 5 blob): the conjugate of the
    transfer function matters, which Airy kernels (real spectra) cannot show."""
    from sem_physics.batched import wiener_batch

    rng = np.random.default_rng(4)
    img = rng.random((36, 44)) * 200
    kernel = np.zeros((5, 5))
    kernel[1:4, 2:5] = rng.random((3, 3)) + 0.2  # weight right of and below the centre
    kernel /= kernel.sum()
    out = wiener_batch(torch.from_numpy(img)[None, None], torch.from_numpy(kernel), (0.05, 1.0))
    for j, lam in enumerate((0.05, 1.0)):
        ref = _wiener_numpy(img, kernel, lam)
        np.testing.assert_allclose(out[0, j].numpy(), ref, atol=1e-8 * 255)


def test_wiener_batch_undoes_a_noise_free_blur_at_a_small_balance():
    from sem_physics.batched import BatchParams, convolve_reflect_batch, wiener_batch

    yy, xx = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    blobs = [(20, 18, 1.0), (40, 44, 0.6), (30, 50, 0.8)]  # smooth: within the OTF's band
    x = sum(a * torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 36.0) for cy, cx, a in blobs)
    x = x.double()[None, None]
    setting = {"beta": 1.95, "gain": 1.0, "offset": 0.0, "sigma": 0.0, "dose": 1e6}
    p = BatchParams.from_params(DegradationParams(rx_px=3.0, ry_px=2.0, theta_rad=0.3, **setting))
    kern = airy_psf_batch(p, dtype=torch.float64)
    y = convolve_reflect_batch(x, kern)
    restored = wiener_batch(y, kern, (1.0,))
    err_blur = float((y - x).abs().mean())
    err_restored = float((restored - x).abs().mean())
    assert err_restored < 0.5 * err_blur  # measured 0.24
    # the same image blurred by a wider PSF than the one deconvolved stays blurred
    wider = airy_psf_batch(
        BatchParams.from_params(DegradationParams(rx_px=6.0, ry_px=4.0, theta_rad=0.3, **setting)),
        dtype=torch.float64,
    )
    y_wide = convolve_reflect_batch(x, wider)
    assert float((wiener_batch(y_wide, kern, (1.0,)) - x).abs().mean()) > err_restored


def test_wiener_batch_refuses_bad_balances_and_shapes():
    from sem_physics.batched import wiener_batch

    k = torch.ones(1, 3, 3) / 9
    with pytest.raises(ValueError, match="balances"):
        wiener_batch(torch.rand(1, 1, 8, 8), k, [0.0])
    with pytest.raises(ValueError, match=r"\(N, 1, H, W\)"):
        wiener_batch(torch.rand(1, 2, 8, 8), k, [1.0])
