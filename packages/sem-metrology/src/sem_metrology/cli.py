"""``sem-measure``: line/space and contact-hole metrology from the command line.

Examples
--------
``sem-measure lines lines.tif --json`` (pixel size from the file's metadata)
``sem-measure lines lines.tif --roi 44 865 52 1215 --convention smile --json``
``sem-measure lines lines.tif --pixel-size-nm 0.827 --report out/ --csv``
``sem-measure lines FOLDER --csv --output table.csv`` (every image below FOLDER, one row each)
``sem-measure contacts contacts.tif --json --report contacts.png``

Exit codes: 0 measured; 1 not measurable (one image: result flagged invalid; a folder: no
image measured, or any failure with ``--strict``) or the run failed (disk full, out of memory);
2 bad input (unreadable file, bad option, missing or unphysical pixel size; a folder: no image
could be read) — one line ``sem-measure: error: ...`` on stderr (``--debug`` for the
traceback), as every console script of the toolkit decides it
(:func:`sem_physics.cli_support.describe_error`).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import traceback
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sem_physics.cli_support import (
    EXIT_BAD_INPUT,
    OneLineParser,
    add_max_pixels,
    add_version,
    describe_error,
    is_validation_error,
    number,
    path_text,
    plain_text,
    stderr_is_terminal,
    validation_message,
)
from sem_physics.folders import IMAGE_EXTENSIONS, image_files, report_not_followed
from sem_physics.pipes import console_main

if TYPE_CHECKING:  # numpy and the measurement modules load after argument parsing
    import numpy as np
    from sem_physics.protocol import SourceRecord

__all__ = ["LoadedImage", "load_image", "main"]

IMAGE_SUFFIXES = IMAGE_EXTENSIONS
_log = logging.getLogger(__name__)


class InputError(Exception):
    """Bad command-line input; reported as one line with exit code 2."""

    exit_status = EXIT_BAD_INPUT  # read by describe_error


@dataclass
class LoadedImage:
    """A read SEM image: the full frame, the bottom rows to leave out, the pixel size."""

    data: np.ndarray
    pixel_size_nm: float | None
    pixel_size_source: str
    info_bar_rows: int
    notes: tuple[str, ...] = ()  # what reading changed (a colour image combined into grey)
    info_bar_source: str = "auto"  # 'auto' (detected), 'option' (--info-bar ROWS) or 'none'
    acquisition: dict[str, Any] = field(default_factory=dict)  # from the vendor tags

    @property
    def measured(self) -> np.ndarray:
        """The frame without its info bar (what is measured and drawn)."""
        return self.data[: self.data.shape[0] - self.info_bar_rows]

    def source_record(self, path: str | Path) -> SourceRecord:
        """The record of the file ``path`` this image was read from, as a result keeps it
        (:class:`sem_physics.protocol.SourceRecord`): ``path`` as given (a byte that is not
        valid UTF-8 as ``\\xNN``), the sha256 of the file's bytes, ``pixels_sha256`` of
        :attr:`measured` (the float32 grey frame read, less the ``cropped_rows`` of the info
        bar, before any roi) and ``frame_pixels_sha256`` of the whole frame (the info bar
        included: ``smile`` turns the whole frame before it cuts its region), with the pixel
        size of the file's metadata."""
        from sem_physics.protocol import SourceRecord

        return SourceRecord.from_pixels(
            path,
            self.measured,
            pixel_size_nm=self.pixel_size_nm,
            pixel_size_source=self.pixel_size_source,
            cropped_rows=self.info_bar_rows,
            frame=self.data,
        )


