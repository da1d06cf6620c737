"""The weights a learned method of an evaluation loads: keyed by their contents (a retrained
checkpoint at the same path reruns the method, an unchanged one is reused), named in the
report, and refused before any work when of the wrong kind for the method."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import pytest
import torch
import yaml
from sem_baselines import get_restorer
from sem_baselines.restorer import RestorerConfigError
from sem_models import MoEConfig, RestorationModel, build_mae, save_model
from sem_models import pretrained as pretrained_mod
from sem_models.testing import MICRO_MAE
from sem_train.cli import main
from sem_train.evaluation import run_benchmark
from sem_train.evaluation import runner as runner_mod
from sem_train.evaluation.config import check_method_settings, load_benchmark_config, make_config
from sem_train.evaluation.protocols import ProtocolManifest
from sem_train.evaluation.runner import method_hash
from sem_train.evaluation.weights import checkpoint_kind_problem, method_weights

WINDOW = {"window_px": 32, "overlap_px": 8, "device": "cpu"}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _mae(seed: int = 0, moe: bool = False):
    torch.manual_seed(seed)
    extra = {"moe": MoEConfig(num_experts=2)} if moe else {}
    return build_mae("tiny", in_chans=1, **MICRO_MAE, **extra)


def _export(folder: Path, seed: int = 0, *, kind: str = "restoration", moe: bool = False) -> Path:
    """A tiny sem-models export: a fine-tuned (residual) restoration model or a pretrained MAE."""
    mae = _mae(seed, moe)
    save_model(RestorationModel(mae, residual=True) if kind == "restoration" else mae, folder)
    return folder


def _run_folder(root: Path, seed: int = 0, **kind) -> Path:
    """A ``sem train`` run folder whose checkpoints/best.json names its best export."""
    _export(root / "checkpoints" / "best-00000010", seed, **kind)
    (root / "checkpoints" / "best.json").write_text(json.dumps({"dir": "best-00000010"}))
    return root


def _bench(tmp_path: Path, method_config: dict, kind: str = "lines") -> dict:
    return {
        "out": str(tmp_path / "bench"),
        "generated": {"n_per_kind": 1, "shape": (64, 64), "kinds": [kind]},
        "n_train": 1,
        "n_val": 0,
        "n_eval": 1,
        "settings": ["midpoint"],
        "methods": ["input", "sem-foundation"],
        "method_config": method_config,
        "quality_metrics": ["psnr"],
        "figure_cases": 0,
    }


def _methods_row(out: Path, name: str) -> str:
    """``name``'s row of the report's Methods section."""
    section = (out / "report.md").read_text().split("## Methods", 1)[1]
    return next(x for x in section.splitlines() if x.startswith(f"| {name} |"))


def _sha(*files: Path) -> str:
    lines = "".join(f"{f.name}\0{hashlib.sha256(f.read_bytes()).hexdigest()}\n" for f in files)
    return hashlib.sha256(lines.encode()).hexdigest()


def test_a_retrained_checkpoint_reruns_the_method_and_an_unchanged_one_is_reused(
    tmp_path, methods_run, caplog
):
    run = _run_folder(tmp_path / "runs" / "ft")
    export = run / "checkpoints" / "best-00000010"
    # a contacts image: no line metrology nor its PSD plot in each of the four reports
    given = {"sem-foundation": {"checkpoint_dir": str(run), **WINDOW}}
    cfg = make_config(_bench(tmp_path, given, kind="contacts"))
    ran = methods_run
    result = cfg.out / "methods" / "sem-foundation" / "result.json"
    run_benchmark(cfg, progress=False)
    first = json.loads(result.read_text())
    assert ran == ["input", "sem-foundation"] and first["failed"] is None
    caplog.set_level(logging.INFO, logger=runner_mod.__name__)
    run_benchmark(cfg, progress=False)  # nothing changed: reused
    assert ran == ["input", "sem-foundation"]
    assert "sem-foundation: unchanged results" in caplog.text
    # retrained in place: same path, same size (same architecture), even the old mtime
    weights = export / "model.safetensors"
    size, stat = weights.stat().st_size, weights.stat()
    _export(export, seed=1)
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert weights.stat().st_size == size
    run_benchmark(cfg, progress=False)
    assert ran == ["input", "sem-foundation", "sem-foundation"]
    second = json.loads(result.read_text())
    assert second["config_hash"] != first["config_hash"]
    assert second["quality"][0]["psnr"] != first["quality"][0]["psnr"]
    # a new best export named by best.json: the run folder now means other weights
    _export(run / "checkpoints" / "best-00000020", seed=2)
    (run / "checkpoints" / "best.json").write_text(json.dumps({"dir": "best-00000020"}))
    run_benchmark(cfg, progress=False)
    assert ran[-1] == "sem-foundation" and len(ran) == 4
    third = json.loads(result.read_text())
    source = third["weights"]["sources"][0]
    assert source["given"] == str(run) and source["path"].endswith("best-00000020")


def test_the_report_names_the_given_weights_and_credits_the_shipped_model_only_when_used(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(pretrained_mod, "_ROOT", tmp_path / "shipped")
    _export(tmp_path / "shipped" / "sem-foundation", seed=5)
    run = _run_folder(tmp_path / "runs" / "ft")
    export = run / "checkpoints" / "best-00000010"
    sha = _sha(export / "config.json", export / "model.safetensors")
    given = make_config(
        _bench(tmp_path, {"sem-foundation": {"checkpoint_dir": str(run), **WINDOW}})
    )
    out = run_benchmark(given, progress=False).parent
    row = _methods_row(out, "sem-foundation")
    assert f"`{run}` → `{export}` (sha256 {sha[:12]})" in row
    assert "shipped" not in row
    table = (out / "table.md").read_text()
    assert "| sem-foundation |" in table  # the row keeps the method's name ...
    assert f"sem-foundation: `{run}`" in table and sha[:12] in table  # ... and names the weights
    assert table in (out / "report.md").read_text()
    methods = {m["method"]: m for m in json.loads((out / "results.json").read_text())["methods"]}
    source = methods["sem-foundation"]["weights_sources"][0]
    assert (source["given"], source["path"], source["sha256"]) == (str(run), str(export), sha)
    assert methods["defocused input"]["weights_sources"] == []
    # the shipped model: said so, with its fingerprint; table.md has no weights line
    shipped = make_config(_bench(tmp_path / "s", {"sem-foundation": WINDOW}))
    out = run_benchmark(shipped, progress=False).parent
    row = _methods_row(out, "sem-foundation")
    folder = tmp_path / "shipped" / "sem-foundation"
    sha = _sha(folder / "config.json", folder / "model.safetensors")
    assert "`sem-foundation` model shipped with sem-models" in row and sha[:12] in row
    assert "Weights given" not in (out / "table.md").read_text()


def test_an_upgraded_shipped_model_changes_the_key_and_only_the_files_read_count(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(pretrained_mod, "_ROOT", tmp_path)
    _export(tmp_path / "sem-foundation", seed=0)
    _export(tmp_path / "sem-foundation-zero-shot", seed=0, kind="mae", moe=True)
    cfg = make_config({"methods": ["input", "wiener", "sem-foundation"]})
    here = cfg.model_copy(update={"method_config": {"sem-foundation": {"finetune_here": True}}})
    manifest = ProtocolManifest(protocol="s2s")

    def keys() -> tuple[str, str, str]:
        return (
            method_hash("sem-foundation", cfg, manifest),
            method_hash("sem-foundation", here, manifest),
            method_hash("wiener", cfg, manifest),
        )

    before = keys()
    assert keys() == before  # unchanged files: the same key
    _export(tmp_path / "sem-foundation", seed=1)  # upgraded weights, same config.json
    after = keys()
    # used as is, the new weights rerun it; fine-tuned here, only its config.json (the head)
    # is read, so its weights do not count; a deconvolution reads no weights at all
    assert after[0] != before[0] and after[1:] == before[1:]
    _export(tmp_path / "sem-foundation-zero-shot", seed=1, kind="mae", moe=True)
    assert keys()[1] != after[1] and keys()[0] == after[0]
    weights = method_weights("sem-foundation", {"finetune_here": True})
    assert [(s.role, s.shipped) for s in weights.sources] == [
        ("weights", "sem-foundation-zero-shot"),
        ("head", "sem-foundation"),
    ]
    assert weights.trained_here and weights.describe().endswith("; fine-tuned here")
    assert list(weights.sources[1].files) == ["config.json"]


def test_a_weights_file_is_keyed_by_its_bytes(tmp_path):
    path = tmp_path / "mae_pretrain.pth"
    path.write_bytes(b"\0" * 64)
    cfg = make_config(
        {
            "methods": ["input", "mae-imagenet"],
            "method_config": {"mae-imagenet": {"weights_path": str(path)}},
        }
    )
    manifest = ProtocolManifest(protocol="s2s")
    before = method_hash("mae-imagenet", cfg, manifest)
    os.utime(path, (1, 1))  # touched, same bytes: the same key
    assert method_hash("mae-imagenet", cfg, manifest) == before
    path.write_bytes(b"\1" * 64)  # new weights of the same size
    assert method_hash("mae-imagenet", cfg, manifest) != before
    source = method_weights("mae-imagenet", {"weights_path": str(path)}).sources[0]
    assert source.files == {path.name: hashlib.sha256(b"\1" * 64).hexdigest()}
    assert method_weights("n2v", {}).describe().startswith("trained here")
    assert method_weights("mae-sem", {}).describe().startswith("trained here")
    assert method_weights("mae-imagenet", {}).describe() == "none (weights_path not set)"
    assert method_weights("wiener", {}).describe() == ""


# (method, checkpoint kind, settings, refused): what config.json shows of a wrong checkpoint
KINDS = [
    ("sem-foundation", {"kind": "mae", "moe": True}, {}, True),
    ("sem-foundation", {"kind": "mae", "moe": True}, {"finetune_here": True}, False),
    ("sem-foundation", {"kind": "restoration", "moe": True}, {}, False),
    ("sem-foundation-zero-shot", {"kind": "restoration", "moe": True}, {}, True),
    ("sem-foundation-zero-shot", {"kind": "mae", "moe": True}, {}, False),
    ("mae-sem", {"kind": "mae", "moe": True}, {}, True),
    ("mae-sem", {"kind": "restoration"}, {}, False),
]


@pytest.mark.parametrize(("name", "kind", "settings", "refused"), KINDS)
def test_the_kind_check_agrees_with_building_the_restorer(
    tmp_path, monkeypatch, name, kind, settings, refused
):
    """The check reads config.json only; building the restorer loads the model: same verdict."""
    monkeypatch.setattr(pretrained_mod, "_ROOT", tmp_path / "shipped")
    _export(tmp_path / "shipped" / "sem-foundation")  # the head a fine-tune here copies
    run = _run_folder(tmp_path / "run", **kind)
    given = {"checkpoint_dir": str(run), **settings}
    problem = checkpoint_kind_problem(name, given)
    assert (problem is not None) is refused, problem
    if refused:
        with pytest.raises(RestorerConfigError):
            get_restorer(name, **given, **WINDOW)
    else:
        assert get_restorer(name, **given, **WINDOW).network is not None


def test_a_pretrained_run_given_as_the_fine_tuned_model_is_refused_before_any_work(
    tmp_path, capsys
):
    s3 = _run_folder(tmp_path / "runs" / "s3", kind="mae", moe=True)
    (tmp_path / "images").mkdir()
    body = {
        "images": str(tmp_path / "images"),
        "out": str(tmp_path / "out"),
        "method_config": {"sem-foundation": {"checkpoint_dir": str(s3)}},
    }
    cfg = tmp_path / "bench.yaml"
    cfg.write_text(yaml.safe_dump(body))
    assert main(["benchmark", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and not (tmp_path / "out").exists()
    line = err[0]
    assert line.startswith(f"sem: error: {cfg}: method_config.sem-foundation.checkpoint_dir={s3}")
    assert "holds a pretrained MAE, not a fine-tuned restoration model" in line
    assert f"sem train finetune --init-from {s3}" in line
    assert "sem-foundation.finetune_here=true" in line and "protocol" not in line
    # with finetune_here (in the config, or --set beside a --set checkpoint) it is accepted:
    # the --set settings alone are not judged, only the merged config
    check_method_settings({"sem-foundation": {"checkpoint_dir": str(s3)}})
    body["method_config"] = {"sem-foundation": {"finetune_here": True}}
    cfg.write_text(yaml.safe_dump(body))
    merged = load_benchmark_config(cfg, {"sem-foundation": {"checkpoint_dir": str(s3)}})
    assert merged.method_config["sem-foundation"]["checkpoint_dir"] == str(s3)


def test_weights_fingerprints_are_exact_for_every_file_read(tmp_path):
    """Every file of the export counts: a config.json edit alone changes the key."""
    run = _run_folder(tmp_path / "run")
    config = run / "checkpoints" / "best-00000010" / "config.json"
    before = method_weights("mae-sem", {"checkpoint_dir": str(run)}).sources[0].sha256
    meta = json.loads(config.read_text())
    meta["freeze_encoder"] = not meta["freeze_encoder"]
    config.write_text(json.dumps(meta))
    after = method_weights("mae-sem", {"checkpoint_dir": str(run)}).sources[0].sha256
    assert before != after
    assert after == _sha(config, config.parent / "model.safetensors")
