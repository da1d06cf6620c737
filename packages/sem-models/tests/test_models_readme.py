"""The README's example runs as written and gives what its comments say."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    text = README.read_text(encoding="utf-8")
    block = re.search(r"```python\n(.*?)```", text, re.S)
    assert block is not None and text.index("```python") < 20  # the README starts with it
    ns: dict = {}
    exec(compile(block.group(1), str(README), "exec"), ns)
    printed = capsys.readouterr().out.split()
    assert math.isfinite(float(printed[0])) and float(printed[0]) > 0  # the MAE loss
    # 64-px images in 16-px patches: 16 patches of 16 * 16 * 1 values each
    assert tuple(ns["pred"].shape) == (2, 16, 256)
    assert int(ns["mask"].sum()) == 2 * 12  # 75 % of 16 patches masked per image
    assert ns["restored"].shape == (300, 200)
    assert 0 <= ns["restored"].min() and ns["restored"].max() <= 255
    assert math.isfinite(float(printed[-1]))  # the balance loss of the upcycled layers
    # upcycled in every encoder block, none in the decoder
    names = [name for name, _ in ns["sm"].moe_layers(ns["mae"])]
    assert len(names) == len(ns["mae"].blocks)
    assert not any("decoder" in name for name in names)
