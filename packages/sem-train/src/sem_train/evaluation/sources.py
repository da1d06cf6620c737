"""The focused (and real defocused) images a protocol starts from: files or generated samples.

Files are read by :func:`sem_physics.io.read_image` (pixel size and information bar from the
file's metadata, else the bottom ``crop_fraction``); generated images come from
:func:`sem_physics.samples.make_sample`. A file that cannot be used (corrupt, too small) is
skipped with its reason, which goes to the report and the manifest; the rest are processed.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict
from sem_physics.cli_support import path_text, reason_without_path
from sem_physics.folders import image_files, report_not_followed
from sem_physics.io import (
    IMAGE_EXTENSIONS,
    crop_info_bar,
    picture_level,
    read_image,
    warn_dim_picture,
)
from sem_physics.locking import INCOMPLETE_MARKER, LOCK_NAME
from sem_physics.protocol import file_sha256, pixels_sha256
from sem_physics.samples import ALL_SAMPLE_KINDS, SAMPLE_KINDS, make_sample

from .results import RESULT_FILE

__all__ = [
    "MIN_SIDE_PX",
    "REPORT_STAGING_PREFIX",
    "SAMPLE_PIXEL_SIZE_NM",
    "EvalImage",
    "SkippedFile",
    "SkippedInputsError",
    "array_sha256",
    "check_output_folder",
    "check_report_folder",
    "crop_note",
    "dim_note",
    "list_images",
    "load_images",
    "sample_images",
]

log = logging.getLogger(__name__)

#: Smallest image side (px, after the info-bar crop) an evaluation accepts: the SSIM window is
#: 7 px, the metrology needs rows to fit edges; below this an image is skipped with the reason.
MIN_SIDE_PX = 16
#: Pixel size the generated samples are rendered at (nm/px), that of the real resist-line image.
SAMPLE_PIXEL_SIZE_NM = 0.827
#: Name prefix of the hidden folder a report is written into before it is moved in place.
REPORT_STAGING_PREFIX = ".report-staging-"
#: The record every evaluation writes into its output folder before anything else but
#: :data:`~sem_physics.locking.INCOMPLETE_MARKER` (see ``runner._run_benchmark``).
EVALUATION_RECORD = Path("methods", "manifest.json")


@dataclass
class EvalImage:
    """A focused (or real defocused) image ready for a protocol.

    ``data`` is float32 (H, W), 0..255, information bar removed; ``pixel_size_nm`` is None when
    unknown (metrology is then skipped for it, with the reason); ``pixel_size_source`` says where
    the size came from (file metadata, ``--pixel-size-nm``, the sample generator).
    """

    name: str
    data: np.ndarray
    kind: str = "image"
    pixel_size_nm: float | None = None
    pixel_size_source: str = "none"
    source: str | None = None
    source_sha256: str | None = None
    #: bottom rows removed by ``crop_fraction`` because the file showed no information bar
    #: (0 when a bar was found and removed, or nothing was cropped)
    guessed_crop_rows: int = 0
    #: 99.9th percentile (of 255) of a dim picture read from a file of more than 8 bits (12-bit
    #: data in a 16-bit file reads as 0..16), None otherwise: degraded and scored as it is
    dim_level: float | None = None


class SkippedInputsError(ValueError):
    """``--strict`` and some input files could not be used: a partial failure, exit status 1
    (:attr:`exit_status`) as with ``sem restore``, ``sem-degrade`` and ``sem-measure``; bad
    input stays 2."""

    exit_status = 1


class SkippedFile(BaseModel):
    """An input file left out of a run, and why: ``reason`` does not repeat ``path``, so a
    message shows them as ``f"{path}: {reason}"``."""

    model_config = ConfigDict(extra="forbid")

    path: str
    reason: str


def array_sha256(arr: np.ndarray) -> str:
    """SHA-256 of an image as float32 C-order pixels (with dtype and shape)."""
    return pixels_sha256(np.ascontiguousarray(arr, dtype=np.float32))


def check_output_folder(out: Path, inputs: Sequence[Path | None]) -> None:
    """Refuse an output folder equal to or inside an input folder (a rerun would read its own
    figures as inputs, and outputs could overwrite inputs), and a non-empty one that holds no
    earlier evaluation (:func:`check_report_folder`)."""
    o = Path(out).resolve()
    for folder in inputs:
        if folder is None:
            continue
        f = Path(folder).resolve()
        if o == f or f in o.parents:
            raise ValueError(
                f"output folder {str(out)!r} is inside the input folder {str(folder)!r}: "
                "choose an --out outside the images"
            )
    check_report_folder(out)


def _own_hidden(name: str) -> bool:
    """Whether ``name`` is a hidden file a run keeps in its output folder (lock, staging)."""
    return name == LOCK_NAME or name.startswith(REPORT_STAGING_PREFIX)


def _interrupted_first_run(entries: Sequence[str]) -> bool:
    """Whether a folder holding ``entries`` (besides its lock and staging folders) is one a
    first evaluation stopped in between writing :data:`~sem_physics.locking.INCOMPLETE_MARKER`
    and its record (the marker is shared with other commands: their folders hold outputs)."""
    own = {INCOMPLETE_MARKER, EVALUATION_RECORD.parts[0]}
    return INCOMPLETE_MARKER in entries and set(entries) <= own


def _holds_evaluation(folder: Path) -> bool:
    """Whether ``folder`` holds an evaluation's record, or a method's result (its record was
    deleted, as an unreadable one's error says to)."""
    methods = folder / EVALUATION_RECORD.parent
    return (folder / EVALUATION_RECORD).is_file() or any(methods.glob(f"*/{RESULT_FILE}"))


def check_report_folder(out: Path) -> None:
    """Refuse an existing, non-empty output folder that holds no earlier evaluation.

    A run replaces the report's files and folders (``report.md``, ``panels/``, ...) in its
    output folder; only a folder an evaluation wrote (its ``methods/manifest.json`` or a
    ``methods/<name>/result.json``, or the ``INCOMPLETE`` marker of an interrupted first run)
    is taken to hold them. A missing or empty folder, or one holding only the run lock, is
    accepted.
    """
    folder = Path(out)
    if not folder.is_dir() or _holds_evaluation(folder):
        return
    entries = sorted(p.name for p in folder.iterdir() if not _own_hidden(p.name))
    if not entries or _interrupted_first_run(entries):
        return
    shown = ", ".join(entries[:3]) + (f" and {len(entries) - 3} more" if len(entries) > 3 else "")
    raise ValueError(
        f"output folder {str(out)!r} is not empty ({shown}) and holds no earlier evaluation "
        f"(no {EVALUATION_RECORD.as_posix()}); a run replaces its report files there: "
        "choose a new or empty --out folder"
    )


def list_images(folder: str | Path) -> list[Path]:
    """Image files under ``folder`` (recursive), sorted by their relative path: the walk of
    every command (:func:`sem_physics.folders.image_files`; hidden files and folders left out,
    linked folders followed once, one warning naming those that loop or lead back in)."""
    root = Path(folder)
    if not root.is_dir():
        where = (
            ""
            if root.is_absolute()
            else f"; a relative path is taken from the working directory {str(Path.cwd())!r} "
            f"(not from the config file's folder), so {str(Path.cwd() / root)!r} was looked for: "
            "give the folder as an absolute path"
        )
        raise NotADirectoryError(
            f"image folder {str(root)!r} does not exist or is not a folder{where}"
        )
    listing = image_files(root, IMAGE_EXTENSIONS)
    report_not_followed(listing, log)
    files = [p for p in listing.paths() if p.is_file()]
    if not files:
        unfollowed = listing.not_followed_text()
        raise FileNotFoundError(
            f"no images ({', '.join(IMAGE_EXTENSIONS)}) found under {str(root)!r}"
            + (f"; {unfollowed}" if unfollowed else "")
        )
    return files


def _load(path: Path, crop_fraction: float, kind: str, pixel_size_nm: float | None) -> EvalImage:
    img = read_image(path)
    dim = warn_dim_picture(img, "the benchmark degrades (S→S), restores and scores it")
    bar = img.info_bar_rows
    data = crop_info_bar(img.data, rows=bar, fraction=crop_fraction)
    guessed = int(img.data.shape[0] - data.shape[0]) if bar is None else 0
    if min(data.shape) < MIN_SIDE_PX:
        if bar:
            how = f" after removing its {bar}-row info bar"
        elif guessed:
            how = (
                f" after cropping its bottom {guessed} row(s) (crop_fraction {crop_fraction:g}; "
                "no info bar was found)"
            )
        else:
            how = ""
        raise ValueError(
            f"{path}: image is {data.shape[0]}×{data.shape[1]} px{how}; "
            f"an evaluation needs at least {MIN_SIDE_PX}×{MIN_SIDE_PX} px"
        )
    size, size_source = img.pixel_size_nm, img.pixel_size_source
    if pixel_size_nm is not None:
        size, size_source = pixel_size_nm, "given (--pixel-size-nm / config)"
    return EvalImage(
        name=path_text(path.stem),
        data=np.ascontiguousarray(data, dtype=np.float32),
        kind=kind,
        pixel_size_nm=size,
        pixel_size_source=size_source if size is not None else "none",
        source=path_text(path),
        source_sha256=file_sha256(path),
        guessed_crop_rows=guessed,
        dim_level=picture_level(img.data) if dim else None,
    )


def dim_note(images: Sequence[EvalImage], what: str = "") -> str | None:
    """A report line naming the dim files of more than 8 bits (12-bit data in a 16-bit file):
    their grey levels fill a small part of 0..255, the simulated noise and the PSNR's peak do
    not, so their scores are not those of the picture at full range; None when none is dim."""
    dim = [im for im in images if im.dim_level is not None]
    if not dim:
        return None
    names = ", ".join(f"`{im.name}` ({im.dim_level:.3g})" for im in dim)
    return (
        f"Dim pictures: {len(dim)} of {len(images)} {what}image file(s) of more than 8 bits "
        f"reach only a small part of the 0..255 grey scale (99.9th percentile: {names}), as "
        "12-bit data in a 16-bit file does; they are degraded with the noise of the 0..255 "
        "scale and scored against a peak of 255 as they are, so their inputs are far noisier "
        "than those of the same picture at full range: rescale such files to their full range "
        "first."
    )


def crop_note(images: Sequence[EvalImage], crop_fraction: float, what: str = "") -> str | None:
    """A report line when ``crop_fraction`` cut the bottom of files that showed no information
    bar (how many, how many rows), with the setting that keeps them; None when it cut none."""
    cut = [im for im in images if im.guessed_crop_rows]
    if not cut:
        return None
    rows = sorted({im.guessed_crop_rows for im in cut})
    heights = sorted({im.data.shape[0] + im.guessed_crop_rows for im in cut})
    n_rows = f"{rows[0]}" if len(rows) == 1 else f"{rows[0]}–{rows[-1]}"
    of = f"{heights[0]}" if len(heights) == 1 else f"{heights[0]}–{heights[-1]}"
    return (
        f"Info bar: none was found in {len(cut)} of {len(images)} {what}image file(s), and "
        f"`crop_fraction` ({crop_fraction:g}) cropped their bottom {n_rows} row(s) of {of} "
        "anyway; for images without a bar (already cropped) set `crop_fraction: 0` in the "
        "config."
    )


def load_images(
    paths: Sequence[Path],
    *,
    crop_fraction: float,
    kind: str = "image",
    pixel_size_nm: float | None = None,
) -> tuple[list[EvalImage], list[SkippedFile]]:
    """Read every file; the ones that cannot be used are returned as skipped with the reason.

    Names are the file stems, made unique (``_001``...) when two subfolders share a stem.
    """
    images: list[EvalImage] = []
    skipped: list[SkippedFile] = []
    for p in paths:
        try:
            images.append(_load(Path(p), crop_fraction, kind, pixel_size_nm))
        except (ValueError, OSError) as err:
            skipped.append(SkippedFile(path=path_text(p), reason=reason_without_path(err, p)))
    names = [im.name for im in images]
    for i, im in enumerate(images):
        if names.count(im.name) > 1:
            im.name = f"{im.name}_{i:03d}"
    return images, skipped


def sample_images(
    n_per_kind: int = 1,
    shape: tuple[int, int] = (480, 640),
    seed: int = 0,
    kinds: tuple[str, ...] = SAMPLE_KINDS,
    prefix: str = "",
) -> list[EvalImage]:
    """The project's generated focused images (line/space, contact holes, textures).

    Deterministic in ``seed``; each carries the pixel size it is rendered at.
    """
    if n_per_kind < 1:
        raise ValueError(f"n_per_kind must be >= 1, got {n_per_kind}")
    out = []
    for kind in kinds:
        if kind not in ALL_SAMPLE_KINDS:
            raise ValueError(
                f"unknown sample kind {kind!r}; accepted: {', '.join(ALL_SAMPLE_KINDS)}"
            )
        k_i = ALL_SAMPLE_KINDS.index(kind)  # a kind's seeds do not depend on the others
        for i in range(n_per_kind):
            s = int(seed) * 1000 + k_i * 100 + i
            data = np.ascontiguousarray(make_sample(kind, shape=shape, seed=s), dtype=np.float32)
            out.append(
                EvalImage(
                    name=f"{prefix}{kind}_{i:02d}",
                    data=data,
                    kind=kind,
                    pixel_size_nm=SAMPLE_PIXEL_SIZE_NM,
                    pixel_size_source="sample generator",
                    source=f"generated:{kind}:seed={s}",
                    source_sha256=array_sha256(data),
                )
            )
    return out
