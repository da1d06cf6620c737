"""The README's Python examples run as written, in order, in a temporary folder."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from sem_metrology import psnr
from sem_physics import DegradationParams, degrade, write_image
from sem_physics.samples import make_sample

README = Path(__file__).resolve().parents[1] / "README.md"


def _blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


def test_readme_examples_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    blocks = _blocks()
    assert len(blocks) == 3 and README.read_text(encoding="utf-8").index("```python") < 20
    monkeypatch.chdir(tmp_path)
    # the restore example reads "defocused.tif": lines blurred by the PSF it names, gain 1
    focused = make_sample("lines", (160, 192), seed=3)
    setting = DegradationParams(
        rx_px=5, ry_px=5, beta=1.95, theta_rad=0, gain=1, offset=0, sigma=1, dose=200
    )
    write_image("defocused.tif", degrade(focused, setting, rng=0), dtype="float32")
    ns: dict = {}

    exec(compile(blocks[0], str(README), "exec"), ns)  # Stage 1 on generated images
    result = ns["result"]
    assert result.global_step >= 2  # two epochs, at least one step each
    assert (Path(result.best_dir) / "model.safetensors").is_file()

    exec(compile(blocks[1], str(README), "exec"), ns)  # restore with a given PSF
    out = ns["out"]
    assert out.psf_source == "given" and (out.psf.rx_px, out.psf.ry_px) == (5.0, 5.0)
    assert out.image.shape == focused.shape and out.image.dtype == np.float32
    # deconvolving with the true PSF brings the image closer to the focused one
    assert psnr(focused, out.image) > psnr(focused, ns["micrograph"]) + 1.0

    exec(compile(blocks[2], str(README), "exec"), ns)  # the quick demo, two rows
    report = Path(ns["report"])
    table = (report.parent / "table.md").read_text(encoding="utf-8")
    assert "| defocused input |" in table and "| wiener |" in table
    assert capsys.readouterr().out.count("# ") >= 1  # the report's first 400 characters
