"""``sem-degrade``: degrade SEM images with the forward model and write a manifest.

Examples::

    sem-degrade --make-samples samples --sample --seed 0 -o degraded
    sem-degrade image.tif --midpoint --crop info-bar -o out --json
    sem-degrade images/ --rx-px 12 --ry-px 8 --theta-rad 0.5 -o out
    sem-degrade --replay out/manifest.json

Only argparse is imported until the arguments are parsed, so ``--help`` is instant; numpy,
scipy and pydantic load in :func:`run`.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .cli_support import (
    EXIT_RUN_FAILED,
    OneLineParser,
    add_max_pixels,
    add_version,
    crop_fraction_unused,
    describe_error,
    number,
    path_text,
    stderr_is_terminal,
    validation_message,
)
from .pipes import console_main

if TYPE_CHECKING:
    from .params import DegradationParams
    from .protocol import Mode

PROG = "sem-degrade"
MANIFEST = "manifest.json"  # sem_physics.protocol.MANIFEST_NAME, without importing it
_PARAM_FLAGS = {
    "rx_px": "PSF scale along x' in px (0, 1000]",
    "ry_px": "PSF scale along y' in px (0, 1000]",
    "beta": "Airy exponent (0, 10]",
    "theta_rad": "astigmatism angle in rad [-2pi, 2pi]",
    "gain": "gain a [0.01, 100]",
    "offset": "offset b on the 0..255 scale [-255, 255]",
    "sigma": "Gaussian noise std on the 0..255 scale [0, 255]",
    "dose": "electrons per grey level [0.01, 1e9]",
}
# what --replay uses besides the manifest, which holds the whole recipe
_REPLAY_OPTIONS = {
    "out": "-o/--out",
    "overwrite": "--overwrite",
    "json": "--json",
    "debug": "--debug",
}


class CLIError(ValueError):
    """A user error: printed as one line, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=PROG,
        description="Simulate defocused, noisy SEM images y = N(a (x * h) + b) with a seeded, "
        f"replayable protocol; writes the images and {MANIFEST}. Unreadable inputs are "
        "skipped and listed in the manifest; outputs never overwrite an input.",
    )
    parser.add_argument(
        "inputs",
        nargs="*",
        type=Path,
        help="image files or folders (not searched recursively: subfolders are noted)",
    )
    parser.add_argument("-o", "--out", type=Path, help="output folder (created)")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help=f"replace files at output paths that no earlier {MANIFEST} in -o lists (an "
        "earlier run's outputs are always replaced, with a note), and files at --make-samples "
        "names that differ from the samples",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--sample",
        action="store_true",
        help="draw parameters per image from the paper's ranges (radii up to 30 px: every "
        "image below 181 px per side, after the crop, is skipped, whatever its own draw)",
    )
    mode.add_argument(
        "--midpoint", action="store_true", help="every parameter at its range midpoint (default)"
    )
    mode.add_argument(
        "--replay",
        type=Path,
        metavar="MANIFEST",
        help="recompute every output from its sources and verify it against the manifest's "
        f"hashes (the recipe; files on disk are not read); with -o DIR also write them and a "
        f"{MANIFEST} there",
    )
    parser.add_argument("--seed", type=int, default=0, help="master seed (default 0)")
    group = parser.add_argument_group(
        "explicit parameters (any given: explicit mode; the others take their midpoint value)"
    )
    for name, help_text in _PARAM_FLAGS.items():
        group.add_argument(
            f"--{name.replace('_', '-')}",
            type=number(float, finite=True),
            dest=name,
            help=help_text,
        )
    parser.add_argument(
        "--crop",
        choices=("keep", "none", "info-bar", "fraction"),
        default="keep",
        help="the info bar: keep the detected one unchanged below the defocused micrograph "
        "(keep, default), remove it (info-bar: detected rows, else the fraction; fraction), or "
        "degrade the whole frame with it (none)",
    )
    parser.add_argument(
        "--crop-fraction",
        type=float,
        default=None,
        help="bottom fraction removed by --crop fraction (default 0.0667)",
    )
    parser.add_argument(
        "--format",
        choices=("float32-tiff", "uint16-png"),
        default="float32-tiff",
        help="output format (default float32-tiff: keeps values unclipped)",
    )
    parser.add_argument(
        "--make-samples",
        type=Path,
        metavar="DIR",
        help="write the built-in SEM-like sample images to DIR (used as input if none given)",
    )
    parser.add_argument("--n-samples", type=int, default=2, help="samples per kind (default 2)")
    add_max_pixels(parser)
    parser.add_argument(
        "--strict", action="store_true", help="exit 1 if any input fails (default: skip it)"
    )
    parser.add_argument("--json", action="store_true", help="print the parameters used as JSON")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    add_version(parser, "sem-physics")
    return parser


def _given(args: argparse.Namespace) -> list[str]:
    """The destinations in ``args`` whose value differs from the parser's default (the
    options given; ``inputs`` when any input is)."""
    parser = build_parser()
    return [
        dest
        for dest, value in vars(args).items()
        if (bool(value) if dest == "inputs" else value != parser.get_default(dest))
    ]


