"""``sem-measure``: line/space and contact-hole metrology from the command line.

Examples
--------
``sem-measure lines lines.tif --json`` (pixel size from the file's metadata)
``sem-measure lines lines.tif --pixel-size-nm 0.827 --report lines.png --csv``
``sem-measure contacts contacts.tif --json --report contacts.png``

Exit codes: 0 measured; 1 image read but not measurable (result flagged invalid); 2 bad input
(unreadable file, bad option, missing pixel size) — one line on stderr (``--debug`` for the
traceback).
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sem_physics.io import DEFAULT_CROP_FRACTION, read_image

__all__ = ["LoadedImage", "load_image", "main"]

_INFO_BAR_FRACTION = DEFAULT_CROP_FRACTION


class InputError(Exception):
    """Bad command-line input; reported as one line with exit code 2."""


@dataclass
class LoadedImage:
    """An image ready to measure: info bar removed, pixel size and its source."""

    data: np.ndarray
    pixel_size_nm: float | None
    pixel_size_source: str
    info_bar_rows: int


def load_image(path: str | Path, info_bar: str = "auto") -> LoadedImage:
    """Read an SEM image with ``sem_physics.io`` (pixel size from metadata) and drop the info bar.

    ``info_bar``: ``'auto'`` (the rows :func:`sem_physics.io.read_image` found: FEI metadata or
    :func:`sem_physics.io.detect_info_bar`, frame line included; else the bottom 6.67 %),
    ``'none'``, or a number of bottom rows to remove.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"image file not found: {p}")
    try:
        sem = read_image(p)
    except (OSError, ValueError) as err:
        raise InputError(f"cannot read image {p}: {err}") from err
    data = np.asarray(sem.data)
    size = sem.pixel_size_nm
    source = sem.pixel_size_source if size is not None else "none"
    if info_bar == "none":
        rows = 0
    elif info_bar == "auto":
        bar_rows = sem.info_bar_rows
        rows = int(bar_rows) if bar_rows is not None else round(_INFO_BAR_FRACTION * data.shape[0])
    else:
        try:
            rows = int(info_bar)
        except ValueError:
            raise InputError(
                f"--info-bar must be 'auto', 'none' or a row count, got {info_bar!r}"
            ) from None
        if not 0 <= rows < data.shape[0]:
            raise InputError(f"--info-bar rows must be in [0, {data.shape[0] - 1}], got {rows}")
    if rows:
        data = data[: data.shape[0] - rows]
    return LoadedImage(
        data=data, pixel_size_nm=size, pixel_size_source=str(source), info_bar_rows=rows
    )


def _pixel_size(args: argparse.Namespace, img: LoadedImage) -> tuple[float, str]:
    if args.pixel_size_nm is not None:
        return args.pixel_size_nm, "command line"
    if img.pixel_size_nm is None:
        raise InputError(
            f"no pixel size in the metadata of {args.image}; give --pixel-size-nm (nm per pixel)"
        )
    return float(img.pixel_size_nm), f"metadata ({img.pixel_size_source})"


def _emit(result: Any, args: argparse.Namespace, to_json: Callable[[], str]) -> int:
    """Print ``result`` as JSON, CSV or ``key: value`` lines; exit code 1 when not measurable."""
    if args.json:
        print(to_json())
    elif args.csv:
        print(result.to_csv("summary"), end="")
    else:
        for key, value in result.summary().items():  # 6 significant digits; JSON keeps all
            print(f"{key}: {value:.6g}" if isinstance(value, float) else f"{key}: {value}")
        for w in result.warnings:
            print(f"warning: {w}")
    if not result.valid:
        print(f"sem-measure: not measurable: {result.reason}", file=sys.stderr)
        return 1
    return 0


def _cmd_lines(args: argparse.Namespace) -> int:
    from .lines import LineOptions, measure_lines

    img = load_image(args.image, args.info_bar)
    size, source = _pixel_size(args, img)
    options = LineOptions(
        tone=args.tone,
        orientation=args.orientation,
        edge_method=args.method,
        threshold=args.threshold,
        intensity_levels=args.levels,
    )
    result = measure_lines(img.data, size, options).model_copy(update={"pixel_size_source": source})
    if args.report:
        from .report import save_line_report

        save_line_report(result, img.data, args.report, title=str(args.image))
    return _emit(result, args, lambda: result.to_json(include_edges=args.include_edges))


def _cmd_contacts(args: argparse.Namespace) -> int:
    from .contacts import ContactOptions, measure_contacts

    img = load_image(args.image, args.info_bar)
    size, source = _pixel_size(args, img)
    options = ContactOptions(tone=args.tone, threshold=args.threshold)
    result = measure_contacts(img.data, size, options).model_copy(
        update={"pixel_size_source": source}
    )
    if args.report:
        from .report import save_contact_report

        save_contact_report(result, img.data, args.report, title=str(args.image))
    return _emit(result, args, lambda: result.to_json(include_contours=args.include_contours))


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (np.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sem-measure",
        description="SEM metrology: line/space (CD, LWR, LER, PSD) and contacts.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("image", type=Path, help="SEM image file (TIFF, PNG, ...)")
    common.add_argument(
        "--pixel-size-nm",
        type=_positive_float,
        default=None,
        help="nm per pixel (default: from the file's metadata)",
    )
    common.add_argument("--json", action="store_true", help="print the result as JSON")
    common.add_argument("--report", type=Path, default=None, help="write a PNG report here")
    common.add_argument(
        "--info-bar", default="auto", help="'auto' (default), 'none', or bottom rows to remove"
    )
    common.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    lines = sub.add_parser("lines", parents=[common], help="line/space metrology")
    lines.add_argument("--csv", action="store_true", help="print a one-row CSV summary")
    lines.add_argument(
        "--include-edges", action="store_true", help="with --json: include per-row edge positions"
    )
    lines.add_argument(
        "--method", choices=["polynomial", "linear", "threshold"], default="polynomial"
    )
    lines.add_argument("--threshold", type=float, default=0.5)
    lines.add_argument("--tone", choices=["auto", "bright", "dark"], default="auto")
    lines.add_argument("--orientation", choices=["auto", "vertical", "horizontal"], default="auto")
    lines.add_argument(
        "--levels",
        choices=["smile", "percentile"],
        default="smile",
        help="0/1 intensity levels: min/max of the 5x5 median (SMILE) or its 1st/99th "
        "percentiles (robust to small artefacts)",
    )
    lines.set_defaults(func=_cmd_lines)
    contacts = sub.add_parser("contacts", parents=[common], help="contact-hole metrology")
    contacts.add_argument("--csv", action="store_true", help="print a one-row CSV summary")
    contacts.add_argument(
        "--include-contours", action="store_true", help="with --json: include hole contours"
    )
    contacts.add_argument("--threshold", type=float, default=0.5)
    contacts.add_argument("--tone", choices=["auto", "dark", "bright"], default="auto")
    contacts.set_defaults(func=_cmd_contacts)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``sem-measure``; returns the exit code."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse already printed its one-line usage error
        return int(exc.code or 0)
    try:
        return int(args.func(args))
    except (InputError, ValueError, OSError) as err:
        if args.debug:
            traceback.print_exc()
        message = " ".join(str(err).split())
        print(f"sem-measure: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
