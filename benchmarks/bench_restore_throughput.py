"""Restoration throughput of the learned methods on a 1280x960 image (not a test).

For every learned restorer of the sem_baselines registry, with random (seeded) weights at its
default size, the same image is restored twice in one run:

* old: one window per forward pass. For the U-Nets N2V, N2N and MRN this is the previous
  tiling code (:func:`previous_tiled_apply`: a window per 448-px core, 9 windows on
  1280x960, under ``torch.no_grad``); for the MAE restorers' sliding window ``batch_size=1``;
* new: the restorer's default under ``torch.inference_mode`` (bf16 autocast on CUDA): for the
  U-Nets the fewest evenly spread windows (6 on 1280x960), one per forward pass on a CPU and
  8 per pass on a GPU; for the MAE restorers all windows in batches of ``batch_size`` (8).

Prints images/s of both and the ratio new / old. The MAE restorers: ``mae-sem`` at the
``cpu-small`` preset's size (ViT-tiny, patch 8, what ``sem demo`` trains) and ``mae-imagenet``
at its default preset (ViT-L, 3 channels; ``--imagenet-preset base`` for a shorter run).
On a loaded machine the absolute rates move; the ratio is measured in the same run.

Usage: ``uv run python benchmarks/bench_restore_throughput.py [--reps 1] [--threads N]
[--imagenet-preset large] [--methods n2v,n2n,mrn,mae-sem,mae-imagenet]``.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import sem_models as sm
import torch
from sem_baselines import get_restorer
from sem_baselines.learned import base as learned_base
from sem_baselines.mae import MAEImageNetConfig, MAEImageNetRestorer, MAESEMConfig, MAESEMRestorer
from sem_physics import ParameterRanges, degrade, make_sample

SHAPE = (960, 1280)


def previous_tiled_apply(
    fn: Callable[[torch.Tensor], torch.Tensor],
    image: torch.Tensor,
    tile: int = 512,
    margin: int = 32,
    batch_size: int | None = None,
) -> torch.Tensor:
    """The tiling the U-Net restorers used before: one window per core of ``tile - 2 margin``
    px on a regular grid (the last flush with the end), cut to the image at its borders."""
    del batch_size  # one window per call
    h, w = image.shape[-2:]
    if h <= tile and w <= tile:
        return fn(image)
    core = tile - 2 * margin

    def starts(n: int) -> list[int]:
        return [*range(0, n - core, core), n - core] if n > core else [0]

    out = None
    for y0 in starts(h):
        for x0 in starts(w):
            y1, x1 = min(y0 + core, h), min(x0 + core, w)
            ya, xa = max(y0 - margin, 0), max(x0 - margin, 0)
            yb, xb = min(y1 + margin, h), min(x1 + margin, w)
            res = fn(image[..., ya:yb, xa:xb])
            if out is None:
                out = res.new_zeros((1, res.shape[1], h, w))
            out[..., y0:y1, x0:x1] = res[..., y0 - ya : y1 - ya, x0 - xa : x1 - xa]
    assert out is not None
    return out


def _mae_restorer(name: str, imagenet_preset: str, **config: Any) -> Any:
    """A MAE restorer around a randomly initialised network of the method's default size."""
    torch.manual_seed(0)
    if name == "mae-sem":
        mae = sm.build_mae("tiny", in_chans=1, img_size=224, patch_size=8)
        return MAESEMRestorer(MAESEMConfig(**config), network=sm.RestorationModel(mae))
    mae = sm.build_mae(imagenet_preset, in_chans=3, img_size=224)
    return MAEImageNetRestorer(MAEImageNetConfig(**config), network=sm.RestorationModel(mae))


def build(name: str, batched: bool, imagenet_preset: str) -> Any:
    """Restorer ``name``: old (one window per forward) or new (its default batching)."""
    if name.startswith("mae-"):
        return _mae_restorer(name, imagenet_preset, **({} if batched else {"batch_size": 1}))
    return get_restorer(name)


def timed(restorer: Any, image: np.ndarray, reps: int, old: bool) -> tuple[float, np.ndarray]:
    """(images/s, output): best of ``reps`` restorations after a warm-up on a 256-px crop."""
    previous = learned_base.tiled_apply
    if old:
        learned_base.tiled_apply = previous_tiled_apply
    try:
        restorer.restore(image[:256, :256])
        best, out = float("inf"), image
        for _ in range(reps):
            t = time.perf_counter()
            out = restorer.restore(image)
            best = min(best, time.perf_counter() - t)
    finally:
        learned_base.tiled_apply = previous
    return 1.0 / best, out


def main() -> None:
    # random stand-in weights on purpose: inference cost does not depend on training
    warnings.filterwarnings("ignore", ".*has no trained weights", UserWarning)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=1, help="timed restorations per variant")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--imagenet-preset", default="large", help="mae-imagenet size (default large)")
    ap.add_argument("--methods", default="n2v,n2n,mrn,mae-sem,mae-imagenet")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    focused = make_sample("lines", shape=SHAPE, seed=0)
    image = degrade(focused, ParameterRanges().midpoint(), rng=0)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"load average {os.getloadavg()[0]:.1f}; image {SHAPE[1]}x{SHAPE[0]}"
    )
    print(f"{'method':<14}{'old img/s':>11}{'new img/s':>11}{'new/old':>9}  max |new-old|")
    for name in args.methods.split(","):
        old, new = (build(name, b, args.imagenet_preset) for b in (False, True))
        r_old, y_old = timed(old, image, args.reps, old=True)
        r_new, y_new = timed(new, image, args.reps, old=False)
        diff = float(np.abs(y_new - y_old).max())
        print(f"{name:<14}{r_old:11.4g}{r_new:11.4g}{r_new / r_old:9.2f}  {diff:.2e}", flush=True)


if __name__ == "__main__":
    main()
