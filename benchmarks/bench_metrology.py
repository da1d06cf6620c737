"""Speed of sem_metrology.measure_lines on a 1280x960 line/space image (~37-40 lines), and of
measure_contacts on the 1024x768 contact-hole image.

Uses the real images when SEM_REAL_DATA (or ../shared/data/sem beside the clone) holds them, else synthetic
ones. Prints milliseconds per image, lines/s and line-rows/s (holes/s for contacts), and ratios
against a baseline measured in the same run: one full 5x5 median filter of the image
(scipy.ndimage), the step SMILE's normalisation starts with.

Run: uv run --frozen python benchmarks/bench_metrology.py [--repeats N]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
from scipy import ndimage
from sem_metrology import (
    LineOptions,
    make_contact_image,
    make_line_image,
    measure_contacts,
    measure_lines,
)

_SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
_FOLDER = Path(os.environ.get("SEM_REAL_DATA", _SHARED / "sem"))


def _load() -> tuple[np.ndarray, float, str]:
    path = _FOLDER / "lines_euv_resist_0p827nm.tif"
    if path.is_file():
        import tifffile

        return tifffile.imread(path)[:896].astype(np.float32), 0.827009, f"real ({path.name})"
    s = make_line_image(n_lines=37, shape=(896, 1280), seed=0)
    return s.image, s.pixel_size_nm, "synthetic (37 lines)"


def _load_contacts() -> tuple[np.ndarray, float, str]:
    path = _FOLDER / "contacts_0p901nm.tif"
    if path.is_file():
        import tifffile

        return tifffile.imread(path)[:676].astype(np.float32), 0.9009, f"real ({path.name})"
    s = make_contact_image(shape=(676, 1024), seed=0)
    return s.image, s.pixel_size_nm, "synthetic"


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
            f"{name:38s} {t * 1e3:7.1f} ms  {m.n_lines / t:6.1f} lines/s  "
            f"{m.n_rows / t:7.0f} rows/s  {m.n_lines * m.n_rows / t:8.0f} line-rows/s  "
            f"{t / baseline:5.2f}x median filter"
        )
    contacts, cpx, cwhat = _load_contacts()
    c = measure_contacts(contacts, cpx)
    c_base = _time(lambda: ndimage.median_filter(contacts, size=5), args.repeats)
    t = _time(lambda: measure_contacts(contacts, cpx), args.repeats)
    print(
        f"contacts: {cwhat}, {contacts.shape[1]}x{contacts.shape[0]}, {c.n_holes} holes: "
        f"{t * 1e3:8.1f} ms  {c.n_holes / t:8.1f} holes/s  {t / c_base:5.2f}x median filter "
        f"({c_base * 1e3:.1f} ms)"
    )


if __name__ == "__main__":
    main()
