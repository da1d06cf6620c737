"""Seeded degradation protocols with JSON manifests, and the toolkit's one hash/record module.

A degradation is fully determined by (image content, parameters, seed). Sample ``i`` of a run
with master seed ``S`` gets the seed ``derive_seed(S, i)`` (a 32-bit integer:
``int(SeedSequence([S, i]).generate_state(1, dtype=uint32)[0])``); from it two independent streams are
made: ``default_rng([seed, 0])`` draws the parameters (``--sample`` mode) and
``default_rng([seed, 1])`` draws the noise. The manifest records, per sample, the source file,
the sha256 of its bytes and of its pixels (the whole frame as read), the bottom rows cropped,
every parameter, the seed, the output file and the sha256 of the output pixels, so
:func:`replay_manifest` reproduces the outputs bit for bit and says which ones differ. A
source is accepted on replay when its file or its pixels match (a PNG and a TIFF of the same
pixels give the same outputs).

Safety: a run never writes over an input (an output folder that is an input folder is refused,
an output name that is an input file is refused, and the outputs a folder's own manifest lists
are not taken as inputs again); a replay writes only inside its output folder (manifest
``output`` fields that are absolute, contain ``..`` or resolve elsewhere through a symlink are
refused). Every file is written atomically (:mod:`sem_physics.atomic`). A file that cannot be
read or degraded is skipped and listed in ``Manifest.failed`` with its reason; a fatal error
(e.g. a full disk) removes the outputs the run wrote. A run holds its output folder
(:func:`sem_physics.locking.output_lock`): a second run into the same folder stops at once.
Before its first output a run marks the folder ``INCOMPLETE``
(:func:`sem_physics.locking.mark_incomplete`) and sets an earlier run's ``manifest.json``
aside (:func:`set_aside_record`: its output names go into a hidden note, then it is removed).
Once the new manifest is written, the earlier outputs it does not list are removed
(:func:`remove_earlier_outputs`), then the note, then the marker. So an interrupted rerun
leaves no manifest listing files that changed, the earlier outputs it leaves (a killed run:
its own too) lie beside the marker, never unmarked, and the next complete run still knows
them from the note and removes those it does not rewrite.
A replay into a folder (``replay_manifest(..., out_dir)``) marks it the same way while it
writes.

:func:`file_sha256`, :func:`pixels_sha256` and :class:`SourceRecord` (a source image: path,
hash, shape, pixel size and its source) are the hashes and the source record every manifest of
the toolkit uses; :func:`package_versions` the installed versions a record names.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from importlib import metadata
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Literal, get_args

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from .atomic import OutputWriteError, atomic_write_text, remove_stale_temporaries
from .cli_support import (
    first_line,
    model_json,
    path_text,
    plain_text,
    text_path,
    validation_message,
)
from .forward import degrade
from .io import (
    DEFAULT_CROP_FRACTION,
    IMAGE_EXTENSIONS,
    PIXEL_SIZE_RANGE_NM,
    SEMImage,
    clipped_counts,
    crop_info_bar,
    quantize,
    read_image,
    warn_dim_picture,
    write_image,
)
from .locking import INCOMPLETE_MARKER, clear_incomplete, mark_incomplete, output_lock
from .params import DegradationParams, ParameterRanges
from .psf import kernel_size

__all__ = [
    "MANIFEST_NAME",
    "FailedSource",
    "Manifest",
    "ManifestEntry",
    "NothingDegradedError",
    "ProtocolError",
    "ReplayResult",
    "SourceRecord",
    "check_output_folder",
    "degrade_files",
    "derive_seed",
    "earlier_outputs",
    "file_sha256",
    "find_images",
    "largest_kernel_px",
    "library_versions",
    "package_versions",
    "pixels_sha256",
    "remove_earlier_outputs",
    "replay_manifest",
    "set_aside_record",
]

MANIFEST_NAME = "manifest.json"
#: :func:`find_images`' reason for a subfolder of an input folder (reported, not searched).
SKIP_SUBFOLDER = "not searched (folders are listed without recursion)"
Mode = Literal["sample", "explicit", "midpoint"]
#: ``keep``: the detected info bar is not degraded but re-attached unchanged below the defocused
#: micrograph (as an instrument draws it); ``info-bar``/``fraction``: the bar is removed
#: (detected rows, else the fraction / the fraction); ``none``: the whole frame is degraded.
Crop = Literal["keep", "none", "info-bar", "fraction"]
OutputFormat = Literal["float32-tiff", "uint16-png"]
_OUTPUT = {"float32-tiff": ("float32", ".tif"), "uint16-png": ("uint16", ".png")}


def _generator() -> str:
    try:
        return f"sem-physics {metadata.version('sem-physics')}"
    except metadata.PackageNotFoundError:
        return "sem-physics"


def package_versions(names: Iterable[str]) -> dict[str, str | None]:
    """Installed versions of the distributions ``names`` (``importlib.metadata``; None for
    one that is not installed), in the order given: what a record says produced it."""
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def library_versions() -> dict[str, str]:
    """The versions a manifest records: numpy's random streams and scipy's/pocketfft's
    rounding are not guaranteed across versions, so a replay mismatch can be traced."""
    import platform

    import scipy

    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
    }


def largest_kernel_px(ranges: ParameterRanges) -> int:
    """Side of the largest PSF kernel ``ranges`` can draw (181 px for the paper's 30 px)."""
    return kernel_size(ranges.rx_px[1], ranges.ry_px[1])


class ProtocolError(ValueError):
    """A protocol cannot run or a manifest cannot be replayed; the message says why."""


class NothingDegradedError(ProtocolError):
    """No input of a run could be degraded; ``failed`` lists each input and its reason."""

    def __init__(self, message: str, failed: list[FailedSource]) -> None:
        super().__init__(message)
        self.failed = failed


def _plain_relative(value: str, field: str) -> str:
    """``value`` if it is a relative path that stays inside its folder (no ``..``, not absolute)."""
    posix, windows = PurePosixPath(value), PureWindowsPath(value)
    if (
        not value
        or posix.is_absolute()
        or windows.is_absolute()
        or windows.drive
        or ".." in posix.parts
        or ".." in windows.parts
    ):
        raise ValueError(
            f"{field} must be a relative path inside the manifest's folder, got {value!r}"
        )
    return value


class SourceRecord(BaseModel):
    """A source image as manifests and reports record it: which file, what was used of it.

    ``sha256`` is the hash of the file's bytes; ``pixels_sha256`` of the pixels actually used
    (after the crop, see :func:`pixels_sha256`); ``shape`` is theirs. ``frame_pixels_sha256``,
    when recorded, is the hash of the whole frame as read (the ``cropped_rows`` included; equal
    to ``pixels_sha256`` when nothing was cropped): the same value as a ``sem-degrade``
    manifest's ``source_pixels_sha256`` of that file.
    """

    model_config = ConfigDict(extra="forbid")

    path: str = Field(description="source file (as given, or relative to the manifest)")
    sha256: str | None = Field(default=None, description="sha256 of the file bytes")
    shape: tuple[int, int] = Field(description="(rows, columns) of the pixels used")
    pixel_size_nm: float | None = Field(
        default=None,
        ge=PIXEL_SIZE_RANGE_NM[0],
        le=PIXEL_SIZE_RANGE_NM[1],
        description="nm per pixel, None when unknown",
    )
    pixel_size_source: str = Field(default="none", description="where the pixel size came from")
    cropped_rows: int = Field(default=0, ge=0, description="bottom rows removed (info bar)")
    pixels_sha256: str | None = Field(default=None, description="sha256 of the pixels used")
    frame_pixels_sha256: str | None = Field(
        default=None,
        description="sha256 of the whole frame as read, cropped rows included (None: not recorded)",
    )

    @classmethod
    def from_image(
        cls, image: SEMImage, *, path: str | None = None, hash_file: bool = True
    ) -> SourceRecord:
        """The record of a read (and possibly cropped) :class:`~sem_physics.io.SEMImage`."""
        file = Path(image.path)
        return cls.from_pixels(
            file,
            image.data,
            pixel_size_nm=image.pixel_size_nm,
            pixel_size_source=image.pixel_size_source,
            cropped_rows=image.cropped_rows,
            name=path,
            hash_file=hash_file and file.is_file(),
        )

    @classmethod
    def from_pixels(
        cls,
        path: str | Path,
        pixels: np.ndarray,
        *,
        pixel_size_nm: float | None,
        pixel_size_source: str,
        cropped_rows: int = 0,
        frame: np.ndarray | None = None,
        name: str | None = None,
        hash_file: bool = True,
    ) -> SourceRecord:
        """The record of the ``pixels`` used of the image read from the file ``path``, the
        bottom ``cropped_rows`` of its frame left out: ``name`` (default ``path`` as given,
        :func:`path_text`), the sha256 of the file (``hash_file``), shape and hash of
        ``pixels``, and, given the whole ``frame`` read, ``frame_pixels_sha256`` (the hash of
        ``pixels`` when no row was cropped; None without ``frame``). The one builder of a
        source record from a read image, whoever read it."""
        hashed = pixels_sha256(pixels)
        frame_hashed = None
        if frame is not None:
            frame_hashed = pixels_sha256(frame) if cropped_rows else hashed
        return cls(
            path=name if name is not None else path_text(path),
            sha256=file_sha256(path) if hash_file else None,
            shape=(int(pixels.shape[0]), int(pixels.shape[1])),
            pixel_size_nm=pixel_size_nm,
            pixel_size_source=pixel_size_source,
            cropped_rows=cropped_rows,
            pixels_sha256=hashed,
            frame_pixels_sha256=frame_hashed,
        )


class FailedSource(BaseModel):
    """An input that could not be degraded, and why."""

    model_config = ConfigDict(extra="forbid")

    source: str = Field(description="the input path as given")
    reason: str = Field(description="one-line reason")


class ManifestEntry(BaseModel):
    """One degraded sample: where it came from, how it was made, where it went."""

    model_config = ConfigDict(extra="forbid")

    source: str = Field(description="source image path, relative to the manifest's folder")
    source_sha256: str = Field(description="sha256 of the source file bytes")
    source_pixels_sha256: str | None = Field(
        default=None,
        description="sha256 (pixels_sha256) of the source's whole frame as read: float32 grey "
        "0..255, before crop_rows are removed; a replay accepts a source whose file or pixels "
        "match (None: an older manifest, the file hash only)",
    )
    crop_rows: int = Field(
        ge=0, description="bottom rows not degraded: removed, or kept unchanged (crop 'keep')"
    )
    params: DegradationParams
    seed: int = Field(ge=0, description="per-sample seed (parameters and noise streams)")
    output: str = Field(description="output file name, relative to the manifest's folder")
    output_sha256: str = Field(description="sha256 of the stored output pixels (C order)")
    pixel_size_nm: float | None = Field(default=None, description="source pixel size if known")
    pixel_size_source: str | None = Field(default=None, description="where it came from")
    index: int | None = Field(
        default=None, ge=0, description="position in the run's input list (seed derivation)"
    )

    @field_validator("output")
    @classmethod
    def _output_inside(cls, value: str) -> str:
        return _plain_relative(value, "output")


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
    failed: list[FailedSource] = Field(
        default_factory=list, description="inputs skipped, with the reason"
    )
    versions: dict[str, str] | None = Field(
        default=None,
        description="python, numpy and scipy versions that wrote it (None: an older manifest)",
    )
    # what a run did to an earlier run's folder and to the pixels (for the CLI's notes; not saved)
    _replaced: list[str] = PrivateAttr(default_factory=list)
    _removed: list[str] = PrivateAttr(default_factory=list)
    _interrupted: bool = PrivateAttr(default=False)
    _clipped: tuple[int, int, int] = PrivateAttr(default=(0, 0, 0))  # pixels, of, images

    @property
    def replaced_outputs(self) -> list[str]:
        """Outputs of this run that replaced a file already there (an earlier run's)."""
        return list(self._replaced)

    @property
    def removed_outputs(self) -> list[str]:
        """Outputs of an earlier run that this run removed (its manifest no longer lists them)."""
        return list(self._removed)

    @property
    def completed_interrupted(self) -> bool:
        """The folder was marked ``INCOMPLETE`` by an interrupted run when this one started."""
        return self._interrupted

    @property
    def clipped(self) -> tuple[int, int, int]:
        """``uint16-png``: (pixels clipped to 0..255, pixels written, images with any clipped)."""
        return self._clipped

    def save(self, path: str | Path) -> Path:
        """Write as indented JSON, atomically."""
        return atomic_write_text(path, model_json(self, indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Manifest:
        """Read and validate a manifest file."""
        path = Path(path)
        try:
            return cls.model_validate_json(path.read_text(encoding="utf-8"))
        except OSError as err:
            raise ProtocolError(f"{path}: cannot read manifest: {err}") from err
        except ValidationError as err:  # "entries.0.params.rx_px must be in (0, 1000], got 0"
            raise ProtocolError(
                f"{path}: not a valid manifest: {validation_message(err, cls)}"
            ) from err
        except ValueError as err:
            raise ProtocolError(f"{path}: not a valid manifest: {err}") from err


class ReplayResult(BaseModel):
    """Outcome of :func:`replay_manifest`."""

    model_config = ConfigDict(extra="forbid")

    checked: int
    mismatched: list[str] = Field(description="outputs whose pixels differ from the manifest")
    manifest: str | None = Field(
        default=None, description="the manifest written beside the replayed outputs (out_dir)"
    )
    versions: dict[str, str] | None = Field(
        default=None, description="versions recorded by the replayed manifest (None: not recorded)"
    )

    @property
    def ok(self) -> bool:
        return not self.mismatched


def derive_seed(master_seed: int, index: int) -> int:
    """Seed of sample ``index`` under ``master_seed``: the first 32-bit word of
    ``SeedSequence([master_seed, index])``. 32 bits, kept so that every manifest replays: among
    ``n`` samples about ``n**2 / 2**33`` pairs share a seed (1.2 % chance of any at 10,000)."""
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
    digest.update(_c_bytes(arr))
    return digest.hexdigest()


def _c_bytes(arr: np.ndarray) -> memoryview:
    """The bytes of a C-contiguous array as a view (``tobytes`` would copy a large image)."""
    return arr.reshape(-1).view(np.uint8).data


#: Output pixels quantized at a time for their hash (an integer format's quantize works on
#: float64 copies of what it is given).
_HASH_BAND_PX = 1 << 20


def _output_sha256(result: np.ndarray, dtype: str) -> str:
    """``pixels_sha256(quantize(result, dtype))`` (a manifest's ``output_sha256``), quantizing
    a band of rows at a time: the same bytes, in the same order."""
    if dtype == "float32":
        return pixels_sha256(quantize(result, dtype))
    kind = quantize(result[:0], dtype).dtype.str
    digest = hashlib.sha256(f"{kind}{result.shape}".encode())
    step = max(1, _HASH_BAND_PX // max(1, result.shape[1]))
    for a in range(0, result.shape[0], step):
        digest.update(_c_bytes(np.ascontiguousarray(quantize(result[a : a + step], dtype))))
    return digest.hexdigest()


def earlier_outputs(folder: str | Path) -> set[str]:
    """Names of the outputs that ``folder/manifest.json`` (a run into ``folder``) lists."""
    path = Path(folder) / MANIFEST_NAME
    if not path.is_file():
        return set()
    try:
        manifest = Manifest.load(path)
    except ProtocolError:
        return set()  # not ours, or damaged: nothing is known to be an output
    return {e.output for e in manifest.entries}


def find_images(
    inputs: Iterable[str | Path], on_skip: Callable[[Path, str], None] | None = None
) -> list[Path]:
    """Files given directly plus the image files (sorted) of the folders given.

    Folders are listed without recursion (a given folder's subfolders are not searched, so
    a run's input list, hence every sample's seed index, does not depend on what lies below).
    Hidden files (temporaries of atomic writes) and files without an image extension are left
    out silently; the outputs that a folder's own ``manifest.json`` lists (an earlier run into
    that folder: a rerun never degrades its outputs) and subfolders (:data:`SKIP_SUBFOLDER`)
    are left out and reported to ``on_skip(path, reason)``.
    """
    files: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            outputs = earlier_outputs(p)
            found = []
            for q in sorted(p.iterdir()):
                if q.name.startswith("."):
                    continue
                if q.is_dir():
                    if on_skip is not None:
                        on_skip(q, SKIP_SUBFOLDER)
                    continue
                if q.suffix.lower() not in IMAGE_EXTENSIONS or not q.is_file():
                    continue  # no image (a manifest, a marker, notes): not reported
                if q.name in outputs:
                    if on_skip is not None:
                        on_skip(q, f"an output listed in {p / MANIFEST_NAME}")
                    continue
                found.append(q)
            if not found:
                raise ProtocolError(
                    f"{p}: folder holds no images ({', '.join(IMAGE_EXTENSIONS)})"
                    + (" other than the outputs its manifest lists" if outputs else "")
                )
            files.extend(found)
        elif p.is_file():
            files.append(p)
        else:
            raise ProtocolError(f"{p}: no such file or folder")
    if not files:
        raise ProtocolError("no input images given")
    return files


def _inode(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino


def check_output_folder(
    files: Sequence[str | Path],
    out_dir: str | Path,
    names: Sequence[str] = (),
    inputs: Sequence[str | Path] = (),
) -> None:
    """Refuse an output folder or output names that would overwrite an input.

    ``out_dir`` must not be an existing file nor one of the folders in ``inputs``;
    no ``out_dir / name`` may be (or link to) one of ``files``.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ProtocolError(f"output folder {out} exists and is not a folder")
    out_id = _inode(out)
    for item in inputs:
        q = Path(item)
        if q.is_dir() and out_id is not None and _inode(q) == out_id:
            raise ProtocolError(
                f"output folder {out} is the input folder {q}: outputs could overwrite inputs "
                "and a rerun would degrade them again; choose another -o/--out"
            )
    sources = {i: Path(f) for f in files if (i := _inode(Path(f))) is not None}
    for name in names:
        target = out / name
        target_id = _inode(target)
        hit = sources.get(target_id) if target_id is not None else None
        if hit is not None:
            raise ProtocolError(
                f"output {target} would overwrite the input {hit}; choose another -o/--out"
            )


def _earlier_note(folder: Path, record: str) -> Path:
    """The hidden note keeping the output names of ``folder/record`` while a rerun replaces it
    (``manifest.json`` -> ``.manifest.earlier.json``); hidden, so never an input."""
    return folder / f".{Path(record).stem}.earlier.json"


def _noted_outputs(note: Path) -> set[str]:
    """Output names in ``note``; none when it is missing or damaged (nothing is then known)."""
    try:
        doc = json.loads(note.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return set()
    names = doc.get("outputs") if isinstance(doc, dict) else None
    return {n for n in names if isinstance(n, str)} if isinstance(names, list) else set()


def set_aside_record(folder: str | Path, record: str, outputs: Iterable[str]) -> None:
    """Remove an earlier run's record ``folder/record``, first noting the ``outputs`` it lists.

    A rerun calls this just before its first output, after marking ``folder`` ``INCOMPLETE``:
    no record then names files that change. The names (with those a rerun stopped earlier
    noted) go into a hidden note, written atomically before the record is removed, so however
    the run stops they stay known until :func:`remove_earlier_outputs` removes the ones a
    complete run does not rewrite. ``outputs``: empty when the record cannot be parsed (its
    files are then left alone).
    """
    folder = Path(folder)
    note = _earlier_note(folder, record)
    names = set(outputs) | _noted_outputs(note)
    if names:
        doc = {"record": record, "outputs": sorted(names)}
        atomic_write_text(note, json.dumps(doc, indent=2) + "\n")
    (folder / record).unlink(missing_ok=True)


def _earlier_output(
    folder: Path, root: Path, name: str, keep: set[Path], protected: set[tuple[int, int]]
) -> Path | None:
    """``folder / name`` when it may go: an image file (no link) inside ``folder``, not hidden,
    not one of ``keep`` (the new outputs) and no file of ``protected`` (inodes: new outputs,
    sources); else None."""
    try:
        _plain_relative(name, "output")
    except ValueError:
        return None
    path = folder / name
    if any(part.startswith(".") for part in PurePosixPath(name).parts):
        return None
    if path.suffix.lower() not in IMAGE_EXTENSIONS or path.is_symlink() or not path.is_file():
        return None
    if root not in path.resolve().parents or path.resolve() in keep:
        return None
    return None if _inode(path) in protected else path


def remove_earlier_outputs(
    folder: str | Path,
    record: str,
    keep: Iterable[str | Path],
    sources: Iterable[str | Path] = (),
) -> list[Path]:
    """Remove the earlier outputs :func:`set_aside_record` noted that the new record does not
    list, then the note; return the removed paths.

    Called once the new ``folder/record`` is written and before the ``INCOMPLETE`` marker is
    cleared, so a run stopped here leaves the marker and the note for the next run. Only
    noted names are removed, and only image files inside ``folder`` that are neither one of
    ``keep`` (the new outputs) nor one of ``sources`` (this run's inputs), compared by file
    identity; symbolic links and hidden files are left, and so are subfolders still holding
    anything (emptied ones are removed). An output that cannot be removed
    raises :class:`~sem_physics.atomic.OutputWriteError` (note and marker stay).
    """
    folder = Path(folder)
    note = _earlier_note(folder, record)
    names = _noted_outputs(note)
    root = folder.resolve()
    kept = [Path(p) for p in keep]
    keep_paths = {p.resolve() for p in kept}
    protected = {i for p in (*kept, *map(Path, sources)) if (i := _inode(p)) is not None}
    removed = []
    for name in sorted(names):
        path = _earlier_output(folder, root, name, keep_paths, protected)
        if path is None:
            continue
        try:
            path.unlink(missing_ok=True)
        except OSError as err:
            raise OutputWriteError(
                err.errno or 0,
                f"cannot remove {path}, an output of an earlier run that {folder / record} no "
                f"longer lists: {err.strerror or err}",
            ) from err
        removed.append(path)
        _remove_empty_parents(path, folder)
    note.unlink(missing_ok=True)
    return removed


def _remove_empty_parents(path: Path, folder: Path) -> None:
    """The subfolders of ``folder`` that held ``path`` and are now empty (an input folder
    renamed or dropped in a rerun); ``folder`` itself stays."""
    parent = path.parent
    while parent != folder and folder in parent.parents:
        try:
            parent.rmdir()  # only an empty folder goes
        except OSError:
            return
        parent = parent.parent


def _name_text(stem: str) -> str:
    """An output name's part from a source stem: a byte that is not valid UTF-8 as U+FFFD, so
    the name a manifest records is the file's own (and no backslash enters a name)."""
    try:
        stem.encode("utf-8")
    except UnicodeEncodeError:
        try:
            return os.fsencode(stem).decode("utf-8", "replace")
        except UnicodeError:
            return stem.encode("utf-8", "replace").decode("utf-8")
    return stem


def _recorded_source(folder: Path, source: str) -> Path:
    """The file a manifest's ``source`` names (relative to ``folder``; absolute stays so): a
    name recorded with ``\\xNN`` for bytes that are not valid UTF-8 (:func:`path_text`) is
    the file of those bytes, unless a file is named so literally."""
    path = folder / source
    if "\\x" in source and not os.path.lexists(path):
        raw = folder / text_path(source)
        if os.path.lexists(raw):
            return raw
    return path


def _relative_to(path: Path, folder: Path) -> str:
    """``path`` relative to ``folder`` (POSIX separators), absolute when that is impossible."""
    try:
        return Path(os.path.relpath(path.resolve(), folder.resolve())).as_posix()
    except ValueError:  # another drive on Windows
        return str(path.resolve())


def _crop_rows(height: int, bar_rows: int | None, crop: Crop, fraction: float) -> int:
    if crop == "none":
        return 0
    if crop == "keep":
        return bar_rows or 0
    if crop == "info-bar" and bar_rows is not None:
        return bar_rows
    return round(fraction * height)


def _degrade_frame(
    frame: np.ndarray,
    rows: int,
    crop: Crop,
    params: DegradationParams,
    seed: int,
    source: Path,
) -> np.ndarray:
    """The frame without its bottom ``rows``, degraded; with crop ``keep`` those rows follow
    unchanged (float32, as read)."""
    result = _degrade_one(crop_info_bar(frame, rows=rows), params, seed, source)
    if crop == "keep" and rows:
        bar = np.asarray(frame[frame.shape[0] - rows :], dtype=np.float32)
        result = np.concatenate([result, bar], axis=0)
    return result


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


@contextmanager
def _removed_on_error(written: list[Path]) -> Iterator[None]:
    """Remove the files listed in ``written``, last first, when the block stops with an error
    (or Ctrl-C)."""
    try:
        yield
    except BaseException:
        for path in reversed(written):
            path.unlink(missing_ok=True)
        raise


def _mark_before_first_write(out: Path, written: list[Path]) -> None:
    """Mark ``out`` ``INCOMPLETE`` before a run's first output. In a folder holding nothing
    visible the marker joins ``written``: an error removes it with the outputs."""
    fresh = not any(not p.name.startswith(".") for p in out.iterdir())
    mark_incomplete(out)
    if fresh:
        written.append(out / INCOMPLETE_MARKER)


def _one_line(err: BaseException) -> str:
    if isinstance(err, MemoryError):
        text = str(err).strip()
        return "not enough memory" + (f": {text}" if text else "")
    return first_line(err)


def degrade_files(
    files: Sequence[str | Path] | str | Path,
    out_dir: str | Path,
    *,
    mode: Mode = "sample",
    params: DegradationParams | None = None,
    ranges: ParameterRanges | None = None,
    master_seed: int = 0,
    crop: Crop = "keep",
    crop_fraction: float = DEFAULT_CROP_FRACTION,
    output_format: OutputFormat = "float32-tiff",
    progress: Callable[[Iterable[Path]], Iterable[Path]] | None = None,
    on_error: Literal["skip", "raise"] = "skip",
    max_pixels: int | None = None,
    input_folders: Sequence[str | Path] = (),
    overwrite: bool = False,
) -> Manifest:
    """Degrade ``files`` (or one path) into ``out_dir`` and write ``out_dir/manifest.json``.

    ``mode``: ``"sample"`` draws each sample's parameters from ``ranges`` (default: the paper's)
    with its own seed; ``"explicit"`` uses ``params`` for all; ``"midpoint"`` the ranges'
    midpoint. ``crop``: ``"keep"`` (default) degrades the micrograph above the detected info
    bar and re-attaches the bar unchanged (the whole frame when none is found); ``"info-bar"``
    removes the bar (detected rows, else the ``crop_fraction``), ``"fraction"`` the fraction;
    ``"none"`` degrades the whole frame, bar included. ``float32-tiff`` output keeps values
    unclipped; ``uint16-png`` clips to 0..255 (``Manifest.clipped`` counts the pixels). Output
    ``i`` is named ``<i>_<source stem>`` so equal stems do not collide.

    Small images: in ``"sample"`` mode an image (after the crop) smaller than the largest
    kernel the ranges can draw (:func:`largest_kernel_px`, 181 px for the paper's ranges) is
    skipped whatever its own draw, so the kept cases keep the ranges' distribution; in
    ``"explicit"`` and ``"midpoint"`` mode, where every image gets the same setting, an image
    is skipped when it is smaller than that setting's kernel.

    Existing files: a file at an output path that no earlier manifest in ``out_dir`` lists
    (nor the note of an interrupted rerun) is refused (:class:`ProtocolError` naming it,
    before any work) unless ``overwrite``, or unless ``out_dir`` is marked ``INCOMPLETE`` (an
    interrupted run's outputs, which this run completes). ``Manifest.replaced_outputs`` and
    ``Manifest.removed_outputs`` say what the run did to an earlier run's outputs.

    A file that cannot be read or degraded (corrupt, too large, smaller than the kernel) is
    skipped and listed in ``Manifest.failed`` (``on_error="raise"``: the run stops with its
    error instead); when no file could be degraded a :class:`ProtocolError` is raised and no
    manifest written. Outputs never overwrite an input (``input_folders``: the folders the
    files were listed from, which must not be ``out_dir``); on any other error the outputs
    written so far are removed. While it runs, ``out_dir`` is locked (another run into it
    raises :class:`~sem_physics.locking.OutputFolderBusyError`) and the temporaries a killed
    run left there are removed. Just before the first output is written ``out_dir`` is marked
    ``INCOMPLETE`` (:func:`~sem_physics.locking.mark_incomplete`) and an earlier run's manifest
    there is set aside (:func:`set_aside_record`). Once the new manifest is written the earlier
    outputs it does not list (fewer or renamed inputs, failed ones) are removed
    (:func:`remove_earlier_outputs`; never a source, never a file no manifest named), then the
    marker. A run stopped by an error leaves the marker only when earlier files remain beside
    it (in a folder that held nothing visible its outputs and marker are removed); a killed run
    leaves it with its outputs: they are never unmarked without a manifest.
    """
    _check_choice("mode", mode, Mode)
    _check_choice("crop", crop, Crop)
    if mode == "explicit" and params is None:
        raise ProtocolError("mode 'explicit' needs params (a DegradationParams)")
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
    if on_error not in ("skip", "raise"):
        raise ProtocolError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
    ranges = ranges or ParameterRanges()
    dtype, ext = _OUTPUT[output_format]
    out = Path(out_dir)
    paths = _as_paths(files)
    names = [f"{i:04d}_{_name_text(path.stem)}{ext}" for i, path in enumerate(paths)]
    check_output_folder(paths, out, names, input_folders)
    k_max = largest_kernel_px(ranges)
    entries: list[ManifestEntry] = []
    failed: list[FailedSource] = []
    written: list[Path] = []
    iterator: Iterable[Path] = progress(paths) if progress else paths
    # one run at a time writes into ``out``; no output survives without its manifest or marker
    clipped = [0, 0, 0]

    def degraded(
        i: int, path: Path
    ) -> tuple[np.ndarray, int, DegradationParams, int, tuple[float | None, str], str]:
        """Output ``i``, its crop rows, setting, seed, the source's pixel size (and its
        source) and the sha256 of the source's pixels; the frame read is freed on return,
        before the output is written."""
        img = read_image(path, max_pixels=max_pixels)
        frame_sha256 = pixels_sha256(img.data)
        warn_dim_picture(img, "sem-degrade simulates the blur and noise")
        rows = _crop_rows(img.data.shape[0], img.info_bar_rows, crop, crop_fraction)
        if mode == "sample":
            _check_sample_size(img.data.shape, rows, k_max, ranges, path)
        seed = derive_seed(master_seed, i)
        if mode == "sample":
            p = ranges.sample(np.random.default_rng([seed, 0]))
        elif mode == "midpoint":
            p = ranges.midpoint()
        else:
            assert params is not None
            p = params
        result = _degrade_frame(img.data, rows, crop, p, seed, path)
        return result, rows, p, seed, (img.pixel_size_nm, img.pixel_size_source), frame_sha256

    with output_lock(out), _removed_on_error(written):
        remove_stale_temporaries(out)
        interrupted = (out / INCOMPLETE_MARKER).is_file()
        there = {n for n in names if os.path.lexists(out / n)}
        _refuse_unknown_files(out, sorted(there), interrupted=interrupted, overwrite=overwrite)
        for i, path in enumerate(iterator):
            try:
                source_sha256 = file_sha256(path)
                result, rows, p, seed, pixel_size, source_pixels = degraded(i, path)
            except (ValueError, MemoryError, OSError) as err:
                if on_error == "raise":
                    raise
                reason = _one_line(err)
                if not reason.startswith(str(path)):
                    reason = f"{path}: {reason}"
                failed.append(FailedSource(source=path_text(path), reason=plain_text(reason)))
                continue
            if not written:  # an earlier run's manifest lists outputs this run replaces
                _mark_before_first_write(out, written)
                set_aside_record(out, MANIFEST_NAME, earlier_outputs(out))
            written.append(
                write_image(
                    out / names[i],
                    result,
                    dtype,
                    pixel_size_nm=pixel_size[0],
                    warn_clipped=False,  # counted here, reported once by the caller
                )
            )
            if dtype == "uint16":
                n_clip = sum(clipped_counts(result))
                clipped[0] += n_clip
                clipped[2] += n_clip > 0
            clipped[1] += result.size
            entries.append(
                ManifestEntry(
                    source=path_text(_relative_to(path, out)),
                    source_sha256=source_sha256,
                    source_pixels_sha256=source_pixels,
                    crop_rows=rows,
                    params=p,
                    seed=seed,
                    output=names[i],
                    output_sha256=_output_sha256(result, dtype),
                    pixel_size_nm=pixel_size[0],
                    pixel_size_source=pixel_size[1],
                    index=i,
                )
            )
            del result  # not held while the next image is read and degraded
        if not entries:
            first = failed[0].reason if failed else "no input images"
            raise NothingDegradedError(
                f"none of the {len(paths)} images could be degraded (first: {first})"
                if len(paths) > 1
                else f"the image could not be degraded: {first}",
                failed,
            )
        manifest = Manifest(
            mode=mode,
            master_seed=int(master_seed),
            ranges=ranges if mode != "explicit" else None,
            crop=crop,
            crop_fraction=crop_fraction,
            output_format=output_format,
            entries=entries,
            failed=failed,
            versions=library_versions(),
        )
        manifest.save(out / MANIFEST_NAME)
        written.clear()  # listed by the manifest now: kept, whatever stops the run from here
        removed = remove_earlier_outputs(
            out, MANIFEST_NAME, [out / e.output for e in entries], paths
        )
        clear_incomplete(out)
    manifest._replaced = [e.output for e in entries if e.output in there]
    manifest._removed = [_relative_to(p, out) for p in removed]
    manifest._interrupted = interrupted
    manifest._clipped = (clipped[0], clipped[1], clipped[2]) if dtype == "uint16" else (0, 0, 0)
    return manifest


def _check_choice(name: str, value: object, choices: object) -> None:
    """Refuse ``value`` outside the Literal ``choices`` with a ProtocolError naming ``name``."""
    accepted = get_args(choices)
    if value not in accepted:
        raise ProtocolError(
            f"{name} must be one of {', '.join(map(repr, accepted))}, got {value!r}"
        )


def _as_paths(files: Sequence[str | Path] | str | Path) -> list[Path]:
    """The input files as Paths: a single str or Path is a list of one."""
    if isinstance(files, str | os.PathLike):
        return [Path(files)]
    paths = []
    for f in files:
        if not isinstance(f, str | os.PathLike):
            raise ProtocolError(f"files must be file paths (str or Path), got {f!r}")
        paths.append(Path(f))
    return paths


def _refuse_unknown_files(
    out: Path, names: Sequence[str], *, interrupted: bool, overwrite: bool
) -> None:
    """Refuse (one line) files at output paths ``out/name`` that no earlier run's manifest in
    ``out`` (nor the note of an interrupted rerun) lists: they are no earlier output, and a run
    would overwrite them. Allowed with ``overwrite``, and in a folder marked ``INCOMPLETE``
    (an interrupted run left its outputs there unlisted)."""
    if overwrite or interrupted or not names:
        return
    known = earlier_outputs(out) | _noted_outputs(_earlier_note(out, MANIFEST_NAME))
    unknown = [out / n for n in names if n not in known]
    if unknown:
        more = f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""
        raise ProtocolError(
            f"{unknown[0]}{more} exists and no earlier manifest in {out} lists it: not "
            "overwritten; pass --overwrite to replace it or choose another -o/--out"
        )


def _check_sample_size(
    shape: tuple[int, ...], rows: int, k_max: int, ranges: ParameterRanges, source: Path
) -> None:
    """Sample mode: refuse an image (``shape`` less the ``rows`` cropped) smaller than the
    largest kernel the ranges can draw, whatever this image's own draw would be."""
    h, w = shape[0] - rows, shape[1]
    if min(h, w) < k_max:
        r = max(ranges.rx_px[1], ranges.ry_px[1])
        raise ProtocolError(
            f"{source}: image {h}x{w} px is smaller than the largest PSF kernel --sample can "
            f"draw ({k_max}x{k_max} px, radii up to {r:g} px): skipped whatever its own draw, "
            "so the kept cases keep the ranges' distribution (use a larger image, or "
            "--midpoint or explicit radii)"
        )


def _replay_target(out_dir: Path, output: str, ext: str, sources: set[tuple[int, int]]) -> Path:
    """``out_dir / output`` if it stays inside ``out_dir`` (symlinks resolved), has the format's
    extension ``ext`` and is no source image."""
    try:
        _plain_relative(output, "output")
    except ValueError as err:
        raise ProtocolError(f"refusing to replay: manifest {err}") from None
    if Path(output).suffix.lower() != ext:
        raise ProtocolError(f"refusing to replay: output {output!r} does not end in {ext}")
    root = out_dir.resolve()
    target = (out_dir / output).resolve()
    if target == root or root not in target.parents:
        raise ProtocolError(
            f"refusing to replay: output {output!r} resolves to {target}, outside {root}"
        )
    if target.exists() and _inode(target) in sources:
        raise ProtocolError(f"refusing to replay: output {target} is a source image")
    return out_dir / output


def _replay_source(source: Path, entry: ManifestEntry, verify: bool) -> tuple[np.ndarray, str, str]:
    """The frame of ``source`` as read, the sha256 of its file and of its pixels; with
    ``verify`` a source is accepted when its file hash or its pixel hash is the manifest's
    (``source_sha256`` / ``source_pixels_sha256``; a manifest without the latter: the file hash
    only, checked before the image is read), else a ProtocolError names the file and both
    hashes, recorded and found."""
    file_hash = file_sha256(source)
    file_ok = file_hash == entry.source_sha256
    recorded = entry.source_pixels_sha256
    if verify and not file_ok and recorded is None:
        raise ProtocolError(
            f"{source}: sha256 differs from the manifest (file changed): file sha256 "
            f"{file_hash}, manifest source_sha256 {entry.source_sha256} (the manifest records "
            "no source_pixels_sha256 to compare the pixels with)"
        )
    try:
        frame = read_image(source).data
    except ValueError as err:
        if not verify or file_ok:
            raise
        raise ProtocolError(
            f"{source}: sha256 differs from the manifest (file changed): file sha256 "
            f"{file_hash}, manifest source_sha256 {entry.source_sha256}; its pixels cannot be "
            f"read to compare with source_pixels_sha256 {recorded}: {_one_line(err)}"
        ) from err
    frame_hash = pixels_sha256(frame)
    if verify and not file_ok and frame_hash != recorded:
        raise ProtocolError(
            f"{source}: sha256 differs from the manifest (file changed), and so do its pixels: "
            f"file sha256 {file_hash}, manifest source_sha256 {entry.source_sha256}; pixels "
            f"sha256 {frame_hash}, manifest source_pixels_sha256 {recorded}"
        )
    return frame, file_hash, frame_hash


def replay_manifest(
    manifest_path: str | Path,
    out_dir: str | Path | None = None,
    *,
    verify_sources: bool = True,
    overwrite: bool = False,
) -> ReplayResult:
    """Re-run every entry of a manifest and compare the pixels with the recorded hashes.

    Sources are read from their recorded paths (relative to the manifest's folder) and, with
    ``verify_sources``, must still have their recorded file sha256 (``source_sha256``) or
    pixel sha256 (``source_pixels_sha256``: the same pixels in another file or format give
    the same outputs); a manifest without pixel hashes (written before them) is checked by
    the file hash alone. With ``out_dir`` the
    replayed outputs are written there too (same names, same formats): every destination is
    checked first (inside ``out_dir`` after resolving symlinks, not a source image), ``out_dir``
    is locked while they are written (the temporaries a killed run left there are removed),
    and they are removed again if the replay stops with an error. As in :func:`degrade_files`,
    ``out_dir`` is marked ``INCOMPLETE`` just before the first output is written and the marker
    goes when all are: an interrupted replay never leaves its outputs unmarked (in a folder
    that held nothing visible an error removes the marker with the outputs).

    Without ``out_dir`` the recipe is verified, not the files: the outputs are recomputed from
    the sources and compared with the recorded hashes; the output files beside the manifest are
    not read. With ``out_dir`` a ``manifest.json`` describing the replayed folder is written
    there too (sources relative to it with the file and pixel hashes of the sources replayed,
    this environment's ``versions``, the hashes of the pixels written: the recorded ones when
    all match), so the folder can itself be replayed;
    an earlier run's manifest there is replaced as a rerun of :func:`degrade_files` replaces
    it (its outputs this replay does not write are removed), and a file at an output path no
    earlier manifest there lists is refused unless ``overwrite``.
    """
    manifest_path = Path(manifest_path)
    manifest = Manifest.load(manifest_path)
    dtype, ext = _OUTPUT[manifest.output_format]
    sources = [_recorded_source(manifest_path.parent, e.source) for e in manifest.entries]
    targets: list[Path | None] = [None] * len(sources)
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:  # check every destination before anything is written
        if out.exists() and not out.is_dir():
            raise ProtocolError(f"output folder {out} exists and is not a folder")
        ids = {i for src in sources if (i := _inode(src)) is not None}
        targets = [_replay_target(out, e.output, ext, ids) for e in manifest.entries]
    mismatched = []
    hashes: list[str] = []
    used: list[tuple[str, str]] = []  # (file, pixels) sha256 of each source as replayed
    written: list[Path] = []  # a replay that stops half-way leaves no partial set
    lock = output_lock(out) if out is not None else nullcontext()
    with lock, _removed_on_error(written):
        if out is not None:
            remove_stale_temporaries(out)
            there = sorted(e.output for e in manifest.entries if os.path.lexists(out / e.output))
            _refuse_unknown_files(
                out,
                there,
                interrupted=(out / INCOMPLETE_MARKER).is_file(),
                overwrite=overwrite,
            )
        for entry, source, target in zip(manifest.entries, sources, targets, strict=True):
            if not source.is_file():
                raise ProtocolError(f"{manifest_path}: source {source} not found")
            frame, file_hash, frame_hash = _replay_source(source, entry, verify_sources)
            used.append((file_hash, frame_hash))
            result = _degrade_frame(
                frame, entry.crop_rows, manifest.crop, entry.params, entry.seed, source
            )
            del frame  # the frame read is freed before the output is written
            if target is not None:
                if out is not None and not written:
                    _mark_before_first_write(out, written)
                    set_aside_record(out, MANIFEST_NAME, earlier_outputs(out))
                written.append(
                    write_image(target, result, dtype, pixel_size_nm=entry.pixel_size_nm)
                )
            hashes.append(_output_sha256(result, dtype))
            del result
            if hashes[-1] != entry.output_sha256:
                mismatched.append(entry.output)
        record = None
        if out is not None:
            replayed = manifest.model_copy(
                update={
                    "generator": _generator(),
                    "versions": library_versions(),
                    "entries": [
                        e.model_copy(
                            update={
                                "source": path_text(_relative_to(src, out)),
                                "source_sha256": u[0],  # the source as replayed (its pixels
                                "source_pixels_sha256": u[1],  # may have matched, not its file)
                                "output_sha256": h,
                            }
                        )
                        for e, src, u, h in zip(
                            manifest.entries, sources, used, hashes, strict=True
                        )
                    ],
                }
            )
            record = replayed.save(out / MANIFEST_NAME)
            written.clear()  # listed by the new manifest: kept from here
            remove_earlier_outputs(out, MANIFEST_NAME, [t for t in targets if t], sources)
            clear_incomplete(out)
    return ReplayResult(
        checked=len(manifest.entries),
        mismatched=mismatched,
        manifest=str(record) if record is not None else None,
        versions=manifest.versions,
    )