def load_image(
    path: str | Path, info_bar: str = "auto", max_pixels: int | None = None
) -> LoadedImage:
    """Read an SEM image with ``sem_physics.io`` (pixel size from metadata) and its info bar.

    ``info_bar``: ``'auto'`` (the rows :func:`sem_physics.io.read_image` found: FEI metadata or
    :func:`sem_physics.io.detect_info_bar`, frame line included; nothing when none is found),
    ``'none'``, or a number of bottom rows to leave out. The frame is kept whole (SMILE's
    rotation turns the whole frame); measurements leave the bar out and record it.
    ``max_pixels``: the pixel-count limit of ``read_image`` (default ``$SEM_MAX_PIXELS``).
    """
    import numpy as np
    from sem_physics.io import read_image

    from ._inputs import acquisition_dict

    p = Path(path)
    if not p.is_file():  # as sem-psf, sem-degrade and sem restore say it
        what = "a folder, not an image file" if p.is_dir() else "no such file or folder"
        raise InputError(f"{p}: {what}")
    try:
        sem = read_image(p, max_pixels=max_pixels)
    except (OSError, ValueError, MemoryError) as err:
        text = " ".join(str(err).split())
        if not text.startswith(str(p)):
            text = f"{p}: {text}"
        raise InputError(f"cannot read image {text}") from err
    data = np.asarray(sem.data)
    size = sem.pixel_size_nm
    source = sem.pixel_size_source if size is not None else "none"
    if info_bar == "none":
        rows = 0
    elif info_bar == "auto":
        rows = int(sem.info_bar_rows or 0)
    else:
        try:
            rows = int(info_bar)
        except ValueError:
            raise InputError(
                f"--info-bar must be 'auto', 'none' or a row count, got {info_bar!r}"
            ) from None
        if not 0 <= rows < data.shape[0]:
            raise InputError(f"--info-bar rows must be in [0, {data.shape[0] - 1}], got {rows}")
    return LoadedImage(
        data=data,
        pixel_size_nm=size,
        pixel_size_source=str(source),
        info_bar_rows=rows,
        notes=tuple(sem.notes),
        info_bar_source=info_bar if info_bar in ("auto", "none") else "option",
        acquisition=acquisition_dict(sem.acquisition),
    )


def _pixel_size(args: argparse.Namespace, img: LoadedImage, path: Path) -> tuple[float, str]:
    from ._inputs import check_pixel_size

    if args.pixel_size_nm is not None:
        return args.pixel_size_nm, "command line"
    if img.pixel_size_nm is None:
        raise InputError(
            f"no pixel size in the metadata of {path}; give --pixel-size-nm (nm per pixel)"
        )
    size = check_pixel_size(img.pixel_size_nm, f"pixel size in the metadata of {path}")
    return size, f"metadata ({img.pixel_size_source})"


def _measure(args: argparse.Namespace, path: Path, report: Path | None) -> Any:
    """Measure one image (lines or contacts) and write its report; returns the result."""
    img = load_image(path, args.info_bar, getattr(args, "max_pixels", None))
    size, source = _pixel_size(args, img, path)
    if args.command == "lines":
        from .lines import LineOptions, measure_lines

        options: Any = LineOptions(
            convention=args.convention,
            tone=args.tone,
            orientation=args.orientation,
            edge_method=args.method,
            threshold=args.threshold,
            intensity_levels=args.levels,
            roi=args.roi,
        )
        result: Any = measure_lines(img, size, options)
    else:
        from .contacts import ContactOptions, measure_contacts

        options = ContactOptions(
            tone=args.tone, threshold=args.threshold, roi=args.roi, min_holes=args.min_holes
        )
        result = measure_contacts(img, size, options)
    from ._provenance import measurement_versions

    update = {
        "pixel_size_source": source,
        "warnings": [*img.notes, *result.warnings],
        "source": img.source_record(path),  # which input, byte for byte and pixel for pixel
        "versions": measurement_versions(),
    }
    result = result.model_copy(update=update)
    if report is not None:
        from .report import save_contact_report, save_line_report

        save = save_line_report if args.command == "lines" else save_contact_report
        save(result, img.measured, report, title=path_text(path))  # a name not valid UTF-8: \xNN
        print(f"sem-measure: note: report: {path_text(report)}", file=sys.stderr)
    return result


def _to_json(result: Any, args: argparse.Namespace) -> str:
    if args.command == "lines":
        return result.to_json(include_edges=args.include_edges)
    return result.to_json(include_contours=args.include_contours)


def _emit(result: Any, args: argparse.Namespace) -> int:
    """Print ``result`` as JSON, CSV or ``key: value`` lines; exit code 1 when not measurable."""
    if args.json:
        text = _to_json(result, args) + "\n"
    elif args.csv:
        text = result.to_csv("summary")
    else:
        text = _human_text(result)
    _write_output(text, args, csv=bool(args.csv))
    if not result.valid:
        where = path_text(args.image)
        print(f"sem-measure: error: {where}: not measurable: {result.reason}", file=sys.stderr)
        return 1
    return 0


