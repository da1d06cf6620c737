"""Restoring files and folders: input listing, output paths, the ``restore.json`` manifest.

Folders are listed recursively; the output folder is never listed as input (so ``-o`` may
lie inside an input folder), an output path equal to an input path is refused, and existing
outputs are refused unless ``overwrite``. A file that cannot be read or restored is reported
with its reason and the others are still restored; an output that cannot be written (disk
full) stops the run, what was written recorded. One run at a time writes into a folder
(a second one stops at once). Before it writes its first output a run marks the folder
``INCOMPLETE`` (:func:`sem_physics.locking.mark_incomplete`) and sets an earlier
``restore.json`` aside (:func:`sem_physics.protocol.set_aside_record`: its output names are
noted in a hidden file, then it is removed). Once the new ``restore.json`` is written the
earlier outputs it does not list are removed, then the note, then the marker: an interrupted
run's outputs are never left unmarked, and the folder of a complete run holds the outputs its
``restore.json`` lists and no other outputs of an earlier run.
"""

from __future__ import annotations

import datetime as _dt
import errno
import json
import os
import sys
import tempfile
import threading
import time
import unicodedata
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sem_physics.atomic import OutputWriteError, atomic_write_text, remove_stale_temporaries
from sem_physics.cli_support import first_line, path_text, reason_without_path
from sem_physics.folders import FolderFiles, image_files
from sem_physics.io import IMAGE_EXTENSIONS, ImageReadError, check_image_path
from sem_physics.locking import (
    INCOMPLETE_MARKER,
    clear_incomplete,
    mark_incomplete,
    output_lock,
)
from sem_physics.protocol import file_sha256, remove_earlier_outputs, set_aside_record

from .api import PreparedMethod, RestoreWarning
from .files import (
    assemble,
    output_dtype,
    output_notes,
    output_suffix,
    output_value_scale,
    read_input,
    split_info_bar,
    write_restored,
)

__all__ = [
    "MANIFEST_NAME",
    "FailedInput",
    "RestoreJob",
    "RestoreManifest",
    "RestoreStoppedError",
    "RestoredFile",
    "check_inputs",
    "list_inputs",
    "plan_outputs",
    "restore_files",
    "run_provenance",
]

MANIFEST_NAME = "restore.json"


class RestoredFile(BaseModel):
    """One restored file: where from, where to, and how."""

    model_config = ConfigDict(extra="forbid")

    input: str
    input_sha256: str
    output: str = Field(description="path relative to the output folder")
    shape_px: tuple[int, int]
    info_bar_rows: int
    pixel_size_nm: float | None
    pixel_size_source: str
    acquisition: dict[str, Any] = Field(
        default_factory=dict,
        description="the input's acquisition conditions from its vendor tags "
        "(sem_physics.Acquisition.to_dict: beam_kv, magnification, working_distance_mm, "
        "dwell_time_us, detector, ...; None where unknown); absent from older records",
    )
    input_dtype: str
    output_dtype: str
    method: str
    parameters: dict[str, Any]
    psf: dict[str, Any] | None
    psf_source: str | None
    estimate: dict[str, Any] | None
    checkpoint: str | None
    input_scale: int = Field(
        default=1, description="power of two a dim picture was multiplied by for a learned method"
    )
    brightness: dict[str, Any] | None = Field(
        default=None, description="policy, input and method mean grey levels, shift added"
    )
    input_value_scale: float = Field(
        default=1.0, description="grey levels (0..255 scale) per unit of the input's values"
    )
    output_value_scale: float = Field(
        default=1.0, description="grey levels (0..255 scale) per unit of the output's values"
    )
    warnings: list[str] = Field(default_factory=list)
    input_notes: list[str] = Field(
        default_factory=list, description="what reading the input changed (colour to grey, JPEG)"
    )
    output_notes: list[str] = Field(
        default_factory=list, description="what writing changed (scale, tags not copied)"
    )
    timings_s: dict[str, float]


class FailedInput(BaseModel):
    """An input that was not restored, and why."""

    model_config = ConfigDict(extra="forbid")

    input: str
    reason: str = Field(description="why, without the path (that is ``input``)")


