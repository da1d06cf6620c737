"""The README's examples run as written (in order, in a temporary folder)."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_examples_run(tmp_path, monkeypatch, capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 2
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)
    printed = capsys.readouterr().out
    assert "wiener (96, 96)" in printed
    assert "(96, 96) 64\nFalse\n" in printed  # sem-foundation: window = model input, as is
    assert (tmp_path / "saved" / "n2v" / "model.safetensors").is_file()
    assert namespace["again"].restore(namespace["defocused"]).shape == (96, 96)
