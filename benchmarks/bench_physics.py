"""Speed of the sem-physics forward model (not part of the test run).

Degrades a 1280x960 image at Rx = Ry = 30 px (k = 181) and compares, in one run:

* floor: a bare ``scipy.fft.rfft2``/``irfft2`` round trip of the same padded, fast-length array,
* ours: ``convolve_reflect`` (reflect padding, kernel transform, product, crop) and ``degrade``,
* direct ``scipy.ndimage.convolve(mode='reflect')``, timed on a crop and scaled by area,
* ``scipy.signal.fftconvolve`` on the reflect-padded image (``mode='valid'``),

all in float32 on one thread (minimum and median of interleaved runs), plus the batched torch degrader (batch 16, 512x512, sampled
settings) in images/s. Run: ``uv run python benchmarks/bench_physics.py``.
"""

from __future__ import annotations

import argparse
import itertools
import time
from collections.abc import Callable

import numpy as np
import scipy.fft as sfft
import scipy.ndimage as ndi
import scipy.signal as ssig
import torch
from sem_physics import (
    DegradationParams,
    ParameterRanges,
    PSFParams,
    airy_psf,
    convolve_reflect,
    degrade,
    degrade_torch,
)
from sem_physics.convolution import clear_kernel_cache, fft_shape, symmetric_indices


def best_of(fn: Callable[[], object], repeat: int) -> float:
    """Minimum wall time of ``repeat`` calls after one warm-up call (seconds)."""
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def interleaved(
    fns: dict[str, Callable[[], object]], repeat: int
) -> dict[str, tuple[float, float]]:
    """(minimum, median) wall time of each function, calls interleaved so that load changes on
    a shared machine hit all of them alike."""
    for fn in fns.values():
        fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - t0)
    return {name: (min(v), float(np.median(v))) for name, v in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--crop", type=int, default=64, help="crop side for direct convolution")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=512, help="torch batch image side")
    args = parser.parse_args()
    torch.set_num_threads(1)

    h, w = 960, 1280
    rng = np.random.default_rng(0)
    image = (rng.random((h, w)) * 255).astype(np.float32)
    psf = PSFParams(rx_px=30, ry_px=30, beta=1.95)
    kernel = airy_psf(psf).astype(np.float32)
    k = kernel.shape[0]
    p = k // 2
    fh, fw = fft_shape(h, w, k)
    padded = image[np.ix_(symmetric_indices(h, p), symmetric_indices(w, p))]
    fast = np.pad(image, ((p, fh - h - p), (p, fw - w - p)), mode="symmetric")
    print(f"image {h}x{w}, kernel {k}x{k}, padded {h + 2 * p}x{w + 2 * p}, FFT size {fh}x{fw}")

    params = DegradationParams(
        rx_px=30, ry_px=30, beta=1.95, theta_rad=0, gain=1.045, offset=13, sigma=5.5, dose=25.5
    )
    # New kernel every call, as in sampled protocols: 64 distinct 181-px kernels in turn (never
    # reused within the cache's memory); cached: one fixed kernel, as in iterative methods.
    betas = np.linspace(1.9, 2.0, 64)
    fresh_kernels = [
        airy_psf(PSFParams(rx_px=30, ry_px=30, beta=float(b))).astype(np.float32) for b in betas
    ]
    fresh = itertools.cycle(fresh_kernels)
    clear_kernel_cache()
    times = interleaved(
        {
            "floor": lambda: sfft.irfft2(sfft.rfft2(fast), s=(fh, fw)),
            "ours": lambda: convolve_reflect(image, next(fresh)),
            "ours_cached": lambda: convolve_reflect(image, kernel),
            "fftconvolve": lambda: ssig.fftconvolve(padded, kernel, mode="valid"),
        },
        args.repeat,
    )
    t_floor, t_ours, t_fftconv = times["floor"][0], times["ours"][0], times["fftconvolve"][0]
    t_cached = times["ours_cached"][0]
    med = {name: v[1] / times["floor"][1] for name, v in times.items()}
    t_degrade = best_of(lambda: degrade(image, params, rng=0), max(1, args.repeat // 3))
    c = args.crop
    crop = image[:c, :c]
    t_crop = best_of(lambda: ndi.convolve(crop, kernel, mode="reflect"), 1)
    t_direct = t_crop * (h * w) / (c * c)

    # Correctness of what is timed: ours vs fftconvolve vs direct on the crop.
    ref = ssig.fftconvolve(padded.astype(np.float64), kernel.astype(np.float64), mode="valid")
    ours = convolve_reflect(image, kernel)
    rel = float(np.abs(ours - ref).max() / np.abs(ref).max())
    crop_ours = convolve_reflect(crop, kernel, dtype=np.float64)
    crop_rel = float(
        np.abs(crop_ours - ndi.convolve(crop.astype(np.float64), kernel, mode="reflect")).max()
        / 255
    )

    print(f"{'method':46s} {'min time':>11s} {'x floor':>8s} {'median x floor':>15s}")
    rows = [
        ("floor: rfft2 + irfft2 of the padded size", t_floor, med["floor"]),
        ("ours: convolve_reflect, new kernel", t_ours, med["ours"]),
        ("ours: convolve_reflect, cached kernel FFT", t_cached, med["ours_cached"]),
        ("scipy.signal.fftconvolve on padded image", t_fftconv, med["fftconvolve"]),
        ("ours: degrade (blur + gain/offset + noise)", t_degrade, float("nan")),
        (f"ndimage.convolve reflect (crop {c}x{c}, scaled)", t_direct, float("nan")),
    ]
    for name, t, m in rows:
        print(f"{name:46s} {t * 1e3:8.1f} ms {t / t_floor:8.2f} {m:15.2f}")
    print(
        f"ours vs fftconvolve: {t_fftconv / t_ours:.2f}x faster; direct vs ours: {t_direct / t_ours:,.0f}x slower"
    )
    print(f"max rel. error vs float64 fftconvolve: {rel:.1e}; vs direct on crop: {crop_rel:.1e}")

    # Torch batched throughput, sampled settings (mixed kernel sizes up to 181 px).
    n, s = args.batch, args.size
    settings = ParameterRanges().sample_many(np.random.default_rng(1), n)
    x = torch.as_tensor(rng.random((n, 1, s, s)) * 255, dtype=torch.float32)
    g = torch.Generator().manual_seed(0)
    t_torch = best_of(lambda: degrade_torch(x, settings, generator=g), max(1, args.repeat // 2))
    mid = ParameterRanges().midpoint()
    t_torch_mid = best_of(lambda: degrade_torch(x, mid, generator=g), max(1, args.repeat // 2))
    print(
        f"torch degrade_torch batch {n} x {s}x{s}, sampled settings: {n / t_torch:.1f} images/s "
        f"({t_torch * 1e3:.0f} ms/batch); midpoint setting: {n / t_torch_mid:.1f} images/s "
        f"[{torch.get_num_threads()} thread, CPU]"
    )


if __name__ == "__main__":
    main()