class RestoreManifest(BaseModel):
    """``restore.json``: the whole run, reproducible from it."""

    model_config = ConfigDict(extra="forbid")

    created_utc: str
    method: str
    psf: dict[str, Any] | str = Field(
        description="the PSF given with --psf (rx_px, ry_px, theta_rad, beta, as each image's "
        "psf), or 'auto': each image's own (blind estimate, or the paper's PSF)"
    )
    checkpoint: str | None
    options: dict[str, Any]
    float32: bool
    brightness: str = "input"
    notes: list[str] = Field(default_factory=list, description="about the inputs as given")
    provenance: dict[str, Any] = Field(
        default_factory=dict,
        description="what the numbers depend on: torch and FFT threads, package versions, "
        "the sha256 of the weights file a learned method loaded; absent from older records",
    )
    restored: list[RestoredFile] = Field(default_factory=list)
    failed: list[FailedInput] = Field(default_factory=list)
    load_s: float = 0.0
    total_s: float = 0.0

    @field_validator("psf", mode="before")
    @classmethod
    def _psf_object(cls, value: Any) -> Any:
        """A given PSF that an earlier version stored as JSON text is read as the object."""
        if isinstance(value, str) and value.lstrip().startswith("{"):
            try:
                parsed = json.loads(value)
            except ValueError:
                return value
            return parsed if isinstance(parsed, dict) else value
        return value


class RestoreJob(BaseModel):
    """One input and the output it goes to."""

    model_config = ConfigDict(frozen=True)

    input: Path
    output: Path


