"""Peak memory and time of the classical deconvolutions (``restore``) on one large frame.

A ``texture`` sample (``sem_physics.make_sample``) is degraded with ``sem_physics.degrade``
(Airy PSF, radius 8 px, beta 1.95, dose 20, Gaussian sigma 4, seed 0). Richardson-Lucy and
Wiener (adaptive preset) then restore it with the true PSF and noise variance given in the
config, so the blind estimate is not part of the measurement; the estimate's own time and peak
are reported on a separate line (``--no-estimate`` skips it).

The reference ("old") implementation is a verbatim copy, kept in this file, of the bodies of
``restore`` (``deconv.py``), ``richardson_lucy_discrepancy`` and ``RichardsonLucyRestorer.adaptive``
(``richardson_lucy.py``), ``discrepancy_balance`` and ``WienerRestorer.adaptive`` (``wiener.py``)
as they were before the in-place rewrite; "new" is the package's current code (for
Richardson-Lucy its plain iterations, ``accelerate=False``, the code the rewrite is about; the
accelerated default, with its extrapolation buffers, is measured on a line of its own). Each
(method, implementation) runs in a fresh subprocess, which reports

* wall time of ``restore`` (after a warm-up ``restore`` of a 256 x 256 crop, which does the
  lazy imports);
* peak RSS increase: ``ru_maxrss`` after ``restore`` minus the RSS just before it;
* the tracemalloc peak of a second ``restore`` (tracemalloc sees numpy's data allocations).

The old and new outputs of each method are compared with ``np.array_equal`` (else the maximum
absolute difference is printed), as are the ``last_params``.

Run: uv run python benchmarks/bench_deconv_memory.py [--shape 8192 8192] [--methods rl wiener]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import scipy.fft as sfft
from sem_baselines.classical.deconv import (
    DeconvRestorer,
    PSFChoice,
    choose_psf,
    crop,
    pad_reflect,
    transfer,
)
from sem_baselines.classical.richardson_lucy import (
    _EPS,
    STALL,
    RichardsonLucyConfig,
    RichardsonLucyRestorer,
    _stop_reason,
)
from sem_baselines.classical.wiener import (
    _LAPLACIAN,
    BAND_OTF,
    WienerConfig,
    WienerRestorer,
)
from sem_baselines.restorer import check_image
from sem_physics import DegradationParams, airy_psf, degrade, make_sample

PARAMS = DegradationParams(
    rx_px=8.0, ry_px=8.0, beta=1.95, theta_rad=0.0, gain=1.0, offset=0.0, sigma=4.0, dose=20.0
)
METHODS = {"rl": "Richardson-Lucy", "wiener": "Wiener"}


# --- reference (old) implementation: verbatim copies of the bodies before the rewrite ---------


def ref_richardson_lucy_discrepancy(
    y: np.ndarray,
    kernel: np.ndarray,
    target_var: float,
    max_iterations: int,
    core: tuple[slice, slice],
    fixed: int | None = None,
) -> tuple[np.ndarray, int, float]:
    if not np.array_equal(kernel, kernel[::-1, ::-1]):
        raise ValueError("the PSF must be centro-symmetric (h(-u) = h(u))")
    h, w = y.shape
    p = kernel.shape[0] // 2
    fh = sfft.next_fast_len(h + p, real=True)
    fw = sfft.next_fast_len(w + p, real=True)
    tf = transfer(kernel, (fh, fw))

    def conv(img: np.ndarray) -> np.ndarray:
        return sfft.irfft2(sfft.rfft2(img, s=(fh, fw)) * tf, s=(fh, fw))[:h, :w]

    x = np.full_like(y, max(float(y.mean()), _EPS))  # flat start: low frequencies first
    limit = fixed if fixed is not None else max_iterations
    done, previous = 0, float("inf")
    while True:
        hx = conv(x)
        resid = float(np.mean((y[core] - hx[core]) ** 2))
        if done >= limit:
            break
        if fixed is None and (resid <= target_var or previous - resid < STALL * target_var):
            break
        previous = resid
        x = x * conv(y / np.maximum(hx, _EPS))
        done += 1
    return x, done, resid


def ref_discrepancy_balance(
    spectrum: np.ndarray,
    h: np.ndarray,
    d2: np.ndarray,
    noise_var: float,
    weights: np.ndarray,
    tau: float = 1.0,
    band: float = BAND_OTF,
) -> float:
    h2 = h.real**2 + h.imag**2
    sel = h2 > band**2
    y2 = ((spectrum.real**2 + spectrum.imag**2) * weights)[sel]
    h2, d2s = h2[sel], d2[sel]
    n_total = float(np.sum(weights * np.ones_like(h2, shape=spectrum.shape)))
    n_band = float(np.sum((weights * np.ones(spectrum.shape))[sel]))
    target = tau * noise_var

    def residual(log_lam: float) -> float:
        lam = np.exp(log_lam)
        ratio = lam * d2s / (h2 + lam * d2s)
        return float(np.sum(y2 * ratio * ratio)) / (n_total * n_band)

    lo, hi = np.log(1e-9), np.log(1e6)
    if residual(lo) >= target:
        return float(np.exp(lo))
    if residual(hi) <= target:
        return float(np.exp(hi))
    while hi - lo > 1e-3:
        mid = 0.5 * (lo + hi)
        lo, hi = (lo, mid) if residual(mid) > target else (mid, hi)
    return float(np.exp(0.5 * (lo + hi)))


class _ReferenceRestore(DeconvRestorer):
    def restore(self, image: np.ndarray) -> np.ndarray:
        y = check_image(image).astype(np.float64)
        cfg = self.config
        strength = getattr(cfg, self.strength_field)
        need_noise = cfg.preset == "adaptive" and strength is None
        choice = choose_psf(y, cfg.preset, cfg.psf, cfg.noise_var if need_noise else 0.0)
        radius = max(choice.psf.rx_px, choice.psf.ry_px)
        if radius > min(y.shape):
            raise ValueError(
                f"PSF radius {radius:g} px ({choice.source}) exceeds the image "
                f"({y.shape[0]} x {y.shape[1]} px): the blur leaves nothing to deconvolve"
            )
        kernel = airy_psf(choice.psf)
        pad = kernel.shape[0] // 2 if cfg.boundary == "reflect" else 0
        ext = pad_reflect(y, pad)
        if self.non_negative:
            ext = np.clip(ext, 0.0, None)
        if cfg.preset == "paper":
            strength = self.paper_strength if strength is None else strength
            out = self.paper_deconvolve(ext / 255.0, kernel, strength) * 255.0
            used: dict[str, Any] = {self.strength_field: strength}
        else:
            out, used = self.adaptive(ext, kernel, choice, pad)
        self.last_params = {"preset": cfg.preset, **used, **choice.as_dict()}
        out = crop(out, pad)
        if cfg.clip:
            out = np.clip(out, 0.0, 255.0)
        return out.astype(np.float32)


class ReferenceRL(_ReferenceRestore, RichardsonLucyRestorer):
    def adaptive(
        self, ext: np.ndarray, kernel: np.ndarray, choice: PSFChoice, pad: int
    ) -> tuple[np.ndarray, dict[str, Any]]:
        cfg = self.config
        h, w = ext.shape[0] - 2 * pad, ext.shape[1] - 2 * pad
        core = (slice(pad, pad + h), slice(pad, pad + w))
        target = cfg.tau * float(choice.noise_var or 0.0)
        out, iterations, resid = ref_richardson_lucy_discrepancy(
            ext, kernel, target, cfg.max_iterations, core, cfg.iterations
        )
        stop = _stop_reason(cfg, iterations, resid, target)
        return out, {"iterations": iterations, "residual_var": resid, "stopped_by": stop}


class ReferenceWiener(_ReferenceRestore, WienerRestorer):
    def adaptive(
        self, ext: np.ndarray, kernel: np.ndarray, choice: PSFChoice, pad: int
    ) -> tuple[np.ndarray, dict[str, Any]]:
        cfg = self.config
        shape = ext.shape
        spec = sfft.rfft2(ext)
        h = transfer(kernel, shape)
        d2 = np.abs(transfer(_LAPLACIAN, shape)) ** 2
        balance = cfg.balance
        if balance is None:
            wts = np.full(spec.shape[1], 2.0)
            wts[0] = 1.0
            if shape[1] % 2 == 0:
                wts[-1] = 1.0
            balance = ref_discrepancy_balance(
                spec, h, d2, float(choice.noise_var or 0.0), wts[None, :], cfg.tau
            )
        out = sfft.irfft2(np.conj(h) * spec / (np.abs(h) ** 2 + balance * d2), s=shape)
        return out, {"balance": balance}


# --- measurement --------------------------------------------------------------------------------


def make_frame(shape: tuple[int, int]) -> np.ndarray:
    return degrade(make_sample("texture", shape), PARAMS, rng=0)


def noise_var(frame: np.ndarray) -> float:
    """Mean Poisson-Gaussian variance: signal / dose + sigma^2 (grey levels^2)."""
    return float(frame.mean()) / PARAMS.dose + PARAMS.sigma**2


def restorer(method: str, impl: str, frame: np.ndarray) -> Any:
    cfg: dict[str, Any] = {"psf": PARAMS.psf, "noise_var": noise_var(frame)}
    if method == "rl":
        cls = ReferenceRL if impl == "old" else RichardsonLucyRestorer
        if impl == "new":
            cfg["accelerate"] = False  # the plain iterations the rewrite is about
        return cls(RichardsonLucyConfig(**cfg))
    cls = ReferenceWiener if impl == "old" else WienerRestorer
    return cls(WienerConfig(**cfg))


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def child(method: str, impl: str, frame_path: Path, out_path: Path, trace: bool) -> None:
    """One measurement in this (fresh) process; prints a JSON line."""
    frame = np.load(frame_path)
    if method == "estimate":
        from sem_physics import estimate_degradation

        run = lambda img: estimate_degradation(img.astype(np.float64))  # noqa: E731
    else:
        rest = restorer(method, impl, frame)
        run = rest.restore
    run(frame[:256, :256].copy())  # warm-up: lazy imports and their memory before the baseline
    before = rss_bytes()
    t0 = time.perf_counter()
    out = run(frame)
    seconds = time.perf_counter() - t0
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    result: dict[str, Any] = {"seconds": seconds, "rss": peak_rss, "traced": None}
    if method != "estimate":
        np.save(out_path, out)
        result["params"] = rest.last_params
    del out
    if trace:
        tracemalloc.start()
        run(frame)
        result["traced"] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    print(json.dumps(result, default=str))


def measure(method: str, impl: str, frame_path: Path, tmp: Path, trace: bool) -> dict[str, Any]:
    out_path = tmp / f"{method}-{impl}.npy"
    cmd = [sys.executable, __file__, "--child", method, impl, str(frame_path), str(out_path)]
    if not trace:
        cmd.append("--no-trace")
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode:
        raise RuntimeError(f"{method}/{impl} failed:\n{proc.stderr}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["out"] = out_path
    return result


def mb(n: float | None) -> str:
    return f"{'-':>8s}" if n is None else f"{n / 2**20:8.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=2, default=(2048, 2048))
    parser.add_argument("--methods", nargs="*", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--no-trace", action="store_true", help="skip the tracemalloc run")
    parser.add_argument("--no-estimate", action="store_true", help="skip the estimate's line")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        method, impl, frame_path, out_path = args.child
        child(method, impl, Path(frame_path), Path(out_path), not args.no_trace)
        return

    shape = (args.shape[0], args.shape[1])
    trace = not args.no_trace
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        frame_path = tmp / "frame.npy"
        np.save(frame_path, make_frame(shape))
        print(f"frame {shape[0]} x {shape[1]} ({shape[0] * shape[1] / 1e6:.1f} Mpx), {PARAMS}")
        print(
            f"{'method':16s} {'old s':>8s} {'new s':>8s} {'ratio':>6s}   {'old RSS':>8s} "
            f"{'new RSS':>8s} {'ratio':>6s}   {'old tm':>8s} {'new tm':>8s} {'ratio':>6s}  "
            "(MiB; RSS = peak increase, tm = tracemalloc peak)"
        )
        for method in args.methods:
            old = measure(method, "old", frame_path, tmp, trace)
            new = measure(method, "new", frame_path, tmp, trace)
            tm_ratio = f"{new['traced'] / old['traced']:6.2f}" if trace else "     -"
            print(
                f"{METHODS[method]:16s} {old['seconds']:8.2f} {new['seconds']:8.2f} "
                f"{new['seconds'] / old['seconds']:6.2f}   {mb(old['rss'])} {mb(new['rss'])} "
                f"{new['rss'] / old['rss']:6.2f}   {mb(old['traced'])} {mb(new['traced'])} "
                f"{tm_ratio}"
            )
            a, b = np.load(old["out"]), np.load(new["out"])
            same = np.array_equal(a, b)
            diff = "identical" if same else f"max |diff| {np.max(np.abs(a - b)):.3g}"
            params = "same" if old["params"] == new["params"] else "DIFFERENT"
            print(f"{'':16s} output {diff}; last_params {params}: {new['params']}")
            if method == "rl":
                acc = measure(method, "accelerated", frame_path, tmp, trace)
                tm = f"{mb(acc['traced']).strip()} MiB" if trace else "-"
                print(
                    f"{'':16s} accelerated (the default): {acc['seconds']:.2f} s "
                    f"({acc['seconds'] / old['seconds']:.2f}x old), peak RSS increase "
                    f"{mb(acc['rss']).strip()} MiB ({acc['rss'] / old['rss']:.2f}x old), "
                    f"tracemalloc {tm}; {acc['params']}"
                )
        if not args.no_estimate:
            est = measure("estimate", "new", frame_path, tmp, trace)
            line = (
                f"{'blind estimate':16s} {est['seconds']:8.2f} s, peak RSS increase "
                f"{mb(est['rss']).strip()} MiB (first call)"
            )
            if trace:  # a second call finds sem_physics' lru-cached polar bins of this shape
                line += f"; tracemalloc peak of a second call {mb(est['traced']).strip()} MiB"
            print(line)


if __name__ == "__main__":
    main()
