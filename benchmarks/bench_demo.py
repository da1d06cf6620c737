"""Where the default ``sem demo`` spends its time, before and after, measured in one run.

For each learned baseline (the demo's U-Nets N2V/N2N and the MRN, seeded random weights) on
one torch thread, as in a demo worker process:

* a training step of the demo's protocol (batch 4 of 128-px patches, forward + backward) with
  the weights in the standard NCHW layout (before) and channels-last (now), in s/step, the
  ratio, and the rate in GFLOP/s (the step's FLOPs counted by torch): near the core's fp32
  peak, so the demo's fixed budget of steps sets a floor on its time;
* restoring one 480x640 demo frame: before, two 480x512 windows (the previous square
  512-px tiles) in NCHW; now, the restorer's default (one whole-frame pass, channels-last).

Then BM3D on one frame (one thread, seconds per image). With ``--demo`` it also runs the whole
default demo (two worker processes) and prints its wall time, the CPU seconds of all its
processes and each method's fit/restore seconds (``methods.csv``).

    uv run python benchmarks/bench_demo.py [--steps 3] [--demo]
"""

from __future__ import annotations

import argparse
import csv
import os
import resource
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from sem_baselines import get_restorer
from sem_physics import ParameterRanges, degrade, make_sample
from torch.utils.flop_counter import FlopCounterMode

FRAME = (480, 640)


def _seconds(fn: Callable[[], object], reps: int) -> float:
    """Best of ``reps`` timed calls after one warm-up call."""
    fn()
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def _last(out: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
    return out[-1] if isinstance(out, list) else out


def training_step(name: str, steps: int) -> None:
    net = get_restorer(name).network.train()
    x = torch.rand(4, 1, 128, 128)

    def step() -> None:
        net.zero_grad(set_to_none=True)
        _last(net(x)).square().mean().backward()

    with FlopCounterMode(display=False) as counter:
        step()
    gflop = counter.get_total_flops() / 1e9
    now = _seconds(step, steps)
    net.to(memory_format=torch.contiguous_format)
    before = _seconds(step, steps)
    print(
        f"{name:<6} train step  NCHW {before:6.3f} s  channels-last {now:6.3f} s  "
        f"ratio {before / now:5.2f}  ({gflop:.0f} GFLOP: {gflop / now:.0f} GFLOP/s)"
    )


def restore_frame(name: str, image: np.ndarray, reps: int) -> None:
    restorer = get_restorer(name)
    now = _seconds(lambda: restorer.restore(image), reps)
    net = get_restorer(name).network.to(memory_format=torch.contiguous_format)
    x = torch.from_numpy(image)[None, None] / 255.0
    windows = [x[..., :, :512], x[..., :, -512:]]  # the previous two 480x512 tiles

    def previous() -> None:
        with torch.inference_mode():
            for w in windows:
                _last(net(w))

    before = _seconds(previous, reps)
    print(
        f"{name:<6} restore 640x480  before {before:6.2f} s  now {now:6.2f} s  "
        f"ratio {before / now:5.2f}"
    )


def bm3d_frame(image: np.ndarray) -> None:
    restorer = get_restorer("bm3d", threads=1)
    t = time.perf_counter()
    restorer.restore(image)
    print(f"bm3d   restore 640x480  {time.perf_counter() - t:6.2f} s (one thread)")


def whole_demo() -> None:
    from sem_train.evaluation import demo_config, run_benchmark

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "demo"
        t = time.perf_counter()
        run_benchmark(demo_config(out=out), force=True, progress=False)
        wall = time.perf_counter() - t
        cpu = sum(
            getattr(resource.getrusage(who), f)
            for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
            for f in ("ru_utime", "ru_stime")
        )
        print(f"demo: wall {wall:.0f} s, CPU {cpu:.0f} s (all processes)")
        with open(out / "methods.csv") as f:
            for row in csv.DictReader(f):
                print(
                    f"  {row['method']:<26}fit {row['fit_seconds']:>7} s  "
                    f"restore {row['restore_seconds']:>7} s"
                )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=3, help="timed repetitions (best kept)")
    ap.add_argument("--demo", action="store_true", help="also run the whole default demo")
    args = ap.parse_args()
    torch.set_num_threads(1)
    image = degrade(make_sample("lines", FRAME, seed=0), ParameterRanges().midpoint(), rng=0)
    image = image.astype(np.float32)
    print(f"torch {torch.__version__}, 1 thread, load average {os.getloadavg()[0]:.1f}")
    for name in ("n2v", "mrn"):  # n2n has the same U-Net as n2v
        training_step(name, args.steps)
        restore_frame(name, image, max(1, args.steps // 2))
    bm3d_frame(image)
    if args.demo:
        whole_demo()


if __name__ == "__main__":
    main()
