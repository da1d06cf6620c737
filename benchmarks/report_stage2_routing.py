"""Stage 2's routing and objective, read from a run's ``metrics.jsonl`` (no training here).

    uv run python benchmarks/report_stage2_routing.py runs/cpu-base/stage2

Prints, per MoE layer and expert, the hard token fraction and the mean gate probability at
the first and the last logged training step, the smallest fraction any expert receives, and
the validation objective at step 0 against its best value: the two checks of a Stage 2 that
learns (every expert >= 5 % of the tokens in every layer; validation below its step-0 value).

It reads the per-layer, per-expert keys (``<layer>/token_fraction/<k>``, ``<layer>/mean_prob/<k>``).
The record's top-level ``max_token_fraction`` / ``min_token_fraction`` are the largest /
smallest over all layers and ``unused_experts`` the number of (layer, expert) pairs without a
token (``sem_train.modeling.routing_summary``; runs logged before 2026-12-01 hold layer means
under those names), so "smallest expert share" below equals the last step's
``min_token_fraction`` for a run logged since.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path


def main(run: Path) -> int:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r.get("split") == "train"]
    val = [r for r in rows if r.get("split") == "val"]
    if not train:
        print(f"{run}: no training steps logged")
        return 1
    first, last = train[0], train[-1]
    layers = sorted({m.group(1) for k in last if (m := re.match(r"(.+)/token_fraction/\d+", k))})
    print(f"run {run}: steps {first['step']}..{last['step']}")
    print("| layer | step | token fraction per expert | mean gate probability |")
    print("|---|---|---|---|")
    worst = 1.0
    for layer in layers:
        n = len([k for k in last if k.startswith(f"{layer}/token_fraction/")])
        for r in (first, last):
            frac = [r[f"{layer}/token_fraction/{e}"] for e in range(n)]
            prob = [r[f"{layer}/mean_prob/{e}"] for e in range(n)]
            print(
                f"| {layer} | {r['step']} | {' '.join(f'{f:.3f}' for f in frac)} "
                f"| {' '.join(f'{p:.3f}' for p in prob)} |"
            )
        worst = min(worst, *[last[f"{layer}/token_fraction/{e}"] for e in range(n)])
    print(f"smallest expert share at the last step: {worst:.1%} (target >= 5 %)")
    if val:
        v0 = next((r["loss"] for r in val if r["step"] == 0), None)
        best = min(r["loss"] for r in val)
        start = f"{v0:.5f}" if v0 is not None else "not logged (validate_at_start off)"
        print(f"validation objective: step 0 {start}, best {best:.5f}")
    return 0


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "run",
        type=Path,
        nargs="?",
        default=Path("runs/cpu-base/stage2"),
        help="a Stage-2 run folder holding metrics.jsonl (default: %(default)s)",
    )
    args = ap.parse_args()
    if not (args.run / "metrics.jsonl").is_file():
        ap.error(f"{args.run / 'metrics.jsonl'} not found: give a Stage-2 run folder")
    sys.exit(main(args.run))
