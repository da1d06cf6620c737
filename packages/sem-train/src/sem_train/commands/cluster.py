"""``sem cluster``: k-means on the encoder embeddings of a folder (the paper's Table 1)."""

from __future__ import annotations

import argparse
import json
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from sem_physics.cli_support import first_line, number
from sem_physics.io import DEFAULT_CROP_FRACTION

from ..device_names import DEVICES

__all__ = ["encoder_dir", "input_size", "register", "run_ids", "warnings_said"]


def run_ids(checkpoints: list[str]) -> list[str]:
    """A unique id per checkpoint argument: the path as given (``#2``... for a repeat)."""
    ids: list[str] = []
    for c in checkpoints:
        base, n = str(c), 1
        while (base if n == 1 else f"{base}#{n}") in ids:
            n += 1
        ids.append(base if n == 1 else f"{base}#{n}")
    return ids


#: What --checkpoint accepts, quoted by its errors.
_ACCEPTED = (
    "a folder written by sem_models.save_model (config.json + model.safetensors), a `sem train` "
    "run folder of a pretraining stage or fine-tune, or a shipped model"
)


def encoder_dir(given: str) -> Path:
    """The sem-models export ``--checkpoint given`` names: a path (an export or a run folder)
    or, when no such path exists, the name of a model shipped with sem-models. Only
    ``config.json`` is read (no torch): a checkpoint of another kind, or no checkpoint, is one
    ValueError or FileNotFoundError naming ``--checkpoint`` and what it accepts."""
    from sem_models.checkpoint import CheckpointError, read_export_meta
    from sem_models.pretrained import SHIPPED_MODELS, shipped_model_dir

    from ..runfolder import resolve_model_dir

    shipped = f"({', '.join(SHIPPED_MODELS)})"
    path = Path(given)
    if not path.exists():
        if given in SHIPPED_MODELS:
            return shipped_model_dir(given)
        raise FileNotFoundError(
            f"--checkpoint {given}: no such file or folder; accepted: {_ACCEPTED} {shipped}"
        )
    try:
        folder = resolve_model_dir(path, what="--checkpoint")
    except FileNotFoundError:
        raise FileNotFoundError(
            f"--checkpoint {given}: no exported model there (neither config.json + "
            f"model.safetensors nor a run's checkpoints/best.json); accepted: {_ACCEPTED} {shipped}"
        ) from None
    try:
        read_export_meta(folder)
    except CheckpointError as err:
        raise ValueError(
            f"--checkpoint {given}: not a sem-models encoder ({first_line(err)}); "
            f"accepted: {_ACCEPTED} {shipped}"
        ) from None
    return folder


def input_size(folder: Path) -> int:
    """The square input side (px) of the sem-models export in ``folder``, from its
    ``config.json`` (no torch): the size the images are resized to for it."""
    from sem_models.checkpoint import read_export_meta
    from sem_models.config import MAEConfig

    return MAEConfig(**read_export_meta(folder)["mae"]).img_size


@contextmanager
def warnings_said() -> Iterator[list[str]]:
    """The warnings printed while the block runs (log records of level WARNING and above,
    Python warnings), each as the one line the console shows, in order and once: the report
    lists them, since a reader of ``clustering.md`` never saw the terminal."""
    said: list[str] = []

    def keep(text: str) -> None:
        line = " ".join(text.split())
        if line and line not in said:
            said.append(line)

    class _Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            try:
                keep(record.getMessage() or record.name)
            except Exception:  # a record that cannot be formatted is logging's to report
                self.handleError(record)

    handler = _Keep(logging.WARNING)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        with warnings.catch_warnings():  # showwarning restored on the way out
            shown = warnings.showwarning

            def show(message: Warning | str, category: type[Warning], *a: Any, **k: Any) -> None:
                keep(str(message) or category.__name__)
                shown(message, category, *a, **k)

            warnings.showwarning = show
            yield said
    finally:
        root.removeHandler(handler)


def _cluster(args: argparse.Namespace) -> int:
    from sem_physics.locking import output_lock

    with output_lock(args.out) if args.out else nullcontext():  # --out held for the run
        with warnings_said() as said:
            return _cluster_held(args, said)


