"""One-line usage errors and one-line validation messages shared by every console script."""

from __future__ import annotations

import gc
import io
import sys
from typing import Annotated

import annotated_types as at
import pytest
from pydantic import BaseModel, Field, ValidationError, confloat
from sem_physics.cli_support import OneLineParser, is_validation_error, validation_message


def test_usage_errors_are_one_line_from_parser_and_subparsers(capsys) -> None:
    parser = OneLineParser(prog="tool")
    sub = parser.add_subparsers(dest="cmd")
    run = sub.add_parser("run")
    run.add_argument("--n", type=int, required=True)
    for argv, words in ((["run", "--n", "x"], "invalid int value"), (["nope"], "invalid choice")):
        with pytest.raises(SystemExit) as stop:
            parser.parse_args(argv)
        assert stop.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and words in err[0] and err[0].endswith("--help)"), err
        assert err[0].startswith("tool run: error: " if argv[0] == "run" else "tool: error: ")


def test_an_unknown_option_is_reported_by_the_command_it_follows(capsys) -> None:
    """``tool run --bogus`` is refused by ``tool run`` (whose --help lists its options), also
    one level further down; without a command the top-level parser reports it."""
    parser = OneLineParser(prog="tool")
    sub = parser.add_subparsers(dest="cmd")
    run = sub.add_parser("run")
    run.add_argument("--n", type=int, default=1)
    deeper = run.add_subparsers(dest="what").add_parser("fast")
    deeper.add_argument("--m", type=int, default=2)
    assert parser.parse_args(["run", "--n", "3"]).n == 3  # known options parse as before
    for argv, prog in (
        (["run", "--bogus"], "tool run"),
        (["run", "fast", "--bogus"], "tool run fast"),
        (["--bogus"], "tool"),
        (["--bogus", "run", "--n", "2"], "tool"),  # given before the command
    ):
        with pytest.raises(SystemExit) as stop:
            parser.parse_args(argv)
        assert stop.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1, err
        unknown = "--bogus"
        assert err[0] == f"{prog}: error: unrecognized arguments: {unknown} (see {prog} --help)"


class _Opts(BaseModel):
    threshold: float = Field(0.5, gt=0, lt=1)
    name: str = "a"


def test_validation_message_names_each_field_and_value() -> None:
    with pytest.raises(ValidationError) as info:
        _Opts(threshold=1.5, name=["x"] * 40)
    msg = validation_message(info.value)
    assert "\n" not in msg and msg.count(";") == 1
    assert "threshold must be in (0, 1), got 1.5" in msg
    assert msg.split("; ")[1].startswith("name: ") and "got" not in msg.split("; ")[1]
    assert is_validation_error(info.value)
    assert not is_validation_error(ValueError("threshold must be < 1"))


class _Bounds(BaseModel):
    gt: float = Field(1.0, gt=0)
    ge: float = Field(1.0, ge=0.01)
    lt: float = Field(0.0, lt=1)
    le: float = Field(0.0, le=1e9)
    closed: float = Field(1.0, ge=-1, le=1)
    half_open: int = Field(1, ge=1, lt=10)
    annotated: Annotated[float, at.Gt(0), at.Le(1000)] = 1.0
    constrained: confloat(gt=0, lt=0.5) = 0.25  # type: ignore[valid-type]
    optional: Annotated[float, Field(gt=0)] | None = None
    free: float = 0.0


class _Outer(BaseModel):
    inner: _Bounds = _Bounds()
    by_key: dict[str, _Bounds] = {}
    items: list[Annotated[float, Field(ge=0, le=1)]] = []


def _message(model: type[BaseModel], **values: object) -> str:
    with pytest.raises(ValidationError) as info:
        model(**values)
    return validation_message(info.value, model)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"gt": 0}, "gt must be > 0, got 0"),
        ({"gt": -5.0}, "gt must be > 0, got -5"),
        ({"ge": 1e-300}, "ge must be >= 0.01, got 1e-300"),
        ({"lt": 1}, "lt must be < 1, got 1"),
        ({"le": 2e9}, "le must be <= 1e9, got 2e9"),
        ({"closed": 1.5}, "closed must be in [-1, 1], got 1.5"),
        ({"closed": -1.25}, "closed must be in [-1, 1], got -1.25"),
        ({"half_open": 10}, "half_open must be in [1, 10), got 10"),
        ({"annotated": 0}, "annotated must be in (0, 1000], got 0"),
        ({"annotated": 1e300}, "annotated must be in (0, 1000], got 1e300"),
        ({"constrained": 0.5}, "constrained must be in (0, 0.5), got 0.5"),
        ({"optional": -1}, "optional must be > 0, got -1"),
        ({"closed": "abc"}, "closed must be a number in [-1, 1], got 'abc'"),
        ({"half_open": 2.5}, "half_open must be an integer in [1, 10), got 2.5"),
        (
            {"free": "abc"},
            "free: Input should be a valid number, unable to parse string as a number (got 'abc')",
        ),
    ],
)
def test_validation_message_states_the_declared_range_and_the_value(values, expected) -> None:
    assert _message(_Bounds, **values) == expected


def test_validation_message_follows_nested_models_dicts_and_lists() -> None:
    msg = _message(_Outer, inner={"closed": 2}, by_key={"a": {"annotated": -3}}, items=[0.5, 1.5])
    assert msg == (
        "inner.closed must be in [-1, 1], got 2; by_key.a.annotated must be in (0, 1000], "
        "got -3; items.1 must be in [0, 1], got 1.5"
    )


