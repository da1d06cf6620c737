"""Representation quality (the paper's Table 1): k-means on encoder embeddings.

Embeddings of a folder of images come from a sem-models checkpoint; k-means (K = 10,
scikit-learn) clusters them and three scores describe the clustering:

* silhouette (cosine distance; on ``sample_size`` random points when N is large, since it
  is O(N²)): higher is better, in [-1, 1];
* Davies-Bouldin index: lower is better;
* Calinski-Harabasz index: higher is better.

Two controls show what a score is worth: the same images embedded by the same architecture
with its random initial weights (what the encoder gives before learning anything), and their
pixels averaged over each patch (a thumbnail on the encoder's token grid: what the patch
embedding sees). An encoder that does not beat them on a score has learned nothing that score
rewards; :func:`control_verdicts` says which scores it beats.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from sem_physics import image_to_tensor
from sem_physics.cli_support import path_text
from sem_physics.io import DEFAULT_CROP_FRACTION

from .sources import SkippedFile, list_images, load_images

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

__all__ = [
    "MIN_PER_CLUSTER",
    "ClusteringResult",
    "FolderImages",
    "cluster_embeddings",
    "clustering_markdown",
    "control_verdicts",
    "embed_folder",
    "pixel_control_embeddings",
    "untrained_control_embeddings",
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


class FolderImages:
    """The usable images under ``folder``, each read and preprocessed once and kept for every
    checkpoint that embeds them (``sem cluster`` comparing models: decoding the micrographs
    again per model would cost as much as the encoding).

    Each image is read as grayscale, its information bar removed and resized (antialiased) to
    every size of ``sizes`` (the models' square input sides) as it is read, scaled to [0, 1]:
    only the resized copies are kept (224² float32: 200 kB an image), never the full-resolution
    pixels, so holding a folder of thousands of micrographs for several models is fine. The
    folder is read on the first :meth:`read` (or :meth:`pixels`), not when the object is made.
    """

    def __init__(
        self,
        folder: str | Path,
        *,
        sizes: Iterable[int],
        crop_fraction: float = DEFAULT_CROP_FRACTION,
        paths: Sequence[Path] | None = None,
    ) -> None:
        self.folder = folder
        self.sizes = tuple(sorted({int(s) for s in sizes}))
        self.crop_fraction = crop_fraction
        self._paths = None if paths is None else list(paths)
        self._pixels: dict[int, torch.Tensor] | None = None
        #: paths of the usable images relative to ``folder`` (``/``-separated), once read
        self.names: list[str] = []
        #: the files that could not be used, with the reason, once read
        self.skipped: list[SkippedFile] = []

    def read(self, *, progress: bool = False) -> None:
        """Read the folder (once: later calls do nothing); ``progress``: a bar over the files."""
        if self._pixels is not None:
            return
        import torch
        import torch.nn.functional as F
        from tqdm.auto import tqdm

        paths = list_images(self.folder) if self._paths is None else self._paths
        resized: dict[int, list[torch.Tensor]] = {s: [] for s in self.sizes}
        for path in tqdm(paths, desc="reading images", unit="image", disable=not progress):
            loaded, failed = load_images([path], crop_fraction=self.crop_fraction)
            self.skipped.extend(failed)
            for im in loaded:  # one image, or none when the file was skipped
                x = image_to_tensor(im.data) / 255.0
                for s, kept in resized.items():
                    kept.append(F.interpolate(x, size=(s, s), mode="bilinear", antialias=True))
                self.names.append(_relative_name(path, self.folder))
            del loaded  # the full-resolution pixels go before the next file is read
        self._pixels = {s: torch.cat(kept).clamp(0.0, 1.0) for s, kept in resized.items() if kept}

    def pixels(self, size: int, *, progress: bool = False) -> torch.Tensor:
        """The images resized to ``size``: a float tensor (N, 1, size, size) in [0, 1], N =
        ``len(names)``; ValueError when no file was usable or ``size`` was not asked for."""
        if size not in self.sizes:
            raise ValueError(
                f"images under {self.folder} were resized to {list(self.sizes)} px, "
                f"not {size} px (the input size of the model)"
            )
        self.read(progress=progress)
        assert self._pixels is not None  # set by read()
        if not self.names:
            bad = self.skipped
            first = f": {bad[0].path}: {bad[0].reason}" if bad else ""
            raise ValueError(f"no usable image under {self.folder}{first}")
        return self._pixels[size]


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
    read_once: FolderImages | None = None,
) -> tuple[np.ndarray, list[str]]:
    """Embeddings (N, D) of every usable image under ``folder`` from a sem-models checkpoint,
    and the paths of those images relative to ``folder`` (``/``-separated).

    Each image is read as grayscale, its information bar removed, resized (antialiased) to the
    model's square input size and scaled to [0, 1]; ``pool`` is ``'mean'`` or ``'cls'``. Files
    that cannot be read are left out and appended to ``skipped`` (with the reason) when given.
    Images are resized as they are read, so memory holds one full-resolution image at a time
    (a folder of thousands of micrographs would not fit at full resolution).
    ``read_once``: the folder's :class:`FolderImages` (of this ``folder`` and ``crop_fraction``,
    its sizes including this model's input side), shared by the calls for several checkpoints
    so that each file is read once; None reads the folder for this call.
    ``device``: ``auto`` (CUDA where present), ``cpu``, ``cuda`` or ``mps``. ``progress``:
    a progress bar over the files (when they are read) and the batches.
    """
    from sem_models import extract_embeddings, load_model

    from ..distributed import select_device
    from ..modeling import resolve_model_dir

    run_on = select_device(device)  # before any work: a missing GPU is one clear line
    if read_once is not None:
        held = (Path(read_once.folder), read_once.crop_fraction)
        if held != (Path(folder), crop_fraction):
            raise ValueError(
                f"read_once holds the images of {held[0]} (crop_fraction {held[1]:g}), not of "
                f"{folder} (crop_fraction {crop_fraction:g})"
            )
    paths = list_images(folder) if read_once is None else None  # a missing folder: first
    model = load_model(resolve_model_dir(checkpoint, what="checkpoint"), device=run_on)
    mae = getattr(model, "mae", model)
    size = int(getattr(getattr(mae, "config", None), "img_size", 224))
    images = read_once
    if images is None:
        images = FolderImages(folder, sizes=[size], crop_fraction=crop_fraction, paths=paths)
    images.read(progress=progress)
    if skipped is not None:
        skipped.extend(images.skipped)
    pixels = images.pixels(size)
    emb = extract_embeddings(model, pixels, pool=pool, batch_size=batch_size, progress=progress)
    return np.asarray(emb, dtype=np.float64), list(images.names)


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


def untrained_control_embeddings(
    mae_config: Mapping[str, Any],
    images: FolderImages,
    *,
    pool: Literal["mean", "cls"] = "mean",
    seed: int = 0,
    batch_size: int = 8,
    device: str = "auto",
) -> np.ndarray:
    """Embeddings (N, D) of ``images`` from an encoder of the architecture ``mae_config`` (an
    export's ``config.json`` ``mae`` entry) with its random initial weights (seeded by
    ``seed``; the caller's torch RNG is left where it was): the control a trained encoder
    must beat."""
    import torch
    from sem_models import extract_embeddings
    from sem_models.config import MAEConfig
    from sem_models.mae import MaskedAutoencoder

    from ..distributed import select_device

    cfg = MAEConfig(**dict(mae_config))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = MaskedAutoencoder(cfg).eval()
    model = model.to(select_device(device))
    pixels = images.pixels(cfg.img_size)
    emb = extract_embeddings(model, pixels, pool=pool, batch_size=batch_size)
    return np.asarray(emb, dtype=np.float64)


def pixel_control_embeddings(images: FolderImages, size: int, patch: int) -> np.ndarray:
    """The ``size``-px images averaged over each ``patch``-px patch, flattened: (N,
    (size // patch)²) grey levels in [0, 1], the thumbnail an encoder's patch grid sees."""
    import torch.nn.functional as F

    pixels = images.pixels(size)
    return np.asarray(F.avg_pool2d(pixels, patch).flatten(1).numpy(), dtype=np.float64)


#: Score name, field of :class:`ClusteringResult`, True when higher is better.
_SCORES = (
    ("silhouette", "silhouette_cosine", True),
    ("Davies-Bouldin", "davies_bouldin", False),
    ("Calinski-Harabasz", "calinski_harabasz", True),
)


def control_verdicts(
    results: Mapping[str, ClusteringResult], controls: Mapping[str, ClusteringResult]
) -> list[str]:
    """One sentence per model of ``results``: it beats every control of ``controls`` on every
    score, or the scores on which it does not (its value against the control's)."""
    lines = []
    for name, r in results.items():
        short = []
        for label, field, higher in _SCORES:
            mine = float(getattr(r, field))
            for cname, c in controls.items():
                theirs = float(getattr(c, field))
                if not (mine > theirs if higher else mine < theirs):
                    short.append(f"{label} ({mine:.4g} against {theirs:.4g}, {cname})")
        if not controls:
            continue
        if short:
            which = "that score" if len(short) == 1 else "those scores"
            lines.append(
                f"{name} does not beat the controls on " + "; ".join(short) + f": on {which} "
                "its embedding groups these images no better than one without learning"
            )
        else:
            lines.append(f"{name} beats every control on all three scores")
    return lines