def _human_text(result: Any) -> str:
    """``key: value`` lines (6 significant digits; JSON keeps all), the reason only when there
    is one, levels with their unit, then the warnings."""
    lines = []
    for key, value in result.summary().items():
        if (key == "reason" and value is None) or value == "":
            continue  # no reason, no fit flags
        if key == "levels" and value:
            value = f"{value} (grey levels)"
        if value is None:
            value = "n/a"  # not measured (null in the JSON)
        lines.append(f"{key}: {value:.6g}" if isinstance(value, float) else f"{key}: {value}")
    return "".join(f"{line}\n" for line in lines) + "".join(
        f"warning: {w}\n" for w in result.warnings
    )


def _write_output(text: str, args: argparse.Namespace, *, csv: bool = False) -> None:
    """``text`` to stdout or ``--output``; a CSV file that is not all ASCII (a file name's
    letters: the values' own symbols are spelled in ASCII) gets a UTF-8 byte-order mark, without
    which Excel reads it in the ANSI code page."""
    text = plain_text(text)  # a file name that is not valid UTF-8: its bytes as \xNN
    if args.output is None:
        sys.stdout.write(text)
        return
    from sem_physics.atomic import atomic_write_text

    from ._csv import file_text

    atomic_write_text(args.output, file_text(text) if csv else text)


def _report_paths(
    args: argparse.Namespace, images: Sequence[Path], root: Path | None
) -> dict[Path, Path]:
    """Where the PNG report of each image goes (none without ``--report``): ``--report``
    itself, or a file inside it named after the image's path below ``root`` (``/`` as ``__``)
    plus ``_<command>.png``. Names are unique within the run (compared ignoring case): images
    that would share one keep their extension (``x.tif_lines.png``, ``x.png_lines.png``), and
    a name still shared gets ``_2``, ``_3``, ... in the order of ``images``."""
    rep = args.report
    if rep is None:
        return {}
    if root is None and not args.report_is_dir:
        return {image: rep for image in images}
    rels = [image.relative_to(root) if root is not None else Path(image.name) for image in images]
    stems = ["__".join(rel.with_suffix("").parts) for rel in rels]
    shared = Counter(stem.casefold() for stem in stems)
    tail = f"_{args.command}.png"
    used: set[str] = set()
    paths = {}
    for image, rel, stem in zip(images, rels, stems, strict=True):
        base = "__".join(rel.parts) if shared[stem.casefold()] > 1 else stem
        name, n = base + tail, 1
        while name.casefold() in used:
            n += 1
            name = f"{base}_{n}{tail}"
        used.add(name.casefold())
        paths[image] = rep / name
    return paths


def _images_below(folder: Path, outputs: Sequence[Path | None] = ()) -> list[Path]:
    """The images below ``folder`` (recursive, sorted) but those below or at ``outputs``
    (folders or files; one that is ``folder`` or holds it leaves nothing out). The folder is
    walked as every command walks one (:func:`sem_physics.folders.image_files`: hidden files
    and folders left out, linked folders followed once, one warning naming those that loop or
    lead back in)."""
    root = folder.resolve()
    left_out = [
        out
        for out in (p.resolve() for p in outputs if p is not None)
        if out != root and out not in root.parents
    ]

    def ours(p: Path) -> bool:
        resolved = p.resolve()
        return any(resolved == out or out in resolved.parents for out in left_out)

    listing = image_files(folder, IMAGE_SUFFIXES)
    report_not_followed(listing, _log)
    return sorted(p for p in listing.paths() if p.is_file() and not ours(p))


def _folder_inputs(args: argparse.Namespace, folder: Path) -> list[Path]:
    """The images of ``folder`` to measure: not this command's outputs, which a run into the
    folder left there (``--output``, the ``--report`` folder, and in a ``--report`` that is the
    folder itself or holds it, the report this run writes for another image)."""
    images = _images_below(folder, [args.report, args.output])
    inputs = images
    for _ in range(4):  # the names depend on the inputs (shared ones): until they settle
        reports = {r.resolve() for r in _report_paths(args, inputs, folder).values()}
        kept = [p for p in images if p.resolve() not in reports]
        if kept == inputs:
            break
        inputs = kept
    return inputs