def _is_within(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True


def _other_runs_outputs(folder: Path, listing: FolderFiles) -> list[Path]:
    """Subfolders of ``folder`` (at any depth, as ``listing`` walked it) holding a
    ``restore.json``: another run's outputs."""
    return sorted(
        r.parent
        for r in (folder / rel for rel in listing.files)
        if r.name == MANIFEST_NAME and r.parent != folder and r.is_file()
    )


def _listed(f: Path) -> bool:
    """Whether ``f`` found in a folder is an input: a regular file, and also a dangling
    symbolic link or a special file (FIFO, socket, device) with an image's name, which then
    fails alone with its reason (a FIFO is never opened)."""
    return f.is_file() or f.is_symlink() or (f.exists() and not f.is_dir())


def list_inputs(
    inputs: Sequence[str | Path], out_dir: Path, notes: list[str] | None = None
) -> list[tuple[Path, Path]]:
    """(image file, folder its output path is relative to), folders listed recursively.

    Files inside an ``out_dir`` below a listed folder are skipped (earlier outputs are never
    restored again), and so are those of a subfolder holding a ``restore.json`` (another
    run's outputs; ``notes`` gets a line). A folder is walked as every command walks one
    (:func:`sem_physics.folders.image_files`: hidden files and folders left out, linked
    folders followed once; ``notes`` gets a line naming those that loop or lead back in).
    Dangling symbolic links and special files with an image's name are listed: they fail
    alone, with their reason. A missing path or a folder
    without images is a ValueError. A file given more than once (the same path twice, or a
    file and its folder) is one input, the first; ``notes`` gets a line saying so.
    """
    found: list[tuple[Path, Path]] = []
    skipped: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            # an -o below the folder holds earlier outputs: never read back; an -o equal to
            # (or above) the folder is refused later, output by output
            skip_out = not _is_within(p, out_dir)
            # the walk of every command (linked folders followed once), manifests included
            listing = image_files(p, (*IMAGE_EXTENSIONS, Path(MANIFEST_NAME).suffix))
            others = [
                d for d in _other_runs_outputs(p, listing) if d.resolve() != out_dir.resolve()
            ]
            files = sorted(
                f
                for f in listing.paths()
                if f.suffix.lower() in IMAGE_EXTENSIONS
                and _listed(f)
                and not (skip_out and _is_within(f, out_dir))
                and not any(f.is_relative_to(d) for d in others)
            )
            skipped += [d for d in others if d not in skipped]
            unfollowed = listing.not_followed_text()
            if not files:
                raise ValueError(
                    f"{p}: folder holds no images ({', '.join(IMAGE_EXTENSIONS)})"
                    + (f"; {unfollowed}" if unfollowed else "")
                )
            if unfollowed and notes is not None and unfollowed not in notes:
                notes.append(unfollowed)
            found.extend((f, p) for f in files)
        elif p.is_file():
            found.append((p, p.parent))
        else:
            raise FileNotFoundError(f"{p}: no such file or folder")
    if skipped and notes is not None:
        first = path_text(skipped[0])
        notes.append(
            f"{first} holds {MANIFEST_NAME} (another run's outputs): its images are not restored"
            if len(skipped) == 1
            else f"{len(skipped)} subfolders hold {MANIFEST_NAME} (other runs' outputs; first: "
            f"{first}): their images are not restored"
        )
    return _once(found, notes)


def _once(found: list[tuple[Path, Path]], notes: list[str] | None) -> list[tuple[Path, Path]]:
    """``found`` without the repeats of a file (the first kept), noted in ``notes``."""
    seen: set[Path] = set()
    unique, repeated = [], []
    for f, root in found:
        key = f.resolve()
        if key in seen:
            repeated.append(f)
            continue
        seen.add(key)
        unique.append((f, root))
    if repeated and notes is not None:
        first = path_text(repeated[0])
        notes.append(
            f"{first} is given more than once: restored once"
            if len(repeated) == 1
            else f"{len(repeated)} files are given more than once (first: {first}): "
            "each restored once"
        )
    return unique


def folds_case(folder: Path) -> bool:
    """Whether the file system of ``folder`` (or of its nearest existing parent) treats names
    that differ only in case as one file: a probe file is looked up by its swapped-case name.
    Unknown (no writable parent): assumed on Windows and macOS, as their defaults do."""
    probe_dir = Path(folder).absolute()
    while not probe_dir.exists() and probe_dir != probe_dir.parent:
        probe_dir = probe_dir.parent
    try:
        with tempfile.NamedTemporaryFile(prefix=".sem-CaseProbe-", dir=probe_dir) as f:
            name = Path(f.name)
            return name.with_name(name.name.swapcase()).exists()
    except OSError:
        return sys.platform in ("win32", "darwin")


def plan_outputs(
    inputs: Sequence[tuple[Path, Path]],
    out_dir: Path,
    *,
    float32: bool = False,
    overwrite: bool = False,
) -> list[RestoreJob]:
    """Output path of every input under ``out_dir`` (the input's path below its folder).

    Refuses (ValueError, before any work) an output equal to an input, two readable inputs
    with one output (on a file system that ignores case, as Windows' and macOS' do, also two
    names that differ only in case or Unicode form), and without ``overwrite`` existing outputs
    or a folder an interrupted run marked ``INCOMPLETE`` (its outputs would be replaced, those
    its record named removed).
    """
    all_inputs = {f.resolve() for f, _ in inputs}
    jobs: list[RestoreJob] = []
    seen: dict[str, tuple[Path, Path]] = {}  # output name as the file system tells it: (in, out)
    folds = folds_case(out_dir)
    existing: list[Path] = []
    for f, root in inputs:
        rel = f.relative_to(root) if f.is_relative_to(root) else Path(f.name)
        out = out_dir / rel.with_suffix(output_suffix(f, float32))
        key = out.resolve()
        if key in all_inputs:
            raise ValueError(
                f"output {out} would overwrite the input {f}; choose another -o folder"
            )
        readable = f.suffix.lower() in IMAGE_EXTENSIONS
        folded = unicodedata.normalize("NFC", str(key).casefold()) if folds else str(key)
        if folded in seen and readable:
            first, first_out = seen[folded]
            if first_out == out:
                raise ValueError(f"inputs {first} and {f} would both be written to {out}")
            raise ValueError(
                f"inputs {first} and {f} would be written to {first_out} and {out}, one file "
                f"in {out_dir}, whose file system ignores case"
            )
        if readable:
            # a file of unknown format fails alone when read (its line in restore.json) and
            # never writes: it claims no output name, so it cannot abort the batch as a clash
            seen[folded] = (f, out)
        if out.exists():
            existing.append(out)
        jobs.append(RestoreJob(input=f, output=out))
    manifest = out_dir / MANIFEST_NAME
    if manifest.exists():
        existing.append(manifest)
    interrupted = (out_dir / INCOMPLETE_MARKER).is_file()
    if (existing or interrupted) and not overwrite:
        # an interrupted run's outputs are replaced (and the ones its record named removed)
        # only when asked, even when this run's names do not clash with them
        parts = []
        if existing:
            parts.append(f"{len(existing)} output file(s) already exist (first: {existing[0]})")
        if interrupted:
            parts.append(
                f"{out_dir} holds the outputs of an interrupted run (it is marked "
                f"{INCOMPLETE_MARKER})"
            )
        parts.append("pass --overwrite to replace them or choose another -o folder")
        raise ValueError("; ".join(parts))
    return jobs


def _out_folder(out_dir: str | Path) -> Path:
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"-o {out_dir} exists and is not a folder")
    return out_dir


