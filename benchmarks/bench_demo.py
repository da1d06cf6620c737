"""Where the default ``sem demo`` spends its time, before and after, measured in one run.

For each learned baseline (the demo's U-Nets N2V/N2N and the MRN, seeded random weights) on
one torch thread, as in a demo worker process:

* a training step of the demo's protocol (batch 4 of 128-px patches, forward + backward) with
  the weights in the standard NCHW layout (before) and channels-last (now), in s/step, the
  ratio, and the rate in GFLOP/s (the step's FLOPs counted by torch): near the core's fp32
  peak, so the demo's fixed budget of steps sets a floor on its time;
* restoring one 480x640 demo frame: before, two 480x512 windows (the previous square
  512-px tiles) in NCHW; now, the restorer's default (one whole-frame pass, channels-last).

Also each step in fp32 against bf16 autocast (what ``train_precision: auto`` uses on a CPU
with native bf16). Then BM3D on one frame, one thread: the standard profile "np" against the
fast "lc" the demo uses (seconds and PSNR against the focused frame). With ``--demo`` (or ``--demo-only``)
it also runs the whole default ``sem demo`` (two worker processes) and prints its wall time,
the CPU seconds of all its processes (Linux: read from /proc), each method's fit/restore
seconds (``methods.csv``) and its table. ``--sem`` runs another checkout's ``sem`` (e.g. the
previous commit's, at the same time in another shell, to compare in the same conditions).

    uv run python benchmarks/bench_demo.py [--steps 3] [--demo | --demo-only] [--sem PATH]
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from sem_baselines import get_restorer
from sem_baselines.learned.training import native_bf16
from sem_metrology.quality import psnr
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

    def bf16_step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            step()

    with FlopCounterMode(display=False) as counter:
        step()
    gflop = counter.get_total_flops() / 1e9
    now = _seconds(step, steps)
    bf16 = _seconds(bf16_step, steps)
    net.to(memory_format=torch.contiguous_format)
    before = _seconds(step, steps)
    print(
        f"{name:<6} train step  NCHW {before:6.3f} s  channels-last {now:6.3f} s  "
        f"ratio {before / now:5.2f}  ({gflop:.0f} GFLOP: {gflop / now:.0f} GFLOP/s)"
    )
    native = "native" if native_bf16(torch.device("cpu")) else "emulated"
    print(
        f"{name:<6} train step  channels-last fp32 {now:6.3f} s  bf16 autocast {bf16:6.3f} s  "
        f"ratio {now / bf16:5.2f}  (bf16 {native} on this CPU; the demo's 'auto' uses it "
        "where native)"
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


def bm3d_frame(image: np.ndarray, reference: np.ndarray) -> None:
    """BM3D's standard profile against the fast one the demo uses: time and PSNR."""
    times, scores = {}, {}
    for profile in ("np", "lc"):
        restorer = get_restorer("bm3d", threads=1, profile=profile)
        t = time.perf_counter()
        out = restorer.restore(image)
        times[profile] = time.perf_counter() - t
        scores[profile] = psnr(reference, out)
    print(
        f"bm3d   restore 640x480 (one thread)  np {times['np']:6.2f} s ({scores['np']:.3f} dB)  "
        f"lc {times['lc']:6.2f} s ({scores['lc']:.3f} dB)  ratio {times['np'] / times['lc']:5.2f}"
    )


def _descendants_cpu(root: int, cpu: dict[int, float]) -> None:
    """Record the CPU seconds (user + system) so far of ``root`` and all its descendants
    (read from /proc: fork-server workers are not children of the demo process)."""
    tick = os.sysconf("SC_CLK_TCK")
    parent, used = {}, {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        pid = int(stat.parent.name)
        parent[pid], used[pid] = int(fields[1]), (int(fields[11]) + int(fields[12])) / tick
    for pid, seconds in used.items():
        p = pid
        while p not in (0, 1, root) and p in parent:
            p = parent[p]
        if p == root:
            cpu[pid] = max(cpu.get(pid, 0.0), seconds)


def whole_demo(sem: str) -> None:
    """Run ``sem demo`` (the default preset) as a separate process; wall and CPU seconds."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "demo"
        t = time.perf_counter()
        cmd = [sem, "demo", "--out", str(out), "--no-progress"]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        cpu: dict[int, float] = {}
        while proc.poll() is None:
            _descendants_cpu(proc.pid, cpu)
            time.sleep(0.5)
        wall = time.perf_counter() - t
        print(
            f"demo ({sem}): wall {wall:.0f} s, CPU {sum(cpu.values()):.0f} s in "
            f"{len(cpu)} processes (sampled every 0.5 s)"
        )
        with open(out / "methods.csv") as f:
            for row in csv.DictReader(f):
                print(
                    f"  {row['method']:<26}fit {row['fit_seconds']:>7} s  "
                    f"restore {row['restore_seconds']:>7} s"
                )
        print((out / "table.md").read_text())


def main() -> None:
    # random stand-in weights on purpose: inference cost does not depend on training
    warnings.filterwarnings("ignore", ".*has no trained weights", UserWarning)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=3, help="timed repetitions (best kept)")
    ap.add_argument("--demo", action="store_true", help="also run the whole default demo")
    ap.add_argument(
        "--sem",
        default=str(Path(sys.executable).parent / "sem"),
        help="the sem command of the demo (e.g. another checkout's, to compare)",
    )
    ap.add_argument("--demo-only", action="store_true", help="only the whole demo")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.demo_only:
        whole_demo(args.sem)
        return
    focused = make_sample("lines", FRAME, seed=0)
    image = degrade(focused, ParameterRanges().midpoint(), rng=0).astype(np.float32)
    print(f"torch {torch.__version__}, 1 thread, load average {os.getloadavg()[0]:.1f}")
    for name in ("n2v", "mrn"):  # n2n has the same U-Net as n2v
        training_step(name, args.steps)
        restore_frame(name, image, max(1, args.steps // 2))
    bm3d_frame(image, focused)
    if args.demo:
        whole_demo(args.sem)


if __name__ == "__main__":
    main()
