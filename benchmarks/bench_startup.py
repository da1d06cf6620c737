"""Whole-process time of ``sem restore`` with a classical method, against the same command
with every restorer module loaded up front, measured in one run (not part of the test run).

``sem restore`` imports only the restorer it runs (``sem_baselines.restorer.BUILTIN_MODULES``):
Wiener and Richardson-Lucy need numpy, scipy and scikit-image, not torch, timm or bm3d. The
baseline is the same command in a process that first imports every built-in method's module,
which is what ``sem restore`` did when the registry loaded all methods at import. Each
command is timed as a fresh process, alternating the two, best and median of ``--repeat``;
``python -c pass`` is the floor. Also the peak resident memory of one run of each.

    uv run python benchmarks/bench_startup.py [--image PATH] [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sem_baselines.restorer import BUILTIN_MODULES
from sem_physics import make_sample, write_image

RUN = (
    "import resource, sys\nfrom sem_train.cli import main\n"
    "code = main(sys.argv[1:])\n"
    "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024, file=sys.stderr)\n"
    "sys.exit(code)\n"
)
EAGER = "".join(f"import {m}\n" for m in sorted(set(BUILTIN_MODULES.values()))) + RUN


def _timed(code: str, argv: list[str]) -> tuple[float, int]:
    """(wall seconds, peak resident MB the child reports) of ``python -c code argv...``."""
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", code, *argv], check=True, capture_output=True, text=True
    )
    wall = time.perf_counter() - start
    lines = done.stderr.strip().splitlines()
    return wall, int(lines[-1]) if lines and lines[-1].isdigit() else -1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", type=Path, help="image to restore (default: a 480x640 sample)")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        image = args.image
        if image is None:
            image = Path(tmp) / "lines.png"
            write_image(image, make_sample("lines", (480, 640), seed=1), "uint8")
        print(f"sem restore {image.name} -o OUT --method M --overwrite, fresh process each")
        print("| method | lazy: best / median (s) | eager: best / median (s) | ratio | peak MB |")
        print("|---|---|---|---|---|")
        floor = min(_timed("pass", [])[0] for _ in range(args.repeat))
        for method in ("wiener", "richardson-lucy"):
            argv = ["restore", str(image), "-o", f"{tmp}/{method}", "--method", method]
            argv += ["--overwrite"]
            lazy, eager, mem = [], [], {}
            for _ in range(args.repeat):  # alternate: a load change hits both alike
                wall, mem["lazy"] = _timed(RUN, argv)
                lazy.append(wall)
                wall, mem["eager"] = _timed(EAGER, argv)
                eager.append(wall)
            print(
                f"| {method} | {min(lazy):.2f} / {statistics.median(lazy):.2f} | "
                f"{min(eager):.2f} / {statistics.median(eager):.2f} | "
                f"{min(eager) / min(lazy):.2f}x | {mem['lazy']} vs {mem['eager']} |"
            )
        print(f"floor (python -c pass): {floor:.2f} s")


if __name__ == "__main__":
    main()
