"""What every console script of the toolkit shares: one-line usage errors, argument types checked
against their range, and one-line validation messages (a user sees one line naming the option
or field, never a usage block or a pydantic dump); every other line on stderr as
``prog: KIND: message`` (:func:`one_line_warnings`, :func:`one_line_logs`), an error's exit
status and line (:func:`describe_error`); file names that are not valid UTF-8 as text every
JSON, CSV or record accepts (:func:`path_text`, :func:`model_json`)."""

from __future__ import annotations

import argparse
import difflib
import errno
import logging
import math
import os
import re
import sys
import types
import typing
import warnings
from collections import abc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn, overload

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_RUN_FAILED",
    "EXIT_USAGE",
    "OneLineParser",
    "add_max_pixels",
    "add_version",
    "crop_fraction_unused",
    "describe_error",
    "first_line",
    "is_validation_error",
    "model_json",
    "number",
    "one_line_logs",
    "one_line_process",
    "one_line_prog",
    "one_line_warnings",
    "path_text",
    "plain_text",
    "reason_without_path",
    "stderr_is_terminal",
    "text_path",
    "validation_message",
]

EXIT_USAGE = 2  # argparse's status for a usage error
EXIT_BAD_INPUT = 2  # a missing or malformed file, an invalid value, an unwritable output path
EXIT_RUN_FAILED = 1  # the run itself failed (disk full, out of memory, a bug)


def path_text(path: str | os.PathLike[str]) -> str:
    r"""``path`` as text every encoder accepts: a name that is not valid UTF-8 (its bytes
    surrogate-escaped by Python, ``bad\udcffname.tif``) has each such byte as ``\xNN``
    (``bad\xffname.tif``, :func:`text_path` reverses it); any other path is unchanged."""
    return plain_text(os.fspath(path))


def plain_text(text: str) -> str:
    r"""``text`` with a surrogate-escaped byte (a file name's, not valid UTF-8) as ``\xNN``, so
    that UTF-8 can encode it; valid text is returned unchanged."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        try:
            return os.fsencode(text).decode("utf-8", "backslashreplace")
        except UnicodeError:  # a surrogate no file system byte gives
            return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


_ESCAPED_BYTE = re.compile(rb"\\x([89a-fA-F][0-9a-fA-F])")


def text_path(text: str) -> str:
    r"""The file name :func:`path_text` wrote as ``text`` (``bad\xffname.tif`` ->
    ``bad\udcffname.tif``); text without such an escape is unchanged."""
    if "\\x" not in text:
        return text
    raw = _ESCAPED_BYTE.sub(lambda m: bytes([int(m[1], 16)]), text.encode("utf-8"))
    return os.fsdecode(raw)


def _plain_values(value: Any) -> Any:
    """``value`` (JSON-like: dicts, lists, strings) with :func:`plain_text` on every string."""
    if isinstance(value, str):
        return plain_text(value)
    if isinstance(value, dict):
        return {_plain_values(k): _plain_values(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain_values(v) for v in value]
    return value


def model_json(model: Any, *, indent: int | None = None, **dump: Any) -> str:
    """``model.model_dump_json(indent=indent, **dump)`` of a pydantic model; a string that UTF-8
    cannot encode (a file name that is not valid UTF-8) is written through :func:`plain_text`
    instead of failing ("surrogates not allowed"). Other output is byte for byte pydantic's."""
    try:
        return str(model.model_dump_json(indent=indent, **dump))
    except ValueError as err:  # pydantic's PydanticSerializationError
        if "surrogates not allowed" not in str(err):
            raise
    from pydantic import TypeAdapter  # pydantic's own serialiser: the same formatting

    data = _plain_values(model.model_dump(mode="json", **dump))
    return TypeAdapter(Any).dump_json(data, indent=indent).decode("utf-8")


def add_version(parser: argparse.ArgumentParser, package: str) -> None:
    """``--version``: ``PROG VERSION (PACKAGE)`` on stdout, exit 0 (the installed version of
    the distribution ``package``, ``unknown`` when it is not installed). The version is looked
    up only when asked for: building the parser imports nothing more."""

    class _Version(argparse.Action):
        def __call__(self, parser_: argparse.ArgumentParser, *_: Any) -> NoReturn:
            from importlib.metadata import PackageNotFoundError, version

            try:
                found = version(package)
            except PackageNotFoundError:
                found = "unknown"
            print(f"{parser_.prog} {found} ({package})", file=sys.stdout)
            parser_.exit(0)

    parser.add_argument(
        "--version", action=_Version, nargs=0, help="print the program's version and exit"
    )


