"""``sem-psf``: estimate the defocus PSF and the noise of SEM images, one line or block per image.

Examples::

    sem-psf image.tif                 # plain text
    sem-psf images/ other.png --json  # one JSON object per image (JSON lines)
    sem-psf --reference focused.tif defocused.tif   # measured from a pair of one field of view

A file that cannot be read or estimated is reported as ``sem-psf: error: FILE: why`` on stderr
and the others are still estimated. Exit status, as the toolkit's other commands: 0 when every
input, or with some failed at least one, was estimated (``--strict``: 1 when any failed), 2
when none could be. Heavy imports happen after the arguments are parsed, so
``sem-psf --help`` answers at once.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from .cli_support import (
    OneLineParser,
    add_max_pixels,
    add_version,
    crop_fraction_unused,
    first_line,
    path_text,
)
from .folders import IMAGE_EXTENSIONS, image_files, report_not_followed
from .pipes import console_main

PROG = "sem-psf"
_log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=PROG,
        description="Blind estimate of the defocus PSF (rx_px, ry_px, theta_rad, beta) and the "
        "Poisson-Gaussian noise (sigma, dose) of each image, with one-sigma uncertainties and "
        "quality flags.",
    )
    parser.add_argument(
        "inputs",
        nargs="+",
        type=Path,
        metavar="IMAGE",
        help="files or folders (recursive; linked folders followed once)",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per image")
    parser.add_argument(
        "--reference",
        type=Path,
        metavar="FOCUSED",
        help="a focused image of the same field of view at the same pixel size: each IMAGE's "
        "PSF, gain, offset and drift are then fitted against it (a measurement, not a blind "
        "estimate)",
    )
    parser.add_argument(
        "--crop",
        choices=("detected", "info-bar", "fraction", "none"),
        default="detected",
        help="remove the info bar first: the detected one (nothing when none is found, as "
        "'sem restore' does; default), detected rows else the fraction (info-bar), the "
        "fraction, or nothing",
    )
    parser.add_argument(
        "--crop-fraction",
        type=float,
        default=None,
        help="bottom fraction removed by --crop fraction, or by --crop info-bar when no bar is "
        "detected (default 0.0667)",
    )
    add_max_pixels(parser)
    parser.add_argument(
        "--strict", action="store_true", help="exit 1 if any input fails (default: skip it)"
    )
    parser.add_argument(
        "--debug", action="store_true", help="show tracebacks (the exit status is the same)"
    )
    add_version(parser, "sem-physics")
    return parser


def _expand(inputs: Sequence[Path]) -> Iterator[tuple[Path, str | None]]:
    """``(path, None)`` for every image to estimate, ``(path, reason)`` for a bad input.

    A folder's images are those every command reads (:func:`sem_physics.folders.image_files`:
    linked folders followed once; one warning names those that loop or lead back in)."""
    for item in inputs:
        if item.is_dir():
            listing = image_files(item, IMAGE_EXTENSIONS)
            report_not_followed(listing, _log)
            found = sorted(p for p in listing.paths() if p.is_file())
            if not found:
                yield item, f"folder holds no images ({', '.join(IMAGE_EXTENSIONS)})"
            for p in found:
                yield p, None
        elif item.is_file():
            yield item, None
        else:
            yield item, "no such file or folder"


def _estimate_file(
    path: Path, crop: str, fraction: float, max_pixels: int | None = None
) -> dict[str, Any]:
    from .estimate import estimate_degradation
    from .scan import row_jitter

    data, rows = _read_cropped(path, crop, fraction, max_pixels)
    try:
        est = estimate_degradation(data)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None
    jitter = row_jitter(data).model_dump(mode="json")
    return {
        "file": path_text(path),  # a name not valid UTF-8 with \xNN, as every record has it
        "rows_cropped": rows,
        **est.model_dump(mode="json"),
        "row_jitter": jitter,
    }


def _read_cropped(
    path: Path, crop: str, fraction: float, max_pixels: int | None = None
) -> tuple[Any, int]:
    """The image of ``path`` with its info bar removed as ``crop`` says, and the rows removed;
    a dim picture of more than 8 bits is warned about (its noise is estimated as it reads)."""
    data, rows, _ = _read_cropped_sized(path, crop, fraction, max_pixels)
    return data, rows


def _read_cropped_sized(
    path: Path, crop: str, fraction: float, max_pixels: int | None = None
) -> tuple[Any, int, float | None]:
    """:func:`_read_cropped` and the file's pixel size in nm (None when it records none)."""
    from .io import crop_info_bar, read_image, warn_dim_picture

    img = read_image(path, max_pixels=max_pixels)
    warn_dim_picture(img, "sem-psf estimates the PSF and noise")
    size = img.pixel_size_nm
    if crop == "none":
        return img.data, 0, size
    if crop == "detected":  # the micrograph sem restore estimates on
        rows = img.info_bar_rows or 0
        return crop_info_bar(img.data, rows), rows, size
    bar = img.info_bar_rows if crop == "info-bar" else None
    data = crop_info_bar(img.data, bar, fraction)
    return data, img.data.shape[0] - data.shape[0], size


