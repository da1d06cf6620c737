"""One-line usage errors and one-line validation messages shared by every console script."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, Field, ValidationError
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


class _Opts(BaseModel):
    threshold: float = Field(0.5, gt=0, lt=1)
    name: str = "a"


def test_validation_message_names_each_field_and_value() -> None:
    with pytest.raises(ValidationError) as info:
        _Opts(threshold=1.5, name=["x"] * 40)
    msg = validation_message(info.value)
    assert "\n" not in msg and msg.count(";") == 1
    assert "threshold: Input should be less than 1 (got 1.5)" in msg
    assert msg.split("; ")[1].startswith("name: ") and "got" not in msg.split("; ")[1]
    assert is_validation_error(info.value)
    assert not is_validation_error(ValueError("threshold must be < 1"))


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
