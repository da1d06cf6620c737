"""Training-pair synthesis on the device against the training step it feeds (not a test).

Measured in one run, at 224 px and the same batch size, with the paper's parameter ranges:

1. ``sem_train.data.pairs.synthesize_pairs``: a batch of settings drawn as tensors, the PSFs
   built in torch on one radius grid, one batched reflect-padded FFT, torch Poisson-Gaussian
   noise (images/s);
2. the per-sample numpy path it replaces: ``ParameterRanges.sample`` + ``sem_physics.degrade``
   (numpy PSF, scipy FFT, numpy noise) one image at a time (images/s);
3. one training step of a ViT-B MAE (sem_models ``build_mae("base")``, 1 channel, mask 0.75,
   AdamW, fp32) at the same batch (images/s).

Prints the rates and the ratio synthesis / training step (target: >= 10). The step times
depend on the machine's load; the ratio is measured in the same run.

Usage: ``uv run python benchmarks/bench_synthesis.py [--batch 16] [--steps 2] [--reps 5]
[--threads N]``.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch
from sem_physics import ParameterRanges, degrade
from sem_train.data.pairs import synthesize_pairs

SIZE_PX = 224


def synthesis_rate(batch: int, reps: int) -> float:
    """Images/s of ``synthesize_pairs`` (best of ``reps`` batches after one warm-up)."""
    focused = torch.rand(batch, 1, SIZE_PX, SIZE_PX, generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(1)
    synthesize_pairs(focused, None, g)
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        synthesize_pairs(focused, None, g)
        best = min(best, time.perf_counter() - t)
    return batch / best


def numpy_rate(n: int) -> float:
    """Images/s of the per-sample numpy path (settings sampled per image)."""
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (n, SIZE_PX, SIZE_PX))
    ranges = ParameterRanges()
    degrade(images[0], ranges.sample(rng), rng)
    t = time.perf_counter()
    for img in images:
        degrade(img, ranges.sample(rng), rng)
    return n / (time.perf_counter() - t)


def mae_step_rate(batch: int, steps: int) -> float:
    """Images/s of ViT-B MAE training steps (one warm-up step, then ``steps`` timed)."""
    import sem_models as sm

    torch.manual_seed(0)
    model = sm.build_mae("base", in_chans=1, img_size=SIZE_PX)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.rand(batch, 1, SIZE_PX, SIZE_PX)

    def step() -> None:
        loss, _, _ = model(x)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    return batch * steps / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=16, help="images per batch (default 16)")
    ap.add_argument("--steps", type=int, default=2, help="timed ViT-B training steps")
    ap.add_argument("--reps", type=int, default=5, help="timed synthesis batches")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"load average {os.getloadavg()[0]:.1f}; {SIZE_PX}-px images, batch {args.batch}"
    )
    synth = synthesis_rate(args.batch, args.reps)
    print(f"synthesize_pairs (batched torch):      {synth:8.1f} images/s", flush=True)
    old = numpy_rate(args.batch)
    print(f"per-sample numpy degrade (old path):   {old:8.1f} images/s", flush=True)
    step = mae_step_rate(args.batch, args.steps)
    print(f"ViT-B MAE training step:               {step:8.2f} images/s", flush=True)
    print(f"synthesis / training step:             {synth / step:8.1f}x (target >= 10x)")
    print(f"synthesis / per-sample numpy:          {synth / old:8.2f}x")


if __name__ == "__main__":
    main()