def add_max_pixels(
    parser: argparse.ArgumentParser, kind: Callable[[str], int] = int, **kw: Any
) -> None:
    """``--max-pixels``, the pixel-count limit of reading, as every command that reads images
    spells it (``kind``: the argparse type that checks it, when the command does not later)."""
    parser.add_argument(
        "--max-pixels",
        type=kind,
        default=None,
        help="refuse images declaring more pixels (default $SEM_MAX_PIXELS, else 100000000)",
        **kw,
    )


def _warning_shower(prog: str) -> Callable[..., None]:
    """A ``warnings.showwarning`` printing ``prog: warning: message`` on one line."""

    def show(message: Warning | str, category: type[Warning], *_: Any, **__: Any) -> None:
        text = " ".join(str(message).split()) or category.__name__
        print(f"{prog}: warning: {text}", file=sys.stderr)

    return show


@contextmanager
def one_line_warnings(prog: str) -> Iterator[None]:
    """Python warnings issued in the block as one line each on stderr,
    ``prog: warning: message`` (no file, line number or source line)."""
    with warnings.catch_warnings():
        warnings.showwarning = _warning_shower(prog)
        yield


def one_line_prog() -> str | None:
    """The ``prog`` of the :func:`one_line_logs` block this process runs in, or None (a
    library call): what a worker of this process prints its notes as."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler.formatter, _OneLineFormatter):
            return handler.formatter.prog
    return None


def one_line_process(prog: str) -> None:
    """For the rest of this process (a worker that runs part of a command's work), its log
    records and Python warnings as the command prints its own: one line each on stderr,
    ``prog: warning: message`` (:func:`one_line_logs`, :func:`one_line_warnings`). A worker
    started by spawn or a fork server is a fresh interpreter: without this, its notes would
    print bare or with file and line."""
    logging.getLogger().addHandler(_one_line_handler(prog))
    warnings.showwarning = _warning_shower(prog)


#: the kind a log record's level is printed as (below INFO: ``debug``)
_LOG_KINDS = ((logging.ERROR, "error"), (logging.WARNING, "warning"), (logging.INFO, "note"))


class _OneLineFormatter(logging.Formatter):
    """A log record as ``prog: KIND: message`` on one line (a debug record also names its
    logger); the traceback of a record logged with one follows only at the debug level."""

    def __init__(self, prog: str) -> None:
        super().__init__()
        self.prog = prog

    def format(self, record: logging.LogRecord) -> str:
        kind = next((k for level, k in _LOG_KINDS if record.levelno >= level), "debug")
        text = " ".join(record.getMessage().split()) or record.name
        if kind == "debug":
            text = f"{record.name}: {text}"
        line = f"{self.prog}: {kind}: {text}"
        if record.exc_info and logging.getLogger().getEffectiveLevel() <= logging.DEBUG:
            line = f"{self.formatException(record.exc_info)}\n{line}"
        return line


def _one_line_handler(prog: str) -> logging.Handler:
    """A stderr handler writing each record as ``prog: KIND: message``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_OneLineFormatter(prog))
    return handler


@contextmanager
def one_line_logs(prog: str) -> Iterator[logging.Handler]:
    """Log records of every logger (the image reader's notes on a JPEG or a multi-page TIFF, a
    run's progress) as one line each on stderr, ``prog: warning: message`` (``error``, ``note``
    for INFO, ``debug``), while the block runs; the root logger's level (WARNING unless the
    command sets another inside the block) is restored afterwards.

    A stream handler on the root logger (yielded), so that a progress bar's
    ``logging_redirect_tqdm`` writes the same lines above the bar."""
    root = logging.getLogger()
    level = root.level
    handler = _one_line_handler(prog)
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def first_line(err: BaseException) -> str:
    """The first line of ``err``'s message (its type's name when it has none)."""
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


