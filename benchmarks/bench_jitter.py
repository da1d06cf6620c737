"""Calibration of the scan-line jitter detector (``sem_physics.row_jitter``); prints numbers.

Every image (the sample generator's kinds and the real micrographs of ``../shared/data/sem``
and ``../shared/data/sem_corpus``, info bar removed) is degraded with the paper's settings (a
random draw, the midpoint, and a low-dose draw) and measured as it is (false alarms), then
with random row offsets inserted between the blur and the noise (where a scan puts them):
integer offsets of -2..2 (rms 1.41 px) and sub-pixel Gaussian offsets of rms 1 px
(interpolated). Not a test: ``uv run python benchmarks/bench_jitter.py [--seeds N]``.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import numpy as np
from bench_estimate import MAX_SHAPE, load_real, real_images
from sem_physics import ParameterRanges, degrade, make_sample, row_jitter
from sem_physics.scan import JITTER_MIN_RMS_PX, JITTER_MIN_Z

SAMPLE_SHAPE = (480, 640)
KINDS = ("lines", "contacts", "texture", "resist")
PAPER = ParameterRanges()
LOW_DOSE = ParameterRanges(dose=(0.1, 1.0))


def jitter(image: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Each row ``i`` displaced by ``offsets[i]`` px (linear interpolation, edges clamped)."""
    x = np.arange(image.shape[1], dtype=np.float64)
    return np.stack([np.interp(x - p, x, row) for row, p in zip(image, offsets, strict=True)])


def scenes(seeds: int) -> list[tuple[str, np.ndarray]]:
    out = [
        (f"sample:{k}", make_sample(k, SAMPLE_SHAPE, seed=s)) for k in KINDS for s in range(seeds)
    ]
    return out + [("real", load_real(p)) for p in real_images()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=8, help="sample images per kind")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    clean_stats: list[tuple[float, float, str]] = []
    hits: dict[tuple[str, str], list[bool]] = defaultdict(list)
    ratios: dict[tuple[str, str], list[float]] = defaultdict(list)
    by_setting: dict[str, list[bool]] = defaultdict(list)
    false_alarms = cases = 0
    raw_alarms = raw_cases = 0
    raw_top = 0.0
    for kind, x in scenes(args.seeds):
        if kind == "real":  # the micrograph as it was recorded, not degraded further
            r = row_jitter(x)
            raw_cases, raw_alarms, raw_top = (
                raw_cases + 1,
                raw_alarms + r.detected,
                max(raw_top, r.z),
            )
        settings = {
            "paper": PAPER.sample(rng),
            "midpoint": PAPER.midpoint(),
            "low dose": LOW_DOSE.sample(rng),
        }
        for name, p in settings.items():
            blurred = degrade(x, p, rng, poisson=False, gaussian=False)
            y = degrade(blurred, p, rng, blur=False, gain_offset=False)
            r = row_jitter(y)
            cases += 1
            false_alarms += r.detected
            clean_stats.append((r.z, r.rms_px, f"{kind} {name}"))
            h = y.shape[0]
            for label, offsets in (
                ("int -2..2", rng.integers(-2, 3, h).astype(float)),
                ("sub-px rms 1", rng.normal(0.0, 1.0, h)),
            ):
                truth = float(np.sqrt(np.mean(offsets**2)))
                yj = degrade(jitter(blurred, offsets), p, rng, blur=False, gain_offset=False)
                rj = row_jitter(yj)
                hits[(kind, label)].append(rj.detected)
                by_setting[name].append(rj.detected)
                if rj.detected:
                    ratios[(kind, label)].append(rj.rms_px / truth)
    print(f"thresholds: rms >= {JITTER_MIN_RMS_PX} px and z >= {JITTER_MIN_Z}")
    print(f"unjittered degraded cases: {cases}, false alarms: {false_alarms}")
    print(
        f"real micrographs as recorded: {raw_cases}, detections: {raw_alarms}, largest z {raw_top:.2f}"
    )
    top_z = max(clean_stats)
    top_rms = max(clean_stats, key=lambda t: t[1])
    print(f"  largest z {top_z[0]:.2f} (rms {top_z[1]:.2f} px, {top_z[2]})")
    print(f"  largest rms {top_rms[1]:.2f} px (z {top_rms[0]:.2f}, {top_rms[2]})")
    print("detection rate of jittered cases (and median measured/true rms when detected):")
    for (kind, label), found in sorted(hits.items()):
        med = np.median(ratios[(kind, label)]) if ratios[(kind, label)] else float("nan")
        print(f"  {kind:16s} {label:13s} {np.mean(found):6.1%} of {len(found):3d}  ratio {med:.2f}")
    print("detection rate by setting (all kinds, both jitters):")
    for name, found in by_setting.items():
        print(f"  {name:9s} {np.mean(found):6.1%} of {len(found)}")
    big = degrade(make_sample("texture", MAX_SHAPE, seed=1), PAPER.midpoint(), rng)
    row_jitter(big)
    t0 = time.perf_counter()
    for _ in range(5):
        row_jitter(big)
    print(f"time for a {MAX_SHAPE[1]}x{MAX_SHAPE[0]} image: {(time.perf_counter() - t0) / 5:.3f} s")


if __name__ == "__main__":
    main()
