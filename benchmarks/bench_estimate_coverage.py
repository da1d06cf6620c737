"""Coverage of the blind estimate's radius errors and of its ``ok`` flag (not part of the test run).

Degrades the project's generated images (``make_sample`` kinds lines, contacts, texture, resist,
and ``sem_metrology.synthetic.make_contact_image``'s noise-free contact lattice, "lattice") at
128 x 128, 256 x 256 and 480 x 640 with a grid of PSFs (round radii 2-30 px and elliptical
ones at a seeded angle) and three noise settings (``clean``: sigma 1, dose 50; ``mid``: the
paper's midpoint, sigma 5.5, dose 25.5; ``noisy``: sigma 10, dose 2), and compares every
estimate with the truth. Per radius axis ``z = (estimate - truth) / one-sigma error``
(canonical ellipses, ``rx >= ry``).

A generated image carries a blur of its own (a 0.7 px probe blur; along line patterns their
smooth edges), which adds to the simulated defocus: a defocus below it cannot be measured by
any method, the estimate reports the total blur (``bench_estimate.py``, "own blur"). As there,
the reference's own blur is the estimate's major radius on the undegraded image, and the cases
whose true minor radius lies below it are counted apart ("below own blur").

Printed: per kind, size and noise setting, the ok estimates' radii within 1 / 2 / 3 of their
errors (normal: 68 / 95 / 99.7 %) and how many ok estimates have an axis beyond 3 errors of the
truth (``ok misses``), the flagged count, all without the cases below the own blur; then those
cases' figures, and the ok misses themselves, worst first.

Run: ``uv run python benchmarks/bench_estimate_coverage.py [--quick] [--seeds 0 1]
[--out rows.jsonl] [--steps-err 0]``. ``--quick``: 256 x 256 contacts and texture, 4 PSFs at 2
noise settings, one seed (about 10 s); the full grid takes about 15 minutes per seed on one
core. ``--steps-err 0``: without the radii's frequency-sampling error term
(``sem_physics.estimate.CUTOFF_STEPS_ERR``), as the estimate was before it.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Iterator

import numpy as np
import sem_physics.estimate as estimate_module
from sem_physics import DegradationParams, degrade, estimate_degradation, make_sample
from sem_physics.estimate import canonical_ellipse

KINDS = ("lines", "contacts", "texture", "resist", "lattice")
SHAPES = ((128, 128), (256, 256), (480, 640))
ROUND = (2.0, 3.0, 5.0, 8.0, 12.0, 16.0, 20.0, 25.0, 30.0)
ELLIPTICAL = ((8.0, 3.0), (16.0, 6.0), (24.0, 12.0), (30.0, 15.0))
NOISE = {"clean": (1.0, 50.0), "mid": (5.5, 25.5), "noisy": (10.0, 2.0)}  # (sigma, dose)
QUICK = {
    "kinds": ("contacts", "texture"),
    "shapes": ((256, 256),),
    "radii": ((4.0, 4.0), (12.0, 12.0), (20.0, 20.0), (16.0, 6.0)),
    "noise": ("mid", "noisy"),
}
MISS_Z = 3.0  # an ok estimate with an axis beyond this many errors of the truth is a miss


def focused(kind: str, shape: tuple[int, int], seed: int) -> np.ndarray:
    """One focused image of ``kind`` (a ``make_sample`` kind or ``lattice``)."""
    if kind == "lattice":
        from sem_metrology.synthetic import make_contact_image

        return make_contact_image(shape, seed=seed).image
    return make_sample(kind, shape, seed=seed)


def grid(quick: bool, seeds: list[int]) -> Iterator[tuple]:
    """``(kind, shape, rx, ry, noise, seed)`` of every case."""
    if quick:
        kinds, shapes, radii, noise = (
            QUICK["kinds"],
            QUICK["shapes"],
            QUICK["radii"],
            QUICK["noise"],
        )
    else:
        kinds, shapes, noise = KINDS, SHAPES, tuple(NOISE)
        radii = tuple((r, r) for r in ROUND) + ELLIPTICAL
    for seed in seeds:
        for kind in kinds:
            for shape in shapes:
                for rx, ry in radii:
                    for level in noise:
                        yield kind, shape, rx, ry, level, seed


_OWN: dict[tuple, float] = {}


def own_blur_px(kind: str, shape: tuple[int, int], seed: int) -> float:
    """Major radius of the blur the undegraded image carries (0 when none is found, or when
    the image cannot be estimated: the noise-free lattice is two grey levels)."""
    key = (kind, shape, seed)
    if key not in _OWN:
        try:
            est = estimate_degradation(focused(kind, shape, seed))
        except ValueError:
            est = None
        _OWN[key] = 0.0 if est is None or est.rx_px is None else float(est.rx_px)
    return _OWN[key]


def run_case(kind: str, shape: tuple[int, int], rx: float, ry: float, level: str, seed: int):
    """Truth, estimate, errors and flags of one case, as a JSON-ready row."""
    level_index = list(NOISE).index(level)
    rng = np.random.default_rng([seed, int(rx * 10), int(ry * 10), shape[0], level_index])
    theta = float(rng.uniform(0, math.pi)) if rx != ry else 0.0
    sigma, dose = NOISE[level]
    params = DegradationParams(
        rx_px=rx, ry_px=ry, beta=1.95, theta_rad=theta, gain=1.045, offset=13.0,
        sigma=sigma, dose=dose,
    )  # fmt: skip
    observed = degrade(focused(kind, shape, seed), params, rng=rng)
    t0 = time.perf_counter()
    est = estimate_degradation(observed)
    row = {"kind": kind, "shape": list(shape), "rx": rx, "ry": ry, "noise": level, "seed": seed}
    row |= {"seconds": time.perf_counter() - t0, "ok": est.quality.ok}
    row["below_own"] = min(rx, ry) < own_blur_px(kind, shape, seed)
    row["reasons"] = [r[:90] for r in est.quality.reasons]
    if est.rx_px is None or est.ry_px is None:
        return row | {"z": None}
    trx, try_, _ = canonical_ellipse(rx, ry, theta)
    row |= {"est": [est.rx_px, est.ry_px], "err": [est.rx_px_err, est.ry_px_err]}
    row["z"] = [(est.rx_px - trx) / est.rx_px_err, (est.ry_px - try_) / est.ry_px_err]
    return row


def coverage(rows: list[dict]) -> str:
    """``within 1 / 2 / 3 errors`` of the ok estimates' radii, their misses, the flagged."""
    ok = [r for r in rows if r["ok"] and r["z"] is not None]
    z = np.abs([v for r in ok for v in r["z"]])
    misses = sum(max(abs(v) for v in r["z"]) > MISS_Z for r in ok)
    if not len(z):
        return f"ok 0, flagged {len(rows)}"
    within = " / ".join(f"{100 * np.mean(z < k):.0f}" for k in (1, 2, 3))
    return f"ok {len(ok):4d}: {within} %, ok misses {misses:3d}; flagged {len(rows) - len(ok):4d}"