def _check_outputs(
    args: argparse.Namespace, inputs: list[Path], folder: Path | None, reports: dict[Path, Path]
) -> None:
    """Refuse, before any work, outputs that would overwrite an input or land in a file;
    ``reports``: the report of each input (:func:`_report_paths`)."""
    resolved = {p.resolve() for p in inputs}
    for flag, out in (("--report", args.report), ("--output", args.output)):
        if out is None:
            continue
        if out.resolve() in resolved:
            raise InputError(f"{flag} {out} is an input image; it would be overwritten")
        if folder is not None and out.resolve() == folder.resolve() and flag == "--output":
            raise InputError(f"--output {out} is the input folder; give a file name")
    for image, report in reports.items():
        if report.resolve() in resolved:
            raise InputError(
                f"--report: the report of {path_text(image)}, {path_text(report)}, is an input "
                "image; it would be overwritten"
            )
    if args.report is not None and folder is not None and args.report.is_file():
        raise InputError(f"--report {args.report} must be a folder when measuring a folder")
    if args.output is not None and args.output.is_dir():
        raise InputError(f"--output {args.output} is a folder; give a file name")
    report_dir = folder is not None or args.report_is_dir  # reports are written inside it
    for flag, out, inside in (
        ("--report", args.report, report_dir),
        ("--output", args.output, False),
    ):
        blocker = None if out is None else _file_in_the_way(out / "_" if inside else out)
        if blocker is not None:  # else found only when writing, after every image is measured
            raise InputError(f"{flag} {out} cannot be created: {blocker} is a file, not a folder")
    if not args.overwrite:
        _refuse_existing(args, list(reports.values()))


def _refuse_existing(args: argparse.Namespace, reports: list[Path]) -> None:
    """Refuse existing files at the output paths (``--output``, the reports): not replaced
    without ``--overwrite``."""
    for flag, paths in (("--output", [args.output]), ("--report", reports)):
        existing = [p for p in paths if p is not None and p.exists()]
        if existing:
            more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
            raise InputError(
                f"{flag} {existing[0]}{more} exists: not overwritten; pass --overwrite to "
                f"replace it or choose another {flag}"
            )


def _file_in_the_way(path: Path) -> Path | None:
    """The existing file among the folders above ``path`` (None when it can be created)."""
    for parent in path.parents:
        if parent.exists():
            return None if parent.is_dir() else parent
    return None


def _cmd_one(args: argparse.Namespace) -> int:
    path = args.image
    reports = _report_paths(args, [path], None)
    _check_outputs(args, [path], None, reports)
    return _emit(_measure(args, path, reports.get(path)), args)


def _progress(paths: list[Path]) -> Any:
    """A progress bar on stderr over a folder's images, when stderr is a terminal."""
    if len(paths) < 2 or not stderr_is_terminal():
        return paths
    try:
        from tqdm import tqdm
    except ImportError:  # optional
        return paths
    return tqdm(paths, desc="sem-measure", unit="img", file=sys.stderr)