def check_inputs(
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    *,
    float32: bool = False,
    overwrite: bool = False,
) -> list[RestoreJob]:
    """The jobs of a run into ``out_dir``, checked before any method is loaded: what
    :func:`list_inputs` and :func:`plan_outputs` refuse, and inputs none of which is a
    readable image file (:func:`sem_physics.io.check_image_path`; ``ImageReadError``). When
    some are, the others fail alone during the run, each with its line in ``restore.json``.
    """
    out_dir = _out_folder(out_dir)
    jobs = plan_outputs(list_inputs(inputs, out_dir), out_dir, float32=float32, overwrite=overwrite)
    problems = []
    for job in jobs:
        try:
            check_image_path(job.input)
        except ImageReadError as err:
            problems.append(str(err))
    if problems and len(problems) == len(jobs):
        if len(jobs) == 1:
            raise ImageReadError(problems[0])
        raise ImageReadError(
            f"none of the {len(jobs)} inputs is a readable image file (first: {problems[0]})"
        )
    return jobs


def _listed_outputs(record: Path) -> set[str]:
    """Outputs an earlier ``restore.json`` lists; none when it is missing or is no JSON object
    (its files are then left alone).

    Only ``restored[*].output`` is read, not the whole record: a record written by a later
    version, with fields this one does not know, still names its outputs.
    """
    try:
        doc = json.loads(record.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return set()
    restored = doc.get("restored") if isinstance(doc, dict) else None
    if not isinstance(restored, list):
        return set()
    return {
        r["output"] for r in restored if isinstance(r, dict) and isinstance(r.get("output"), str)
    }


#: errno values that only writing can raise: the output side, wherever they come from
_OUTPUT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS}


class RestoreStoppedError(RuntimeError):
    """An output could not be written (disk full, read-only, I/O error): the run stopped.

    The message names the output and what was recorded; ``exit_status`` is 1 (a failure of
    the run, not of one input)."""

    exit_status = 1


class _OutputFailed(Exception):
    """An error raised while writing ``path`` (wraps it; never leaves this module)."""

    def __init__(self, path: Path, err: BaseException) -> None:
        super().__init__(str(err))
        self.path = path
        self.err = err


def _output_side(err: BaseException) -> bool:
    """Whether ``err`` comes from writing, whatever was being done when it was raised."""
    return isinstance(err, _OutputFailed | OutputWriteError) or (
        isinstance(err, OSError) and err.errno in _OUTPUT_ERRNOS
    )


def run_provenance(method: PreparedMethod) -> dict[str, Any]:
    """Threads, package versions and weights of a run: what its last digits depend on."""
    from ..runinfo import runtime_provenance
    from .threads import fft_threads

    shared = runtime_provenance()  # torch_threads None: a method without a model never loads it
    return {  # the keys in the record's order: torch_threads, fft_threads, cpu_count, versions
        "torch_threads": shared.pop("torch_threads"),
        "fft_threads": fft_threads(),
        **shared,
        "weights": method.weights_record(),
    }


