"""Speed of sem_metrology on a 1280x960 line/space image and the 1024x768 contact image, with
ratios against baselines measured in the same run: one 5x5 median filter of the image, and
the previous version's ``measure_lines`` (by default the metrology source before its last
change: uncommitted changes are compared with HEAD, else the last commit that changed
``packages/sem-metrology/src`` with its parent; run from a temporary export in a subprocess on
the same image). Also the whole-process time of ``sem-measure
--help`` and ``sem-measure lines IMG --json`` (targets 0.5 s and 1.5 s).

Uses the real images when SEM_REAL_DATA (or ../shared/data/sem beside the clone) holds them,
else synthetic ones.

Run: uv run --frozen python benchmarks/bench_metrology.py [--repeats N] [--ref REF]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
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

_ROOT = Path(__file__).resolve().parents[1]
_SHARED = _ROOT.parent / "shared" / "data"
_FOLDER = Path(os.environ.get("SEM_REAL_DATA", _SHARED / "sem"))
_LINES = _FOLDER / "lines_euv_resist_0p827nm.tif"

_OLD_TIMER = """
import sys, time, numpy as np
from sem_metrology import measure_lines
image = np.load(sys.argv[1]); px = float(sys.argv[2]); repeats = int(sys.argv[3])
measure_lines(image, px)
times = []
for _ in range(repeats):
    t0 = time.perf_counter(); measure_lines(image, px); times.append(time.perf_counter() - t0)
print(float(np.median(times)))
"""


def _load() -> tuple[np.ndarray, float, str]:
    if _LINES.is_file():
        import tifffile

        return tifffile.imread(_LINES)[:896].astype(np.float32), 0.827009, f"real ({_LINES.name})"
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


def _previous_release(ref: str, image: np.ndarray, px: float, repeats: int) -> float | None:
    """Median seconds of ``measure_lines`` (its defaults) from the package source at ``ref``."""
    if shutil.which("git") is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        archive = subprocess.run(
            ["git", "-C", str(_ROOT), "archive", ref, "packages/sem-metrology/src"],
            capture_output=True,
        )
        if archive.returncode != 0:
            return None
        subprocess.run(["tar", "-x", "-C", tmp], input=archive.stdout, check=True)
        npy = Path(tmp) / "image.npy"
        np.save(npy, image)
        env = {**os.environ, "PYTHONPATH": str(Path(tmp) / "packages/sem-metrology/src")}
        out = subprocess.run(
            [sys.executable, "-c", _OLD_TIMER, str(npy), str(px), str(repeats)],
            capture_output=True,
            text=True,
            env=env,
        )
        return float(out.stdout.strip()) if out.returncode == 0 else None


_SRC = "packages/sem-metrology/src"


def _git(*args: str) -> str | None:
    if shutil.which("git") is None:
        return None
    out = subprocess.run(["git", "-C", str(_ROOT), *args], capture_output=True, text=True)
    return out.stdout.strip() if out.returncode == 0 else None


def _default_ref() -> str | None:
    """The metrology source before its last change: HEAD when the checkout changes it, else
    the parent of the last commit that changed it (comparing HEAD with itself says nothing)."""
    if _git("diff", "--quiet", "HEAD", "--", _SRC) is None:  # uncommitted changes (or no git)
        return "HEAD" if _git("rev-parse", "HEAD") else None
    last = _git("rev-list", "-n", "1", "HEAD", "--", _SRC)
    return f"{last}~1" if last else None


def _same_source(ref: str) -> bool:
    """Whether ``ref`` holds the metrology source this checkout runs."""
    tree = _git("rev-parse", f"{ref}:{_SRC}")
    return tree is not None and _git("diff", "--quiet", ref, "--", _SRC) is not None


def _process_seconds(argv: list[str], repeats: int, cache: str) -> float:
    """Median wall time of a fresh process, with compiled bytecode cached in ``cache`` (as an
    installed package has it, even where PYTHONDONTWRITEBYTECODE is set); one warm-up run."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = cache
    subprocess.run(argv, capture_output=True, check=False, env=env)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run(argv, capture_output=True, check=False, env=env)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--ref",
        default=None,
        help="git ref of the previous version (default: the metrology source before its "
        "last change)",
    )
    args = parser.parse_args()
    image, px, what = _load()
    m = measure_lines(image, px)
    print(
        f"image: {what}, {image.shape[1]}x{image.shape[0]} (info bar removed), "
        f"{m.n_lines} lines, {m.n_rows} rows"
    )
    baseline = _time(lambda: ndimage.median_filter(image, size=5), args.repeats)
    print(f"baseline 5x5 median filter: {baseline * 1e3:8.1f} ms")
    variants = {
        "measure_lines smile (default)": LineOptions(),
        "measure_lines truth": LineOptions(convention="truth"),
        "measure_lines smile, no bootstrap": LineOptions(bootstrap_samples=0),
    }
    t_new = None
    for name, opts in variants.items():
        t = _time(lambda o=opts: measure_lines(image, px, o), args.repeats)
        t_new = t if t_new is None else t_new
        print(
            f"{name:36s} {t * 1e3:7.1f} ms  {m.n_lines / t:6.1f} lines/s  "
            f"{m.n_rows / t:7.0f} rows/s  {t / baseline:5.2f}x median filter"
        )
    ref = args.ref or _default_ref()
    old = None if ref is None else _previous_release(ref, image, px, args.repeats)
    if old is None:
        print(f"previous version ({ref}): not available (no git or no such ref)")
    else:
        same = " (the same source as this checkout)" if _same_source(ref) else ""
        print(
            f"previous version ({ref}{same}) measure_lines: {old * 1e3:7.1f} ms; "
            f"this / previous = {t_new / old:5.2f}"
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
    exe = shutil.which("sem-measure")
    cli = [exe] if exe else [sys.executable, "-m", "sem_metrology.cli"]
    with tempfile.TemporaryDirectory() as cache:
        python_only = _process_seconds([sys.executable, "-c", "pass"], 3, cache)
        t_help = _process_seconds([*cli, "--help"], 3, cache)
        print(
            f"sem-measure --help: {t_help:.2f} s (target 0.5 s; bare python start-up "
            f"{python_only:.2f} s, ratio {t_help / python_only:.1f})"
        )
        if _LINES.is_file():
            t_lines = _process_seconds([*cli, "lines", str(_LINES), "--json"], 3, cache)
            t_import = _process_seconds([sys.executable, "-c", "import sem_physics.io"], 3, cache)
            print(
                f"sem-measure lines {_LINES.name} --json: {t_lines:.2f} s (target 1.5 s); "
                f"of which importing sem_physics.io alone: {t_import:.2f} s"
            )


if __name__ == "__main__":
    main()
