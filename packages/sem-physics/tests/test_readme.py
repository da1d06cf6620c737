"""The package README starts with an example that runs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest


def test_readme_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = re.search(r"```python\n(.*?)```", text, re.S)
    assert block is not None and text.index("```python") < 20
    exec(compile(block.group(1), "README.md", "exec"), {})
    out = capsys.readouterr().out.split()
    assert out[:2] == ["(480,", "640)"]
    assert 0 < float(out[2]) < 255 and float(out[3]) > 0
