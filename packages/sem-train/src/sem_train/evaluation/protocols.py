"""The evaluation protocols S→S and S→R (arXiv 2604.05960, Sec. 2) as seeded, replayable manifests.

S→S: from a pool of focused images a seeded selection gives ``n_train`` training images,
``n_val`` validation images (model selection of the learned methods) and up to ``n_eval``
evaluation images. Each evaluation image is degraded once with parameters drawn from the
paper's ranges (``setting='random'``) and once at the midpoint of every range
(``setting='midpoint'``). A case's parameters and noise seed come from
``SeedSequence([seed, image_index, setting])``, so the inputs depend only on (images, seed):
every method sees exactly the same inputs, run after run. The manifest stores the SHA-256 of
every source and every degraded input; :func:`replay` rebuilds the inputs and checks them.

S→R: real defocused images paired with real focused references by sorted index order, both
with the information bar removed; a single focused image is the reference of every defocused
one (the paper's Table 3 uses one slow-scan reference).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from sem_physics import DegradationParams, ParameterRanges, degrade
from sem_physics.atomic import atomic_write_text
from sem_physics.io import DEFAULT_CROP_FRACTION

from .sources import (
    EvalImage,
    SkippedFile,
    array_sha256,
    crop_note,
    list_images,
    load_images,
)

__all__ = [
    "SETTINGS",
    "Case",
    "CaseRecord",
    "ImageRecord",
    "ManifestMismatchError",
    "ProtocolManifest",
    "Split",
    "SplitError",
    "build_s2r",
    "build_s2s",
    "image_record",
    "load_manifest",
    "replay",
    "save_manifest",
    "select_split",
]

SETTINGS: tuple[str, ...] = ("random", "midpoint")
_SETTING_CODE = {"random": 0, "midpoint": 1}


class ManifestMismatchError(ValueError):
    """The images or inputs do not match what a manifest recorded."""


class ImageRecord(BaseModel):
    """One image of a protocol as its manifest records it: name, kind, where it came from and
    the hash of its cropped pixels (not :class:`sem_physics.protocol.SourceRecord`, the
    record of a file that the measuring and degrading tools keep)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    kind: str = "image"
    source: str | None = None
    sha256: str = Field(description="SHA-256 of the cropped float32 image")
    file_sha256: str | None = Field(
        default=None, description="SHA-256 of the file, when read from one"
    )
    pixel_size_nm: float | None = None
    pixel_size_source: str = "none"
    shape: tuple[int, int]


class CaseRecord(BaseModel):
    """One evaluation input: which image, how it was degraded, and the hash of the result."""

    model_config = ConfigDict(extra="forbid")

    case_id: str
    image: str = Field(description="name of the focused reference (an ImageRecord)")
    setting: str
    params: DegradationParams | None = Field(
        default=None, description="None for real defocused input"
    )
    noise_seed: int | None = None
    input_source: str | None = Field(
        default=None, description="file of a real defocused input (S→R)"
    )
    input_sha256: str


class ProtocolManifest(BaseModel):
    """Everything needed to rebuild a protocol's inputs bit for bit."""

    model_config = ConfigDict(extra="forbid")

    protocol: Literal["s2s", "s2r"]
    seed: int = 0
    crop_fraction: float = DEFAULT_CROP_FRACTION
    ranges: ParameterRanges = Field(default_factory=ParameterRanges)
    settings: tuple[str, ...] = SETTINGS
    train: list[ImageRecord] = Field(default_factory=list)
    val: list[ImageRecord] = Field(default_factory=list)
    references: list[ImageRecord] = Field(default_factory=list)
    cases: list[CaseRecord] = Field(default_factory=list)
    skipped: list[SkippedFile] = Field(
        default_factory=list, description="input files left out, with the reason"
    )


@dataclass
class Case:
    """A protocol input with its focused reference (float32 (H, W), 0..255)."""

    case_id: str
    image: str
    kind: str
    setting: str
    input: np.ndarray
    reference: np.ndarray
    pixel_size_nm: float | None
    params: DegradationParams | None = None  # the true degradation (S→S), None for real input


def image_record(im: EvalImage) -> ImageRecord:
    """The manifest's record of one image: name, kind, source, content hashes, pixel size."""
    file_hash = im.source_sha256 if im.source and not im.source.startswith("generated:") else None
    return ImageRecord(
        name=im.name,
        kind=im.kind,
        source=im.source,
        sha256=array_sha256(im.data),
        file_sha256=file_hash,
        pixel_size_nm=im.pixel_size_nm,
        pixel_size_source=im.pixel_size_source,
        shape=(int(im.data.shape[0]), int(im.data.shape[1])),
    )


class SplitError(ValueError):
    """Too few images for the training / validation / evaluation split a config asks for."""


class Split(NamedTuple):
    """Indices of the training, validation and evaluation images (each sorted)."""

    train: list[int]
    val: list[int]
    eval: list[int]


