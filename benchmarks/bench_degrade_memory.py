"""Peak memory and time of the defocus simulator (``degrade``, ``sem-degrade``) on one large frame.

The frame is a ``texture`` sample (``sem_physics.make_sample``, 2048 x 2048, tiled to the
requested shape), float32 on 0..255 as ``read_image`` returns it, degraded at the ranges'
midpoint (Airy PSF, radius 15.5 px, k = 93) with seed 0.

The reference ("old") implementation is a copy, kept in this file, of the code paths of
``degrade`` (``forward.py``), ``convolve_reflect`` and the centro-symmetric ``_kernel_spectrum``
(``convolution.py``) and ``poisson_gaussian`` (``noise.py``) as they were before the banded,
in-place rewrite (a float64 copy of the frame, the padded frame, whole-array ``rfft2``/``irfft2``,
whole-frame noise terms; argument checks and the test switches left out); "new" is the
package's current code. Each (target, implementation)
runs in a fresh subprocess, which reports

* wall time (after a warm-up call on a 256 x 256 crop, which does the lazy imports);
* peak RSS increase: ``ru_maxrss`` after the call minus the RSS just before it;
* for ``degrade``, the tracemalloc peak of a second call (tracemalloc sees numpy's data
  allocations, not pocketfft's internal buffers).

``sem-degrade`` (``--cli``) runs ``sem_physics.cli.main`` on the frame saved as a float32 TIFF
(``--crop none``); "old" is the same command with the reference ``degrade`` in place of the
package's (the manifest, hashing and writing code is the current one). Its line gives the
process's whole peak RSS (interpreter, libraries and the frame read included). The old and
new outputs are compared with ``np.array_equal`` (the CLI's output files byte for byte).

Run: uv run python benchmarks/bench_degrade_memory.py [--shape 8192 8192] [--no-cli]
"""

from __future__ import annotations

import argparse
import filecmp
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
from sem_physics import DegradationParams, ParameterRanges, airy_psf, degrade, make_sample
from sem_physics.convolution import (
    _check_image,
    _check_kernel,
    clear_kernel_cache,
    fft_shape,
)
from sem_physics.forward import MAX_ABS_INTENSITY
from sem_physics.noise import _check_noise_params
from sem_physics.validation import (
    as_generator,
    refuse_negative_counts,
    refuse_other_scale,
    validate_image,
    warn_if_unit_scale,
)

PARAMS = ParameterRanges().midpoint()

# --- reference (old) implementation: verbatim copies of the bodies before the rewrite ---------


def ref_kernel_spectrum(kernel: np.ndarray, fh: int, fw: int) -> np.ndarray:
    k = kernel.shape[0]
    p = k // 2
    mirrored = kernel[p:, ::-1] * kernel.dtype.type(fh)
    rows = np.zeros((p + 1, fw), dtype=kernel.dtype)
    rows[:, : p + 1] = mirrored[:, p:]
    rows[:, fw - p :] = mirrored[:, :p]
    return sfft.irfft(sfft.rfft(rows, axis=1), n=fh, axis=0)


def ref_convolve_reflect(
    image: np.ndarray, kernel: np.ndarray, dtype: type[np.floating] = np.float32
) -> np.ndarray:
    image = _check_image(image)
    kernel = _check_kernel(kernel).astype(dtype)
    k = kernel.shape[0]
    p = k // 2
    h, w = image.shape
    fh, fw = fft_shape(h, w, k)
    padded = np.pad(
        image.astype(dtype, copy=False), ((p, fh - h - p), (p, fw - w - p)), "symmetric"
    )
    spec = sfft.rfft2(padded)
    spec *= ref_kernel_spectrum(kernel, fh, fw)  # the Airy kernel is centro-symmetric
    out = sfft.irfft2(spec, s=(fh, fw), overwrite_x=True)
    return out[p : p + h, p : p + w]


def ref_poisson_gaussian(
    z: np.ndarray, dose: float | None, sigma: float | None, rng: np.random.Generator
) -> np.ndarray:
    _check_noise_params(dose, sigma)
    out = np.asarray(z, dtype=np.float64)
    if not np.all(np.isfinite(out)):
        raise ValueError("the noise-free image contains NaN or inf values")
    if dose is not None:
        out = rng.poisson(np.clip(out, 0.0, None) * dose) / dose
    if sigma is not None and sigma > 0:
        out = out + rng.normal(0.0, sigma, size=out.shape)
    return out.astype(np.float32)


def ref_degrade(
    image: np.ndarray, params: DegradationParams, rng: np.random.Generator | int | None = None
) -> np.ndarray:
    raw = validate_image(image, dtype=None)
    x = validate_image(raw)
    warn_if_unit_scale(x)
    peak = float(np.abs(x).max())
    if peak > MAX_ABS_INTENSITY:
        raise ValueError(f"image values beyond {MAX_ABS_INTENSITY:g}")
    refuse_other_scale(raw)
    refuse_negative_counts(x)
    z = ref_convolve_reflect(x, airy_psf(params.psf), dtype=np.float64)
    z = params.gain * z + params.offset
    return ref_poisson_gaussian(z, params.dose, params.sigma, as_generator(rng))


# --- measurement --------------------------------------------------------------------------------


