"""Whole-process ``sem restore --method wiener / richardson-lucy``: scikit-image's restoration
module imported only by the paper preset (new) against importing it up front (old).

Run: ``uv run python benchmarks/bench_classical_startup.py [--image PATH] [--repeat 5]``.

``sem_baselines.classical.wiener`` and ``.richardson_lucy`` imported ``skimage.restoration``
at module level, which loads ``scipy.signal`` (and through it ``scipy.stats``,
``scipy.interpolate``, ``scipy.optimize``, ``scipy.spatial``); only the paper preset calls
it. "old" is the same command in a process that first imports ``skimage.restoration``, which
is what the module-level import did; "new" is the command as it is. Each run is a fresh
process, old and new alternate, ``--repeat`` of each; medians and the new/old ratio are
printed, and the two runs' output files must be byte-identical. Where
``PYTHONDONTWRITEBYTECODE`` is set every process recompiles its modules; to time byte-compiled
imports without writing into the environment, run with ``PYTHONPYCACHEPREFIX=<a scratch
folder>`` and that variable unset (the warm-up run of each fills the cache).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_IMAGE = Path("/work/shared/data/sem/lines_euv_resist_0p827nm.tif")
RUN = "import sys\nfrom sem_train.cli import main\nsys.exit(main(sys.argv[1:]))\n"
OLD = "from skimage.restoration import richardson_lucy, wiener\n" + RUN  # loads the submodule


def _timed(code: str, argv: list[str]) -> tuple[float, float]:
    """(wall, CPU) seconds of ``python -c code argv...`` (a fresh process; CPU = user + system,
    steadier than the wall time on a shared machine)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"{argv} failed:\n{done.stderr}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", type=Path, default=DEFAULT_IMAGE)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--methods", nargs="+", default=["wiener", "richardson-lucy"])
    args = ap.parse_args()
    print(f"sem restore {args.image.name} --method M, fresh process each, {args.repeat} repeats")
    print(
        "| method | wall old / new median (s) | new/old | CPU old / new median (s) | new/old "
        "| outputs identical |"
    )
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for method in args.methods:
            times: dict[str, list[tuple[float, float]]] = {"old": [], "new": []}
            for i in range(-1, args.repeat):  # -1: an untimed warm-up of each
                for name in ("old", "new") if i % 2 == 0 else ("new", "old"):
                    out = Path(tmp) / f"{method}-{name}"
                    argv = ["restore", str(args.image), "-o", str(out), "--method", method]
                    code = OLD if name == "old" else RUN
                    took = _timed(code, [*argv, "--overwrite"])
                    if i >= 0:
                        times[name].append(took)
            files = sorted((Path(tmp) / f"{method}-old").glob("*.tif"))
            same = bool(files) and all(
                f.read_bytes() == (Path(tmp) / f"{method}-new" / f.name).read_bytes() for f in files
            )
            med = {
                k: [statistics.median(t[j] for t in v) for j in (0, 1)] for k, v in times.items()
            }
            (wo, co), (wn, cn) = med["old"], med["new"]
            print(
                f"| {method} | {wo:.2f} / {wn:.2f} | {wn / wo:.3f} | {co:.2f} / {cn:.2f} | "
                f"{cn / co:.3f} | {same} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
