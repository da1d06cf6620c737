"""Seconds per 1280x960 image for every restorer of sem_baselines, measured in one run.

The image is a synthetic line/space sample (sem_physics.make_sample) degraded at the SPEC
midpoint. Every method runs with its defaults: Richardson-Lucy (accelerated) and Wiener with
the blind PSF and noise estimate (computed on the first timed call and cached for the image,
so the median of several calls is the deconvolution's time) and the discrepancy principle,
BM3D with the per-image noise estimate, N2V/N2N (U-Net depth 3,
width 32) and MRN (width 32) with untrained weights (inference cost does not depend on the
training), tiled in 512-px tiles; the two ViT-MAE entries with the paper's ViT-L/16 and
random stand-in weights written to a temporary folder (public weights are not downloaded), in
224-px windows with 8-px overlap. Each method gets one untimed warm-up call on a 64x64 image,
then ``--repeats`` timed calls on the full image (the median is reported). Ratios are against
Wiener measured in the same run.

Run: uv run --frozen python benchmarks/bench_baselines.py [--repeats N] [--skip NAME ...]
     [--threads N] [--mae-preset large]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from sem_baselines import get_restorer, list_restorers
from sem_physics import ParameterRanges, degrade, make_sample


def _mae_configs(folder: Path, preset: str) -> dict[str, dict]:
    """Random ViT weights in the two layouts the MAE entries read (stand-ins, same cost)."""
    from sem_models import build_mae, save_model

    torch.manual_seed(0)
    enc = build_mae(preset, in_chans=3)
    state = {k: v for k, v in enc.state_dict().items() if not k.startswith(("decoder", "mask"))}
    torch.save({"model": state}, folder / "mae_pretrain_standin.pth")
    del enc, state
    save_model(build_mae(preset, in_chans=1), folder / "sem_mae")
    return {
        "mae-imagenet": {
            "weights_path": str(folder / "mae_pretrain_standin.pth"),
            "preset": preset,
        },
        "mae-sem": {"checkpoint_dir": str(folder / "sem_mae")},
    }


def main() -> None:
    # random stand-in weights on purpose: inference cost does not depend on training
    warnings.filterwarnings("ignore", ".*has no trained weights", UserWarning)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=1, help="timed calls per method (median)")
    ap.add_argument("--skip", nargs="*", default=[], help="restorer names to leave out")
    ap.add_argument("--mae-preset", default="large", help="sem-models preset of the MAE entries")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    clean = make_sample("lines", (960, 1280), seed=0)
    image = np.clip(degrade(clean, ParameterRanges().midpoint(), rng=0), 0, 255)
    small = image[:64, :64].copy()
    names = [n for n in list_restorers() if n not in args.skip]
    if "wiener" not in names:
        names.insert(0, "wiener")

    rows: list[tuple[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="bench-baselines-") as tmp:
        mae_cfg = {}
        if any(n.startswith("mae-") for n in names):
            t0 = time.perf_counter()
            mae_cfg = _mae_configs(Path(tmp), args.mae_preset)
            print(f"(wrote stand-in ViT-MAE weights in {time.perf_counter() - t0:.1f} s)")
        for name in names:
            r = get_restorer(name, **mae_cfg.get(name, {}))
            r.restore(small)  # warm-up: lazy initialisation, allocator, thread pools
            times = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                out = r.restore(image)
                times.append(time.perf_counter() - t0)
            assert out.shape == image.shape and np.all(np.isfinite(out))
            rows.append((name, statistics.median(times)))
            print(f"  {name:16s} {rows[-1][1]:8.3f} s", flush=True)
            del r

    ref = dict(rows)["wiener"]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print()
    print(
        f"1280x960 px, {platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} torch threads, {os.cpu_count()} cores, "
        f"load average {load:.1f}, median of {args.repeats}"
    )
    print()
    print("| restorer | s / image | x Wiener |")
    print("|---|---:|---:|")
    for name, sec in rows:
        print(f"| {name} | {sec:.3g} | {sec / ref:.3g} |")


if __name__ == "__main__":
    main()