#: Relative difference of two recorded pixel sizes beyond which a pair is of two magnifications.
PIXEL_SIZE_TOLERANCE = 0.01


def _pixel_size_reason(size: float | None, reference_size: float | None) -> str | None:
    """Why a pair is not one field of view at one scale, from the pixel sizes the two files
    record; None when they agree or either records none."""
    if size is None or reference_size is None:
        return None
    if abs(size - reference_size) <= PIXEL_SIZE_TOLERANCE * max(size, reference_size):
        return None
    return (
        f"pixel size {size:.4g} nm against the reference's {reference_size:.4g} nm (another "
        "magnification: the fit compares two scales)"
    )


def _pair_file(
    path: Path,
    reference: Path,
    focused: Any,
    crop: str,
    fraction: float,
    max_pixels: int | None = None,
    reference_rows: int = 0,
    reference_size: float | None = None,
) -> dict[str, Any]:
    """The pair fit of ``path`` against ``focused``, the image of ``reference`` (read once,
    ``reference_rows`` cropped from its bottom, ``reference_size`` nm per pixel recorded).

    Both frames of a pair lose the same rows: when the info bar is detected in one frame only
    (a defocused frame's bar blurred with the picture, or too dim to find), the larger crop is
    applied to both, as the frames are of one size and one layout. Pixel sizes recorded in
    both files that differ by more than 1 % are a reason not to trust the fit (and a warning
    line): the frames are of two magnifications."""
    from .calibrate import estimate_psf_from_pair

    data, rows, size = _read_cropped_sized(path, crop, fraction, max_pixels)
    scale_problem = _pixel_size_reason(size, reference_size)
    if scale_problem is not None:
        print(f"{PROG}: warning: {path}: {scale_problem}", file=sys.stderr)
    same_frame = (data.shape[0] + rows, data.shape[1]) == (
        focused.shape[0] + reference_rows,
        focused.shape[1],
    )
    if same_frame and rows != reference_rows:
        keep = data.shape[0] + rows - max(rows, reference_rows)
        print(
            f"{PROG}: note: {path}: info bar of {reference_rows} rows found in the reference and "
            f"of {rows} in this image: both cropped by {max(rows, reference_rows)} rows",
            file=sys.stderr,
        )
        data, focused, rows = data[:keep], focused[:keep], max(rows, reference_rows)
    try:
        est = estimate_psf_from_pair(focused, data)
    except ValueError as err:
        raise ValueError(f"{path}: {err} (reference {reference})") from None
    if scale_problem is not None:
        est = est.model_copy(update={"reasons": [*est.reasons, scale_problem]})
    return {"file": path_text(path), "reference": path_text(reference), "rows_cropped": rows,
            **est.model_dump(mode="json")}  # fmt: skip


