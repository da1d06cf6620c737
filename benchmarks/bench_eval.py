"""Evaluation cost per image: protocol inputs, quality scores, metrology, each restorer.

Times are per 480x640 image and printed as ratios to the forward model (one seeded
defocus + noise of the same image, measured in the same run), so that figures from different
machines compare. Not part of the test run:

    uv run python benchmarks/bench_eval.py [--n 3] [--methods input,wiener,richardson-lucy,bm3d]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sem_metrology import LineOptions
from sem_train.evaluation import (
    QUALITY_METRICS,
    QualityRow,
    Scorer,
    build_s2s,
    run_method,
    sample_images,
    score_image,
)
from sem_train.evaluation.metrology import measure_line_image

# the convention of the demo and the shipped benchmark configs (SMILE cannot measure every case)
TRUTH = LineOptions(convention="truth")


def _timed(fn, repeat: int = 1) -> float:
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - t0) / repeat


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1, help="images per kind")
    ap.add_argument("--methods", default="input,wiener,richardson-lucy,bm3d")
    args = ap.parse_args()
    pool = sample_images(args.n, (480, 640), seed=0)
    n_img = len(pool)
    t_build = _timed(lambda: build_s2s(pool, n_train=0, n_eval=n_img, settings=("midpoint",)))
    _, _, _, cases = build_s2s(pool, n_train=0, n_eval=n_img, settings=("midpoint",))
    base = t_build / n_img
    print(f"forward model (baseline): {base * 1e3:8.1f} ms/image  ratio 1.00")
    c = cases[0]
    row = QualityRow(method="x", case_id=c.case_id, image=c.image, kind=c.kind, setting="m")
    for m in QUALITY_METRICS:
        first = score_image(row, c.input, c.reference, (m,))  # warm-up (model loading)
        if m in first.errors:
            print(f"{m:>24}: unavailable ({first.errors[m][:70]})")
            continue
        t = _timed(lambda m=m: score_image(row, c.input, c.reference, (m,)), repeat=2)
        print(f"{m:>24}: {t * 1e3:8.1f} ms/image  ratio {t / base:6.2f}")
    t = _timed(lambda: measure_line_image(c.reference, 0.827), repeat=2)
    print(f"{'measure_lines':>24}: {t * 1e3:8.1f} ms/image  ratio {t / base:6.2f}")
    t_eval = _timed(lambda: Scorer(cases, QUALITY_METRICS, line_options=TRUTH))
    print(
        f"{'references (all scores)':>24}: {t_eval / n_img * 1e3:8.1f} ms/image  ratio {t_eval / n_img / base:6.2f}"
    )
    for name in args.methods.split(","):
        run = run_method(name, cases, [])
        if run.failed:
            print(f"{name:>24}: failed ({run.failed})")
            continue
        t = run.restore_seconds / n_img
        print(f"{name:>24}: {t * 1e3:8.1f} ms/image  ratio {t / base:6.2f}")
    scorer = Scorer(cases, ("psnr", "ssim"), line_options=TRUTH)
    run = run_method("input", cases, [])
    failed = [r.failed for r in scorer.score(run).metrology if r.failed]
    if failed:  # a timing of measurements that failed would not be one
        print(f"(score+measure: {len(failed)} case(s) not measured: {failed[0]})")
    t = _timed(lambda: scorer.score(run)) / n_img
    print(f"{'score+measure 1 method':>24}: {t * 1e3:8.1f} ms/image  ratio {t / base:6.2f}")
    print(f"(n = {n_img} images, {np.prod(cases[0].input.shape)} px each)")


if __name__ == "__main__":
    main()
