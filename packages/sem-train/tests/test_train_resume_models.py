"""The models a run starts from: paths recorded absolute, Stage 3's teacher found where the
Stage-2 run recorded it (never relative to the current folder) and recorded as used, a model
of the wrong kind refused in one line, and config errors that keep their reason."""

from __future__ import annotations

import hashlib
import json
import os
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from sem_models.testing import MICRO_MAE
from sem_physics.samples import write_samples
from sem_physics.testing import main_in_fresh_interpreter
from sem_train.cli import describe_error, main
from sem_train.config import load_config
from sem_train.modeling import resolve_model_dir
from sem_train.preflight import stage3_teacher_dir, start_model_dir

TINY = {k: v for k, v in MICRO_MAE.items() if k != "img_size"} | {"depth": 1}
RUN = {"epochs": 1, "batch_size_per_process": 2, "progress": False, "tensorboard": False}


@contextmanager
def _inside(folder: Path):
    here = Path.cwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(here)


def _yaml(path: Path, **body) -> Path:
    data = {"preset": "cpu-small", "data": {"image_size_px": 32, "val_fraction": 0.25}}
    data["run"] = dict(RUN)
    data.update(body)
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def chain(tmp_path_factory) -> Path:
    """``base/runs/s1`` (Stage 1) and ``base/runs/s2`` (Stage 2 from it), both started in
    ``base`` with relative paths, as a user types them."""
    base = tmp_path_factory.mktemp("chain")
    write_samples(base / "images", n_per_kind=2, shape=(48, 56), seed=0)
    _yaml(base / "s1.yaml", model={"preset": "tiny", "overrides": TINY})
    _yaml(base / "s2.yaml", moe={"num_experts": 2})
    with _inside(base):
        for argv in (
            ["--stage", "1", "--config", "s1.yaml", "--output-dir", "runs/s1"],
            ["--stage", "2", "--config", "s2.yaml", "--output-dir", "runs/s2", "--init-from", "runs/s1"],
        ):  # fmt: skip
            assert main(["train", "pretrain", *argv, "--data", "images"]) == 0
    return base


def test_paths_are_recorded_absolute(chain):
    s2 = json.loads((chain / "runs/s2/config.json").read_text())
    assert s2["init_from"] == str(chain / "runs/s1")
    assert s2["data"]["root"] == str(chain / "images")
    assert s2["run"]["output_dir"] == str(chain / "runs/s2")
    assert json.loads((chain / "runs/s2/run_info.json").read_text())["cwd"] == str(chain)


def _decoy(folder: Path) -> Path:
    """``folder/runs/s1``: a Stage-1-looking export that must never be taken as the teacher."""
    export = folder / "runs" / "s1"
    export.mkdir(parents=True)
    meta = {"format": "sem-models/1", "kind": "mae", "mae": {"moe": None}}
    (export / "config.json").write_text(json.dumps(meta))
    (export / "model.safetensors").write_bytes(b"decoy")
    return export


def _stage3(chain: Path, **body):
    return load_config(
        {"init_from": str(chain / "runs/s2"), "data": {"root": str(chain / "images"),
         "image_size_px": 32}, **body}, "stage3",
    )  # fmt: skip


def test_the_teacher_of_an_older_relative_record_is_read_where_that_run_started(chain, tmp_path):
    """An older Stage-2 config.json holds ``init_from: runs/s1`` as typed: from another folder
    holding its own ``runs/s1`` the teacher is still the Stage-1 run beside Stage 2 (from the
    recorded cwd, else the relative output_dir); when neither tells, the path is read from
    the Stage-2 run folder, and a missing teacher is an error, not the current folder's."""
    real = resolve_model_dir(chain / "runs/s1")
    other = tmp_path / "elsewhere"
    _decoy(other)
    s2 = chain / "runs/s2"
    record = json.loads((s2 / "config.json").read_text())
    info = json.loads((s2 / "run_info.json").read_text())
    try:
        old = {**record, "init_from": "runs/s1", "run": {**record["run"], "output_dir": "runs/s2"}}
        (s2 / "config.json").write_text(json.dumps(old))
        with _inside(other):
            assert stage3_teacher_dir(_stage3(chain)) == real  # the cwd run_info records
            (s2 / "run_info.json").write_text(
                json.dumps({k: v for k, v in info.items() if k != "cwd"})
            )
            assert stage3_teacher_dir(_stage3(chain)) == real  # implied by run.output_dir
            old["run"]["output_dir"] = "/moved/away"
            (s2 / "config.json").write_text(json.dumps(old))
            with pytest.raises(FileNotFoundError, match=f"{s2 / 'runs/s1'} does not exist"):
                stage3_teacher_dir(_stage3(chain))
    finally:
        (s2 / "config.json").write_text(json.dumps(record))
        (s2 / "run_info.json").write_text(json.dumps(info))


