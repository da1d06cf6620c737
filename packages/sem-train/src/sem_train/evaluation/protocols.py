"""The evaluation protocols S→S and S→R (SPEC §5) as seeded, replayable manifests.

S→S: from a pool of focused images a seeded selection gives ``n_train`` training images and up
to ``n_eval`` evaluation images. Each evaluation image is degraded once with parameters drawn
from the SPEC ranges (``setting='random'``) and once at the midpoint of every range
(``setting='midpoint'``). A case's parameters and noise seed come from
``SeedSequence([seed, image_index, setting])``, so the inputs depend only on (images, seed):
every method sees exactly the same inputs, run after run. The manifest stores the SHA-256 of
every source and every degraded input; :func:`replay` rebuilds the inputs and checks them.

S→R: real defocused images paired with real focused references by sorted index order, both
with the information bar removed.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from sem_physics import DegradationParams, ParameterRanges, degrade

from .images import CROP_FRACTION, EvalImage, array_sha256, list_images, load_image

__all__ = [
    "SETTINGS",
    "Case",
    "CaseRecord",
    "ManifestMismatchError",
    "ProtocolManifest",
    "SourceRecord",
    "build_s2r",
    "build_s2s",
    "load_manifest",
    "replay",
    "save_manifest",
    "select_split",
]

SETTINGS: tuple[str, ...] = ("random", "midpoint")
_SETTING_CODE = {"random": 0, "midpoint": 1}


class ManifestMismatchError(ValueError):
    """The images or inputs do not match what a manifest recorded."""


class SourceRecord(BaseModel):
    """One source image of a protocol."""

    model_config = ConfigDict(extra="forbid")

    name: str
    kind: str = "image"
    source: str | None = None
    sha256: str = Field(description="SHA-256 of the cropped float32 image")
    file_sha256: str | None = Field(None, description="SHA-256 of the file, when read from one")
    pixel_size_nm: float | None = None
    shape: tuple[int, int]


class CaseRecord(BaseModel):
    """One evaluation input: which image, how it was degraded, and the hash of the result."""

    model_config = ConfigDict(extra="forbid")

    case_id: str
    image: str = Field(description="name of the focused reference (a SourceRecord)")
    setting: str
    params: DegradationParams | None = Field(None, description="None for real defocused input")
    noise_seed: int | None = None
    input_source: str | None = Field(None, description="file of a real defocused input (S→R)")
    input_sha256: str


class ProtocolManifest(BaseModel):
    """Everything needed to rebuild a protocol's inputs bit for bit."""

    model_config = ConfigDict(extra="forbid")

    protocol: Literal["s2s", "s2r"]
    seed: int = 0
    crop_fraction: float = CROP_FRACTION
    ranges: ParameterRanges = Field(default_factory=ParameterRanges)
    settings: tuple[str, ...] = SETTINGS
    train: list[SourceRecord] = Field(default_factory=list)
    references: list[SourceRecord] = Field(default_factory=list)
    cases: list[CaseRecord] = Field(default_factory=list)


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


def _record(im: EvalImage) -> SourceRecord:
    file_hash = im.source_sha256 if im.source and not im.source.startswith("generated:") else None
    return SourceRecord(
        name=im.name,
        kind=im.kind,
        source=im.source,
        sha256=array_sha256(im.data),
        file_sha256=file_hash,
        pixel_size_nm=im.pixel_size_nm,
        shape=(int(im.data.shape[0]), int(im.data.shape[1])),
    )