def _pair_text(rec: dict[str, Any]) -> str:
    h, w = rec["shape"]
    psf = f"{rec['rx_px']:.2f},{rec['ry_px']:.2f},{rec['theta_rad']:.3f},{rec['beta']:g}"
    dy, dx = rec["shift_px"]
    fit = "ok" if not rec["reasons"] else "; ".join(rec["reasons"])
    return "\n".join(
        [
            f"{rec['file']} against {rec['reference']}  ({h} x {w} px, "
            f"{rec['pixels_fitted']} pixels fitted, {rec['seconds']:.1f} s)",
            f"  PSF    rx_px {_fmt(rec['rx_px'], rec['rx_px_err'])}   ry_px "
            f"{_fmt(rec['ry_px'], rec['ry_px_err'])}   theta_rad "
            f"{_fmt(rec['theta_rad'], rec['theta_rad_err'])} "
            f"({math.degrees(rec['theta_rad']):.0f}°)   beta {rec['beta']:g} (given)",
            f"  gain {_fmt(rec['gain'], rec['gain_err'])}   offset "
            f"{_fmt(rec['offset'], rec['offset_err'])} (0..255)   drift {dy:.2f}, {dx:.2f} px "
            "(rows, columns)",
            f"  fit: residual {rec['residual_rms']:.2f} grey levels rms against the image's noise "
            f"{rec['noise_rms']:.2f}: {fit}",
            f"  restore with: sem restore --psf {psf} ...",
        ]
    )


def _fmt(value: float | None, err: float | None, digits: int = 2) -> str:
    """``value ± err`` with the error to two significant digits and the value to the same
    decimal place (``0.300 ± 0.024``, ``22 ± 18``); ``digits`` decimals without an error. A
    value smaller than its error keeps two significant digits (``1.9 ± 320``, not ``0 ± 320``:
    a radius printed as 0 px would contradict the estimate)."""
    if value is None:
        return "n/a"
    if err is None or not math.isfinite(err) or err <= 0:
        return f"{value:.{digits}f}"
    place = math.floor(math.log10(err)) - 1  # the error's second significant digit
    value_place = place
    if value != 0 and math.isfinite(value):
        value_place = min(place, math.floor(math.log10(abs(value))) - 1)
    return f"{_at_place(value, value_place)} ± {_at_place(err, place)}"


def _at_place(x: float, place: int) -> str:
    """``x`` rounded to the decimal ``place`` (``10**place``): 1234 at 1 -> ``1230``."""
    if place > 0:  # e.g. 1234 ± 156 -> 1230 ± 160
        q = 10.0**place
        return f"{round(x / q) * q:.0f}"
    return f"{x:.{min(-place, 12)}f}"


def _text(rec: dict[str, Any]) -> str:
    h, w = rec["shape"]
    theta = rec["theta_rad"]
    deg = f" ({math.degrees(theta):.0f}°)" if theta is not None else ""
    q = rec["quality"]
    quality = "ok" if not q["reasons"] else "; ".join(q["reasons"])
    from .estimate import DOSE_CAP

    dose = (
        "n/a (no shot noise found)"
        if rec["dose"] >= 0.5 * DOSE_CAP
        else f"{_fmt(rec['dose'], rec['dose_err'])} e-/grey level"
    )
    return "\n".join(
        [
            f"{rec['file']}  ({h} x {w} px analysed, {rec['rows_cropped']} rows cropped, "
            f"{rec['seconds']:.2f} s)",
            f"  PSF    rx_px {_fmt(rec['rx_px'], rec['rx_px_err'])}   ry_px "
            f"{_fmt(rec['ry_px'], rec['ry_px_err'])}   theta_rad "
            f"{_fmt(theta, rec['theta_rad_err'])}{deg}   beta {_fmt(rec['beta'], rec['beta_err'])}"
            " (prior)",
            f"  noise  sigma {_fmt(rec['sigma'], rec['sigma_err'])} (0..255)   dose {dose}",
            f"  quality: {quality}",
            *(f"  note: {n}" for n in q.get("notes", [])),
            *_jitter_lines(rec.get("row_jitter")),
        ]
    )


def _jitter_lines(jitter: dict[str, Any] | None) -> list[str]:
    """One warning line when scan-line jitter was detected, else none."""
    if not jitter or not jitter.get("detected"):
        return []
    return [f"  warning: {jitter['reason']}"]


