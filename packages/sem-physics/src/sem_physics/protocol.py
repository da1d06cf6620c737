"""Seeded degradation protocols with JSON manifests.

A degradation is fully determined by (image content, parameters, seed). Sample ``i`` of a run
with master seed ``S`` gets the seed ``derive_seed(S, i)``; from it two independent streams are
made: ``default_rng([seed, 0])`` draws the parameters (``--sample`` mode) and
``default_rng([seed, 1])`` draws the noise. The manifest records, per sample, the source file and
its sha256, the bottom rows cropped, every parameter, the seed, the output file and the sha256
of the output pixels, so :func:`replay_manifest` reproduces the outputs bit for bit and says
which ones differ.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from .forward import degrade
from .io import (
    DEFAULT_CROP_FRACTION,
    IMAGE_EXTENSIONS,
    crop_info_bar,
    quantize,
    read_image,
    write_image,
)
from .params import DegradationParams, ParameterRanges

__all__ = [
    "MANIFEST_NAME",
    "Manifest",
    "ManifestEntry",
    "ProtocolError",
    "ReplayResult",
    "degrade_files",
    "derive_seed",
    "find_images",
    "replay_manifest",
]

MANIFEST_NAME = "manifest.json"
Mode = Literal["sample", "explicit", "midpoint"]
Crop = Literal["none", "info-bar", "fraction"]
OutputFormat = Literal["float32-tiff", "uint16-png"]
_OUTPUT = {"float32-tiff": ("float32", ".tif"), "uint16-png": ("uint16", ".png")}


def _generator() -> str:
    try:
        return f"sem-physics {metadata.version('sem-physics')}"
    except metadata.PackageNotFoundError:
        return "sem-physics"


class ProtocolError(ValueError):
    """A protocol cannot run or a manifest cannot be replayed; the message says why."""


class ManifestEntry(BaseModel):
    """One degraded sample: where it came from, how it was made, where it went."""

    model_config = ConfigDict(extra="forbid")

    source: str = Field(description="source image path, relative to the manifest's folder")
    source_sha256: str = Field(description="sha256 of the source file bytes")
    crop_rows: int = Field(ge=0, description="bottom rows removed before degrading")
    params: DegradationParams
    seed: int = Field(ge=0, description="per-sample seed (parameters and noise streams)")
    output: str = Field(description="output file name, relative to the manifest's folder")
    output_sha256: str = Field(description="sha256 of the stored output pixels (C order)")
    pixel_size_nm: float | None = Field(default=None, description="source pixel size if known")


class Manifest(BaseModel):
    """A whole protocol run; ``manifest.json`` in the output folder."""

    model_config = ConfigDict(extra="forbid")

    version: int = 1
    generator: str = Field(default_factory=_generator)
    mode: Mode
    master_seed: int = Field(ge=0)
    ranges: ParameterRanges | None = Field(default=None, description="ranges used in 'sample'")
    crop: Crop
    crop_fraction: float = Field(ge=0, lt=1)
    output_format: OutputFormat
    entries: list[ManifestEntry]

    def save(self, path: str | Path) -> Path:
        """Write as indented JSON."""
        path = Path(path)
        path.write_text(self.model_dump_json(indent=2) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> Manifest:
        """Read and validate a manifest file."""
        path = Path(path)
        try:
            return cls.model_validate_json(path.read_text())
        except OSError as err:
            raise ProtocolError(f"{path}: cannot read manifest: {err}") from err
        except ValueError as err:
            raise ProtocolError(f"{path}: not a valid manifest: {err}") from err


class ReplayResult(BaseModel):
    """Outcome of :func:`replay_manifest`."""

    model_config = ConfigDict(extra="forbid")

    checked: int
    mismatched: list[str] = Field(description="outputs whose pixels differ from the manifest")

    @property
    def ok(self) -> bool:
        return not self.mismatched


def derive_seed(master_seed: int, index: int) -> int:
    """Seed of sample ``index`` under ``master_seed`` (numpy SeedSequence, 32-bit)."""
    seq = np.random.SeedSequence([int(master_seed), int(index)])
    return int(seq.generate_state(1, dtype=np.uint32)[0])


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def pixels_sha256(image: np.ndarray) -> str:
    """sha256 of an array's C-order bytes, its dtype and shape included."""
    arr = np.ascontiguousarray(image)
    digest = hashlib.sha256(f"{arr.dtype.str}{arr.shape}".encode())
    digest.update(arr.tobytes())
    return digest.hexdigest()


def find_images(inputs: Iterable[str | Path]) -> list[Path]:
    """Files given directly plus the image files (sorted) of the folders given."""
    files: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_EXTENSIONS)
            if not found:
                raise ProtocolError(f"{p}: folder holds no images ({', '.join(IMAGE_EXTENSIONS)})")
            files.extend(found)
        elif p.is_file():
            files.append(p)
        else:
            raise ProtocolError(f"{p}: no such file or folder")
    if not files:
        raise ProtocolError("no input images given")
    return files


def _relative_to(path: Path, folder: Path) -> str:
    """``path`` relative to ``folder`` (POSIX separators), absolute when that is impossible."""
    try:
        return Path(os.path.relpath(path.resolve(), folder.resolve())).as_posix()
    except ValueError:  # another drive on Windows
        return str(path.resolve())


