"""``sem restore`` and ``sem benchmark`` take a method from an installed plugin like a
built-in one: a distribution declaring a ``sem_baselines.restorers`` entry point, found on
``PYTHONPATH`` by a fresh ``sem`` process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

#: The plugin: ``double`` multiplies the grey levels by ``gain`` (2 by default).
MODULE = """
import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from sem_baselines import Restorer, check_image, register


class DoubleConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    gain: float = Field(2.0, gt=0)


@register("double", DoubleConfig)
class DoubleRestorer(Restorer):
    def __init__(self, config=None):
        self.config = config or DoubleConfig()

    def restore(self, image):
        return np.clip(check_image(image) * self.config.gain, 0, 255).astype(np.float32)
"""


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A folder holding the plugin's module and its ``sem-double`` 0.1 dist-info."""
    root = tmp_path / "site"
    info = root / "sem_double-0.1.dist-info"
    info.mkdir(parents=True)
    (root / "sem_double.py").write_text(MODULE, encoding="utf-8")
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: sem-double\nVersion: 0.1\n", encoding="utf-8"
    )
    (info / "entry_points.txt").write_text(
        "[sem_baselines.restorers]\ndouble = sem_double\n", encoding="utf-8"
    )
    return root


def python(site: Path, *argv: str | Path) -> subprocess.CompletedProcess:
    """``python ARGV`` (a fresh interpreter) with ``site`` on ``PYTHONPATH``."""
    path = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH")) if p)
    return subprocess.run(
        [sys.executable, *map(str, argv)],
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=300,
        check=False,
        env={**os.environ, "PYTHONPATH": path},
    )


def sem(site: Path, *argv: str | Path) -> subprocess.CompletedProcess:
    """``sem ARGV`` in a fresh interpreter with ``site`` on ``PYTHONPATH``."""
    return python(site, "-m", "sem_train.cli", *argv)


def test_sem_restore_runs_a_plugin_method(tmp_path, site):
    image = np.random.default_rng(0).integers(10, 120, (40, 56)).astype(np.uint8)
    tifffile.imwrite(tmp_path / "a.tif", image)
    out = tmp_path / "out"
    argv = ["restore", tmp_path / "a.tif", "-o", out, "--method", "double"]
    done = sem(site, *argv, "--brightness", "method", "--float32")
    assert done.returncode == 0, done.stderr
    restored = tifffile.imread(out / "a.tif")
    assert restored.dtype == np.float32
    np.testing.assert_array_equal(restored, 2 * image.astype(np.float32))
    record = json.loads((out / "restore.json").read_text(encoding="utf-8"))
    assert record["method"] == "double"


def test_plugins_are_read_only_for_a_name_that_is_not_built_in(tmp_path, site):
    """A restore with a built-in method never reads the installed packages' entry points (its
    start-up stays as fast as without plugins); the first plugin name reads them."""
    tifffile.imwrite(tmp_path / "a.tif", np.full((32, 32), 80, np.uint8))
    runs = [["--method", "wiener", "--psf", "2,2,0,2"], ["--method", "double"]]
    code = "import sys\nfrom sem_train.cli import main\n" + "".join(
        f"rc = main({['restore', str(tmp_path / 'a.tif'), '-o', str(tmp_path / m[1]), *m]!r})\n"
        "print(rc, 'sem_baselines.plugins' in sys.modules, 'sem_double' in sys.modules)\n"
        for m in runs
    )
    done = python(site, "-c", code)
    assert done.returncode == 0, done.stderr
    seen = [line for line in done.stdout.splitlines() if not line.startswith("restored ")]
    assert seen == ["0 False False", "0 True True"], done.stdout


def test_unknown_method_errors_list_the_plugin_methods(tmp_path, site):
    tifffile.imwrite(tmp_path / "a.tif", np.full((32, 32), 80, np.uint8))
    done = sem(site, "restore", tmp_path / "a.tif", "-o", tmp_path / "out", "--method", "doubel")
    assert done.returncode == 2
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("sem: error: unknown method 'doubel'; available: input, ")
    assert ", wiener-true-psf, double" in line


def test_sem_benchmark_checks_a_plugin_method_and_its_settings(tmp_path, site):
    """The benchmark knows the plugin's method and its typed settings: a bad value is refused
    before any work, naming the setting."""
    config = tmp_path / "bench.yaml"
    config.write_text(f"methods: [input]\nout: {tmp_path / 'bench'}\n", encoding="utf-8")
    argv = ["benchmark", "--config", config, "--methods", "input,double"]
    done = sem(site, *argv, "--set", "double.gain=-1")
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == "sem: error: --set double.gain must be > 0, got -1"
    assert not (tmp_path / "bench").exists()


@pytest.mark.slow
def test_sem_benchmark_gives_a_plugin_method_its_row(tmp_path, site):
    """With gain 1 the plugin returns its input: its row scores what the input's row does."""
    config = tmp_path / "bench.yaml"
    config.write_text(
        # no line image and no figure: no metrology plot, matplotlib never imported
        "generated: {n_per_kind: 1, shape: [96, 96], kinds: [contacts]}\n"
        "settings: [midpoint]\nn_train: 0\nn_val: 0\nquality_metrics: [psnr]\nfigure_cases: 0\n"
        f"methods: [input, double]\nout: {tmp_path / 'bench'}\n",
        encoding="utf-8",
    )
    done = sem(site, "benchmark", "--config", config, "--set", "double.gain=1", "--no-progress")
    assert done.returncode == 0, done.stderr
    results = json.loads((tmp_path / "bench" / "results.json").read_text(encoding="utf-8"))
    psnr = {row["method"]: row["metrics"]["psnr"]["mean"] for row in results["quality_summary"]}
    assert psnr["double"] == psnr["defocused input"]
    assert [m["status"] for m in results["methods"] if m["method"] == "double"] == ["ok"]