def make_frame(shape: tuple[int, int]) -> np.ndarray:
    tile = make_sample("texture", (min(shape[0], 2048), min(shape[1], 2048)), seed=0)
    reps = (-(-shape[0] // tile.shape[0]), -(-shape[1] // tile.shape[1]))
    return np.ascontiguousarray(np.tile(tile, reps)[: shape[0], : shape[1]])


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def child_degrade(impl: str, frame_path: Path, out_path: Path, trace: bool) -> dict[str, Any]:
    run = ref_degrade if impl == "old" else degrade
    frame = np.load(frame_path)
    run(frame[:256, :256].copy(), PARAMS, rng=0)  # warm-up: imports and FFT plans
    clear_kernel_cache()  # neither call keeps the kernel's transform (as on a first image)
    before = rss_bytes()
    t0 = time.perf_counter()
    out = run(frame, PARAMS, rng=0)
    seconds = time.perf_counter() - t0
    result: dict[str, Any] = {"seconds": seconds, "rss": peak_rss_bytes() - before}
    np.save(out_path, out)
    del out
    result["traced"] = None
    if trace:
        clear_kernel_cache()
        tracemalloc.start()
        run(frame, PARAMS, rng=0)
        result["traced"] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return result


def child_cli(impl: str, frame_path: Path, out_dir: Path) -> dict[str, Any]:
    from sem_physics import cli, protocol

    if impl == "old":
        protocol.degrade = ref_degrade  # type: ignore[assignment]
    t0 = time.perf_counter()
    status = cli.main([str(frame_path), "-o", str(out_dir), "--crop", "none"])
    return {"seconds": time.perf_counter() - t0, "rss": peak_rss_bytes(), "status": status}


def measure(args: list[str]) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", *args], capture_output=True, text=True, check=False
    )
    if proc.returncode:
        raise RuntimeError(f"{args[:2]} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def mb(n: float | None) -> str:
    return f"{'-':>8s}" if n is None else f"{n / 2**20:8.0f}"


def ratio(new: float | None, old: float | None) -> str:
    return "     -" if new is None or old is None else f"{new / old:6.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=2, default=(2048, 2048))
    parser.add_argument("--no-trace", action="store_true", help="skip the tracemalloc run")
    parser.add_argument("--no-cli", action="store_true", help="skip the sem-degrade runs")
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        target, impl, frame_path, out_path, trace = args.child
        if target == "degrade":
            result = child_degrade(impl, Path(frame_path), Path(out_path), trace == "1")
        else:
            result = child_cli(impl, Path(frame_path), Path(out_path))
        print(json.dumps(result))
        return

    shape = (args.shape[0], args.shape[1])
    px = shape[0] * shape[1]
    trace = "0" if args.no_trace else "1"
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        frame = make_frame(shape)
        np.save(tmp / "frame.npy", frame)
        print(f"frame {shape[0]} x {shape[1]} ({px / 1e6:.1f} Mpx), midpoint {PARAMS}")
        print(
            f"{'target':12s} {'old s':>8s} {'new s':>8s} {'ratio':>6s}   {'old RSS':>8s} "
            f"{'new RSS':>8s} {'ratio':>6s}   {'old tm':>8s} {'new tm':>8s} {'ratio':>6s}  "
            "(MiB; RSS = peak increase, tm = tracemalloc peak)"
        )
        res = {
            impl: measure(
                ["degrade", impl, str(tmp / "frame.npy"), str(tmp / f"{impl}.npy"), trace]
            )
            for impl in ("old", "new")
        }
        old, new = res["old"], res["new"]
        print(
            f"{'degrade':12s} {old['seconds']:8.2f} {new['seconds']:8.2f} "
            f"{ratio(new['seconds'], old['seconds'])}   {mb(old['rss'])} {mb(new['rss'])} "
            f"{ratio(new['rss'], old['rss'])}   {mb(old['traced'])} {mb(new['traced'])} "
            f"{ratio(new['traced'], old['traced'])}"
        )
        same = np.array_equal(np.load(tmp / "old.npy"), np.load(tmp / "new.npy"))
        per_px = "".join(
            f"; {impl} {res[impl]['traced'] / px:.1f} B/px traced" for impl in res if trace == "1"
        )
        print(f"{'':12s} output {'identical' if same else 'DIFFERENT'}{per_px}")
        if args.no_cli:
            return
        from sem_physics import write_image

        src = write_image(tmp / "frame.tif", frame, "float32")
        del frame
        cli = {
            impl: measure(["cli", impl, str(src), str(tmp / f"cli-{impl}"), "0"]) for impl in res
        }
        old, new = cli["old"], cli["new"]
        print(
            f"{'sem-degrade':12s} {old['seconds']:8.2f} {new['seconds']:8.2f} "
            f"{ratio(new['seconds'], old['seconds'])}   {mb(old['rss'])} {mb(new['rss'])} "
            f"{ratio(new['rss'], old['rss'])}   (whole-process peak RSS; "
            f"{old['rss'] / px:.1f} -> {new['rss'] / px:.1f} B/px)"
        )
        name = "0000_frame.tif"
        same = filecmp.cmp(tmp / "cli-old" / name, tmp / "cli-new" / name, shallow=False)
        print(f"{'':12s} output file {'identical' if same else 'DIFFERENT'}")


if __name__ == "__main__":
    main()
