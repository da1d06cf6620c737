"""MoE dropless dispatch: grouped GEMM vs the per-expert loop, on the CPU.

Run: ``uv run python benchmarks/bench_moe_dispatch.py [--quick] [--threads N]``.

One ``MoEMlp`` layer (top-1, default gate weighting, training mode) at ViT-tiny and ViT-B
widths; for each case the time of the grouped path (``expert_dispatch="grouped"``: stacked
expert weights, ``torch.nn.functional.grouped_mm`` with device offsets, no host read) divided
by the loop path (``"loop"``: group sizes read with ``counts.tolist()``, one ``Mlp`` call per
expert), both measured in the same run, interleaved, fastest of ``reps``. Rows: forward +
backward in fp32 and under bf16 autocast, and an inference forward (``torch.inference_mode``,
eval mode). The ratio decides what ``expert_dispatch="auto"`` picks on the CPU.

``--quick`` keeps every layer size (the ratio depends on the token count: stacking the
weights costs the same whatever the number of tokens) and takes the fastest of 2; it leaves
out the bf16 rows on a CPU without native bf16 (no AVX512-BF16 or AMX): there bf16 is emulated
at 7-13x the fp32 time (most of the run's time) and training never uses it.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import sem_models as sm
import torch
from sem_models.precision import native_bf16

CASES = (  # (name, width D, experts K, tokens T)
    ("ViT-tiny", 192, 4, 2048),
    ("ViT-B", 768, 8, 1960),
)


def _layer(width: int, experts: int, dispatch: str) -> sm.MoEMlp:
    torch.manual_seed(0)
    layer = sm.MoEMlp(width, 4 * width, num_experts=experts, expert_dispatch=dispatch)
    with torch.no_grad():  # a router that spreads random tokens over every expert
        layer.gate.weight.normal_(std=1.0 / width**0.5)
    return layer


def _timed(fn: Callable[[], None]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _runner(layer: sm.MoEMlp, x: torch.Tensor, mode: str) -> Callable[[], None]:
    def train_step() -> None:
        layer.zero_grad(set_to_none=True)
        layer(x).sum().backward()

    def bf16_step() -> None:
        layer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = layer(x)
        y.float().sum().backward()

    def infer() -> None:
        with torch.inference_mode():
            layer(x)

    layer.train(mode != "infer")
    return {"fp32 fwd+bwd": train_step, "bf16 fwd+bwd": bf16_step, "infer": infer}[mode]


def bench_case(width: int, experts: int, tokens: int, mode: str, reps: int) -> dict[str, float]:
    grouped = _layer(width, experts, "grouped")
    loop = _layer(width, experts, "loop")
    x = torch.randn(tokens, width)
    assert grouped.uses_grouped_mm(x) and not loop.uses_grouped_mm(x)
    run_g, run_l = _runner(grouped, x, mode), _runner(loop, x, mode)
    run_g(), run_l()  # warm-up
    t_g, t_l = [], []
    for _ in range(reps):  # interleaved: both share the machine's load fluctuations
        t_l.append(_timed(run_l))
        t_g.append(_timed(run_g))
    tg, tl = min(t_g), min(t_l)
    return {"grouped_ms": 1e3 * tg, "loop_ms": 1e3 * tl, "ratio": tg / tl}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--quick",
        action="store_true",
        help="fastest of 2, no bf16 rows where the CPU emulates bf16",
    )
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    reps = 2 if args.quick else 10
    modes = ["fp32 fwd+bwd", "bf16 fwd+bwd", "infer"]
    note = ""
    if args.quick and not native_bf16("cpu"):
        modes.remove("bf16 fwd+bwd")
        note = "; bf16 rows left out (--quick, this CPU emulates bf16)"
    print(f"torch {torch.__version__}, {args.threads} thread(s), fastest of {reps}{note}")
    print(f"{'case':<10}{'D':>5}{'K':>3}{'T':>6}  {'mode':<14}{'grouped':>10}{'loop':>10}  ratio")
    for name, width, experts, tokens in CASES:
        for mode in modes:
            r = bench_case(width, experts, tokens, mode, reps)
            print(
                f"{name:<10}{width:>5}{experts:>3}{tokens:>6}  {mode:<14}"
                f"{r['grouped_ms']:>8.1f}ms{r['loop_ms']:>8.1f}ms  {r['ratio']:.2f}x"
            )


if __name__ == "__main__":
    main()