def _progress(jobs: list[RestoreJob], enabled: bool | None) -> Iterator[RestoreJob]:
    """``jobs`` under a bar naming the file being restored; its clock ticks every second, so a
    single large image (minutes) shows that it is being worked on."""
    from tqdm.auto import tqdm

    bar = tqdm(
        total=len(jobs),
        desc="restoring",
        unit="image",
        file=sys.stderr,
        disable=None if enabled is None else not enabled,
    )
    stop = threading.Event()
    ticker = None
    if not bar.disable:

        def tick() -> None:
            while not stop.wait(1.0):
                bar.refresh()

        ticker = threading.Thread(target=tick, name="restore-progress", daemon=True)
        ticker.start()
    try:
        for job in jobs:
            bar.set_postfix_str(job.input.name)
            yield job
            bar.update(1)
    finally:
        stop.set()
        if ticker is not None:
            ticker.join()  # no refresh after the bar is closed
        bar.close()


def restore_files(
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    method: PreparedMethod,
    *,
    float32: bool = False,
    overwrite: bool = False,
    bar_rows: int | None = None,
    progress: bool | None = None,
    on_failure: Callable[[Path, str], None] | None = None,
    max_pixels: int | None = None,
) -> RestoreManifest:
    """Restore every image of ``inputs`` into ``out_dir`` and write ``restore.json`` there.

    ``bar_rows`` overrides the detected info-bar height (0: restore the whole frame).
    ``max_pixels``: the pixel-count limit of reading (default ``$SEM_MAX_PIXELS``, 100 Mpx).
    ``progress``: None shows a bar on a terminal only. ``on_failure(path, reason)`` is called
    for each file that is skipped (``reason`` without the path:
    :func:`~sem_physics.cli_support.reason_without_path`). Returns
    the manifest (also written, atomically).

    ``out_dir`` is locked for the run (:func:`sem_physics.locking.output_lock`: another run
    into it raises ``OutputFolderBusyError``) and the temporaries a killed run left there are
    removed. Just before the first output is written ``out_dir`` is marked ``INCOMPLETE``
    (:func:`sem_physics.locking.mark_incomplete`) and an earlier ``restore.json`` there (with
    ``overwrite``) is set aside (:func:`sem_physics.protocol.set_aside_record`), so an
    interrupted run leaves no record naming files that have changed. Once the new
    ``restore.json`` is written, the outputs the earlier one listed that this run did not
    rewrite (fewer or renamed inputs, failed ones) are removed
    (:func:`sem_physics.protocol.remove_earlier_outputs`; never an input, never a file no
    record named), then the marker.

    A file that cannot be read or restored fails alone; an output that cannot be written
    (:class:`~sem_physics.atomic.OutputWriteError`: disk full, quota, read-only, I/O error)
    stops the run: what was restored is recorded, the folder stays marked ``INCOMPLETE`` and
    :class:`RestoreStoppedError` names the output. Paths that are not UTF-8 are recorded
    escaped (:func:`sem_physics.cli_support.path_text`); the record is checked to serialise before any output.
    """
    t_start = time.perf_counter()
    out_dir = _out_folder(out_dir)
    notes: list[str] = [f"{method.method}: {method.caution}"] if method.caution else []
    notes += [f"{method.method}: {n}" for n in getattr(method, "model_notes", [])]
    listed = list_inputs(inputs, out_dir, notes)
    with output_lock(out_dir):  # one run at a time; existing outputs are checked under it
        jobs = plan_outputs(listed, out_dir, float32=float32, overwrite=overwrite)
        remove_stale_temporaries(out_dir)
        psf = method.psf if isinstance(method.psf, str) else method.psf.model_dump(mode="json")
        manifest = RestoreManifest(
            created_utc=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            method=method.method,
            psf=psf,
            checkpoint=None if method.checkpoint is None else path_text(method.checkpoint),
            options=method.options,
            float32=float32,
            brightness=method.brightness,
            notes=notes,
            provenance=run_provenance(method),
            load_s=method.load_s,
        )
        manifest.model_dump_json()  # a record that cannot be written fails before any output
        record = out_dir / MANIFEST_NAME

        def before_first_write() -> None:  # an earlier run's record would name changed files
            if not manifest.restored:
                mark_incomplete(out_dir)
                set_aside_record(out_dir, MANIFEST_NAME, _listed_outputs(record))

        stopped: _OutputFailed | None = None
        outputs: list[Path] = []  # as on disk (a record's names are escaped when not UTF-8)
        for job in _progress(jobs, progress):
            try:
                item = _restore_one(
                    job, out_dir, method, float32, bar_rows, before_first_write, max_pixels
                )
                manifest.restored.append(item)
                outputs.append(job.output)
            except Exception as err:  # one bad input never stops the others; a write does
                if _output_side(err):
                    stopped = (
                        err if isinstance(err, _OutputFailed) else _OutputFailed(job.output, err)
                    )
                    break
                reason = reason_without_path(err, job.input)
                manifest.failed.append(FailedInput(input=path_text(job.input), reason=reason))
                if on_failure is not None:
                    on_failure(job.input, reason)
        manifest.total_s = time.perf_counter() - t_start
        if stopped is not None:
            _stop(stopped, manifest, record, len(jobs))
        if manifest.restored:  # nothing restored: nothing written, a rerun is not blocked
            atomic_write_text(record, manifest.model_dump_json(indent=2) + "\n")
            remove_earlier_outputs(out_dir, MANIFEST_NAME, outputs, [j.input for j in jobs])
            clear_incomplete(out_dir)
    return manifest