def _crop_rows(height: int, bar_rows: int | None, crop: Crop, fraction: float) -> int:
    if crop == "none":
        return 0
    if crop == "info-bar" and bar_rows is not None:
        return bar_rows
    return round(fraction * height)


def _degrade_one(
    image: np.ndarray, params: DegradationParams, seed: int, source: Path
) -> np.ndarray:
    k = params.psf.size_px
    if min(image.shape) < k:
        raise ProtocolError(
            f"{source}: image {image.shape[0]}x{image.shape[1]} px is smaller than the PSF kernel "
            f"{k}x{k} px (rx_px={params.rx_px:g}, ry_px={params.ry_px:g}); use smaller radii "
            "or a larger image"
        )
    return degrade(image, params, rng=np.random.default_rng([seed, 1]))


def degrade_files(
    files: Sequence[str | Path],
    out_dir: str | Path,
    *,
    mode: Mode = "sample",
    params: DegradationParams | None = None,
    ranges: ParameterRanges | None = None,
    master_seed: int = 0,
    crop: Crop = "none",
    crop_fraction: float = DEFAULT_CROP_FRACTION,
    output_format: OutputFormat = "float32-tiff",
    progress: Callable[[Iterable[Path]], Iterable[Path]] | None = None,
) -> Manifest:
    """Degrade ``files`` into ``out_dir`` and write ``out_dir/manifest.json``.

    ``mode``: ``"sample"`` draws each sample's parameters from ``ranges`` (default: the paper's)
    with its own seed; ``"explicit"`` uses ``params`` for all; ``"midpoint"`` the ranges'
    midpoint. ``crop`` removes the info bar first (``"info-bar"``: detected rows, else the
    ``crop_fraction``). ``float32-tiff`` output keeps values unclipped; ``uint16-png`` clips to
    0..255. Output ``i`` is named ``<i>_<source stem>`` so equal stems do not collide.
    """
    if mode == "explicit" and params is None:
        raise ProtocolError("mode 'explicit' needs params")
    if mode != "explicit" and params is not None:
        raise ProtocolError(f"params are only used in mode 'explicit', not {mode!r}")
    if isinstance(master_seed, bool) or int(master_seed) != master_seed or master_seed < 0:
        raise ProtocolError(f"master_seed must be an integer >= 0, got {master_seed}")
    if not 0.0 <= crop_fraction < 1.0:
        raise ProtocolError(f"crop_fraction must be in [0, 1), got {crop_fraction}")
    if output_format not in _OUTPUT:
        raise ProtocolError(
            f"output_format must be one of {sorted(_OUTPUT)}, got {output_format!r}"
        )
    ranges = ranges or ParameterRanges()
    dtype, ext = _OUTPUT[output_format]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [Path(f) for f in files]
    entries = []
    iterator: Iterable[Path] = progress(paths) if progress else paths
    for i, path in enumerate(iterator):
        img = read_image(path)
        rows = _crop_rows(img.data.shape[0], img.info_bar_rows, crop, crop_fraction)
        data = crop_info_bar(img.data, rows=rows)
        seed = derive_seed(master_seed, i)
        if mode == "sample":
            p = ranges.sample(np.random.default_rng([seed, 0]))
        elif mode == "midpoint":
            p = ranges.midpoint()
        else:
            assert params is not None
            p = params
        result = _degrade_one(data, p, seed, path)
        name = f"{i:04d}_{path.stem}{ext}"
        write_image(out / name, result, dtype)
        entries.append(
            ManifestEntry(
                source=_relative_to(path, out),
                source_sha256=file_sha256(path),
                crop_rows=rows,
                params=p,
                seed=seed,
                output=name,
                output_sha256=pixels_sha256(quantize(result, dtype)),
                pixel_size_nm=img.pixel_size_nm,
            )
        )
    manifest = Manifest(
        mode=mode,
        master_seed=int(master_seed),
        ranges=ranges if mode != "explicit" else None,
        crop=crop,
        crop_fraction=crop_fraction,
        output_format=output_format,
        entries=entries,
    )
    manifest.save(out / MANIFEST_NAME)
    return manifest


def replay_manifest(
    manifest_path: str | Path, out_dir: str | Path | None = None, *, verify_sources: bool = True
) -> ReplayResult:
    """Re-run every entry of a manifest and compare the pixels with the recorded hashes.

    Sources are read from their recorded paths (relative to the manifest's folder) and, with
    ``verify_sources``, must still have their recorded sha256. With ``out_dir`` the
    replayed outputs are written there too (same names, same formats).
    """
    manifest_path = Path(manifest_path)
    manifest = Manifest.load(manifest_path)
    dtype, _ = _OUTPUT[manifest.output_format]
    mismatched = []
    for entry in manifest.entries:
        source = manifest_path.parent / entry.source  # an absolute source stays absolute
        if not source.is_file():
            raise ProtocolError(f"{manifest_path}: source {source} not found")
        if verify_sources and file_sha256(source) != entry.source_sha256:
            raise ProtocolError(f"{source}: sha256 differs from the manifest (file changed)")
        data = crop_info_bar(read_image(source).data, rows=entry.crop_rows)
        result = _degrade_one(data, entry.params, entry.seed, source)
        if out_dir is not None:
            write_image(Path(out_dir) / entry.output, result, dtype)
        if pixels_sha256(quantize(result, dtype)) != entry.output_sha256:
            mismatched.append(entry.output)
    return ReplayResult(checked=len(manifest.entries), mismatched=mismatched)
