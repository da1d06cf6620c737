"""Accuracy and speed of the blind estimate ``estimate_degradation`` (not part of the test run).

Degrades real micrographs of the shared corpus (info bar removed, at most 960 x 1280) and the
project's sample images (960 x 1280) with seeded settings drawn from the paper's ranges, the
radii restricted to the targets' 2-30 px (``ParameterRanges(rx_px=(2, 30), ry_px=(2, 30))``),
and compares the estimate with the truth:

* radii: median and 90th percentile of ``|estimate / truth - 1|`` over both axes (canonical
  ellipses, ``rx >= ry``); theta: median error in degrees where ``max / min radius >= 1.5``;
  sigma and dose: median relative error;
* time per image (median and maximum, and on the 960 x 1280 sample images alone);
* images whose estimate has no PSF (flagged flat) are listed; they are left out of the radius
  figures and counted again as failures in the "all cases" line.

Run: ``uv run python benchmarks/bench_estimate.py [--n 36] [--seed 0]``. Real images come from
``SEM_CORPUS_DATA`` and ``SEM_REAL_DATA`` (or ``../shared/data`` beside the clone).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
from sem_physics import (
    SAMPLE_KINDS,
    ParameterRanges,
    crop_info_bar,
    degrade,
    estimate_degradation,
    make_sample,
    read_image,
)
from sem_physics.estimate import estimate_errors

RANGES = ParameterRanges(rx_px=(2.0, 30.0), ry_px=(2.0, 30.0))
MAX_SHAPE = (960, 1280)


def real_images() -> list[Path]:
    """Every real micrograph in the corpus folders, sorted."""
    here = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
    folders = [
        os.environ.get("SEM_CORPUS_DATA") or here / "sem_corpus",
        os.environ.get("SEM_REAL_DATA") or here / "sem",
    ]
    paths: list[Path] = []
    for folder in folders:
        folder = Path(folder)
        if folder.is_dir():
            paths += [p for p in folder.rglob("*") if p.suffix.lower() in (".tif", ".png")]
    return sorted(paths)


def load_real(path: Path) -> np.ndarray:
    img = read_image(path)
    return crop_info_bar(img.data, img.info_bar_rows)[: MAX_SHAPE[0], : MAX_SHAPE[1]]


def cases(n: int, seed: int) -> list[tuple[str, np.ndarray]]:
    """``n`` focused images: every third a sample image, the others real, chosen by ``seed``."""
    rng = np.random.default_rng(seed)
    reals = real_images()
    out = []
    for i in range(n):
        if i % 3 == 2 or not reals:
            kind = SAMPLE_KINDS[(i // 3) % len(SAMPLE_KINDS)]
            out.append((f"sample:{kind}", make_sample(kind, MAX_SHAPE, seed=seed * 1000 + i)))
        else:
            path = reals[int(rng.integers(len(reals)))]
            out.append((path.name, load_real(path)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=36, help="number of degradations (>= 30)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng([args.seed, 1])
    radius, theta, sigma, dose, times, sample_times, flat = [], [], [], [], [], [], []
    print(f"{'image':28s} {'shape':>11s}  true (rx, ry, deg)     estimate (rx, ry, deg)   s")
    for i, (name, focused) in enumerate(cases(args.n, args.seed)):
        params = RANGES.sample(rng)
        observed = degrade(focused, params, rng=np.random.default_rng([args.seed, 2, i]))
        t0 = time.perf_counter()
        est = estimate_degradation(observed)
        dt = time.perf_counter() - t0
        times.append(dt)
        if name.startswith("sample:"):
            sample_times.append(dt)
        err = estimate_errors(est, params)
        sigma.append(abs(err["sigma"]))
        dose.append(abs(err["dose"]))
        if err["rx_px"] is None:
            flat.append(name)
            line = "no PSF: " + "; ".join(est.quality.reasons)
        else:
            radius += [abs(err["rx_px"]), abs(err["ry_px"])]
            if err["theta_deg"] is not None:
                theta.append(err["theta_deg"])
            line = (
                f"{est.rx_px:5.1f} {est.ry_px:5.1f} {np.degrees(est.theta_rad):4.0f}"
                f"  dose {params.dose:4.1f}/{est.dose:5.1f} sigma {params.sigma:4.1f}/{est.sigma:4.1f}"
            )
        t = f"{params.rx_px:5.1f} {params.ry_px:5.1f} {np.degrees(params.theta_rad) % 180:4.0f}"
        print(f"{name[:28]:28s} {observed.shape!s:>11s}  {t}   {line}  {dt:.2f}", flush=True)
    r = np.array(radius)
    all_r = np.concatenate([r, np.full(2 * len(flat), 1e9)])  # a missing estimate: failed
    print()
    print(f"cases: {args.n}, with a PSF estimate: {args.n - len(flat)}, flagged flat: {flat}")
    print(
        f"radius |rel err|: median {100 * np.median(r):.1f} %, 90th pct "
        f"{100 * np.percentile(r, 90):.1f} %  (targets 10 %, 25 %)"
    )
    print(
        f"  all cases (flat = failed): median {100 * np.median(all_r):.1f} %, 90th pct "
        f"{100 * np.percentile(all_r, 90):.1f} %"
    )
    print(f"theta error (axis ratio >= 1.5, n={len(theta)}): median {np.median(theta):.1f} deg")
    print(f"sigma |rel err| median {100 * np.median(sigma):.1f} % (target 20 %)")
    print(f"dose |rel err| median {100 * np.median(dose):.1f} % (target 30 %)")
    print(f"time per image: median {np.median(times):.2f} s, max {np.max(times):.2f} s")
    if sample_times:
        print(
            f"time per 960x1280 image: median {np.median(sample_times):.2f} s, "
            f"max {np.max(sample_times):.2f} s (target 1 s)"
        )


if __name__ == "__main__":
    main()