def test_stage3_from_another_folder_records_the_teacher_it_used(chain, tmp_path, capsys):
    other = tmp_path / "elsewhere"
    _decoy(other)
    cfg = _yaml(tmp_path / "s3.yaml")
    argv = ["train", "pretrain", "--stage", "3", "--config", str(cfg), "--data", str(chain / "images"),
            "--init-from", str(chain / "runs/s2"), "--output-dir", "runs/s3", "--max-steps", "1"]  # fmt: skip
    with _inside(other):
        assert main(argv) == 0, capsys.readouterr().err
    out = other / "runs/s3"
    assert json.loads((out / "config.json").read_text())["teacher_from"] == str(chain / "runs/s1")
    exports = json.loads((out / "run_info.json").read_text())["model_exports"]
    assert exports["teacher_from"] == str(resolve_model_dir(chain / "runs/s1"))
    assert exports["init_from"] == str(resolve_model_dir(chain / "runs/s2"))


def _fake_run(folder: Path, record: dict, kind: str, moe: dict | None = None) -> Path:
    """A finished run's folder by its JSON files: config.json and a best export (whose weights
    are never read by the kind check)."""
    export = folder / "checkpoints" / "best-00000004"
    export.mkdir(parents=True)
    meta = {"format": "sem-models/1", "kind": kind, "mae": {"patch_size": 8, "moe": moe}}
    (export / "config.json").write_text(json.dumps(meta))
    (export / "model.safetensors").write_bytes(b"not read")
    (folder / "checkpoints" / "best.json").write_text(json.dumps({"dir": export.name}))
    (folder / "config.json").write_text(json.dumps(record))
    (folder / "run_info.json").write_text("{}")
    return folder


_KINDS = {
    "stage1": ({"stage": 1}, "mae", None),
    "stage2": ({"stage": 2, "init_from": "/x"}, "mae", {"num_experts": 2}),
    "finetune": ({"init_from": "/x", "loss": {}}, "restoration", None),
}


@pytest.mark.parametrize(
    ("stage", "given", "words"),
    [
        ("3", "finetune", "holds a fine-tune run (a restoration model, {run}/config.json); "
         "stage 3 expects a Stage-2 run"),
        ("2", "stage2", "holds a Stage-2 run (a Mixture-of-Experts masked autoencoder, "
         "{run}/config.json); stage 2 expects a Stage-1 run (a dense masked autoencoder)"),
        ("2", "finetune", "holds a fine-tune run (a restoration model, {run}/config.json); "
         "stage 2 expects a Stage-1 run"),
        ("1", "stage2", "holds a Stage-2 run"),
    ],
)  # fmt: skip
def test_init_from_of_the_wrong_kind_is_one_line_before_torch(tmp_path, stage, given, words):
    record, kind, moe = _KINDS[given]
    run = _fake_run(tmp_path / given, record, kind, moe)
    (tmp_path / "images").mkdir()
    argv = ["train", "pretrain", "--stage", stage, "--config", "cpu-small", "--data",
            str(tmp_path / "images"), "--init-from", str(run), "--output-dir", str(tmp_path / "o")]  # fmt: skip
    done = main_in_fresh_interpreter("sem_train.cli", argv)
    assert (done.status, done.loaded, done.stdout) == (2, [], []), done
    (line,) = done.stderr
    assert line.startswith(f"sem: error: init_from={run} ") and words.format(run=run) in line
    assert not (tmp_path / "o").exists()