def _cmd_folder(args: argparse.Namespace) -> int:
    folder = args.image
    images = _folder_inputs(args, folder)
    if not images:
        raise InputError(f"no images ({', '.join(IMAGE_SUFFIXES)}) below {folder}")
    reports = _report_paths(args, images, folder)  # decided before any work
    _check_outputs(args, images, folder, reports)
    rows: list[dict[str, Any]] = []
    n_ok = n_read = 0  # measured; read (measured or not measurable)
    for path in _progress(images):
        row: dict[str, Any] = {"path": path_text(path.relative_to(folder).as_posix())}
        try:
            result = _measure(args, path, reports.get(path))
        except Exception as err:  # one bad file must not stop the batch
            if args.debug:
                traceback.print_exc()
            row.update(valid=False, error=plain_text(_one_line(err)))
        else:
            row.update(result.summary())
            row["error"] = None if result.valid else plain_text(f"not measurable: {result.reason}")
            row["warnings"] = plain_text("; ".join(result.warnings))
            if args.json:  # nested records: JSON only, the CSV row stays flat
                row.update(result.model_dump(mode="json", include={"source", "versions"}))
            n_ok += bool(result.valid)
            n_read += 1
        rows.append(row)
    if args.json:
        text = json.dumps(rows, indent=2) + "\n"
    else:
        from ._csv import spreadsheet_csv

        text = spreadsheet_csv(rows, verbatim=("path",))
    _write_output(text, args, csv=not args.json)
    n_failed = len(rows) - n_ok
    for path, row in zip(images, rows, strict=True):  # as the run of that one image says it
        if row["error"]:
            where = path_text(path)
            text = row["error"] if where in row["error"] else f"{where}: {row['error']}"
            print(f"sem-measure: error: {text}", file=sys.stderr)
    if n_ok == 0 or (args.strict and n_failed):
        print(
            f"sem-measure: error: {args.image}: {n_ok} of {len(rows)} image(s) measured",
            file=sys.stderr,
        )
        # none read: bad input, as one unreadable image (and sem-psf, sem-degrade, sem restore)
        return EXIT_BAD_INPUT if n_read == 0 else 1
    return 0


def _unused_option_warnings(args: argparse.Namespace) -> list[str]:
    """One line per given option that does nothing in this command (printed, not refused)."""
    out = []
    flag = "--include-edges" if args.command == "lines" else "--include-contours"
    if getattr(args, flag[2:].replace("-", "_"), False) and not args.json:
        out.append(f"{flag} is ignored without --json (text and CSV hold no per-row values)")
    return out


def _dispatch(args: argparse.Namespace) -> int:
    for text in _unused_option_warnings(args):
        print(f"sem-measure: warning: {text}", file=sys.stderr)
    args.report_is_dir = False
    if args.report is not None:
        args.report_is_dir = args.report.endswith(("/", "\\")) or Path(args.report).is_dir()
        args.report = Path(args.report)
    if args.image.is_dir():
        return _cmd_folder(args)
    return _cmd_one(args)


PIXEL_SIZE_RANGE_NM = (1e-3, 1e6)  # the same bounds as the Python API (_inputs)


