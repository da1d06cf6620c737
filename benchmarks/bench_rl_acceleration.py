"""Richardson-Lucy with and without its Biggs-Andrews acceleration (not part of the test run).

Both variants run in the same process on the same degraded images, with the same stopping
rule (the discrepancy principle with its stall guard, ``max_iterations`` 100), once with the
true PSF and once with the blind estimate:

* the real EUV resist lines (``lines_euv_resist_0p827nm.tif``, info bar removed) blurred by a
  28.3 x 10.2 px PSF at doses 20 and 2 (sigma 2): a large PSF on a clean image, where plain RL
  creeps and its stall guard ends it early;
* ``--n`` cases of :mod:`bench_estimate` (real corpus micrographs and sample images, 960 x
  1280 at most) at settings drawn from the paper's ranges (radii 2-30 px), ``--seed``.

Per case and variant: iterations, why they stopped, seconds, PSNR of the restoration and PSNR
after least-squares affine matching to the focused image (dB). The summary gives, per PSF
source, the mean PSNRs, the accelerated-minus-plain difference (median, minimum, maximum), how
many cases each variant wins by more than 0.1 dB, and the total time ratio.

Run: ``uv run python benchmarks/bench_rl_acceleration.py [--n 12] [--seed 0]``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from bench_estimate import cases, draw_setting, load_real, real_images
from sem_baselines import get_restorer
from sem_metrology import psnr
from sem_physics import DegradationParams, degrade
from sem_train.evaluation.quality import affine_match

LINES = "lines_euv_resist_0p827nm.tif"
LARGE_PSF = {"rx_px": 28.3, "ry_px": 10.2, "beta": 1.95, "theta_rad": 0.39}


def line_cases() -> list[tuple[str, np.ndarray, DegradationParams]]:
    """The real resist lines under a 28.3 x 10.2 px PSF at doses 20 and 2."""
    found = [p for p in real_images() if p.name == LINES]
    if not found:
        return []
    x = load_real(Path(found[0]))
    return [
        (
            f"{LINES} dose {dose:g}",
            x,
            DegradationParams(**LARGE_PSF, gain=1.05, offset=10.0, sigma=2.0, dose=dose),
        )
        for dose in (20.0, 2.0)
    ]


def run_case(focused: np.ndarray, setting: DegradationParams, rng: int) -> dict[str, list]:
    """``{psf source: [(accelerate, iterations, stop, seconds, psnr, affine psnr), ...]}``."""
    observed = degrade(focused, setting, rng=rng)
    ref = focused.astype(np.float32)
    out: dict[str, list] = {}
    for source, psf in (("true", setting.psf), ("blind", None)):
        rows = []
        for accelerate in (False, True):
            rl = get_restorer(
                "richardson-lucy", accelerate=accelerate, **({"psf": psf} if psf else {})
            )
            t0 = time.perf_counter()
            restored = rl.restore(observed)
            seconds = time.perf_counter() - t0
            p = rl.last_params
            rows.append(
                (
                    accelerate,
                    p["iterations"],
                    p["stopped_by"],
                    seconds,
                    psnr(ref, restored),
                    psnr(ref, affine_match(restored, ref)),
                )
            )
        out[source] = rows
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=12, help="cases drawn from the paper's ranges")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    todo = line_cases() + [
        (name, x, draw_setting(rng, "targets")) for name, x in cases(args.n, args.seed)
    ]
    results: dict[str, list] = {"true": [], "blind": []}
    for i, (name, focused, setting) in enumerate(todo):
        res = run_case(focused, setting, rng=i)
        for source, rows in res.items():
            results[source].append(rows)
            cells = " | ".join(
                f"{'acc' if a else 'plain'} {n:3d} {stop:13s} {s:5.1f} s {raw:5.2f} / {aff:5.2f} dB"
                for a, n, stop, s, raw, aff in rows
            )
            print(
                f"{name[:34]:34s} r=({setting.rx_px:4.1f},{setting.ry_px:4.1f}) "
                f"dose {setting.dose:5.1f} {source:5s} | {cells}",
                flush=True,
            )
    print("\nsummary (plain vs accelerated; PSNR raw / after affine matching, dB)")
    for source, per_case in results.items():
        arr = np.array([[r[4], r[5], r[3]] for rows in per_case for r in rows]).reshape(
            len(per_case), 2, 3
        )
        diff = arr[:, 1, 1] - arr[:, 0, 1]
        print(
            f"{source:5s} PSF, {len(per_case)} cases: mean {arr[:, 0, 0].mean():.2f} / "
            f"{arr[:, 0, 1].mean():.2f} vs {arr[:, 1, 0].mean():.2f} / {arr[:, 1, 1].mean():.2f}; "
            f"affine difference median {np.median(diff):+.2f}, min {diff.min():+.2f}, "
            f"max {diff.max():+.2f}; wins > 0.1 dB: accelerated {(diff > 0.1).sum()}, "
            f"plain {(diff < -0.1).sum()}; time accelerated / plain "
            f"{arr[:, 1, 2].sum() / arr[:, 0, 2].sum():.2f}x"
        )


if __name__ == "__main__":
    main()