def _check_k(k: int, n: int, images: str) -> None:
    """``--k`` against the ``n`` usable images of the folder: k-means needs ``2 <= k < n``."""
    if n < 3:
        raise ValueError(
            f"--images {images}: {n} usable image(s); clustering needs at least 3 (--k >= 2 "
            "clusters, fewer than the images)"
        )
    if k >= n:
        raise ValueError(
            f"--k {k}: must be in [2, {n - 1}], below the number of usable images ({n} under "
            f"{images})"
        )


#: What the fields of each run in clustering.json mean (units, range, direction).
FIELDS = {
    "silhouette_cosine": "mean silhouette with cosine distance, in [-1, 1]; higher is better",
    "davies_bouldin": "Davies-Bouldin index (Euclidean), >= 0; lower is better",
    "calinski_harabasz": "Calinski-Harabasz index (Euclidean), >= 0; higher is better",
    "inertia": "k-means objective: sum of squared Euclidean distances of the embeddings to "
    "their cluster centre, in embedding units squared",
    "cluster_sizes": "images per cluster, clusters numbered 0..k-1",
    "images": "each image (path under --images) and the cluster it was put in",
}


def _cluster_held(args: argparse.Namespace, said: list[str]) -> int:
    """The run; ``said``: the warnings printed so far (filled as the run goes, see
    :func:`warnings_said`), listed under Warnings in ``clustering.md``."""
    from sem_physics.atomic import atomic_write_text
    from sem_physics.cli_support import path_text, stderr_is_terminal

    from ..evaluation import clustering_markdown, embed_folder
    from ..evaluation.clustering import FolderImages, control_verdicts, warn_few_per_cluster
    from ..evaluation.sources import SkippedFile, SkippedInputsError

    folders = [encoder_dir(c) for c in args.checkpoint]  # every one, before any image is read
    progress = not args.no_progress and stderr_is_terminal()
    # each image read once, resized to every model's input, for all the checkpoints
    images = FolderImages(
        args.images, sizes=[input_size(f) for f in folders], crop_fraction=args.crop_fraction
    )
    results = {}
    runs: dict[str, dict[str, Any]] = {}
    skipped: list[SkippedFile] = []
    for i, (run_id, folder) in enumerate(zip(run_ids(args.checkpoint), folders, strict=True)):
        mine: list[SkippedFile] = []
        emb, names = embed_folder(
            folder,
            args.images,
            pool=args.pool,
            crop_fraction=args.crop_fraction,
            skipped=mine,
            device=args.device,
            progress=progress,
            read_once=images,
        )
        if i == 0:  # the same folder for every checkpoint: checked once, before any k-means
            skipped = mine
            if skipped and args.strict:
                raise SkippedInputsError(
                    f"--strict: {len(skipped)} image(s) unusable (first: {skipped[0].path}: "
                    f"{skipped[0].reason})"
                )
            _check_k(args.k, len(names), args.images)
            warn_few_per_cluster(args.k, len(names))  # k and N: the same for every checkpoint
        results[run_id], runs[run_id] = _clustered(
            emb, names, args, checkpoint=path_text(Path(folder).resolve())
        )
    controls, control_runs = _controls(folders, args, images, names)
    verdicts = control_verdicts(results, controls)
    table = clustering_markdown({**results, **controls})
    notes = "".join(f"- skipped `{s.path}`: {s.reason}\n" for s in skipped)
    said_controls = "".join(f"- {v}\n" for v in verdicts)
    print(table + notes + said_controls, end="")
    if args.out:
        out = Path(args.out)
        first = next(iter(results.values()))
        pooled = "the mean of its patch tokens" if args.pool == "mean" else "its class token"
        setting = (
            f"k-means (k = {args.k}, seed {args.seed}) on the embeddings of the "
            f"{first.n_samples} usable images under `{path_text(args.images)}`: each image "
            f"read as grayscale, its info bar removed (else the bottom {args.crop_fraction:g} "
            "of its height), resized to the model's square input (stretched when not "
            f"square), and encoded by each checkpoint's encoder as {pooled}. Each image's "
            "cluster is in `clustering.json` "
            "(`runs` → model → `images`). The control rows are what a score is worth without "
            "learning: the same images embedded by the same architecture with its random "
            f"initial weights (seed {args.seed}), and their pixels averaged over each patch "
            "(the thumbnail the encoder's patch grid sees).\n\n"
        )
        against = "\n## Against the controls\n\n" + said_controls if verdicts else ""
        atomic_write_text(
            out / "clustering.md",
            "# Clustering of encoder embeddings (Table 1)\n\n"
            + setting
            + table
            + against
            + _warnings_section(said, notes),
        )
        data = {
            "image_folder": path_text(args.images),
            "pool": args.pool,
            "k": args.k,
            "seed": args.seed,
            "crop_fraction": args.crop_fraction,
            "fields": FIELDS,
            "runs": runs,
            "controls": control_runs,
            "verdicts": verdicts,
            "skipped_files": [s.model_dump() for s in skipped],
            "warnings": list(said),  # as clustering.md's Warnings, the skipped files apart
        }
        atomic_write_text(out / "clustering.json", json.dumps(data, indent=2))
        print(f"report: {(out / 'clustering.md').resolve()}")
    return 0


