"""Training benchmarks of sem-train (plain script, not collected by pytest).

Prints, measured in the same run:

1. the machine's fp32 GEMM rate (the baseline the ratios refer to);
2. data pipeline throughput (read + info-bar crop + SPEC §3 augmentations) on the real corpus;
3. MAE training throughput (images/s) for the ``tiny`` and ``base`` presets at 224 px, and the
   achieved FLOP/s (counted with ``torch.utils.flop_counter``) as a fraction of the GEMM rate;
4. wall time of each ``cpu-small`` stage (1, 2, 3, fine-tune) on the corpus.

Usage: ``uv run --frozen python benchmarks/bench_train.py [--skip-stages] [--corpus DIR]``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch


def gemm_flops(n: int = 1024, reps: int = 10) -> float:
    """Sustained fp32 matmul rate (FLOP/s) of this machine."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(2):
        a @ b
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - t)


def data_throughput(corpus: Path, n: int = 24) -> float:
    """Images/s of SEMImageDataset (224 px, augmented) over ``n`` corpus items, in one thread
    as in a DataLoader worker process (workers run torch with one thread each)."""
    from sem_train.data import SEMImageDataset, build_index

    idx = build_index(corpus, cache_dir=Path(tempfile.mkdtemp()) / "c")
    ds = SEMImageDataset(idx.paths(), image_size_px=224, channels=3)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        t = time.perf_counter()
        for i in range(n):
            ds[(i % len(ds), i)]
        return n / (time.perf_counter() - t)
    finally:
        torch.set_num_threads(threads)


def mae_throughput(preset: str, batch: int, steps: int, gemm: float) -> dict[str, float]:
    """Images/s and FLOP/s fraction of MAE training steps (AdamW, fp32, CPU)."""
    from sem_train import modeling
    from sem_train.config import ModelSpec
    from torch.utils.flop_counter import FlopCounterMode

    model = modeling.build_mae(ModelSpec(preset=preset), channels=3, image_size_px=224)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.rand(batch, 3, 224, 224)
    n_patches = (224 // int(model.patch_size)) ** 2

    def step():
        noise = torch.rand(batch, n_patches)
        loss, _, _ = model(x, mask_ratio=0.75, noise=noise)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    with FlopCounterMode(display=False) as fc:
        noise = torch.rand(batch, n_patches)
        loss, _, _ = model(x, mask_ratio=0.75, noise=noise)
        loss.backward()
    flops = fc.get_total_flops()
    opt.zero_grad(set_to_none=True)
    step()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    dt = (time.perf_counter() - t) / steps
    params = sum(p.numel() for p in model.parameters())
    return {"params_M": params / 1e6, "img_s": batch / dt, "flops_frac": flops / dt / gemm}


def stage_times(corpus: Path, out: Path) -> dict[str, float]:
    """Wall time (s) of each cpu-small stage on the corpus."""
    from sem_train.config import load_config
    from sem_train.finetune import run_finetune
    from sem_train.stages import run_pretrain_stage

    times: dict[str, float] = {}
    for kind in ("stage1", "stage2", "stage3", "finetune"):
        cfg = load_config("cpu-small", kind).model_dump()
        cfg["data"]["root"] = str(corpus)
        cfg["run"]["output_dir"] = str(out / kind)
        cfg["run"]["progress"] = False
        if kind in ("stage2", "stage3", "finetune"):
            prev = {"stage2": "stage1", "stage3": "stage2", "finetune": "stage3"}[kind]
            cfg["init_from"] = str(out / prev)
        typed = load_config(cfg, kind)
        t = time.perf_counter()
        if kind == "finetune":
            run_finetune(typed)
        else:
            run_pretrain_stage(int(kind[-1]), typed)
        times[kind] = time.perf_counter() - t
    return times


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--corpus",
        type=Path,
        default=Path(
            os.environ.get(
                "SEM_CORPUS_DATA",
                Path(__file__).resolve().parents[2] / "shared" / "data" / "sem_corpus",
            )
        ),
    )
    ap.add_argument("--skip-stages", action="store_true")
    ap.add_argument("--skip-base", action="store_true")
    args = ap.parse_args()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, load average {load:.1f}")
    gemm = gemm_flops()
    print(f"fp32 GEMM (1024^3): {gemm / 1e9:.1f} GFLOP/s  [baseline for the ratios below]")
    if args.corpus.is_dir():
        print(
            f"data pipeline (read + crop + augment, 224 px RGB, one worker): "
            f"{data_throughput(args.corpus):.1f} images/s"
        )
    try:
        for preset, batch, steps in (("tiny", 16, 3), ("base", 4, 2)):
            if preset == "base" and args.skip_base:
                continue
            r = mae_throughput(preset, batch, steps, gemm)
            print(
                f"MAE-{preset} ({r['params_M']:.1f} M params) train step, batch {batch}: "
                f"{r['img_s']:.2f} images/s, {r['flops_frac']:.0%} of GEMM FLOP/s"
            )
    except ImportError as err:
        print(f"MAE throughput not measured: {err}")
    if not args.skip_stages and args.corpus.is_dir():
        try:
            with tempfile.TemporaryDirectory() as tmp:
                for kind, sec in stage_times(args.corpus, Path(tmp)).items():
                    print(f"cpu-small {kind}: {sec:.1f} s wall")
        except ImportError as err:
            print(f"cpu-small stage times not measured: {err}")


if __name__ == "__main__":
    main()