def test_stage3_refuses_a_teacher_that_is_no_masked_autoencoder(tmp_path):
    record, kind, moe = _KINDS["finetune"]
    ft = _fake_run(tmp_path / "ft", record, kind, moe)
    s2 = _fake_run(tmp_path / "s2", *_KINDS["stage2"])
    cfg = load_config({"init_from": str(s2), "teacher_from": str(ft)}, "stage3")
    with pytest.raises(ValueError, match=r"teacher_from=.*ft holds a fine-tune run .*teacher"):
        stage3_teacher_dir(cfg)
    assert start_model_dir("finetune", ft) == ft / "checkpoints/best-00000004"  # accepted


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"data": {"image_size_px": 30}},
         "data.image_size_px=30 px must be a multiple of the patch size, "
         "model.overrides.patch_size=8 px"),
        ({"model": {"overrides": {"patch_size": 7}}},
         "data.image_size_px=64 px must be a multiple of the patch size, "
         "model.overrides.patch_size=7 px"),
        ({"model": {"overrides": {"patch_size": 0}}},
         "model.overrides.patch_size must be >= 1, got 0"),
    ],
)  # fmt: skip
def test_a_model_that_cannot_be_built_is_refused_with_its_reason(tmp_path, body, words):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(yaml.safe_dump({"preset": "cpu-small", **body}))
    (tmp_path / "images").mkdir()
    argv = ["train", "pretrain", "--stage", "1", "--config", str(cfg), "--data", str(tmp_path / "images")]  # fmt: skip
    done = main_in_fresh_interpreter("sem_train.cli", argv)
    assert (done.status, done.loaded) == (2, []), done
    (line,) = done.stderr
    assert f"({cfg})" in line and words in line and "validation error for" not in line


def test_an_embedded_pydantic_error_keeps_its_reason_on_one_line():
    from sem_models.config import mae_config

    with pytest.raises(ValueError) as info:
        mae_config("tiny", img_size=30, patch_size=8)
    code, message = describe_error(info.value)
    assert code == 2 and "\n" not in message
    assert message.startswith("invalid MAE config for preset 'tiny': ")
    assert "img_size=30 px is not a multiple of patch_size=8 px" in message


def test_stage1_init_from_trains_the_given_model_further(chain, tmp_path):
    """Stage 1 continues an earlier Stage-1 model as a new run (what a refused --epochs
    resume points to); a model other than the config's is refused, naming the field."""
    from sem_train.stages import build_stage1_task

    body = {"model": {"preset": "tiny", "overrides": TINY}, "init_from": str(chain / "runs/s1")}
    body["data"] = {"root": str(chain / "images"), "image_size_px": 32}
    task = build_stage1_task(load_config(body, "stage1"))
    saved = load_file(str(resolve_model_dir(chain / "runs/s1") / "model.safetensors"))
    assert all(torch.equal(saved[k], v) for k, v in task.model.state_dict().items())
    body["data"]["image_size_px"] = 48
    with pytest.raises(ValueError, match=r"img_size 32 \(model\) vs 48 \(config\)"):
        build_stage1_task(load_config(body, "stage1"))


def test_stage1_accepts_a_model_saved_before_a_defaulted_field_existed(tmp_path):
    """An export lacking MAE fields (saved before they existed) has their defaults: it is the
    config's model; a real difference is still refused."""
    from sem_models.config import MAEConfig, mae_config

    want = mae_config("tiny", in_chans=1, img_size=32, **TINY).model_dump(mode="json")
    defaulted = [k for k, v in want.items() if MAEConfig.model_fields[k].default == v]
    assert defaulted  # fields an older export may lack
    old = {k: v for k, v in want.items() if k not in defaulted}
    run = _fake_run(tmp_path / "old", {"stage": 1}, "mae")
    export = resolve_model_dir(run)
    meta = {"format": "sem-models/1", "kind": "mae", "mae": old}
    (export / "config.json").write_text(json.dumps(meta))
    body = {"model": {"preset": "tiny", "overrides": TINY}, "data": {"image_size_px": 32}}
    assert start_model_dir("stage1", run, load_config(body, "stage1")) == export
    body["data"]["image_size_px"] = 48
    with pytest.raises(ValueError, match=r"img_size 32 \(model\) vs 48 \(config\)"):
        start_model_dir("stage1", run, load_config(body, "stage1"))


