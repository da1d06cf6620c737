"""``sem cluster``: k-means on the encoder embeddings of a folder (the paper's Table 1)."""

from __future__ import annotations

import argparse
import json
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from sem_physics.cli_support import number
from sem_physics.io import DEFAULT_CROP_FRACTION

from ..device_names import DEVICES

__all__ = ["register", "run_ids"]


def run_ids(checkpoints: list[str]) -> list[str]:
    """A unique id per checkpoint argument: the path as given (``#2``... for a repeat)."""
    ids: list[str] = []
    for c in checkpoints:
        base, n = str(c), 1
        while (base if n == 1 else f"{base}#{n}") in ids:
            n += 1
        ids.append(base if n == 1 else f"{base}#{n}")
    return ids


def _cluster(args: argparse.Namespace) -> int:
    from sem_physics.locking import output_lock

    with output_lock(args.out) if args.out else nullcontext():  # --out held for the run
        return _cluster_held(args)


def _cluster_held(args: argparse.Namespace) -> int:
    from sem_physics.atomic import atomic_write_text

    from ..evaluation import cluster_embeddings, clustering_markdown, embed_folder
    from ..evaluation.sources import SkippedFile, SkippedInputsError

    results = {}
    skipped: list[SkippedFile] = []
    for run_id, ckpt in zip(run_ids(args.checkpoint), args.checkpoint, strict=True):
        mine: list[SkippedFile] = []
        emb, _names = embed_folder(
            ckpt,
            args.images,
            pool=args.pool,
            crop_fraction=args.crop_fraction,
            skipped=mine,
            device=args.device,
        )
        if not skipped:
            skipped = mine
        results[run_id] = cluster_embeddings(
            emb, k=args.k, seed=args.seed, silhouette_sample_size=args.silhouette_sample_size
        )
    if skipped and args.strict:
        raise SkippedInputsError(
            f"--strict: {len(skipped)} image(s) unusable (first: {skipped[0].path}: "
            f"{skipped[0].reason})"
        )
    table = clustering_markdown(results)
    notes = "".join(f"- skipped `{s.path}`: {s.reason}\n" for s in skipped)
    print(table + notes, end="")
    if args.out:
        out = Path(args.out)
        atomic_write_text(
            out / "clustering.md",
            "# Clustering of encoder embeddings (Table 1)\n\n"
            + table
            + (f"\n{notes}" if notes else ""),
        )
        data = {
            "runs": {k: r.model_dump(exclude={"labels"}) for k, r in results.items()},
            "skipped_files": [s.model_dump() for s in skipped],
        }
        atomic_write_text(out / "clustering.json", json.dumps(data, indent=2))
        print(f"report: {(out / 'clustering.md').resolve()}")
    return 0


_fraction = number(float, low=0, high=1, high_open=True)
_sample_size = number(int, low=2)  # a silhouette needs at least two points


def register(subparsers: Any) -> None:
    """Add ``cluster`` to the ``sem`` command line."""
    c = subparsers.add_parser(
        "cluster",
        help="k-means on encoder embeddings of a folder: silhouette, Davies-Bouldin, CH",
        description="Table 1: cluster the embeddings of --images from each --checkpoint.",
    )
    c.add_argument(
        "--checkpoint",
        action="append",
        required=True,
        help="exported sem-models folder or a training run folder (repeat to compare models)",
    )
    c.add_argument("--images", required=True, help="folder of images")
    c.add_argument(
        "--k",
        type=number(int, low=2),
        default=10,
        help="number of clusters, >= 2 and below the number of images (default 10)",
    )
    c.add_argument(
        "--pool",
        choices=("mean", "cls"),
        default="mean",
        help="image embedding: the mean of the patch tokens, or the class token (default mean)",
    )
    c.add_argument(
        "--seed",
        type=number(int, low=0, high=2**32 - 1),
        default=0,
        help="seed of k-means and of the silhouette sample (default 0)",
    )
    c.add_argument(
        "--device",
        choices=DEVICES,
        default="auto",
        help="where the encoder runs (default: CUDA where present)",
    )
    c.add_argument(
        "--crop-fraction",
        type=_fraction,
        default=DEFAULT_CROP_FRACTION,
        help=f"bottom fraction removed (info bar), in [0, 1) (default {DEFAULT_CROP_FRACTION:g})",
    )
    c.add_argument(
        "--silhouette-sample-size",
        type=_sample_size,
        default=10_000,
        help="embeddings sampled for the silhouette score, >= 2 (default 10000)",
    )
    c.add_argument(
        "--strict",
        action="store_true",
        help="exit 1 if any image is unusable (default: skip it and list it)",
    )
    c.add_argument(
        "-o",
        "--out",
        help="folder for clustering.md / clustering.json (an earlier clustering there is replaced)",
    )
    c.set_defaults(handler=_cluster)