def select_split(n: int, n_train: int, n_eval: int, seed: int, n_val: int = 0) -> Split:
    """Seeded disjoint selection of ``n_train`` training, ``n_val`` validation and up to
    ``n_eval`` evaluation indices.

    A seeded permutation is cut in that order; each list is returned sorted so that report
    order follows the file order.
    """
    if n_train < 0 or n_val < 0 or n_eval < 1:
        raise ValueError(
            f"need n_train, n_val >= 0 and n_eval >= 1, got {n_train}, {n_val}, {n_eval}"
        )
    if n < n_train + n_val + 1:
        raise SplitError(
            f"{n} images cannot give {n_train} training, {n_val} validation and >= 1 "
            "evaluation images"
        )
    perm = np.random.default_rng(seed).permutation(n).tolist()
    cut = n_train + n_val
    return Split(
        sorted(perm[:n_train]), sorted(perm[n_train:cut]), sorted(perm[cut : cut + n_eval])
    )


def _case_rng(seed: int, index: int, setting: str) -> np.random.SeedSequence:
    return np.random.SeedSequence([int(seed), int(index), _SETTING_CODE[setting]])


def _degradation(
    ranges: ParameterRanges, seed: int, index: int, setting: str
) -> tuple[DegradationParams, int]:
    ss = _case_rng(seed, index, setting)
    params_ss, noise_ss = ss.spawn(2)
    params = (
        ranges.midpoint()
        if setting == "midpoint"
        else ranges.sample(np.random.default_rng(params_ss))
    )
    return params, int(noise_ss.generate_state(1, np.uint64)[0] >> np.uint64(1))


def _degrade_case(reference: np.ndarray, params: DegradationParams, noise_seed: int) -> np.ndarray:
    return np.asarray(degrade(reference, params, np.random.default_rng(noise_seed)), np.float32)


def build_s2s(
    images: Sequence[EvalImage],
    *,
    n_train: int = 10,
    n_val: int = 0,
    n_eval: int = 100,
    seed: int = 0,
    ranges: ParameterRanges | None = None,
    settings: Sequence[str] = SETTINGS,
    train_images: Sequence[EvalImage] | None = None,
    val_images: Sequence[EvalImage] | None = None,
    crop_fraction: float = DEFAULT_CROP_FRACTION,
) -> tuple[ProtocolManifest, list[EvalImage], list[EvalImage], list[Case]]:
    """The S→S protocol on a pool of focused images.

    Returns ``(manifest, training images, validation images, cases)``. With ``train_images``
    (and ``val_images``) given, those are used as they are and every evaluation image is drawn
    from ``images``.
    """
    bad = [s for s in settings if s not in SETTINGS]
    if bad or not settings:
        raise ValueError(f"settings must be a non-empty subset of {SETTINGS}, got {list(settings)}")
    ranges = ranges or ParameterRanges()
    pool = list(images)
    if train_images is None:
        split = select_split(len(pool), n_train, n_eval, seed, n_val)
        train, val = [pool[i] for i in split.train], [pool[i] for i in split.val]
    else:
        split = select_split(len(pool), 0, n_eval, seed)
        train, val = list(train_images)[:n_train], list(val_images or [])[:n_val]
    evaluation = [pool[i] for i in split.eval]
    names = [im.name for im in evaluation + train + val]
    if len(set(names)) != len(names):
        raise ValueError("image names in a protocol must be unique (they name the result rows)")
    cases: list[Case] = []
    records: list[CaseRecord] = []
    for i, im in enumerate(evaluation):
        for setting in settings:
            params, noise_seed = _degradation(ranges, seed, i, setting)
            y = _degrade_case(im.data, params, noise_seed)
            cid = f"{im.name}@{setting}"
            cases.append(Case(cid, im.name, im.kind, setting, y, im.data, im.pixel_size_nm, params))
            records.append(
                CaseRecord(
                    case_id=cid,
                    image=im.name,
                    setting=setting,
                    params=params,
                    noise_seed=noise_seed,
                    input_sha256=array_sha256(y),
                )
            )
    manifest = ProtocolManifest(
        protocol="s2s",
        seed=seed,
        crop_fraction=crop_fraction,
        ranges=ranges,
        settings=tuple(settings),
        train=[image_record(im) for im in train],
        val=[image_record(im) for im in val],
        references=[image_record(im) for im in evaluation],
        cases=records,
    )
    return manifest, train, val, cases


