"""Peak memory of the forward model (``degrade``, ``degrade_files``) on a 2048 x 2048 frame, and
the banded in-place computation it relies on equal bit for bit to the whole-array one (the
seeded protocols are replayed bit for bit)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import scipy.fft as sfft
from sem_physics import (
    ParameterRanges,
    PSFParams,
    airy_psf,
    convolution,
    convolve_reflect,
    degrade,
    degrade_files,
    noise,
    poisson_gaussian,
    write_image,
)
from sem_physics.convolution import clear_kernel_cache, fft_shape
from sem_physics.testing import traced_peak_bytes

SHAPE = (2048, 2048)
# tracemalloc peaks (numpy's allocations) per pixel of a float32 frame: the whole-array code
# reached 35 (degrade: float64 copy, padded frame, spectra, irfft2's result, noise terms) and
# 39 (degrade_files), the banded one 16 and 20
DEGRADE_MAX_BYTES_PER_PX = 22.0
DEGRADE_FILES_MAX_BYTES_PER_PX = 28.0


def _peak_bytes_per_px(run: Callable[[], object]) -> float:
    """tracemalloc peak of ``run()`` per pixel of :data:`SHAPE` (no cached kernel transform)."""
    clear_kernel_cache()
    return traced_peak_bytes(run) / (SHAPE[0] * SHAPE[1])


def _frame() -> np.ndarray:
    """A float32 frame on 0..255, as ``read_image`` returns one."""
    return np.random.default_rng(0).random(SHAPE, dtype=np.float32) * np.float32(255)


def test_degrade_peak_memory_stays_within_a_few_frames() -> None:
    x = _frame()
    p = ParameterRanges().midpoint()
    degrade(x[:256, :256], p, rng=0)  # imports and FFT plans outside the measurement
    per_px = _peak_bytes_per_px(lambda: degrade(x, p, rng=0))
    assert per_px < DEGRADE_MAX_BYTES_PER_PX, f"degrade peaked at {per_px:.1f} bytes/px"


def test_degrade_files_peak_memory_stays_within_a_few_frames(tmp_path: Path) -> None:
    src = write_image(tmp_path / "frame.tif", _frame(), "float32")
    degrade_files([src], tmp_path / "warm", mode="midpoint", crop="none")
    per_px = _peak_bytes_per_px(
        lambda: degrade_files([src], tmp_path / "out", mode="midpoint", crop="none")
    )
    assert per_px < DEGRADE_FILES_MAX_BYTES_PER_PX, f"degrade_files peaked at {per_px:.1f} B/px"


def _whole_array_convolve(image: np.ndarray, kernel: np.ndarray, dtype: type) -> np.ndarray:
    """The reflective FFT convolution with whole-array ``rfft2``/``irfft2`` and kernel transform."""
    kernel = kernel.astype(dtype)
    p = kernel.shape[0] // 2
    h, w = image.shape
    fh, fw = fft_shape(h, w, kernel.shape[0])
    padded = np.pad(image.astype(dtype), ((p, fh - h - p), (p, fw - w - p)), "symmetric")
    mirrored = kernel[p:, ::-1] * kernel.dtype.type(fh)
    rows = np.zeros((p + 1, fw), dtype=kernel.dtype)
    rows[:, : p + 1] = mirrored[:, p:]
    rows[:, fw - p :] = mirrored[:, :p]
    spec = sfft.rfft2(padded)
    spec *= sfft.irfft(sfft.rfft(rows, axis=1), n=fh, axis=0)
    return sfft.irfft2(spec, s=(fh, fw))[p : p + h, p : p + w]


@pytest.mark.parametrize("band_bytes", [1, 1 << 22])  # 8-row bands, and the default
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize(
    ("shape", "radius"), [((5, 40), 3.0), ((61, 200), 8.0), ((203, 141), 15.5), ((1500, 301), 4.0)]
)
def test_banded_convolution_equals_whole_array_ffts_bit_for_bit(
    monkeypatch: pytest.MonkeyPatch,
    band_bytes: int,
    dtype: type,
    shape: tuple[int, int],
    radius: float,
) -> None:
    monkeypatch.setattr(convolution, "_BAND_BYTES", band_bytes)
    image = np.random.default_rng(1).random(shape, dtype=np.float32) * np.float32(255)
    kernel = airy_psf(PSFParams(rx_px=radius, ry_px=0.6 * radius, theta_rad=0.4))
    clear_kernel_cache()
    got = convolve_reflect(image, kernel, dtype=dtype)
    want = _whole_array_convolve(image, kernel, dtype)
    assert got.dtype == want.dtype and got.tobytes() == want.tobytes()


@pytest.mark.parametrize(("dose", "sigma"), [(20.0, 4.0), (0.5, None), (None, 2.0)])
def test_chunked_noise_equals_whole_array_draws_bit_for_bit(
    monkeypatch: pytest.MonkeyPatch, dose: float | None, sigma: float | None
) -> None:
    monkeypatch.setattr(noise, "_CHUNK", 1000)  # chunks across rows, not aligned with them
    z = np.random.default_rng(2).random((97, 113)) * 300 - 20
    before = z.copy()
    got = poisson_gaussian(z, dose, sigma, np.random.default_rng(3))
    rng = np.random.default_rng(3)
    want = z
    if dose is not None:
        want = rng.poisson(np.clip(want, 0.0, None) * dose) / dose
    if sigma is not None:
        want = want + rng.normal(0.0, sigma, size=want.shape)
    assert got.tobytes() == want.astype(np.float32).tobytes()
    np.testing.assert_array_equal(z, before)  # the caller's array is left alone
