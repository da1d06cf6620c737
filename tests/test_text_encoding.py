"""Every text file the packages read or write names its encoding, and so does every child
process whose output is read as text (sources and tests).

Without ``encoding=`` Python uses the locale's code page (cp1252 on Windows), so the UTF-8
manifests and records the toolkit writes come back as mojibake when a name holds ``µ`` or ``ü``,
and a test reading a command's UTF-8 output fails there. Ruff's ``PLW1514`` does the file check
only in preview, hence this scan.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Receivers whose ``.open`` is not a text-mode file open.
_NOT_TEXT = {"os", "Image", "tarfile", "zipfile", "gzip", "h5py", "tifffile", "webbrowser"}
# subprocess functions that decode a child's output with the locale when asked for text.
_CHILD_TEXT = {"run", "Popen", "check_output", "call", "check_call"}


def _child_text_without_encoding(call: ast.Call) -> bool:
    """True for ``subprocess.run(..., text=True)`` (or ``universal_newlines``) without encoding."""
    f = call.func
    name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else None
    if name not in _CHILD_TEXT or any(k.arg in ("encoding", None) for k in call.keywords):
        return False
    return any(
        k.arg in ("text", "universal_newlines")
        and not (isinstance(k.value, ast.Constant) and not k.value.value)
        for k in call.keywords
    )


def _unspecified_encoding(call: ast.Call) -> bool:
    """True for ``read_text``/``write_text``/text-mode ``open`` without an encoding."""
    f = call.func
    if any(k.arg in ("encoding", None) for k in call.keywords):
        return False
    if isinstance(f, ast.Attribute) and f.attr == "read_text":
        return not call.args
    if isinstance(f, ast.Attribute) and f.attr == "write_text":
        return len(call.args) < 2
    if isinstance(f, ast.Name) and f.id == "open":
        mode_at, encoding_at = 1, 3
    elif isinstance(f, ast.Attribute) and f.attr == "open":
        owner = f.value.id if isinstance(f.value, ast.Name) else None
        if owner in _NOT_TEXT:
            return False
        mode_at, encoding_at = (1, 3) if owner in ("io", "builtins") else (0, 2)  # else Path.open
    else:
        return False
    if len(call.args) > encoding_at:
        return False
    mode = call.args[mode_at] if len(call.args) > mode_at else None
    mode = next((k.value for k in call.keywords if k.arg == "mode"), mode)
    return not (isinstance(mode, ast.Constant) and "b" in str(mode.value))


def _any_text_without_encoding(call: ast.Call) -> bool:
    return _unspecified_encoding(call) or _child_text_without_encoding(call)


def _offenders(
    files: list[Path], root: Path, offends: Callable[[ast.Call], bool] = _any_text_without_encoding
) -> list[str]:
    """``file:line`` of every call that ``offends``, in file and line order."""
    found = []
    for path in files:
        calls = [n for n in ast.walk(ast.parse(path.read_bytes())) if isinstance(n, ast.Call)]
        lines = sorted({n.lineno for n in calls if offends(n)})
        found += [f"{path.relative_to(root).as_posix()}:{line}" for line in lines]
    return found


def test_scan_finds_text_calls_without_an_encoding(tmp_path):
    """The scan itself: flags the default-encoding forms, passes binary and explicit ones."""
    src = tmp_path / "sample.py"
    src.write_text(
        "p.read_text()\np.write_text(s)\nopen(p)\nopen(p, 'a')\np.open()\nio.open(p, 'w')\n"
        "p.read_text(encoding='utf-8')\np.write_text(s, 'utf-8')\nopen(p, 'rb')\n"
        "p.open('wb')\nos.open(p, 0)\nImage.open(p)\nopen(p, encoding='utf-8')\n"
        "subprocess.run(a, text=True)\nPopen(a, universal_newlines=True)\n"
        "subprocess.run(a, text=True, encoding='utf-8')\nsubprocess.run(a)\n"
        "subprocess.run(a, text=False)\n",
        encoding="utf-8",
    )
    assert _offenders([src], tmp_path) == [f"sample.py:{i}" for i in (1, 2, 3, 4, 5, 6, 14, 15)]


def test_package_sources_name_their_text_encoding():
    files = sorted(ROOT.glob("packages/*/src/**/*.py"))
    assert files, "no package sources found"
    assert _offenders(files, ROOT) == [], "text I/O without encoding= (use encoding='utf-8')"


def test_tests_read_child_output_with_its_encoding():
    """The commands write UTF-8 (``sem_physics.pipes``); a test reading their output as text
    with the locale's code page fails on Windows for any non-ASCII name."""
    files = sorted([*ROOT.glob("packages/*/tests/**/*.py"), *ROOT.glob("tests/**/*.py")])
    assert files, "no tests found"
    bad = _offenders(files, ROOT, _child_text_without_encoding)
    assert bad == [], "subprocess text output without encoding= (use encoding='utf-8')"
