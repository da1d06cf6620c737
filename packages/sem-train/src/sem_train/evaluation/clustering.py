"""Representation quality (the paper's Table 1): k-means on encoder embeddings.

Embeddings of a folder of images come from a sem-models checkpoint; k-means (K = 10,
scikit-learn) clusters them and three scores describe the clustering:

* silhouette (cosine distance; on ``sample_size`` random points when N is large, since it
  is O(N²)): higher is better, in [-1, 1];
* Davies-Bouldin index: lower is better;
* Calinski-Harabasz index: higher is better.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from sem_physics import image_to_tensor
from sem_physics.cli_support import path_text
from sem_physics.io import DEFAULT_CROP_FRACTION

from .sources import SkippedFile, list_images, load_images

log = logging.getLogger(__name__)

__all__ = [
    "MIN_PER_CLUSTER",
    "ClusteringResult",
    "cluster_embeddings",
    "clustering_markdown",
    "embed_folder",
    "warn_few_per_cluster",
]


class ClusteringResult(BaseModel):
    """Scores of one k-means clustering of N embeddings."""

    model_config = ConfigDict(extra="forbid")

    n_samples: int
    dim: int
    k: int
    seed: int
    silhouette_cosine: float
    silhouette_sample_size: int | None = Field(default=None, description="None: all points used")
    davies_bouldin: float
    calinski_harabasz: float
    inertia: float
    cluster_sizes: list[int]
    labels: list[int] = Field(default_factory=list, repr=False)


#: Fewer embeddings per cluster than this and k-means scores are mostly sampling noise.
MIN_PER_CLUSTER = 5


def warn_few_per_cluster(k: int, n: int) -> bool:
    """Warn (and return True) when ``n`` embeddings give fewer than :data:`MIN_PER_CLUSTER` per
    cluster on average for ``k`` clusters: the scores are then mostly sampling noise. It
    depends on ``k`` and ``n`` only, not on the clustering found."""
    if n >= MIN_PER_CLUSTER * k:
        return False
    log.warning(
        "k-means with k=%d on %d embeddings (fewer than %d per cluster): the scores say "
        "little about the representation; use more images or a smaller k",
        k,
        n,
        MIN_PER_CLUSTER,
    )
    return True


def cluster_embeddings(
    embeddings: np.ndarray,
    *,
    k: int = 10,
    seed: int = 0,
    silhouette_sample_size: int | None = 10_000,
    n_init: int = 10,
    warn_few: bool = True,
) -> ClusteringResult:
    """k-means with ``k`` clusters, then silhouette (cosine), Davies-Bouldin, Calinski-Harabasz.

    ``silhouette_sample_size`` bounds the O(N²) silhouette cost (ignored when N is smaller).
    ``warn_few``: call :func:`warn_few_per_cluster`; False for a caller that clusters several
    embeddings of the same images and warns once itself.
    """
    from sklearn.cluster import KMeans
    from sklearn.metrics import calinski_harabasz_score, davies_bouldin_score, silhouette_score

    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be (N, D), got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("embeddings contain NaN or inf values")
    if not 2 <= k < x.shape[0]:
        raise ValueError(f"k must be in [2, N-1] = [2, {x.shape[0] - 1}], got {k}")
    if warn_few:
        warn_few_per_cluster(k, int(x.shape[0]))
    km = KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit(x)
    labels = km.labels_
    if len(np.unique(labels)) < 2:
        raise ValueError("k-means found a single cluster: the embeddings are (nearly) identical")
    sample = (
        silhouette_sample_size
        if silhouette_sample_size and x.shape[0] > silhouette_sample_size
        else None
    )
    sil = silhouette_score(x, labels, metric="cosine", sample_size=sample, random_state=seed)
    return ClusteringResult(
        n_samples=int(x.shape[0]),
        dim=int(x.shape[1]),
        k=k,
        seed=seed,
        silhouette_cosine=float(sil),
        silhouette_sample_size=sample,
        davies_bouldin=float(davies_bouldin_score(x, labels)),
        calinski_harabasz=float(calinski_harabasz_score(x, labels)),
        inertia=float(km.inertia_),
        cluster_sizes=np.bincount(labels, minlength=k).astype(int).tolist(),
        labels=labels.astype(int).tolist(),
    )


def embed_folder(
    checkpoint: str | Path,
    folder: str | Path,
    *,
    pool: Literal["mean", "cls"] = "mean",
    crop_fraction: float = DEFAULT_CROP_FRACTION,
    batch_size: int = 8,
    skipped: list[SkippedFile] | None = None,
    device: str = "auto",
    progress: bool = False,
) -> tuple[np.ndarray, list[str]]:
    """Embeddings (N, D) of every usable image under ``folder`` from a sem-models checkpoint,
    and the paths of those images relative to ``folder`` (``/``-separated).

    Each image is read as grayscale, its information bar removed, resized (antialiased) to the
    model's square input size and scaled to [0, 1]; ``pool`` is ``'mean'`` or ``'cls'``. Files
    that cannot be read are left out and appended to ``skipped`` (with the reason) when given.
    Images are resized as they are read, so memory holds one full-resolution image at a time
    (a folder of thousands of micrographs would not fit at full resolution).
    ``device``: ``auto`` (CUDA where present), ``cpu``, ``cuda`` or ``mps``. ``progress``:
    a progress bar over the files.
    """
    import torch
    import torch.nn.functional as F
    from sem_models import extract_embeddings, load_model
    from tqdm.auto import tqdm

    from ..distributed import select_device
    from ..modeling import resolve_model_dir

    run_on = select_device(device)  # before any work: a missing GPU is one clear line
    paths = list_images(folder)
    model = load_model(resolve_model_dir(checkpoint, what="checkpoint"), device=run_on)
    mae = getattr(model, "mae", model)
    size = int(getattr(getattr(mae, "config", None), "img_size", 224))
    batch: list[torch.Tensor] = []
    names: list[str] = []
    bad: list[SkippedFile] = []
    for path in tqdm(paths, desc="reading images", unit="image", disable=not progress):
        loaded, failed = load_images([path], crop_fraction=crop_fraction)
        bad.extend(failed)
        for im in loaded:  # one image, or none when the file was skipped
            x = image_to_tensor(im.data) / 255.0
            batch.append(F.interpolate(x, size=(size, size), mode="bilinear", antialias=True))
            names.append(_relative_name(path, folder))
        del loaded  # the full-resolution pixels go before the next file is read
    if skipped is not None:
        skipped.extend(bad)
    if not batch:
        first = f": {bad[0].path}: {bad[0].reason}" if bad else ""
        raise ValueError(f"no usable image under {folder}{first}")
    images = torch.cat(batch).clamp(0.0, 1.0)
    emb = extract_embeddings(model, images, pool=pool, batch_size=batch_size, progress=progress)
    return np.asarray(emb, dtype=np.float64), names


def _relative_name(path: Path, folder: str | Path) -> str:
    """``path`` relative to ``folder`` as ``/``-separated text (its name when not below it)."""
    try:
        rel = Path(path).relative_to(Path(folder))
    except ValueError:
        rel = Path(Path(path).name)
    return path_text(rel.as_posix())


def clustering_markdown(results: Mapping[str, ClusteringResult] | Sequence[Any]) -> str:
    """Table 1 layout: model | Silhouette (cosine) ↑ | Davies-Bouldin ↓ | Calinski-Harabasz ↑."""
    items = results.items() if isinstance(results, Mapping) else results
    lines = [
        "| model | N | K | Silhouette (cosine) ↑ | Davies-Bouldin ↓ | Calinski-Harabasz ↑ |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in items:
        lines.append(
            f"| {name} | {r.n_samples} | {r.k} | {r.silhouette_cosine:.4f} | "
            f"{r.davies_bouldin:.3f} | {r.calinski_harabasz:.0f} |"
        )
    return "\n".join(lines) + "\n"