@console_main(PROG)
def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (0 estimated, 1 some failed with --strict, 2 none
    estimated or bad arguments)."""
    args = build_parser().parse_args(argv)
    problem = _usage_problem(args)
    if problem is not None:
        print(f"{PROG}: error: {problem}", file=sys.stderr)
        return 2
    if args.crop_fraction is None:
        from .info_bar import DEFAULT_CROP_FRACTION

        args.crop_fraction = DEFAULT_CROP_FRACTION
    done, failed = _estimate_all(args)  # a warning: one line "sem-psf: warning: ..."
    if not done and not failed:  # every input was the reference (in a folder)
        print(f"{PROG}: error: {_ONLY_REFERENCE}", file=sys.stderr)
        return 2
    if failed and not done:
        if failed > 1:  # as sem-degrade and sem restore say it
            print(f"{PROG}: error: none of the {failed} inputs could be estimated", file=sys.stderr)
        return 2
    if failed:
        total = done + failed
        more = "; exit 1 (--strict)" if args.strict else ""
        print(f"{PROG}: note: {failed} of {total} inputs failed{more}", file=sys.stderr)
    return 1 if failed and args.strict else 0


_ONLY_REFERENCE = (
    "nothing to estimate: the only image given is the --reference FOCUSED itself "
    "(give the defocused IMAGEs to fit against it)"
)


def _usage_problem(args: argparse.Namespace) -> str | None:
    """The one-line error of options that cannot run together or are out of range."""
    if args.crop_fraction is not None:
        if not 0 <= args.crop_fraction < 1:
            return f"--crop-fraction must be in [0, 1), got {args.crop_fraction}"
        unused = crop_fraction_unused(args.crop)
        if unused:
            return unused
    if args.reference is not None:
        if not args.reference.is_file():
            return f"--reference {args.reference}: no such file"
        reference = args.reference.resolve()
        if all(p.is_file() and p.resolve() == reference for p in args.inputs):
            return _ONLY_REFERENCE
    if args.max_pixels is not None and args.max_pixels < 1:
        return f"--max-pixels must be >= 1, got {args.max_pixels}"
    return None


def _error_text(err: Exception, path: Path) -> str:
    """The first line of ``err``, starting with ``path`` (read errors name the file already)."""
    text = first_line(err)
    return text if text.startswith(str(path)) else f"{path}: {text}"


def _estimate_all(args: argparse.Namespace) -> tuple[int, int]:
    """Estimate and print every input in turn; returns how many were estimated and failed."""
    done = failed = 0
    reference = args.reference.resolve() if args.reference is not None else None
    focused = None
    reference_rows, reference_size = 0, None
    if reference is not None:  # read once for every image
        try:
            focused, reference_rows, reference_size = _read_cropped_sized(
                args.reference, args.crop, args.crop_fraction, args.max_pixels
            )
        except (ValueError, OSError) as err:
            if args.debug:
                import traceback

                traceback.print_exc()
            print(f"{PROG}: error: --reference {_error_text(err, args.reference)}", file=sys.stderr)
            return 0, 1
    for path, problem in _expand(args.inputs):
        if reference is not None and problem is None and path.resolve() == reference:
            print(f"{PROG}: note: {path} skipped: it is the reference", file=sys.stderr)
            continue
        try:
            if problem is not None:
                raise ValueError(f"{path}: {problem}")
            if args.reference is not None:
                rec = _pair_file(
                    path,
                    args.reference,
                    focused,
                    args.crop,
                    args.crop_fraction,
                    args.max_pixels,
                    reference_rows,
                    reference_size,
                )
            else:
                rec = _estimate_file(path, args.crop, args.crop_fraction, args.max_pixels)
        except (ValueError, OSError) as err:  # ImageReadError is a ValueError naming the file
            if args.debug:  # the traceback, then the same line; the other files go on
                import traceback

                traceback.print_exc()
            failed += 1
            print(f"{PROG}: error: {_error_text(err, path)}", file=sys.stderr, flush=True)
            continue
        text = _pair_text(rec) if args.reference is not None else _text(rec)
        print(json.dumps(rec) if args.json else text, flush=True)
        done += 1
    return done, failed


if __name__ == "__main__":
    sys.exit(main())