def test_stage3_names_a_derived_teacher_as_derived(tmp_path, monkeypatch):
    """The teacher behind the Stage-2 run (not given as teacher_from) is named as derived in
    the error of the stage itself, after it recorded the teacher as its teacher_from."""
    from sem_train.stages import run_stage3

    ft = _fake_run(tmp_path / "ft", *_KINDS["finetune"])
    s2 = _fake_run(tmp_path / "s2", {"stage": 2, "init_from": str(ft)}, "mae", {"num_experts": 2})
    monkeypatch.setattr(
        "sem_train.stages.stage3.modeling.load_model", lambda _: torch.nn.Linear(1, 1)
    )
    cfg = load_config({"init_from": str(s2), "run": {"output_dir": str(tmp_path / "o")}}, "stage3")
    with pytest.raises(ValueError) as info:
        run_stage3(cfg)
    message = str(info.value)
    assert message.startswith(f"teacher_from (the Stage-1 model behind {s2})={ft} holds")
    assert "teacher expects a Stage-1 run" in message


def test_stage3_refuses_a_derived_teacher_that_stage2_did_not_start_from(chain):
    """The Stage-1 folder a Stage-2 run recorded was renamed and another Stage-1 model put at
    its path: Stage 3 derives the teacher from that path, and distilling from it would train
    towards another model without a word. The Stage-2 model's frozen tensors tell them apart;
    the teacher given by its new name, or the folder put back, is taken."""
    import shutil

    from safetensors.torch import save_file
    from sem_train.stages import build_stage3_task

    s1, renamed = chain / "runs/s1", chain / "runs/s1-renamed"
    cfg = _stage3(chain)
    os.rename(s1, renamed)
    try:
        shutil.copytree(renamed, s1)
        weights = resolve_model_dir(s1) / "model.safetensors"
        other = {k: v + 0.01 for k, v in load_file(weights).items()}  # another Stage-1 model
        save_file(other, str(weights))
        with pytest.raises(ValueError) as info:
            build_stage3_task(cfg)
        message = str(info.value)
        assert f"={s1} is not the model {chain / 'runs/s2'} was trained from" in message
        assert "set teacher_from to the Stage-1 run it started from" in message
        given = cfg.model_copy(update={"teacher_from": renamed})
        assert build_stage3_task(given).teacher is not None
    finally:
        shutil.rmtree(s1, ignore_errors=True)
        os.rename(renamed, s1)
    assert build_stage3_task(cfg).teacher is not None  # the folder put back: derived again


def test_a_run_resumes_from_its_start_model_moved_to_a_new_path(chain, tmp_path, capsys):
    """The folders were moved: ``--init-from`` names Stage 2's start model (its teacher,
    loaded again on resume) at its new path. The same weights there (``run_info.json``'s
    ``model_sha256``) resume the run and the resume records the new path; other weights at a
    new path, or replacing the teacher at its own path, are refused as a changed setting."""
    import shutil

    from safetensors.torch import save_file

    old, new = tmp_path / "old" / "s1", tmp_path / "new" / "s1"
    shutil.copytree(chain / "runs/s1", old)
    run = tmp_path / "run"
    argv = ["train", "pretrain", "--stage", "2", "--config", str(chain / "s2.yaml"),
            "--data", str(chain / "images"), "--output-dir", str(run), "--epochs", "3"]  # fmt: skip
    assert main([*argv, "--init-from", str(old), "--max-steps", "1"]) == 0, capsys.readouterr().err
    digest = json.loads((run / "run_info.json").read_text())["model_sha256"]["init_from"]
    weights = resolve_model_dir(old) / "model.safetensors"
    assert digest == hashlib.sha256(weights.read_bytes()).hexdigest()
    kept = tmp_path / "kept.safetensors"
    shutil.copyfile(weights, kept)
    save_file({k: v + 0.01 for k, v in load_file(kept).items()}, str(weights))  # another model
    capsys.readouterr()
    assert main([*argv, "--init-from", str(old), "--resume", "--max-steps", "2"]) == 2
    err = capsys.readouterr().err
    assert f"init_from weights SHA-256 {digest[:12]} → " in err and f"at {old}" in err
    other = tmp_path / "other" / "s1"
    shutil.copytree(old, other)  # the other model at a new path
    shutil.copyfile(kept, weights)  # the start model put back, then moved
    new.parent.mkdir()
    os.rename(old, new)
    assert main([*argv, "--init-from", str(other), "--resume", "--max-steps", "2"]) == 2
    assert f"init_from {old} → {other}" in capsys.readouterr().err
    assert main([*argv, "--init-from", str(new), "--resume", "--max-steps", "2"]) == 0, (
        capsys.readouterr().err
    )
    resumes = json.loads((run / "run_info.json").read_text())["resumes"]
    assert resumes[-1]["resumed_from_step"] == 1
    assert resumes[-1]["changed"]["init_from"] == [str(old), str(new)]