def _pixel_size_arg(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    lo, hi = PIXEL_SIZE_RANGE_NM
    if not (math.isfinite(value) and lo <= value <= hi):
        raise argparse.ArgumentTypeError(
            f"{text} nm is outside the physical range {lo:g} .. {hi:g} nm (1 pm .. 1 mm)"
        )
    return value


_FRACTION = number(float, low=0, high=1, low_open=True, high_open=True)
_AT_LEAST_ONE = number(int, low=1)


def _parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="sem-measure",
        description="SEM metrology: line/space (CD, LWR, LER, PSD) and contacts.",
    )
    add_version(parser, "sem-metrology")
    sub = parser.add_subparsers(dest="command", required=True)
    common = OneLineParser(add_help=False)
    common.add_argument("image", type=Path, help="SEM image file, or a folder (recursive)")
    common.add_argument(
        "--pixel-size-nm",
        type=_pixel_size_arg,
        default=None,
        help="nm per pixel, 1e-3 .. 1e6 (default: from the file's metadata)",
    )
    printed = common.add_mutually_exclusive_group()
    printed.add_argument("--json", action="store_true", help="print the result as JSON")
    printed.add_argument("--csv", action="store_true", help="print a CSV summary")
    common.add_argument(
        "--output", type=Path, default=None, help="write the printed result to this file"
    )
    common.add_argument(
        "--report", default=None, help="PNG report file, or a folder (existing, or ending in /)"
    )
    common.add_argument(
        "--overwrite",
        action="store_true",
        help="replace existing --output and --report files (default: refused before any work)",
    )
    common.add_argument(
        "--info-bar",
        default="auto",
        help="'auto' (default: a detected info bar only), 'none', or bottom rows to remove",
    )
    common.add_argument(
        "--roi",
        type=int,
        nargs=4,
        default=None,
        metavar=("ROW0", "ROW1", "COL0", "COL1"),
        help="measure rows ROW0..ROW1-1, columns COL0..COL1-1 (0-based, half-open)",
    )
    add_max_pixels(common, _AT_LEAST_ONE)
    common.add_argument("--strict", action="store_true", help="folder: any failure exits 1")
    common.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    lines = sub.add_parser("lines", parents=[common], help="line/space metrology")
    lines.add_argument(
        "--convention",
        choices=["smile", "truth"],
        default="smile",
        help="'smile' (default) reproduces SMILE3; 'truth' puts edges at the true half-level",
    )
    lines.add_argument(
        "--include-edges", action="store_true", help="with --json: include per-row edge positions"
    )
    lines.add_argument(
        "--method",
        choices=["polynomial", "linear", "threshold"],
        default="polynomial",
        help="truth convention's sub-pixel edge per row: polynomial fit (default), linear fit, "
        "or the raw crossing (smile always fits SMILE's polynomial)",
    )
    lines.add_argument(
        "--threshold",
        type=_FRACTION,
        default=0.5,
        help="edge level between the space (0) and line (1) levels, in (0, 1); default 0.5",
    )
    lines.add_argument(
        "--tone",
        choices=["auto", "bright", "dark"],
        default="auto",
        help="lines brighter or darker than the spaces (default: detected)",
    )
    lines.add_argument(
        "--orientation",
        choices=["auto", "vertical", "horizontal"],
        default="auto",
        help="direction of the lines (default: detected; horizontal ones are turned)",
    )
    lines.add_argument(
        "--levels",
        choices=["plateau", "median5", "percentile"],
        default="plateau",
        help="truth convention's 0/1 levels: the line/space plateaus (default), the 5x5 "
        "median's min/max, or its 1st/99th percentiles",
    )
    contacts = sub.add_parser("contacts", parents=[common], help="contact-hole metrology")
    contacts.add_argument(
        "--include-contours", action="store_true", help="with --json: include hole contours"
    )
    contacts.add_argument(
        "--threshold",
        type=_FRACTION,
        default=0.5,
        help="contour level between the surface and hole levels, in (0, 1); default 0.5",
    )
    contacts.add_argument(
        "--tone",
        choices=["auto", "dark", "bright"],
        default="auto",
        help="holes darker or brighter than the surface (default: detected)",
    )
    contacts.add_argument(
        "--min-holes",
        type=_AT_LEAST_ONE,
        default=3,
        help="fewer measured holes are refused (default 3; 1 measures a single hole)",
    )
    return parser


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    if isinstance(err, MemoryError):
        return f"out of memory ({text})"
    if is_validation_error(err):
        return validation_message(err)
    if not isinstance(err, (InputError, ValueError, OSError)):
        return f"{type(err).__name__}: {text}"
    return text


def _debug_after_command(argv: list[str]) -> list[str]:
    """``--debug`` given before the subcommand moved after it (an option of every
    subcommand), so that it goes anywhere, as in ``sem``."""
    command = next((i for i, a in enumerate(argv) if not a.startswith("-")), None)
    if command is None or "--debug" not in argv[:command]:
        return argv
    rest = [a for a in argv[:command] if a != "--debug"]
    return [*rest, argv[command], "--debug", *argv[command + 1 :]]


@console_main("sem-measure")
def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``sem-measure``; returns the exit code."""
    parser = _parser()
    try:  # an unknown option is reported by the subcommand it follows (OneLineParser)
        args = parser.parse_args(_debug_after_command(list(sys.argv[1:] if argv is None else argv)))
    except SystemExit as exc:  # argparse already printed its one-line usage error
        return int(exc.code or 0)
    try:
        return int(_dispatch(args))
    except BrokenPipeError:
        raise
    except Exception as err:  # every error type becomes one line; --debug shows the rest
        if args.debug:
            traceback.print_exc()
        code, msg = describe_error(err)  # as every console script of the toolkit
        if _about_the_image(err, msg, args.image):  # name the file the error is about
            msg = f"{args.image}: {msg}"
        print(f"sem-measure: error: {msg}", file=sys.stderr)
        return code


def _about_the_image(err: BaseException, msg: str, image: Path) -> bool:
    """Whether the error line should start with ``image``: not when it names it already, nor
    for an output that cannot be written or an option (``--output x exists``), which the line
    names instead."""
    from sem_physics.atomic import OutputWriteError

    return not (str(image) in msg or msg.startswith("--") or isinstance(err, OutputWriteError))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(None))