def select_split(n: int, n_train: int, n_eval: int, seed: int) -> tuple[list[int], list[int]]:
    """Seeded disjoint selection: ``n_train`` training and up to ``n_eval`` evaluation indices.

    The first ``n_train`` of a seeded permutation train, the next ``n_eval`` evaluate; both
    lists are returned sorted so that report order follows the file order.
    """
    if n_train < 0 or n_eval < 1:
        raise ValueError(f"need n_train >= 0 and n_eval >= 1, got {n_train}, {n_eval}")
    if n < n_train + 1:
        raise ValueError(f"{n} images cannot give {n_train} training and >= 1 evaluation images")
    perm = np.random.default_rng(seed).permutation(n)
    return sorted(perm[:n_train].tolist()), sorted(perm[n_train : n_train + n_eval].tolist())


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
    n_eval: int = 100,
    seed: int = 0,
    ranges: ParameterRanges | None = None,
    settings: Sequence[str] = SETTINGS,
    train_images: Sequence[EvalImage] | None = None,
    crop_fraction: float = CROP_FRACTION,
) -> tuple[ProtocolManifest, list[EvalImage], list[Case]]:
    """The S→S protocol on a pool of focused images.

    Returns ``(manifest, training images, cases)``. With ``train_images`` given, the training
    set is its first ``n_train`` images and the evaluation set is drawn from ``images`` alone.
    """
    bad = [s for s in settings if s not in SETTINGS]
    if bad or not settings:
        raise ValueError(f"settings must be a non-empty subset of {SETTINGS}, got {list(settings)}")
    ranges = ranges or ParameterRanges()
    pool = list(images)
    if train_images is None:
        tr, ev = select_split(len(pool), n_train, n_eval, seed)
        train = [pool[i] for i in tr]
    else:
        _, ev = select_split(len(pool), 0, n_eval, seed)
        train = list(train_images)[:n_train]
    evaluation = [pool[i] for i in ev]
    names = [im.name for im in evaluation + train]
    if len(set(names)) != len(names):
        raise ValueError("image names in a protocol must be unique (they name the result rows)")
    cases: list[Case] = []
    records: list[CaseRecord] = []
    for i, im in enumerate(evaluation):
        for setting in settings:
            params, noise_seed = _degradation(ranges, seed, i, setting)
            y = _degrade_case(im.data, params, noise_seed)
            cid = f"{im.name}@{setting}"
            cases.append(Case(cid, im.name, im.kind, setting, y, im.data, im.pixel_size_nm))
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
        train=[_record(im) for im in train],
        references=[_record(im) for im in evaluation],
        cases=records,
    )
    return manifest, train, cases


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
        cases.append(Case(c.case_id, im.name, im.kind, c.setting, y, im.data, im.pixel_size_nm))
    return cases


def build_s2r(
    defocused_dir: str | Path,
    focused_dir: str | Path,
    *,
    crop_fraction: float = CROP_FRACTION,
    pixel_size_nm: float | None = None,
) -> tuple[ProtocolManifest, list[Case]]:
    """The S→R protocol: real defocused inputs paired with focused references by sorted order.

    Both folders must hold the same number of images and each pair the same cropped shape.
    ``pixel_size_nm`` overrides the size read from the files (used for metrology).
    """
    defocused = list_images(defocused_dir)
    focused = list_images(focused_dir)
    if len(defocused) != len(focused):
        raise ValueError(
            f"S→R pairs by sorted index order: {defocused_dir} has {len(defocused)} images, "
            f"{focused_dir} has {len(focused)}"
        )
    cases, refs, records = [], [], []
    for dpath, fpath in zip(defocused, focused, strict=True):
        d = load_image(dpath, crop_fraction=crop_fraction)
        f = load_image(fpath, crop_fraction=crop_fraction, kind="real")
        if d.data.shape != f.data.shape:
            raise ValueError(
                f"pair {dpath.name} / {fpath.name}: shapes {d.data.shape} and {f.data.shape} differ"
            )
        pixel = pixel_size_nm or f.pixel_size_nm or d.pixel_size_nm
        f.pixel_size_nm = pixel
        cid = f"{f.name}@real"
        cases.append(Case(cid, f.name, "real", "real", d.data, f.data, pixel))
        refs.append(_record(f))
        records.append(
            CaseRecord(
                case_id=cid,
                image=f.name,
                setting="real",
                input_source=str(dpath),
                input_sha256=array_sha256(d.data),
            )
        )
    manifest = ProtocolManifest(
        protocol="s2r",
        crop_fraction=crop_fraction,
        settings=("real",),
        references=refs,
        cases=records,
    )
    return manifest, cases


def save_manifest(manifest: ProtocolManifest, path: str | Path) -> Path:
    """Write the manifest as indented JSON."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(manifest.model_dump_json(indent=2))
    return p


def load_manifest(path: str | Path) -> ProtocolManifest:
    """Read a manifest written by :func:`save_manifest`."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"manifest {str(p)!r} does not exist")
    try:
        return ProtocolManifest.model_validate(json.loads(p.read_text()))
    except (json.JSONDecodeError, ValueError) as err:
        raise ValueError(f"manifest {str(p)!r} is not a valid protocol manifest: {err}") from err