def _refuse_unused_options(args: argparse.Namespace, given: list[str]) -> None:
    """A :class:`CLIError` naming the options given that this run would not use."""
    if args.replay is not None:
        options = [d for d in given if d not in (*_REPLAY_OPTIONS, "replay", "inputs")]
        unused = [f"--{d.replace('_', '-')}" for d in options]
        if args.inputs:
            noun = "inputs" if len(args.inputs) > 1 else "input"
            unused.append(f"the {noun} {' '.join(map(str, args.inputs))}")
        if unused:
            raise CLIError(
                f"--replay takes the recipe from the manifest, not from {', '.join(unused)} "
                f"(it takes only {', '.join(_REPLAY_OPTIONS.values())})"
            )
        return
    problem = crop_fraction_unused(args.crop) if "crop_fraction" in given else None
    if problem:
        raise CLIError(problem)
    if "n_samples" in given and args.make_samples is None:
        raise CLIError("--n-samples needs --make-samples DIR (the samples it counts)")


def _percent(share: float) -> str:
    """A percentage to two significant digits, without an exponent: ``100``, ``13``,
    ``0.012``."""
    if not share > 0:
        return "0"
    rounded = float(f"{share:.2g}")
    return f"{rounded:.{max(0, 1 - math.floor(math.log10(rounded)))}f}"


