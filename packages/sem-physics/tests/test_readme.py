"""The package README's Python examples run and print what they say."""

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


def test_readme_blind_estimate_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    """The blind-estimate example: it prints the estimate of the midpoint setting it degrades
    with (15.5 px, sigma 5.5) and builds the PSF a deconvolution uses."""
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    (code,) = [
        b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "estimate_degradation" in b
    ]
    ns: dict = {}
    exec(compile(code, "README.md", "exec"), ns)
    rx, rx_err, sigma, dose = (float(v) for v in capsys.readouterr().out.split()[:4])
    assert abs(rx - 15.5) < max(3 * rx_err, 0.2 * 15.5) and rx_err > 0
    assert abs(sigma - 5.5) < 0.2 * 5.5 and dose > 0
    kernel = ns["kernel"]
    assert kernel.shape[0] % 2 == 1 and abs(float(kernel.sum()) - 1.0) < 1e-6
