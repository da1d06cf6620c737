"""Speed of sem_metrology.measure_lines on a 1280x960 line/space image (~37-40 lines).

Uses the real EUV image when SEM_REAL_DATA (or /work/shared/data/sem) holds it, else a
synthetic one. Prints seconds per image, lines/s and rows/s, and ratios against a baseline
measured in the same run: one full 5x5 median filter of the image (scipy.ndimage), the step
SMILE's normalisation starts with.

Run: uv run --frozen python benchmarks/bench_metrology.py [--repeats N]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
from scipy import ndimage
from sem_metrology import LineOptions, make_line_image, measure_lines


def _load() -> tuple[np.ndarray, float, str]:
    folder = Path(os.environ.get("SEM_REAL_DATA", "/work/shared/data/sem"))
    path = folder / "lines_euv_resist_0p827nm.tif"
    if path.is_file():
        import tifffile

        return tifffile.imread(path)[:896].astype(np.float32), 0.827009, f"real ({path.name})"
    s = make_line_image(n_lines=37, shape=(896, 1280), seed=0)
    return s.image, s.pixel_size_nm, "synthetic (37 lines)"


def _time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    image, px, what = _load()
    m = measure_lines(image, px)
    print(
        f"image: {what}, {image.shape[1]}x{image.shape[0]} (info bar removed), "
        f"{m.n_lines} lines, {m.n_rows} rows"
    )
    baseline = _time(lambda: ndimage.median_filter(image, size=5), args.repeats)
    variants = {
        "measure_lines (polynomial, 2 passes)": LineOptions(),
        "measure_lines (one pass)": LineOptions(recentre_windows=False),
        "measure_lines (threshold)": LineOptions(edge_method="threshold"),
    }
    print(f"baseline 5x5 median filter: {baseline * 1e3:8.1f} ms")
    for name, opts in variants.items():
        t = _time(lambda o=opts: measure_lines(image, px, o), args.repeats)
        print(
            f"{name:40s} {t * 1e3:8.1f} ms  {m.n_lines / t:8.1f} lines/s  "
            f"{m.n_lines * m.n_rows / t:10.0f} line-rows/s  {t / baseline:5.2f}x median filter"
        )


if __name__ == "__main__":
    main()
