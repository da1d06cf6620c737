"""Every command the READMEs and model cards show names a subcommand and options that exist.

The Python examples run in each package's README test; the shell commands (``sem restore ...``,
``sem-degrade ...``, in code blocks and inline) mostly train or read files a user has, so they
are checked here against the commands' own parsers instead: a renamed or removed option, or a
misspelt subcommand, fails here rather than in a user's shell.
"""

from __future__ import annotations

import argparse
import re
import tomllib
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted(
    [
        ROOT / "README.md",
        *ROOT.glob("docs/*.md"),
        *ROOT.glob("packages/*/README.md"),
        *ROOT.glob("packages/*/src/*/pretrained/*/MODEL_CARD.md"),
    ]
)


def _parsers() -> dict[str, Callable[[str | None], argparse.ArgumentParser]]:
    """Each console script's parser; ``sem`` builds the full sub-parser of the command asked."""
    from sem_metrology import cli as measure_cli
    from sem_physics import cli as degrade_cli
    from sem_physics import psf_cli
    from sem_train import cli as sem_cli

    return {
        "sem": sem_cli.build_parser,
        "sem-degrade": lambda _: degrade_cli.build_parser(),
        "sem-psf": lambda _: psf_cli.build_parser(),
        "sem-measure": lambda _: measure_cli._parser(),
    }


PARSERS = _parsers()
OPTION = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser] | None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return None


def _problems(command: str) -> list[str]:
    """What ``command`` (a console script's name, then its words) names that its parser lacks."""
    command = command.split(" #")[0]
    words = command.split()
    script, rest = words[0], words[1:]
    parser = PARSERS[script](rest[0] if rest else None)
    for word in rest:
        choices = _subcommands(parser)
        if choices is None or not re.fullmatch(r"[a-z][a-z0-9-]*", word):
            break  # an option, a file or a placeholder (``sem train ...``)
        if word not in choices:
            return [f"no subcommand {word!r}"]
        parser = choices[word]
    known = {option for action in parser._actions for option in action.option_strings}
    return [f"no option {o}" for o in OPTION.findall(command) if o not in known]


def _commands(text: str) -> list[str]:
    """The commands of one document: inline code and code-block lines that start with a
    console script (after ``$`` or ``uv run``), ``-m sem_train.cli`` read as ``sem``; a code
    block's indented line continues the command above it (a wrapped synopsis)."""
    lines: list[str] = []
    for block in re.findall(r"```[\w-]*\n(.*?)```", text, re.S):
        for line in block.splitlines():
            if line[:1].isspace() and lines and line.strip()[:1] in "[-":
                lines[-1] += " " + line.strip()
            else:
                lines.append(line)
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    found = []
    for span in lines + re.findall(r"`([^`\n]+)`", prose):
        span = span.strip().removeprefix("$ ").removeprefix("uv run ")
        span = re.sub(r"^.*?-m sem_train\.cli\b", "sem", span)
        if span.split(" ", 1)[0] in PARSERS:
            found.append(span)
    return found


def test_every_console_script_is_checked():
    scripts = set()
    for pyproject in ROOT.glob("packages/*/pyproject.toml"):
        scripts |= set(tomllib.loads(pyproject.read_text())["project"].get("scripts", {}))
    assert scripts == set(PARSERS)


def test_the_documented_commands_name_existing_subcommands_and_options():
    checked = 0
    wrong = {}
    for doc in DOCS:
        for command in _commands(doc.read_text(encoding="utf-8")):
            checked += 1
            if problems := _problems(command):
                wrong[f"{doc.relative_to(ROOT)}: {command}"] = problems
    assert not wrong, wrong
    assert checked >= 150  # the READMEs show about 180 commands: the scan finds them


def test_the_check_finds_a_wrong_option_or_subcommand():
    text = (
        "Run `sem-psf img.tif --jsn` or\n\n```bash\nsem-measure lines a.tif --roi 1 2 3 4\n"
        "    [--json | --csvv]\nuv run sem trian --config x\nsem train ...\n"
        "torchrun -m sem_train.cli train pretrain --stage 1 --config paper --data DIR --lr 1\n"
        "sem restore a.tif -o out --psf=5,5  # --not-an-option in a comment\n```\n"
    )
    commands = _commands(text)
    assert [_problems(c) for c in commands] == [
        ["no option --csvv"],
        ["no subcommand 'trian'"],
        [],
        ["no option --lr"],
        [],
        ["no option --jsn"],
    ]