def test_validation_message_without_the_model_class() -> None:
    with pytest.raises(ValidationError) as info:
        _Bounds(closed=2, free=[1, 2])
    # the one loaded model named as the error's title gives the range
    assert validation_message(info.value).startswith("closed must be in [-1, 1], got 2; free: ")
    # a model without the field: the violated bound alone, and the value
    assert validation_message(info.value, _Opts).startswith("closed must be <= 1, got 2; ")

    class _Bounds2(BaseModel):  # a second model of that name: ambiguous
        pass

    _Bounds2.__name__ = "_Bounds"
    assert validation_message(info.value).startswith("closed must be <= 1, got 2; ")
    del _Bounds2
    gc.collect()  # the stand-in leaves pydantic's subclass list


def test_validation_message_lists_the_known_keys_of_a_misspelt_one() -> None:
    class _Strict(BaseModel, extra="forbid"):
        seed: int = 0
        pixel_size_nm: float = 1.0

    class _Holder(BaseModel, extra="forbid"):
        run: _Strict = _Strict()

    msg = _message(_Holder, run={"sead": 3, "zzz": 1})
    assert msg == (
        "run.sead: not a known key (did you mean seed?); known keys: seed, pixel_size_nm; "
        "run.zzz: not a known key; known keys: seed, pixel_size_nm"
    )
    with pytest.raises(ValidationError) as info:  # no model to look in: still one clear part
        _Holder(run={"sead": 3})
    assert validation_message(info.value, _Opts) == (
        "run.sead: not a known key (extra inputs are not permitted)"
    )


def test_validation_message_names_fields_with_a_label() -> None:
    with pytest.raises(ValidationError) as info:
        _Bounds(half_open=0, free=None)
    msg = validation_message(info.value, _Bounds, label=lambda loc: "--" + loc[-1])
    assert msg == "--half_open must be in [1, 10), got 0; --free: Input should be a valid number"


def test_console_main_ends_an_interrupt_or_a_closed_pipe_with_one_status(capsys) -> None:
    from sem_physics.pipes import EXIT_BROKEN_PIPE, EXIT_INTERRUPTED, console_main

    def stopped(argv):  # Ctrl-C anywhere in the command, argument parsing included
        raise KeyboardInterrupt

    main = console_main("tool")(stopped)
    assert main(["in.tif"]) == EXIT_INTERRUPTED == 130
    assert capsys.readouterr() == ("", "tool: interrupted\n")
    with pytest.raises(KeyboardInterrupt):  # --debug: the traceback
        main(["in.tif", "--debug"])

    def reader_gone(argv):
        raise BrokenPipeError

    assert console_main("tool")(reader_gone)([]) == EXIT_BROKEN_PIPE == 141
    assert capsys.readouterr().err == ""
    assert console_main("tool")(lambda argv: 3)([]) == 3


def test_console_main_prints_warnings_and_log_records_as_prog_kind_lines(capsys) -> None:
    """A library's log record (the image reader's note on a JPEG) or Python warning is one line
    ``tool: warning: ...`` (the reader's log printed bare before); INFO records, shown when the
    command asks for them, are notes; the root logger is left as it was."""
    import logging
    import warnings

    from sem_physics.pipes import console_main

    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)

    def command(argv):
        logging.getLogger("sem_physics.io").warning("%s: JPEG input:\n lossy", "a.jpg")
        logging.getLogger("sem_train.engine").info("hidden: INFO is not shown by default")
        warnings.warn("a library's\nwarning", UserWarning, stacklevel=1)
        root.setLevel(logging.INFO)  # as sem does
        logging.getLogger("sem_train.engine").info("epoch 1/2")
        logging.getLogger("x").error("failed")
        return 0

    assert console_main("tool")(command)([]) == 0
    assert capsys.readouterr().err.splitlines() == [
        "tool: warning: a.jpg: JPEG input: lossy",
        "tool: warning: a library's warning",
        "tool: note: epoch 1/2",
        "tool: error: failed",
    ]
    assert (root.level, root.handlers) == (level, handlers)


class _Terminal(io.BytesIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(("tty", "encoding", "errors"), [(False, "utf-8", "strict"),
                                                         (True, "cp1252", "replace")])  # fmt: skip
def test_utf8_stdout_redirected_is_utf8_a_terminal_replaces(
    monkeypatch: pytest.MonkeyPatch, tty: bool, encoding: str, errors: str
) -> None:
    """A cp1252 pipe becomes UTF-8; a cp1252 console keeps its code page and shows "?"."""
    from sem_physics.pipes import utf8_stdout

    raw = _Terminal() if tty else io.BytesIO()
    stream = io.TextIOWrapper(raw, encoding="cp1252")
    monkeypatch.setattr(sys, "stdout", stream)
    utf8_stdout()
    print("S→R µ", end="")
    stream.flush()
    assert (stream.encoding, stream.errors) == (encoding, errors)
    assert raw.getvalue() == "S→R µ".encode(encoding, errors)


def test_progress_bars_are_on_in_a_jupyter_kernel_and_off_in_a_pipe(monkeypatch):
    """A Jupyter kernel's stderr is no terminal but redraws a bar in place: bars on there."""
    from sem_physics.cli_support import stderr_is_terminal

    OutStream = type("OutStream", (io.StringIO,), {"__module__": "ipykernel.iostream"})
    monkeypatch.setattr(sys, "stderr", OutStream())
    assert stderr_is_terminal()
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert not stderr_is_terminal()
