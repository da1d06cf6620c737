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


def test_s2r_benchmark_scores_real_pairs(tmp_path):
    import tifffile
    from sem_physics import make_sample

    for sub in ("defocused", "focused"):
        (tmp_path / sub).mkdir()
    refs = []
    for i in range(2):
        f = make_sample("lines", (96, 128), seed=i)
        refs.append(f)
        tifffile.imwrite(tmp_path / "focused" / f"f{i}.tif", f.astype(np.uint8))
        tifffile.imwrite(tmp_path / "defocused" / f"d{i}.tif", (f * 0.5).astype(np.uint8))
    cfg = load_benchmark_config(
        _config(
            tmp_path,
            tmp_path,
            protocol="s2r",
            defocused=str(tmp_path / "defocused"),
            focused=str(tmp_path / "focused"),
            images=None,
            crop_fraction=0.0,
        )
    )
    run_benchmark(cfg, progress=False)
    rows = json.loads((cfg.out / "methods" / "input" / "result.json").read_text())["quality"]
    assert [r["setting"] for r in rows] == ["real", "real"]
    for r, f in zip(rows, refs, strict=True):
        a = f.astype(np.uint8).astype(np.float64)
        b = (f * 0.5).astype(np.uint8).astype(np.float64)
        assert r["psnr"] == pytest.approx(10 * np.log10(255.0**2 / np.mean((a - b) ** 2)), rel=1e-4)