def _count(n: int, noun: str, plural: str | None = None) -> str:
    """``1 image``, ``2 images``."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def _say(kind: str, message: str) -> None:
    print(f"{PROG}: {kind}: {message}", file=sys.stderr)


def _flag(loc: tuple[Any, ...]) -> str:
    """The option of a :class:`DegradationParams` field: ``("rx_px",)`` -> ``--rx-px``."""
    return "--" + str(loc[-1]).replace("_", "-")


def _explicit_params(args: argparse.Namespace) -> DegradationParams | None:
    from pydantic import ValidationError

    from .params import DegradationParams, ParameterRanges

    given = {n: getattr(args, n) for n in _PARAM_FLAGS if getattr(args, n) is not None}
    if not given:
        return None
    if args.sample:
        raise CLIError("explicit parameters cannot be combined with --sample")
    if args.midpoint:
        raise CLIError("explicit parameters cannot be combined with --midpoint")
    values = ParameterRanges().midpoint().model_dump() | given
    try:
        params = DegradationParams(**values)
    except ValidationError as err:
        raise CLIError(validation_message(err, DegradationParams, label=_flag)) from None
    for note in params.outside_paper_ranges():
        _say("warning", note)
    return params


def _progress_bar() -> Callable[[Iterable[Path]], Iterable[Path]] | None:
    """A tqdm progress bar over the images when tqdm is installed (it is optional)."""
    try:
        from tqdm import tqdm
    except ImportError:
        return None

    def bar(items: Iterable[Path]) -> Iterable[Path]:
        return tqdm(items, desc=PROG, unit="img")

    return bar


def _replay(args: argparse.Namespace) -> int:
    from .protocol import library_versions, replay_manifest

    result = replay_manifest(args.replay, args.out, overwrite=args.overwrite)
    if args.json:
        print(result.model_dump_json(indent=2))
    if not result.ok:
        now = library_versions()
        then = result.versions or {}
        changed = [
            f"{k} {then[k]} then, {now[k]} now" for k in now if k in then and then[k] != now[k]
        ]
        why = (
            f" (versions differ: {'; '.join(changed)})"
            if changed
            else ("" if then else " (the manifest records no library versions)")
        )
        raise CLIError(
            f"{_count(len(result.mismatched), 'output')} of {result.checked} "
            f"{'differs' if len(result.mismatched) == 1 else 'differ'} from "
            f"{args.replay}{why}: {', '.join(result.mismatched)}"
        )
    if args.out is None:
        _say(
            "note",
            f"recipe verified: {_count(result.checked, 'output')} recomputed from the "
            "sources, bit for bit equal to the manifest's hashes (the output files on disk were "
            "not read; -o DIR writes them)",
        )
    else:
        _say(
            "note",
            f"{_count(result.checked, 'output')} reproduced bit for bit -> {result.manifest}",
        )
    return 0


def run(args: argparse.Namespace) -> int:
    """Run a parsed command line; returns the exit status."""
    given = _given(args)
    if args.replay is not None:
        _refuse_unused_options(args, given)
        return _replay(args)
    from .io import DEFAULT_CROP_FRACTION, max_pixels_limit
    from .protocol import (
        SKIP_SUBFOLDER,
        NothingDegradedError,
        degrade_files,
        find_images,
    )
    from .samples import write_samples

    if args.n_samples < 1:
        raise CLIError(f"--n-samples must be >= 1, got {args.n_samples}")
    if args.seed < 0:
        raise CLIError(f"--seed must be >= 0, got {args.seed}")
    crop_fraction = DEFAULT_CROP_FRACTION if args.crop_fraction is None else args.crop_fraction
    if not 0 <= crop_fraction < 1:
        raise CLIError(f"--crop-fraction must be in [0, 1), got {crop_fraction}")
    if args.max_pixels is not None and args.max_pixels < 1:
        raise CLIError(f"--max-pixels must be >= 1, got {args.max_pixels}")
    _refuse_unused_options(args, given)
    max_pixels = max_pixels_limit(args.max_pixels)  # also checks $SEM_MAX_PIXELS
    params = _explicit_params(args)
    inputs = list(args.inputs)
    if args.make_samples is not None:
        written = write_samples(
            args.make_samples, n_per_kind=args.n_samples, seed=args.seed, overwrite=args.overwrite
        )
        _say("note", f"wrote {len(written)} samples to {args.make_samples}")
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
    left_out: dict[str, int] = {}

    def note_skip(path: Path, reason: str) -> None:
        left_out[reason] = left_out.get(reason, 0) + 1

    files = find_images(inputs, on_skip=note_skip)
    for reason, count in left_out.items():
        noun = "subfolder" if reason == SKIP_SUBFOLDER else "image"
        _say("note", f"left out {_count(count, noun)}: {reason}")
    progress = _progress_bar() if len(files) > 1 and stderr_is_terminal() else None
    try:
        manifest = degrade_files(
            files,
            args.out,
            mode=mode,
            params=params,
            master_seed=args.seed,
            crop=args.crop,
            crop_fraction=crop_fraction,
            output_format=args.format,
            progress=progress,
            max_pixels=max_pixels,
            input_folders=[p for p in inputs if p.is_dir()],
            overwrite=args.overwrite,
        )
    except NothingDegradedError as err:
        if len(files) > 1:
            for failure in err.failed:
                _say("error", failure.reason)
        raise
    for failure in manifest.failed:  # skipped: the others are degraded
        _say("error", failure.reason)
    if args.json:
        rows = [
            {
                "source": path_text(files[e.index]) if e.index is not None else e.source,
                "output": e.output,
                "seed": e.seed,
                **e.params.model_dump(),
            }
            for e in manifest.entries
        ]
        print(json.dumps(rows, indent=2))
    _earlier_run_note(manifest, args.out)
    pixels, total, images = manifest.clipped
    if pixels:
        _say(
            "note",
            f"{args.format} clipped {_percent(100 * pixels / total)} % of the pixels to 0..255 "
            f"({pixels:,} of {total:,}, in {images} of {_count(len(manifest.entries), 'image')}; "
            "float32-tiff keeps them)",
        )
    skipped = f", {len(manifest.failed)} skipped" if manifest.failed else ""
    _say(
        "note",
        f"{_count(len(manifest.entries), 'image')} ({mode}){skipped} -> {args.out / MANIFEST}",
    )
    if manifest.failed and args.strict:
        _say("error", f"{len(manifest.failed)} of {len(files)} inputs failed (--strict)")
        return EXIT_RUN_FAILED
    return 0


def _earlier_run_note(manifest: Any, out: Path) -> None:
    """One line saying what a run did to an earlier run's outputs in ``out`` (nothing on a
    fresh folder)."""
    replaced, removed = manifest.replaced_outputs, manifest.removed_outputs
    if not (replaced or removed or manifest.completed_interrupted):
        return
    whose = "an interrupted run" if manifest.completed_interrupted else "the earlier run"
    parts = [f"replaced {_count(len(replaced), 'output')} of {whose} in {out}"]
    if removed:
        first = removed[0] + (", ..." if len(removed) > 1 else "")
        parts.append(f"removed {len(removed)} it listed that this run does not write ({first})")
    _say("note", "; ".join(parts))


@console_main("sem-degrade")
def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (0 ok, 1 failures with --strict, 2 error)."""
    args = build_parser().parse_args(argv)
    try:  # a warning or log record: one line "sem-degrade: warning: ..." (console_main)
        return run(args)
    except BrokenPipeError:
        raise
    except KeyboardInterrupt as stop:  # Ctrl-C, or SIGTERM (pipes.Terminated)
        from .locking import INCOMPLETE_MARKER
        from .pipes import EXIT_INTERRUPTED, EXIT_TERMINATED, Terminated

        marked = args.out / INCOMPLETE_MARKER if args.out is not None else None
        if args.debug or marked is None or not marked.is_file():
            raise  # a fresh folder: its outputs are gone; "sem-degrade: interrupted"

        terminated = isinstance(stop, Terminated)
        _say(
            "terminated" if terminated else "interrupted",
            f"{args.out} is marked INCOMPLETE (it mixes outputs of an earlier run and this "
            "one); rerun the command to complete it",
        )
        return EXIT_TERMINATED if terminated else EXIT_INTERRUPTED
    except Exception as err:  # ValidationError, ImageReadError, ProtocolError, OSError, ...
        if args.debug:  # the traceback, then the same line and status as without --debug
            import traceback

            traceback.print_exc()
        code, message = describe_error(err)  # as every console script of the toolkit
        _say("error", message)
        return code


if __name__ == "__main__":
    sys.exit(main())