def test_stage3_finds_the_teacher_moved_along_with_the_stage2_run(chain, tmp_path):
    """``runs/`` moved elsewhere as a whole: the Stage-2 run's recorded ``init_from`` no longer
    exists, and the Stage-1 run beside the moved Stage-2 run is the teacher (checked to be the
    model Stage 2 started from), not an error."""
    import shutil

    from sem_train.stages import build_stage3_task

    moved = tmp_path / "moved"
    shutil.copytree(chain / "runs", moved)
    s1, away = chain / "runs/s1", chain / "runs/s1-away"
    cfg = load_config(
        {"init_from": str(moved / "s2"), "data": {"root": str(chain / "images"),
         "image_size_px": 32}}, "stage3",
    )  # fmt: skip
    os.rename(s1, away)
    try:
        assert stage3_teacher_dir(cfg) == resolve_model_dir(moved / "s1")
        assert build_stage3_task(cfg).teacher is not None
    finally:
        os.rename(away, s1)


def test_a_run_resumes_over_its_data_folder_moved(chain, tmp_path, capsys):
    """The data folder moved or renamed: the same files at the same places in it resume the
    run, exactly as an uninterrupted run, and the resume records the new folder; a file of
    another size there is refused as other data. Before, any new ``--data`` path was refused
    as a changed setting (``data.root``)."""
    import shutil

    data, moved = tmp_path / "data", tmp_path / "elsewhere" / "data renamed"
    shutil.copytree(chain / "images", data)
    straight, run, other = tmp_path / "straight", tmp_path / "run", tmp_path / "other"
    argv = ["train", "pretrain", "--stage", "1", "--config", str(chain / "s1.yaml"),
            "--epochs", "2"]  # fmt: skip
    assert main([*argv, "--data", str(data), "--output-dir", str(straight)]) == 0
    for folder in (run, other):
        assert (
            main([*argv, "--data", str(data), "--output-dir", str(folder), "--max-steps", "1"]) == 0
        )
    moved.parent.mkdir()
    os.rename(data, moved)
    capsys.readouterr()
    assert main([*argv, "--data", str(moved), "--output-dir", str(run), "--resume"]) == 0, (
        capsys.readouterr().err
    )
    done = load_file(resolve_model_dir(run) / "model.safetensors")
    expected = load_file(resolve_model_dir(straight) / "model.safetensors")
    assert done.keys() == expected.keys()
    assert all(torch.equal(done[k], expected[k]) for k in expected)
    resumes = json.loads((run / "run_info.json").read_text())["resumes"]
    assert resumes[-1]["changed"]["data.root"] == [str(data), str(moved)]
    image = sorted(p for p in moved.rglob("*") if p.is_file())[0]
    with open(image, "ab") as fh:  # another size: another file under the same name
        fh.write(b"\0")
    assert main([*argv, "--data", str(moved), "--output-dir", str(other), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "the data changed since" in err and image.name in err