def _stop(stopped: _OutputFailed, manifest: RestoreManifest, record: Path, n_jobs: int) -> None:
    """Record what was written before an output failed (the folder stays marked
    ``INCOMPLETE``) and raise :class:`RestoreStoppedError` naming the output."""
    reason = first_line(stopped.err)
    where = path_text(stopped.path)
    if where not in reason:
        reason = f"{where}: {reason}"
    manifest.notes.append(f"stopped: {reason}")
    done = len(manifest.restored)
    if not done:
        kept = "nothing was restored"
    else:
        try:
            atomic_write_text(record, manifest.model_dump_json(indent=2) + "\n")
            kept = f"the {done} image(s) restored before it are listed in {path_text(record)}"
        except OSError as err:
            kept = f"{done} image(s) were restored but {MANIFEST_NAME} could not be written ({err})"
    raise RestoreStoppedError(
        f"{reason}; the run stopped after {done + len(manifest.failed)} of {n_jobs} input(s): "
        f"{kept}"
    ) from stopped.err


def _not_regular(path: Path) -> str | None:
    """Why ``path`` is no file to read (a dangling link, a FIFO, ...); None for a file."""
    if path.is_symlink() and not path.exists():
        target = path_text(os.readlink(path))
        return f"{path_text(path)}: dangling symbolic link (its target {target} does not exist)"
    if path.exists() and not path.is_file() and not path.is_dir():
        return f"{path_text(path)}: not a regular file (a FIFO, socket or device)"
    return None


def _restore_one(
    job: RestoreJob,
    out_dir: Path,
    method: PreparedMethod,
    float32: bool,
    bar_rows: int | None,
    before_write: Callable[[], None],
    max_pixels: int | None = None,
) -> RestoredFile:
    problem = _not_regular(job.input)
    if problem is not None:
        raise ImageReadError(problem)
    img = read_input(job.input, max_pixels)
    part = split_info_bar(img, bar_rows)
    with warnings.catch_warnings():  # its warnings go into restore.json and one line each
        warnings.simplefilter("ignore", RestoreWarning)
        result = method(part.image)
    dtype = output_dtype(img.source_dtype, float32)
    out_scale = output_value_scale(img, dtype)
    frame = assemble(result.image, part)
    try:
        before_write()
        write_restored(job.output, frame, dtype, img, part.bar_rows)
    except OSError as err:  # the output side: the run stops (see restore_files)
        raise _OutputFailed(job.output, err) from err
    return RestoredFile(
        input=path_text(job.input),
        input_sha256=file_sha256(job.input),
        output=path_text(Path(os.path.relpath(job.output, out_dir)).as_posix()),
        shape_px=(int(img.data.shape[0]), int(img.data.shape[1])),
        info_bar_rows=part.bar_rows,
        pixel_size_nm=img.pixel_size_nm,
        pixel_size_source=img.pixel_size_source,
        acquisition=img.acquisition.to_dict(),
        input_dtype=img.source_dtype,
        output_dtype=dtype,
        input_value_scale=img.value_scale,
        output_value_scale=out_scale,
        input_notes=list(img.notes),
        output_notes=output_notes(img, dtype, out_scale),
        **result.record(),
    )
