"""``sem-degrade``: degrade SEM images with the forward model and write a manifest.

Examples::

    sem-degrade --make-samples samples --sample --seed 0 -o degraded
    sem-degrade image.tif --midpoint --crop info-bar -o out --json
    sem-degrade images/ --rx-px 12 --ry-px 8 --theta-rad 0.5 -o out
    sem-degrade --replay out/manifest.json
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from pydantic import ValidationError

from .io import DEFAULT_CROP_FRACTION
from .params import DegradationParams, ParameterRanges
from .protocol import MANIFEST_NAME, Mode, degrade_files, find_images, replay_manifest
from .samples import write_samples

PROG = "sem-degrade"
_PARAM_FLAGS = {
    "rx_px": "PSF scale along x' in px (0, 1000]",
    "ry_px": "PSF scale along y' in px (0, 1000]",
    "beta": "Airy exponent (0, 10]",
    "theta_rad": "astigmatism angle in rad [-2pi, 2pi]",
    "gain": "gain a (0, 100]",
    "offset": "offset b on the 0..255 scale [-255, 255]",
    "sigma": "Gaussian noise std on the 0..255 scale [0, 255]",
    "dose": "electrons per grey level (0, 1e9]",
}


class CLIError(ValueError):
    """A user error: printed as one line, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Simulate defocused, noisy SEM images y = N(a (x * h) + b) with a seeded, "
        f"replayable protocol; writes the images and {MANIFEST_NAME}.",
    )
    parser.add_argument("inputs", nargs="*", type=Path, help="image files or folders")
    parser.add_argument("-o", "--out", type=Path, help="output folder (created)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--sample", action="store_true", help="draw parameters per image from the paper's ranges"
    )
    mode.add_argument(
        "--midpoint", action="store_true", help="every parameter at its range midpoint (default)"
    )
    mode.add_argument("--replay", type=Path, metavar="MANIFEST", help="replay and verify")
    parser.add_argument("--seed", type=int, default=0, help="master seed (default 0)")
    group = parser.add_argument_group(
        "explicit parameters (any given: explicit mode; the others take their midpoint value)"
    )
    for name, help_text in _PARAM_FLAGS.items():
        group.add_argument(f"--{name.replace('_', '-')}", type=float, dest=name, help=help_text)
    parser.add_argument(
        "--crop",
        choices=("none", "info-bar", "fraction"),
        default="none",
        help="remove the info bar first: detected rows (else the fraction), or the fraction",
    )
    parser.add_argument(
        "--crop-fraction", type=float, default=DEFAULT_CROP_FRACTION, help="default 0.0667"
    )
    parser.add_argument(
        "--format",
        choices=("float32-tiff", "uint16-png"),
        default="float32-tiff",
        help="output format (float32 TIFF keeps values unclipped)",
    )
    parser.add_argument(
        "--make-samples",
        type=Path,
        metavar="DIR",
        help="write the built-in SEM-like sample images to DIR (used as input if none given)",
    )
    parser.add_argument("--n-samples", type=int, default=2, help="samples per kind (default 2)")
    parser.add_argument("--json", action="store_true", help="print the parameters used as JSON")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    return parser


def _validation_message(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        field = str(e["loc"][-1]) if e["loc"] else "value"
        parts.append(f"--{field.replace('_', '-')} {e['msg'].lower()} (got {e.get('input')!r})")
    return "; ".join(parts)


def _explicit_params(args: argparse.Namespace) -> DegradationParams | None:
    given = {n: getattr(args, n) for n in _PARAM_FLAGS if getattr(args, n) is not None}
    if not given:
        return None
    if args.sample:
        raise CLIError("explicit parameters cannot be combined with --sample")
    if args.midpoint:
        raise CLIError("explicit parameters cannot be combined with --midpoint")
    values = ParameterRanges().midpoint().model_dump() | given
    try:
        return DegradationParams(**values)
    except ValidationError as err:
        raise CLIError(_validation_message(err)) from None


def _progress_bar() -> Callable[[Iterable[Path]], Iterable[Path]] | None:
    """A tqdm progress bar over the images when tqdm is installed (it is optional)."""
    try:
        from tqdm import tqdm
    except ImportError:
        return None

    def bar(items: Iterable[Path]) -> Iterable[Path]:
        return tqdm(items, desc=PROG, unit="img")

    return bar


def run(args: argparse.Namespace) -> int:
    if args.replay is not None:
        result = replay_manifest(args.replay, args.out)
        if args.json:
            print(result.model_dump_json(indent=2))
        if not result.ok:
            raise CLIError(
                f"{len(result.mismatched)} of {result.checked} outputs differ from "
                f"{args.replay}: {', '.join(result.mismatched)}"
            )
        print(f"{PROG}: {result.checked} outputs reproduced bit for bit", file=sys.stderr)
        return 0
    if args.n_samples < 1:
        raise CLIError(f"--n-samples must be >= 1, got {args.n_samples}")
    if args.seed < 0:
        raise CLIError(f"--seed must be >= 0, got {args.seed}")
    if not 0 <= args.crop_fraction < 1:
        raise CLIError(f"--crop-fraction must be in [0, 1), got {args.crop_fraction}")
    params = _explicit_params(args)
    inputs = list(args.inputs)
    if args.make_samples is not None:
        written = write_samples(args.make_samples, n_per_kind=args.n_samples, seed=args.seed)
        print(f"{PROG}: wrote {len(written)} samples to {args.make_samples}", file=sys.stderr)
        if not inputs:
            inputs = [args.make_samples]
    if not inputs:
        if args.out is None:
            raise CLIError("no input images (give files/folders, or --make-samples DIR)")
        raise CLIError("no input images given")
    if args.out is None:
        if args.make_samples is not None and not args.inputs:
            return 0
        raise CLIError("an output folder is required: -o/--out DIR")
    mode: Mode = "explicit" if params is not None else ("sample" if args.sample else "midpoint")
    files = find_images(inputs)
    progress = _progress_bar() if len(files) > 1 and sys.stderr.isatty() else None

    manifest = degrade_files(
        files,
        args.out,
        mode=mode,
        params=params,
        master_seed=args.seed,
        crop=args.crop,
        crop_fraction=args.crop_fraction,
        output_format=args.format,
        progress=progress,
    )
    if args.json:
        rows = [
            {"source": str(f), "output": e.output, "seed": e.seed, **e.params.model_dump()}
            for f, e in zip(files, manifest.entries, strict=True)
        ]
        print(json.dumps(rows, indent=2))
    print(
        f"{PROG}: {len(manifest.entries)} images ({mode}) -> {args.out / MANIFEST_NAME}",
        file=sys.stderr,
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (0 ok, 2 user error)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return run(args)
    except ValidationError as err:
        if args.debug:
            raise
        print(f"{PROG}: error: {_validation_message(err)}", file=sys.stderr)
        return 2
    except (ValueError, OSError) as err:  # ImageReadError, ProtocolError, CLIError, ...
        if args.debug:
            raise
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