def replay(manifest: ProtocolManifest, references: Sequence[EvalImage]) -> list[Case]:
    """Rebuild the S→S inputs of ``manifest`` from its reference images and verify every hash.

    Raises ManifestMismatchError naming the first image or case whose hash differs.
    """
    if manifest.protocol != "s2s":
        raise ValueError("replay rebuilds synthetic (s2s) inputs; s2r inputs are files")
    by_name = {im.name: im for im in references}
    recs = {r.name: r for r in manifest.references}
    for name, rec in recs.items():
        im = by_name.get(name)
        if im is None:
            raise ManifestMismatchError(f"reference image {name!r} of the manifest is missing")
        if array_sha256(im.data) != rec.sha256:
            raise ManifestMismatchError(f"reference image {name!r} differs from the manifest")
    cases = []
    for c in manifest.cases:
        im = by_name[c.image]
        if c.params is None or c.noise_seed is None:
            raise ManifestMismatchError(f"case {c.case_id!r} has no degradation parameters")
        y = _degrade_case(im.data, c.params, c.noise_seed)
        if array_sha256(y) != c.input_sha256:
            raise ManifestMismatchError(f"case {c.case_id!r}: rebuilt input differs from manifest")
        cases.append(
            Case(c.case_id, im.name, im.kind, c.setting, y, im.data, im.pixel_size_nm, c.params)
        )
    return cases


def build_s2r(
    defocused_dir: str | Path,
    focused_dir: str | Path,
    *,
    crop_fraction: float = DEFAULT_CROP_FRACTION,
    pixel_size_nm: float | None = None,
    crop_notes: list[str] | None = None,
) -> tuple[ProtocolManifest, list[Case]]:
    """The S→R protocol: real defocused inputs against real focused references.

    Pairs follow sorted index order; a folder with a single focused image gives the reference of
    every defocused image. Each pair must have the same cropped shape. ``pixel_size_nm``
    overrides the size read from the files (used for metrology). Unreadable files are skipped
    and listed in the manifest (with their partner when paired one to one). ``crop_notes``
    receives a line for the files whose bottom ``crop_fraction`` was cropped with no info bar
    found (:func:`~.sources.crop_note`).
    """
    defocused_paths = list_images(defocused_dir)
    focused_paths = list_images(focused_dir)
    if len(focused_paths) not in (1, len(defocused_paths)):
        raise ValueError(
            f"S→R pairs by sorted index order or uses one reference for all: {defocused_dir} "
            f"has {len(defocused_paths)} images, {focused_dir} has {len(focused_paths)}"
        )
    common: dict[str, Any] = {"crop_fraction": crop_fraction, "pixel_size_nm": pixel_size_nm}
    defocused, skipped = load_images(defocused_paths, **common)
    focused, skipped_f = load_images(focused_paths, kind="real", **common)
    skipped += skipped_f
    if crop_notes is not None:
        for images, what in ((defocused, "defocused "), (focused, "focused ")):
            note = crop_note(images, crop_fraction, what)
            crop_notes += [note] if note else []
    if len(focused_paths) == 1:
        if not focused:
            bad = skipped_f[0]
            raise ValueError(f"the focused reference cannot be read: {bad.path}: {bad.reason}")
        pairs = [(d, focused[0]) for d in defocused]
    else:
        by_d = {im.source: im for im in defocused}
        by_f = {im.source: im for im in focused}
        pairs = []
        for dp, fp in zip(defocused_paths, focused_paths, strict=True):
            d, f = by_d.get(str(dp)), by_f.get(str(fp))
            if d is not None and f is not None:
                pairs.append((d, f))
            elif d is not None or f is not None:
                partner = fp if f is None else dp
                skipped.append(
                    SkippedFile(
                        path=str(dp if d is not None else fp),
                        reason=f"its partner {partner} is unreadable",
                    )
                )
    cases: list[Case] = []
    refs: dict[str, ImageRecord] = {}
    records: list[CaseRecord] = []
    for d, f in pairs:
        if d.data.shape != f.data.shape:
            skipped.append(
                SkippedFile(
                    path=str(d.source),
                    reason=f"shape {d.data.shape} differs from its reference {f.name} "
                    f"{f.data.shape}",
                )
            )
            continue
        pixel = f.pixel_size_nm or d.pixel_size_nm
        cid = f"{d.name}@real"
        cases.append(Case(cid, f.name, "real", "real", d.data, f.data, pixel))
        refs.setdefault(f.name, image_record(f))
        records.append(
            CaseRecord(
                case_id=cid,
                image=f.name,
                setting="real",
                input_source=d.source,
                input_sha256=array_sha256(d.data),
            )
        )
    manifest = ProtocolManifest(
        protocol="s2r",
        crop_fraction=crop_fraction,
        settings=("real",),
        references=list(refs.values()),
        cases=records,
        skipped=skipped,
    )
    return manifest, cases


def save_manifest(manifest: ProtocolManifest, path: str | Path) -> Path:
    """Write the manifest as indented JSON."""
    return atomic_write_text(path, manifest.model_dump_json(indent=2))


def load_manifest(path: str | Path) -> ProtocolManifest:
    """Read a manifest written by :func:`save_manifest`."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"manifest {str(p)!r} does not exist")
    try:
        return ProtocolManifest.model_validate(json.loads(p.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, ValueError) as err:
        raise ValueError(f"manifest {str(p)!r} is not a valid protocol manifest: {err}") from err