def reason_without_path(err: BaseException, path: str | os.PathLike[str]) -> str:
    """The first line of ``err`` without the ``"{path}: "`` a read error starts with
    (``sem_physics.io.ImageReadError``) and without the quoted path an ``OSError``'s text ends
    with (``[Errno 13] Permission denied: '...'``), as text UTF-8 can encode: for a record
    that names its file once, in a field of its own (a skipped or failed input)."""
    text = first_line(err)
    for shown in dict.fromkeys((str(path), path_text(path))):  # as raw or escaped text
        prefix = f"{shown}: "
        if text.startswith(prefix) and len(text) > len(prefix):
            text = text[len(prefix) :]
        text = text.replace(f": {shown!r}", "")
    return plain_text(text)


#: errno values that mean the run failed, not that the user asked for something impossible
_RUN_FAILURE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EIO}
#: pydantic's head line ("1 validation error for MAEConfig"), whose reasons follow on lines
#: of their own: a message embedding it would lose them to :func:`first_line`
_PYDANTIC_HEAD = re.compile(r"\d+ validation errors? for \w+$")


def _reason(err: BaseException) -> str:
    """The first line of ``err``, with an embedded pydantic error (its cause or context)
    replaced by its reasons on one line (``img_size=30 px is not a multiple of ...``)."""
    text = first_line(err)
    inner = err.__cause__ or err.__context__
    if inner is not None and is_validation_error(inner) and _PYDANTIC_HEAD.search(text):
        return _PYDANTIC_HEAD.sub(lambda _: validation_message(inner), text)
    return text


def describe_error(err: BaseException) -> tuple[int, str]:
    """(exit status, one-line message) of an error that ends a console script, the same in
    every one: :data:`EXIT_BAD_INPUT` (2) for bad input (a missing or malformed file, an
    invalid value: ValueError, TypeError, LookupError, a pydantic or YAML error, a file that is
    not a checkpoint; an OSError such as a read-only or missing output folder);
    :data:`EXIT_RUN_FAILED` (1) for a failure of the run itself (disk full, out of memory, the
    project's own RuntimeError subclasses, an unexpected error, which is named by its type).
    An ``exit_status`` attribute of ``err`` is its status."""
    from_module = type(err).__module__.split(".")[0]
    status = getattr(err, "exit_status", None)
    if isinstance(status, int):  # e.g. --strict and some inputs unusable: 1
        return status, first_line(err)
    if isinstance(err, OSError):
        reason = err.strerror or first_line(err)
        where = err.filename if err.filename is not None else None
        msg = f"{reason}: {where}" if where and str(where) not in reason else reason
        return (EXIT_RUN_FAILED if err.errno in _RUN_FAILURE_ERRNOS else EXIT_BAD_INPUT), msg
    if isinstance(err, MemoryError):
        return EXIT_RUN_FAILED, f"out of memory ({first_line(err)}); use smaller images or batches"
    if isinstance(err, KeyError):
        return EXIT_BAD_INPUT, (
            f"missing or unknown key {err.args[0]!r}" if err.args else "missing key"
        )
    if is_validation_error(err):
        return EXIT_BAD_INPUT, validation_message(err)
    if isinstance(err, ValueError | TypeError | LookupError) or from_module in ("yaml", "pickle"):
        return EXIT_BAD_INPUT, _reason(err)
    if type(err).__name__ in ("SafetensorError", "UnpicklingError"):
        return EXIT_BAD_INPUT, f"not a checkpoint: {first_line(err)}"
    if isinstance(err, RuntimeError) and type(err).__name__ != "RuntimeError":
        return EXIT_RUN_FAILED, first_line(err)  # the project's own run failures
    return EXIT_RUN_FAILED, f"{type(err).__name__}: {first_line(err)}"


def crop_fraction_unused(crop: str) -> str | None:
    """The one-line error of ``--crop-fraction`` given with a ``--crop`` that does not use it
    (sem-degrade and sem-psf: ``fraction``, and ``info-bar``, whose fallback it is), or None."""
    if crop in ("fraction", "info-bar"):
        return None
    return (
        "--crop-fraction needs --crop fraction (or --crop info-bar, whose fallback it is), "
        f"got --crop {crop}"
    )


def stderr_is_terminal() -> bool:
    """Whether stderr is a terminal, or a Jupyter kernel's stream (which redraws a bar in
    place): progress bars are drawn only there by default (not into a pipe or the log file of
    nohup or a batch system, which bars fill with carriage returns)."""
    if type(sys.stderr).__module__.startswith("ipykernel"):
        return True
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


class OneLineParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line, ``PROG: error: MESSAGE (see PROG --help)``.

    Sub-parsers made with ``add_subparsers().add_parser`` are of the same class.
    """

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def parse_args(self, args: Any = None, namespace: Any = None) -> Any:  # type: ignore[override]
        """As argparse's, but an unknown option after a command is reported by that command's
        parser (``sem restore: error: ... (see sem restore --help)``), whose help lists what
        it takes, rather than by the top-level one (which still reports one given before)."""
        words = [str(w) for w in (sys.argv[1:] if args is None else args)]
        parsed, extras = self.parse_known_args(words, namespace)
        if extras:
            self._given_to(parsed, words, extras).error(
                f"unrecognized arguments: {' '.join(extras)}"
            )
        return parsed

    def _given_to(
        self, parsed: argparse.Namespace, words: list[str], extras: list[str]
    ) -> argparse.ArgumentParser:
        """The (sub-)parser whose part of ``words`` holds the first of ``extras``."""
        for action in self._actions:
            if not isinstance(action, argparse._SubParsersAction):
                continue
            name = getattr(parsed, action.dest, None)
            chosen = action.choices.get(name) if isinstance(name, str) else None
            if chosen is None or name not in words:
                break
            at = words.index(name)
            if extras[0] in words[:at]:
                break
            if isinstance(chosen, OneLineParser):
                return chosen._given_to(parsed, words[at + 1 :], extras)
            return chosen
        return self


def is_validation_error(err: BaseException) -> bool:
    """Whether ``err`` is a pydantic ``ValidationError`` (told by duck type: no pydantic import
    on the CLIs' error path)."""
    return type(err).__name__ == "ValidationError" and hasattr(err, "errors")


def validation_message(
    err: Any,
    model: type | None = None,
    *,
    label: Callable[[tuple[Any, ...]], str] | None = None,
) -> str:
    """A pydantic ``ValidationError`` as one line, one part per error, joined by ``"; "``.

    A number out of its range reads ``rx_px must be in (0, 1000], got 0`` (``> 0`` and the like
    when the field has one bound): the range is the field's declared bounds (``gt``/``ge``/
    ``lt``/``le`` of ``Field``, ``annotated_types`` or ``conint``/``confloat``), found by the
    error's ``loc`` in ``model`` (the model class validated; nested models, dicts and lists are
    followed). Without ``model``, the loaded pydantic model named ``err.title`` is used when
    exactly one has that name; when neither has the field, the violated bound alone is stated.
    A validator's ``ValueError`` reads as its own message (``field: message``, the message
    alone for a rule of the whole model), without pydantic's ``Value error,`` prefix. Any
    other error reads ``field: message (got value)``.

    ``label`` names a field from its ``loc`` (default: the dotted ``loc``, e.g. ``psf.rx_px``),
    e.g. ``lambda loc: "--" + loc[-1].replace("_", "-")`` for command-line options.
    """
    if model is None:
        model = _model_named(getattr(err, "title", None))
    parts = []
    for e in err.errors():
        loc = tuple(e.get("loc", ()))
        name = (label(loc) if label is not None else ".".join(map(str, loc))) if loc else "value"
        if e.get("type") == "value_error":  # a validator's rule: its own message, no prefix
            text = str(e.get("ctx", {}).get("error", e["msg"]))
            parts.append(f"{name}: {text}" if loc else text)
            continue
        if e.get("type") == "extra_forbidden" and loc:
            parts.append(f"{name}: {_unknown_key(model, loc)}")
            continue
        given = e.get("input")
        rule = _range_rule(e, model)
        if rule is not None:
            parts.append(f"{name} must be {rule}, got {_shown(given)}")
            continue
        short = isinstance(given, str | int | float) and len(repr(given)) <= 60
        parts.append(f"{name}: {e['msg']}" + (f" (got {_shown(given)})" if short else ""))
    return "; ".join(parts)


# pydantic error types of a number outside its bounds, the bound each reports in its ``ctx``
_BOUND_ERRORS = {
    "greater_than": "gt",
    "greater_than_equal": "ge",
    "less_than": "lt",
    "less_than_equal": "le",
}
# errors of a bounded field that also call for its range ("a number in (0, 1]")
_NOT_IN_RANGE = ("finite_number",)
_NOT_A_NUMBER = {
    "float_parsing": "a number",
    "float_type": "a number",
    "int_parsing": "an integer",
    "int_type": "an integer",
    "int_from_float": "an integer",
}
_BOUND_KINDS = ("gt", "ge", "lt", "le")


def _range_rule(error: dict[str, Any], model: type | None) -> str | None:
    """``"in (0, 1000]"``, ``"> 0"``, ``"a number in [0, 1]"``; None when no range applies."""
    kind = error.get("type", "")
    told = _BOUND_ERRORS.get(kind)
    if told is None and kind not in _NOT_IN_RANGE and kind not in _NOT_A_NUMBER:
        return None
    bounds = _declared_bounds(model, tuple(error.get("loc", ()))) if model is not None else {}
    ctx = error.get("ctx") or {}
    if told is not None and _is_number(ctx.get(told)):
        # the model's bounds only when they are the ones pydantic checked (else the bound alone)
        if not (_is_number(bounds.get(told)) and float(bounds[told]) == float(ctx[told])):
            bounds = {told: ctx[told]}
    span = _span(bounds)
    if span is None:
        return None
    what = _NOT_A_NUMBER.get(kind)
    return f"{what} {span}" if what else span


def _span(bounds: dict[str, Any]) -> str | None:
    """``{"gt": 0, "le": 1000}`` -> ``"in (0, 1000]"``; one bound -> ``"> 0"``; none -> None."""
    low_kind = "gt" if _is_number(bounds.get("gt")) else "ge"
    high_kind = "lt" if _is_number(bounds.get("lt")) else "le"
    low, high = bounds.get(low_kind), bounds.get(high_kind)
    low = low if _is_number(low) else None
    high = high if _is_number(high) else None
    if low is not None and high is not None:
        opening, closing = ("(" if low_kind == "gt" else "["), (")" if high_kind == "lt" else "]")
        return f"in {opening}{_num(low, 10)}, {_num(high, 10)}{closing}"
    if low is not None:
        return f"{'>' if low_kind == 'gt' else '>='} {_num(low, 10)}"
    if high is not None:
        return f"{'<' if high_kind == 'lt' else '<='} {_num(high, 10)}"
    return None


def _unknown_key(model: type | None, loc: tuple[Any, ...]) -> str:
    """``"not a known key (did you mean seed?); known keys: a, b, c"`` for a key the model at
    ``loc[:-1]`` forbids; without that model, pydantic's words."""
    found = _type_at(model, loc[:-1]) if model is not None else None
    fields = getattr(found[0], "model_fields", None) if found is not None else None
    if not isinstance(fields, dict) or not fields:
        return "not a known key (extra inputs are not permitted)"
    known = [str(k) for k in fields]
    close = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return f"not a known key{hint}; known keys: {', '.join(known)}"


def _type_at(model: type, loc: tuple[Any, ...]) -> tuple[Any, list[Any]] | None:
    """The annotation at ``loc`` in ``model`` and the field metadata met on the last step
    (nested models, dicts, tuples and lists are followed); None when ``loc`` is not there."""
    tp: Any = model
    metadata: list[Any] = []
    for part in loc:
        tp = _strip_annotated(_strip_optional(tp))[0]
        fields = getattr(tp, "model_fields", None) if isinstance(tp, type) else None
        if isinstance(fields, dict):
            info = fields.get(part) or next(
                (f for f in fields.values() if part in (f.alias, f.validation_alias)), None
            )
            if info is None:
                return None
            tp, metadata = info.annotation, list(info.metadata)
            continue
        origin, args = typing.get_origin(tp), typing.get_args(tp)
        if origin in (dict, abc.Mapping, abc.MutableMapping) and len(args) == 2:
            tp = args[1]
        elif origin is tuple and isinstance(part, int) and args:
            if len(args) == 2 and args[1] is Ellipsis:
                tp = args[0]
            elif part < len(args):
                tp = args[part]
            else:
                return None
        elif origin in (list, set, frozenset, abc.Sequence) and isinstance(part, int) and args:
            tp = args[0]
        else:
            return None
        metadata = []
    inner, more = _strip_annotated(_strip_optional(tp))
    return inner, metadata + more


def _declared_bounds(model: type, loc: tuple[Any, ...]) -> dict[str, Any]:
    """The ``gt``/``ge``/``lt``/``le`` declared for the value at ``loc`` in ``model``."""
    found = _type_at(model, loc)
    if found is None:
        return {}
    metadata = list(found[1])
    bounds: dict[str, Any] = {}
    for item in list(metadata):
        if isinstance(getattr(item, "metadata", None), list):  # Annotated[X, Field(...)]
            metadata += item.metadata
    for item in metadata:
        for kind in _BOUND_KINDS:
            value = getattr(item, kind, None)
            if _is_number(value):
                bounds[kind] = value
    return bounds


def _strip_optional(tp: Any) -> Any:
    """``X | None`` -> ``X`` (other unions are left as they are)."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _strip_annotated(tp: Any) -> tuple[Any, list[Any]]:
    """``Annotated[X, m1, m2]`` -> ``(X, [m1, m2])``."""
    if typing.get_origin(tp) is typing.Annotated:
        inner, *metadata = typing.get_args(tp)
        return inner, metadata
    return tp, []


def _model_named(title: Any) -> type | None:
    """The one loaded pydantic model class named ``title`` (None if none or several)."""
    pydantic = sys.modules.get("pydantic")  # loaded whenever a ValidationError exists
    if not isinstance(title, str) or pydantic is None:
        return None
    found, seen, todo = [], set(), [pydantic.BaseModel]
    while todo:
        for sub in todo.pop().__subclasses__():
            if sub not in seen:
                seen.add(sub)
                todo.append(sub)
                if sub.__name__ == title:
                    found.append(sub)
    return found[0] if len(found) == 1 else None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _shown(value: Any) -> str:
    """A value as a message shows it: ``0``, ``1e-300``, ``'abc'``, ``a list``."""
    if _is_number(value):
        return _num(value)
    if isinstance(value, str):
        return repr(value) if len(value) <= 40 else repr(value[:37]) + "..."
    if isinstance(value, bool) or value is None:
        return repr(value)
    return f"a {type(value).__name__}"


def _num(value: float, digits: int = 17) -> str:
    """The shortest form that reads back as ``value`` (at most ``digits`` significant digits):
    ``0``, ``1000``, ``0.01``, ``-5``, ``1e9``, ``1e-300``, ``6.283185307`` (``digits=10``)."""
    if isinstance(value, int) and value.bit_length() <= 50:
        return str(value)
    try:
        value = float(value)
    except OverflowError:  # an integer beyond any float
        return f"~{'-' if value < 0 else ''}1e{int(math.log10(abs(value)))}"
    if value == 0 or not math.isfinite(value):
        return "0" if value == 0 else str(value)  # nan, inf, -inf
    for precision in range(digits):
        text = f"{value:.{precision}e}"
        if float(text) == value:
            break
    mantissa, exponent = text.split("e")
    exp = int(exponent)
    if "." in mantissa:  # a rounded mantissa may end in zeros
        mantissa = mantissa.rstrip("0").rstrip(".")
    if -4 <= exp < 6:
        text = f"{value:.{max(precision - exp, 0)}f}"
        return text.rstrip("0").rstrip(".") if "." in text else text
    return f"{mantissa}e{exp}"


@overload
def number(
    kind: type[int],
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    finite: bool = False,
) -> Callable[[str], int]: ...


@overload
def number(
    kind: type[float],
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    finite: bool = False,
) -> Callable[[str], float]: ...


def number(
    kind: type[int] | type[float],
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    finite: bool = False,
) -> Callable[[str], int | float]:
    """An argparse ``type`` reading ``kind`` within ``low .. high`` (open ends when asked).

    NaN is outside every range; ``finite`` also refuses inf and NaN where no range is given.
    ``number(float, low=0, high=1, high_open=True)`` reads a fraction in ``[0, 1)``. A bad value
    gives argparse's one-line usage error naming the option, the value and the range.
    """
    what = "an integer" if kind is int else "a number"

    def shown(bound: float) -> str:  # an integer bound in full (4294967295, not 4.29497e+09)
        return str(bound) if isinstance(bound, int) else f"{bound:g}"

    if low is not None and high is not None:
        span = (
            f"in {'(' if low_open else '['}{shown(low)}, {shown(high)}{')' if high_open else ']'}"
        )
    elif low is not None:
        span = f"{'>' if low_open else '>='} {shown(low)}"
    elif high is not None:
        span = f"{'<' if high_open else '<='} {shown(high)}"
    else:
        span = ""  # no range: only ``finite`` refuses a number

    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if finite and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
        above = low is None or (value > low if low_open else value >= low)
        below = high is None or (value < high if high_open else value <= high)
        if not (above and below):
            raise argparse.ArgumentTypeError(f"must be {span}, got {text}")
        return value

    return parse
