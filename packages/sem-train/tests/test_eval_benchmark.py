"""``sem benchmark``: config validation, resumable per method, refuses mismatched inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from sem_physics import write_samples
from sem_train.evaluation import benchmark as bench_mod
from sem_train.evaluation import load_benchmark_config, run_benchmark


@pytest.fixture
def sample_dir(tmp_path):
    folder = tmp_path / "focused"
    write_samples(folder, n_per_kind=1, shape=(96, 112), seed=3)
    return folder


def _config(tmp_path, sample_dir, **extra):
    cfg = {
        "protocol": "s2s",
        "images": str(sample_dir),
        "out": str(tmp_path / "bench"),
        "n_train": 1,
        "n_eval": 2,
        "settings": ["midpoint"],
        "methods": ["input"],
        "epochs": 1,
        "pixel_size_nm": 0.8,
        "figure_cases": 1,
        "quality_metrics": ["psnr", "ssim"],
        **extra,
    }
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_benchmark_runs_and_resumes_per_method(tmp_path, sample_dir, monkeypatch):
    cfg = load_benchmark_config(_config(tmp_path, sample_dir))
    report = run_benchmark(cfg, progress=False)
    out = cfg.out
    result = out / "methods" / "input" / "result.json"
    assert report.is_file() and result.is_file()
    first = json.loads(result.read_text())
    assert len(first["quality"]) == 2 and all(r["status"] == "ok" for r in first["quality"])
    summary = json.loads((out / "results.json").read_text())["quality_summary"]
    psnr = next(s for s in summary if s["method"] == "defocused input")["psnr_mean"]
    assert np.isfinite(psnr)

    # A rerun must not restore again: the method's result is loaded from disk.
    def boom(*a, **k):
        raise AssertionError("method rerun although its results exist")

    monkeypatch.setattr(bench_mod, "run_method", boom)
    mtime = result.stat().st_mtime_ns
    run_benchmark(cfg, progress=False)
    assert result.stat().st_mtime_ns == mtime
    again = json.loads((out / "results.json").read_text())["quality_summary"]
    assert next(s for s in again if s["method"] == "defocused input")["psnr_mean"] == psnr
    # Different inputs (another seed) in the same folder are refused.
    other = cfg.model_copy(update={"seed": 1})
    with pytest.raises(ValueError, match="different protocol inputs"):
        run_benchmark(other, progress=False)


def test_benchmark_config_errors_name_the_field(tmp_path, sample_dir):
    with pytest.raises(ValueError, match="n_eval"):
        load_benchmark_config(_config(tmp_path, sample_dir, n_eval=0))
    with pytest.raises(ValueError, match="unknown_key"):
        load_benchmark_config(_config(tmp_path, sample_dir, unknown_key=1))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_benchmark_config(tmp_path / "nope.yaml")
    cfg = load_benchmark_config(_config(tmp_path, sample_dir, protocol="s2r"))
    with pytest.raises(ValueError, match="defocused"):
        run_benchmark(cfg, progress=False)