def _controls(
    folders: list[Path], args: argparse.Namespace, images: Any, names: list[str]
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The control rows: for each architecture among the checkpoints, its untrained encoder,
    and for each input size and patch size, the patch means of the pixels; clustered as the
    models are. Returns their results and their ``clustering.json`` entries."""
    from sem_models.checkpoint import read_export_meta
    from sem_models.config import MAEConfig

    from ..evaluation.clustering import pixel_control_embeddings, untrained_control_embeddings

    archs: dict[str, tuple[str, dict[str, Any]]] = {}
    for run_id, folder in zip(run_ids(args.checkpoint), folders, strict=True):
        mae = read_export_meta(folder)["mae"]
        archs.setdefault(json.dumps(mae, sort_keys=True), (run_id, mae))
    made: dict[str, tuple[str, Any]] = {}
    for run_id, mae in archs.values():
        of = f" ({run_id}'s architecture)" if len(archs) > 1 else ""
        what = f"the encoder's architecture with its random initial weights (seed {args.seed})"
        emb = untrained_control_embeddings(
            mae, images, pool=args.pool, seed=args.seed, device=args.device
        )
        made[f"control: untrained encoder{of}"] = (what, emb)
    for size, patch in dict.fromkeys(
        (c.img_size, c.patch_size) for c in (MAEConfig(**m) for _, m in archs.values())
    ):
        grid = size // patch
        what = f"the {size}-px image's pixels averaged over each {patch}-px patch ({grid}×{grid})"
        made[f"control: pixels ({grid}×{grid} patch means)"] = (
            what,
            pixel_control_embeddings(images, size, patch),
        )
    results, runs = {}, {}
    for name, (what, emb) in made.items():
        results[name], runs[name] = _clustered(emb, names, args, control=what)
    return results, runs


def _clustered(
    emb: Any, names: list[str], args: argparse.Namespace, **head: str
) -> tuple[Any, dict[str, Any]]:
    """k-means of ``emb`` with the command's settings, and its ``clustering.json`` entry:
    ``head`` (what was embedded), the scores and each image's cluster."""
    from ..evaluation import cluster_embeddings

    r = cluster_embeddings(
        emb,
        k=args.k,
        seed=args.seed,
        silhouette_sample_size=args.silhouette_sample_size,
        warn_few=False,
    )
    entry = {
        **head,
        **r.model_dump(exclude={"labels"}),
        "images": [{"file": n, "cluster": label} for n, label in zip(names, r.labels, strict=True)],
    }
    return r, entry


def _warnings_section(said: list[str], notes: str) -> str:
    """``clustering.md``'s Warnings: what the run warned of (few images per cluster, ...) and
    the skipped files (``notes``, one ``- skipped ...`` line each); empty when there are none."""
    if not said and not notes:
        return ""
    return "\n## Warnings\n\n" + "".join(f"- {w}\n" for w in said) + notes


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
        help="exported sem-models folder, a training run folder, or a shipped model "
        "(sem-foundation-zero-shot, sem-foundation); repeat to compare models",
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
        "--no-progress",
        action="store_true",
        help="hide progress bars (default: shown when stderr is a terminal)",
    )
    c.add_argument(
        "-o",
        "--out",
        help="folder for clustering.md / clustering.json (an earlier clustering there is replaced)",
    )
    c.set_defaults(handler=_cluster)
