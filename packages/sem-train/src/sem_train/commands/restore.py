"""``sem restore INPUT... -o OUTDIR``: restore your own micrographs with any registered method.

Registering the command imports nothing heavy; the handler loads the method on first use.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from sem_physics.cli_support import add_max_pixels, number, path_text

__all__ = ["parse_set", "register"]


def parse_set(items: list[str] | None) -> dict[str, Any]:
    """``["iterations=50", "unet.width=8"]`` -> ``{"iterations": 50, "unet": {"width": 8}}``.

    Values are read as YAML scalars (numbers, booleans, null), otherwise kept as text.
    """
    import yaml

    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        parts = key.strip().split(".")
        if not sep or not all(parts):
            raise ValueError(f"--set {item!r}: expected KEY=VALUE (e.g. iterations=50)")
        try:
            parsed = yaml.safe_load(value) if value else value
        except yaml.YAMLError:
            parsed = value
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"--set {item!r}: {part} is given both as a value and a group")
        node[parts[-1]] = parsed
    return out


_row_count = number(int, low=0)


def _bar_rows(text: str) -> int | None:
    if text == "auto":
        return None
    if text == "none":  # sem-measure's spelling of "no bar"
        return 0
    try:
        return int(_row_count(text))
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"expected 'auto', 'none' or a row count >= 0, got {text!r}"
        ) from None


def register(subparsers: Any) -> None:
    """Add ``restore``."""
    p = subparsers.add_parser(
        "restore",
        help="restore your own SEM images (files or folders) with any method",
        description=(
            "Restore defocused SEM images. The info bar is cut before restoring and put back "
            "unchanged; pixel size, vendor metadata and the sample type are kept. Writes the "
            "restored images and restore.json (inputs' sha256, method, parameters, PSF, "
            "timings) into OUTDIR."
        ),
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders (recursive)")
    p.add_argument("-o", "--out", required=True, type=Path, metavar="OUTDIR", help="output folder")
    p.add_argument(
        "--method",
        help="registered restorer, built-in or from an installed plugin (default: "
        "richardson-lucy with the blind PSF estimate); an unknown name lists them all",
    )
    p.add_argument(
        "--checkpoint",
        type=Path,
        help="weights of a learned method: a 'sem train' run folder, a saved restorer or a file",
    )
    p.add_argument(
        "--psf",
        default="auto",
        metavar="auto|RX,RY[,THETA[,BETA]]",
        help="PSF of the deconvolution methods and of sem-foundation's physics guides: blind "
        "estimate (auto, default) or radii in px, angle in rad (default 0), Airy exponent "
        "(default 2); required by the *-true-psf methods",
    )
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="a setting of the method's config (repeatable), e.g. --set iterations=50",
    )
    p.add_argument(
        "--info-bar",
        "--info-bar-rows",
        dest="info_bar_rows",
        type=_bar_rows,
        default=None,
        metavar="auto|none|N",
        help="info-bar height to keep aside (default auto: detected; none or 0 restores the "
        "whole frame), spelled as sem-measure's --info-bar",
    )
    p.add_argument(
        "--brightness",
        choices=("input", "method"),
        default="input",
        help="output mean grey level: the input's (default; a deconvolution preserves it, a "
        "learned model may have learned a simulator's offset) or what the method returned "
        "(method: the paper's protocol)",
    )
    p.add_argument(
        "--float32",
        action="store_true",
        help="write float32 TIFFs (0..255 scale; a float input keeps its own scale)",
    )
    add_max_pixels(p, number(int, low=1), metavar="N")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("--strict", action="store_true", help="exit non-zero if any image fails")
    p.add_argument("--json", action="store_true", help="print restore.json to stdout")
    p.set_defaults(handler=_restore)


def _restore(args: argparse.Namespace) -> int:
    from sem_physics.locking import output_lock

    with output_lock(args.out):  # at once: a second run into -o stops before loading a model
        return _restore_held(args)


def _restore_held(args: argparse.Namespace) -> int:
    from ..restoration import DEFAULT_METHOD, prepare, restore_files
    from ..restoration.batch import check_inputs
    from ..restoration.methods import check_checkpoint_exists, check_method_name

    options = parse_set(args.set)
    for key, flag in (("psf", "--psf"), ("checkpoint", "--checkpoint"), ("method", "--method")):
        if key in options:
            raise ValueError(f"--set {key}...: {key} is given with {flag}, not --set")
    # refused before the method's model code is imported (seconds for the learned ones)
    name = args.method or DEFAULT_METHOD
    check_method_name(name)
    options, checkpoint, setting = _own_settings(name, options, args.checkpoint)
    check_inputs(args.inputs, args.out, float32=args.float32, overwrite=args.overwrite)
    if checkpoint is not None:
        check_checkpoint_exists(checkpoint, setting=setting)
    options, checkpoint = _weights_field_of(name, options, checkpoint, setting)
    method = prepare(
        name,
        psf=args.psf,
        checkpoint=checkpoint,
        brightness=args.brightness,
        **options,
    )

    def report(path: Path, reason: str) -> None:  # the reason never names the file
        print(f"sem: error: {path_text(path)}: {reason}", file=sys.stderr)

    manifest = restore_files(
        args.inputs,
        args.out,
        method,
        float32=args.float32,
        overwrite=args.overwrite,
        bar_rows=args.info_bar_rows,
        on_failure=report,
        max_pixels=args.max_pixels,
    )
    _say_notes(manifest)
    # an image restored with a blind PSF carries warnings only when its estimate flags itself
    flagged = sum(
        1
        for item in manifest.restored
        if item.psf_source == "blind"
        and any(w.startswith("blind PSF estimate") for w in item.warnings)
    )
    if flagged:
        print(
            f"sem: note: the blind PSF estimate of {flagged} image(s) flags itself; if the PSF is "
            "known, give it: --psf RX,RY,THETA,BETA (radii in px, angle in rad)",
            file=sys.stderr,
        )
    n_ok, n_bad = len(manifest.restored), len(manifest.failed)
    if not n_ok:
        if n_bad > 1:
            print(f"sem: error: none of the {n_bad} images could be restored", file=sys.stderr)
        return 2
    if args.json:
        print(manifest.model_dump_json(indent=2))
    else:
        failed = f"; {n_bad} failed (listed in restore.json)" if n_bad else ""
        print(
            f"restored {n_ok} image(s) with {manifest.method} into {args.out}{failed}",
            file=sys.stderr if args.json else sys.stdout,
        )
    return 1 if (n_bad and args.strict) else 0


#: The config fields of the learned methods that hold their weights (``checkpoint_field``).
_WEIGHTS_FIELDS = ("checkpoint_dir", "weights_path")


def _own_settings(
    method: str, options: dict[str, Any], checkpoint: Path | None
) -> tuple[dict[str, Any], Path | None, str | None]:
    """``--set`` settings as the method's own, the weights to load and the ``--set`` that
    named them (None: ``--checkpoint`` or none), without importing the method's code.

    ``METHOD.KEY=VALUE`` (sem benchmark's spelling) is taken as ``KEY=VALUE`` when METHOD is
    the method restoring; a weights field (``checkpoint_dir``, ``weights_path``) is taken as
    ``--checkpoint``, so the path is checked before any model code loads and ``restore.json``
    records it as the checkpoint (:func:`_weights_field_of` then checks the method has that
    field); both given is refused."""
    group = options.get(method)
    if isinstance(group, dict):
        rest = {k: v for k, v in options.items() if k != method}
        clash = sorted(set(group) & set(rest))
        if clash:
            raise ValueError(f"--set {clash[0]} is given twice (also as {method}.{clash[0]})")
        options = {**rest, **group}
    named = [key for key in _WEIGHTS_FIELDS if key in options]
    if not named:
        return options, checkpoint, None
    key = named[0]
    if checkpoint is not None or len(named) > 1:
        other = f"--checkpoint {checkpoint}" if checkpoint is not None else f"--set {named[1]}"
        raise ValueError(f"--set {key}={options[key]} and {other}: give the weights once")
    given = options.pop(key)
    if given is None or given == "":
        raise ValueError(f"--set {key}: expected a path, got {given!r}")
    return options, Path(str(given)), f"--set {key}"


def _weights_field_of(
    method: str, options: dict[str, Any], checkpoint: Path | None, setting: str | None
) -> tuple[dict[str, Any], Path | None]:
    """A weights path given as ``--set KEY`` goes back among the settings when ``KEY`` is not
    the method's weights field, so the settings' check refuses it with the accepted keys."""
    if setting is None:
        return options, checkpoint
    from ..restoration.methods import method_needs

    key = setting.removeprefix("--set ")
    if method_needs(method).checkpoint == key:
        return options, checkpoint
    return {**options, key: str(checkpoint)}, None


def _say_notes(manifest: Any) -> None:
    """The run's notes, each image's warnings and notes, and the brightness shifts, one line
    each on stderr; a setting the library names as ``noise_var=...`` is said as the ``--set``
    it is here (``restore.json`` keeps the library's words)."""
    from sem_baselines.classical.deconv import NOISE_VAR_HINT

    for note in manifest.notes:
        print(f"sem: note: {note}", file=sys.stderr)
    for item in manifest.restored:
        for warning in [*item.input_notes, *item.warnings]:
            said = warning.replace(NOISE_VAR_HINT, "(--set noise_var=...)")
            print(f"sem: warning: {item.input}: {said}", file=sys.stderr)
        for note in item.output_notes:
            print(f"sem: note: {item.input}: {note}", file=sys.stderr)
    shifts = [
        item.brightness["shift"]
        for item in manifest.restored
        if item.brightness and abs(item.brightness["shift"]) > 1.0
    ]
    if shifts:
        low, high = f"{min(shifts):+.1f}", f"{max(shifts):+.1f}"
        span = low if low == high else f"{low} to {high}"  # one value when they print the same
        print(
            f"sem: note: the output's mean grey level of {len(shifts)} image(s) was shifted to "
            f"the input's by {span} grey levels (--brightness input; --brightness method keeps "
            "the method's, recorded in restore.json)",
            file=sys.stderr,
        )
