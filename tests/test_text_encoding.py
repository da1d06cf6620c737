"""Every text file the packages read or write names its encoding.

Without ``encoding=`` Python uses the locale's code page (cp1252 on Windows), so the UTF-8
manifests and records the toolkit writes come back as mojibake when a name holds ``µ`` or ``ü``.
Ruff's ``PLW1514`` does this check only in preview, hence this scan.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Receivers whose ``.open`` is not a text-mode file open.
_NOT_TEXT = {"os", "Image", "tarfile", "zipfile", "gzip", "h5py", "tifffile", "webbrowser"}


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


def _offenders(files: list[Path], root: Path) -> list[str]:
    """``file:line`` of every such call, in file and line order."""
    found = []
    for path in files:
        calls = [n for n in ast.walk(ast.parse(path.read_bytes())) if isinstance(n, ast.Call)]
        lines = sorted({n.lineno for n in calls if _unspecified_encoding(n)})
        found += [f"{path.relative_to(root).as_posix()}:{line}" for line in lines]
    return found


def test_scan_finds_text_calls_without_an_encoding(tmp_path):
    """The scan itself: flags the default-encoding forms, passes binary and explicit ones."""
    src = tmp_path / "sample.py"
    src.write_text(
        "p.read_text()\np.write_text(s)\nopen(p)\nopen(p, 'a')\np.open()\nio.open(p, 'w')\n"
        "p.read_text(encoding='utf-8')\np.write_text(s, 'utf-8')\nopen(p, 'rb')\n"
        "p.open('wb')\nos.open(p, 0)\nImage.open(p)\nopen(p, encoding='utf-8')\n",
        encoding="utf-8",
    )
    assert _offenders([src], tmp_path) == [f"sample.py:{i}" for i in range(1, 7)]


def test_package_sources_name_their_text_encoding():
    files = sorted(ROOT.glob("packages/*/src/**/*.py"))
    assert files, "no package sources found"
    assert _offenders(files, ROOT) == [], "text I/O without encoding= (use encoding='utf-8')"