def summary(rows: list[dict]) -> None:
    below = [r for r in rows if r["below_own"]]
    rows = [r for r in rows if not r["below_own"]]
    print(f"all {len(rows)} (without the {len(below)} below own blur): {coverage(rows)}")
    for key, values in (("kind", KINDS), ("shape", [list(s) for s in SHAPES]), ("noise", NOISE)):
        for v in values:
            sel = [r for r in rows if r[key] == v]
            if sel:
                print(f"  {key} {v!s:12s} {coverage(sel)}")
    print(f"below own blur {len(below)}: {coverage(below)}")
    misses = [r for r in rows if r["ok"] and r["z"] is not None and max(map(abs, r["z"])) > MISS_Z]
    misses.sort(key=lambda r: -max(map(abs, r["z"])))
    print(f"ok estimates beyond {MISS_Z:g} errors of the truth (not below own blur): {len(misses)}")
    for r in misses:
        est = " x ".join(f"{e:.1f} ± {s:.1f}" for e, s in zip(r["est"], r["err"], strict=True))
        print(
            f"  {r['kind']:8s} {r['shape'][0]}x{r['shape'][1]} {r['noise']:5s} seed {r['seed']}"
            f"  true {r['rx']:g} x {r['ry']:g}  est {est}  z {r['z'][0]:+.1f} {r['z'][1]:+.1f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small grid (about 10 s)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--out", help="write one JSON row per case to this file")
    parser.add_argument(
        "--steps-err",
        type=float,
        default=estimate_module.CUTOFF_STEPS_ERR,
        help="the radii's frequency-sampling error, in frequency steps (0: without it)",
    )
    args = parser.parse_args()
    estimate_module.CUTOFF_STEPS_ERR = args.steps_err
    rows = [run_case(*case) for case in grid(args.quick, args.seeds)]
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            fh.writelines(json.dumps(r) + "\n" for r in rows)
    summary(rows)


if __name__ == "__main__":
    main()
