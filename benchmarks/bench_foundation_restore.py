"""``sem-foundation`` restore: the MoE inference fast path against the previous dispatch.

Run: ``uv run python benchmarks/bench_foundation_restore.py [--image PATH] [--crop H W]
[--repeat 5] [--threads N]``.

The shipped fine-tuned model (ViT-tiny MAE with top-1 MoE in three encoder blocks) restores
the image by grid-averaging sliding windows, as ``sem restore --method sem-foundation`` does.
"old" is the previous per-expert loop, kept below verbatim (every idle expert's parameter sums
computed for a graph that inference does not record, weighted rows scatter-added into zeros
with ``index_add``); "new" is :meth:`sem_models.MoEMlp._dispatch_loop` (idle experts skipped
without a graph; with one assignment per token, the rows gathered by the inverse permutation
plus ``0.0``). Both run in this process on the same restorer, interleaved, ``--repeat`` times
each; medians and the new/old ratio are printed, and the two outputs must be byte-identical.
``--crop`` restores the top-left ``H x W`` px only (shorter runs on a busy machine).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from sem_baselines import get_restorer
from sem_models.moe import MoEMlp, _Assignments
from sem_physics import make_sample, read_image

DEFAULT_IMAGE = Path("/work/shared/data/sem/lines_euv_resist_0p827nm.tif")


def previous_dispatch_loop(
    self: MoEMlp, h: torch.Tensor, a: _Assignments
) -> tuple[torch.Tensor, torch.Tensor]:
    """The dispatch loop before the fast path (kept for this comparison)."""
    counts = a.onehot.sum(0)
    order = torch.argsort(a.expert, stable=True)
    token_of = a.token[order]
    sizes = counts.tolist()
    x_sorted = h.index_select(0, token_of)
    outs = []
    for e, chunk in enumerate(torch.split(x_sorted, sizes)):
        if chunk.shape[0] > 0:
            outs.append(self.experts[e](chunk))
        else:
            outs.append(self._touch(e, chunk.shape[0]))
    y = torch.cat(outs)
    y = y * a.weight[order, None].to(y.dtype)
    out = h.new_zeros(h.shape[0], self.out_features).index_add(0, token_of, y.to(h.dtype))
    return out, counts.sum()


def _image(path: Path | None, crop: tuple[int, int] | None) -> np.ndarray:
    if path is not None and path.is_file():
        img = read_image(path).without_info_bar().data
    else:
        img = make_sample("lines", (960, 1280), seed=1)
    if crop is not None:
        img = img[: crop[0], : crop[1]]
    return np.ascontiguousarray(img, dtype=np.float32)


def bench_layers(restorer: object, img: np.ndarray, repeat: int) -> None:
    """The MoE layers alone, on the hidden states they receive while restoring ``img``:
    median over ``repeat`` interleaved passes of every captured call, old and new."""
    layers = [m for m in restorer.network.modules() if isinstance(m, MoEMlp)]  # type: ignore[attr-defined]
    calls: list[tuple[MoEMlp, torch.Tensor]] = []

    def keep(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        if len(calls) < 12 * len(layers):
            calls.append((module, inputs[0].clone()))  # type: ignore[arg-type]

    hooks = [m.register_forward_pre_hook(keep) for m in layers]
    try:
        restorer.restore(img)  # type: ignore[attr-defined]
    finally:
        for hook in hooks:
            hook.remove()
    current = MoEMlp._dispatch_loop
    variants = {"old": previous_dispatch_loop, "new": current}
    times: dict[str, list[float]] = {"old": [], "new": []}
    same = True
    try:
        for i in range(repeat):
            outs = {}
            for name in ("old", "new") if i % 2 == 0 else ("new", "old"):
                MoEMlp._dispatch_loop = variants[name]  # type: ignore[method-assign]
                with torch.inference_mode():
                    start = time.perf_counter()
                    outs[name] = [m(x) for m, x in calls]
                    times[name].append(time.perf_counter() - start)
            same &= all(torch.equal(a, b) for a, b in zip(outs["old"], outs["new"], strict=True))
    finally:
        MoEMlp._dispatch_loop = current  # type: ignore[method-assign]
    old, new = statistics.median(times["old"]), statistics.median(times["new"])
    print(
        f"MoE layers alone, {len(calls)} calls of {tuple(calls[0][1].shape)} tokens: median "
        f"old {1e3 * old:.1f} ms, new {1e3 * new:.1f} ms (of {repeat}): new/old "
        f"{new / old:.3f}; outputs identical: {same}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", type=Path, default=DEFAULT_IMAGE)
    ap.add_argument("--crop", type=int, nargs=2, metavar=("H", "W"))
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument(
        "--layers",
        type=int,
        default=0,
        metavar="R",
        help="also time the MoE layers alone, R passes",
    )
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    img = _image(args.image, tuple(args.crop) if args.crop else None)
    restorer = get_restorer("sem-foundation")
    print(f"image {img.shape}, torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    if args.layers:
        bench_layers(restorer, img, args.layers)
    current = MoEMlp._dispatch_loop
    variants = {"old": previous_dispatch_loop, "new": current}
    times: dict[str, list[float]] = {"old": [], "new": []}
    cpu: dict[str, list[float]] = {"old": [], "new": []}  # this process's CPU s (all threads)
    outs: dict[str, np.ndarray] = {}
    try:
        for i in range(args.repeat):
            for name in ("old", "new") if i % 2 == 0 else ("new", "old"):
                MoEMlp._dispatch_loop = variants[name]  # type: ignore[method-assign]
                start, start_cpu = time.perf_counter(), time.process_time()
                outs[name] = restorer.restore(img)
                times[name].append(time.perf_counter() - start)
                cpu[name].append(time.process_time() - start_cpu)
                print(f"  {name}: {times[name][-1]:.2f} s ({cpu[name][-1]:.2f} s CPU)", flush=True)
    finally:
        MoEMlp._dispatch_loop = current  # type: ignore[method-assign]
    same = outs["old"].tobytes() == outs["new"].tobytes()
    old, new = statistics.median(times["old"]), statistics.median(times["new"])
    print(f"median old {old:.2f} s, new {new:.2f} s (of {args.repeat}): new/old {new / old:.3f}")
    old, new = statistics.median(cpu["old"]), statistics.median(cpu["new"])
    print(f"CPU time: median old {old:.2f} s, new {new:.2f} s: new/old {new / old:.3f}")
    print(f"outputs byte-identical: {same}")
    if not same:
        raise SystemExit("outputs differ")


if __name__ == "__main__":
    main()
