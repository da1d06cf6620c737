"""The generic loop: exact resume, DDP equivalence, non-finite stop, checkpoints and logs."""

from __future__ import annotations

import json
import math
import os
import signal
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from sem_models.testing import SignalsItsWorker, one_torch_thread
from sem_physics.testing import dead_pid, symlink_or_skip
from sem_train.checkpoint import CheckpointError
from sem_train.config import OptimConfig, RunConfig
from sem_train.data import SEMImageDataset, build_index
from sem_train.distributed import DistContext
from sem_train.engine import NonFiniteLossError, Task, fit
from sem_train.interrupt import SAME_REQUEST_S, TrainingInterrupted


class DenoiseTask(Task):
    """Tiny conv denoiser: input = image + noise drawn from the sample seed, target = image.

    ``global_noise``: the training noise comes from torch's global RNG instead (as dropout or
    any unseeded draw would), so a resume is exact only if that RNG is restored exactly.
    """

    def __init__(self, nan_at_step: int | None = None, global_noise: bool = False) -> None:
        torch.manual_seed(0)
        self.global_noise = global_noise
        self.model = torch.nn.Sequential(
            torch.nn.Conv2d(1, 8, 3, padding=1),
            torch.nn.GELU(),
            torch.nn.Conv2d(8, 1, 3, padding=1),
        )
        self.calls = 0
        self.nan_at_step = nan_at_step

    def _noisy(self, batch):
        x = batch["image"]
        noise = torch.stack(
            [
                torch.randn(x.shape[1:], generator=torch.Generator().manual_seed(int(s)))
                for s in batch["seed"]
            ]
        )
        return x + 0.1 * noise.to(x.device), x

    def training_loss(self, model, batch):
        self.calls += 1
        y, x = self._noisy(batch)
        if self.global_noise:
            y = x + 0.1 * torch.randn_like(x)
        loss = (model(y) - x).abs().mean()
        if self.nan_at_step is not None and self.calls >= self.nan_at_step:
            loss = loss * float("nan")
        return loss, {}

    def validation_step(self, model, batch):
        y, x = self._noisy(batch)
        pred = model(y)
        return (pred - x).abs().mean(), pred, x


def _data(folder, n=None):
    paths = build_index(folder).paths()
    return SEMImageDataset(paths[:8], image_size_px=16), SEMImageDataset(
        paths[8:10], image_size_px=16, train=False
    )


def _run(out: Path, **kw) -> RunConfig:
    base = dict(
        epochs=3,
        batch_size_per_process=2,
        output_dir=out,
        checkpoint_every_steps=3,
        log_every_steps=1,
        progress=False,
        tensorboard=False,
        device="cpu",
    )
    base.update(kw)
    return RunConfig(**base)


OPT = OptimConfig(lr=3e-3, warmup_steps=2)


def _weights(result):
    return load_file(str(result.latest_checkpoint))


def test_a_resume_at_or_past_max_steps_trains_no_further(image_folder, tmp_path):
    """Resumed with a max_steps the run has reached already, it ends where it is: the same
    weights, the same step, nothing added to its log."""
    train, val = _data(image_folder)
    part = fit(DenoiseTask(), train, val, _run(tmp_path / "r", max_steps=5), OPT)
    log_before = (tmp_path / "r" / "metrics.jsonl").read_text()
    again = fit(DenoiseTask(), train, val, _run(tmp_path / "r", max_steps=3), OPT, resume=True)
    assert again.global_step == 5 and again.stopped_early
    a, b = _weights(part), _weights(again)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / "r" / "metrics.jsonl").read_text() == log_before


@pytest.mark.parametrize("global_noise", [False, True], ids=["seeded-noise", "global-rng-noise"])
def test_kill_and_resume_equals_uninterrupted_run(image_folder, tmp_path, global_noise):
    train, val = _data(image_folder)
    full = fit(DenoiseTask(global_noise=global_noise), train, val, _run(tmp_path / "full"), OPT)
    assert full.global_step == 12 and not full.stopped_early
    # "Kill" after 5 steps (mid-epoch 2, between periodic checkpoints at 3 and 6) ...
    task = DenoiseTask(global_noise=global_noise)
    part = fit(task, train, val, _run(tmp_path / "kill", max_steps=5), OPT)
    assert part.stopped_early and part.global_step == 5
    # ... then resume in a fresh task (different initial weights are overwritten by the checkpoint;
    # the global RNG, disturbed here, by the checkpoint's RNG state).
    torch.manual_seed(123)
    task = DenoiseTask(global_noise=global_noise)
    torch.randn(7)
    resumed = fit(task, train, val, _run(tmp_path / "kill"), OPT, resume=True)
    assert resumed.global_step == 12
    a, b = _weights(full), _weights(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.best_loss == full.best_loss
    # The metrics log reads like one run: each train step exactly once.
    steps = [
        json.loads(x)["step"]
        for x in (tmp_path / "kill" / "metrics.jsonl").read_text().splitlines()
        if json.loads(x)["split"] == "train"
    ]
    assert steps == list(range(1, 13))
    assert full.last_train_loss < full.first_train_loss


def test_outputs_checkpoints_and_provenance(image_folder, tmp_path):
    train, val = _data(image_folder)
    res = fit(
        DenoiseTask(), train, val, _run(tmp_path / "r", keep_last=2), OPT, config={"hello": 1}
    )
    ck = tmp_path / "r" / "checkpoints"
    assert len(list(ck.glob("step-*.safetensors"))) == 2
    assert not list(ck.glob(".*tmp"))
    best = json.loads((ck / "best.json").read_text())
    assert (ck / best["dir"] / "model.safetensors").is_file() and res.best_dir == ck / best["dir"]
    info = json.loads((tmp_path / "r" / "run_info.json").read_text())
    assert info["packages"]["torch"] and info["world_size"] == 1
    assert "commit" in info["git"]
    assert json.loads((tmp_path / "r" / "config.json").read_text()) == {"hello": 1}
    val_rec = [
        json.loads(x)
        for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()
        if json.loads(x)["split"] == "val"
    ]
    assert len(val_rec) == 3 and all(-1 <= r["ssim"] <= 1 for r in val_rec)
    assert (
        val_rec[-1]["psnr_db"] > val_rec[0]["psnr_db"] and val_rec[-1]["loss"] < val_rec[0]["loss"]
    )
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        fit(DenoiseTask(), train, val, _run(tmp_path / "empty"), OPT, resume=True)


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(image_folder, tmp_path):
    train, val = _data(image_folder)
    with pytest.raises(NonFiniteLossError, match=r"step 8.*last good checkpoint: .*step-00000006"):
        fit(DenoiseTask(nan_at_step=8), train, val, _run(tmp_path / "n"), OPT)
    latest = json.loads((tmp_path / "n" / "checkpoints" / "latest.json").read_text())
    assert latest["global_step"] == 6


def test_grad_accumulation_equals_larger_batch(image_folder, tmp_path):
    train, _val = _data(image_folder)
    a = fit(
        DenoiseTask(), train, None, _run(tmp_path / "a", batch_size_per_process=4, epochs=1), OPT
    )
    b = fit(
        DenoiseTask(),
        train,
        None,
        _run(tmp_path / "b", batch_size_per_process=2, grad_accum_steps=2, epochs=1),
        OPT,
    )
    wa, wb = _weights(a), _weights(b)
    assert all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)


class _MarkedSkips(torch.utils.data.Dataset):
    """A dataset whose even items report one file skipped before them (as an unreadable file
    does): the count a run logs is then known whichever process met them."""

    def __init__(self, base: SEMImageDataset) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key):
        item = dict(self.base[key])
        item["skipped"] = torch.tensor(int(item["seed"]) % 2 == 0, dtype=torch.int64)
        return item


def ddp_worker_main(folder: str, out: str) -> None:
    """Body of each torchrun rank (RANK, WORLD_SIZE, MASTER_* come from torchrun; run by the
    ``ddp_runs`` fixture, one launch for every module's DDP runs): the equivalence run, then
    the Ctrl-C run."""
    torch.set_num_threads(1)
    train, val = _data(Path(folder))
    ctx = DistContext.from_env(torch.device("cpu"))
    try:
        fit(DenoiseTask(), _MarkedSkips(train), val, _run(Path(out) / "ddp", epochs=2), OPT)
        _ddp_ctrl_c(train, val, Path(out) / "ctrl_c", ctx.rank)
    finally:
        ctx.close()


def _ddp_ctrl_c(train, val, out: Path, rank: int) -> None:
    """Rank 1 alone receives SIGINT in its third step; each rank records where it stopped."""
    task = CtrlCTask(at_call=3) if rank == 1 else DenoiseTask()
    try:
        fit(task, train, val, _run(out, epochs=3), OPT)
    except TrainingInterrupted as stop:
        (out / f"stopped-{rank}.txt").write_text(str(stop.global_step))


def test_ctrl_c_on_one_ddp_rank_stops_every_rank_at_the_same_saved_step(ddp_runs):
    """The request travels with the step's gradient-norm check: both ranks stop after step 3
    (2 steps an epoch), and the checkpoint of step 3 is saved."""
    out = ddp_runs / Path(__file__).stem / "ctrl_c"
    assert [(out / f"stopped-{r}.txt").read_text() for r in (0, 1)] == ["3", "3"]
    assert json.loads((out / "checkpoints" / "latest.json").read_text())["global_step"] == 3


def test_two_process_ddp_equals_one_process_with_doubled_batch(ddp_runs, tmp_path):
    """torchrun + Gloo DDP, 2 ranks x batch 2 == 1 process x batch 4 (same samples, same seeds).

    Tolerance: the gradient all-reduce sums in a different order than one process does, so
    weights agree to float32 rounding (atol 1e-5 after 4 AdamW steps at lr 3e-3).
    """
    train, val = _data(ddp_runs / "images")  # the images the ranks trained on
    with one_torch_thread():  # as in the ranks: the same kernels, only the reduction differs
        single = fit(
            DenoiseTask(),
            _MarkedSkips(train),
            val,
            _run(tmp_path / "one", epochs=2, batch_size_per_process=4),
            OPT,
        )
    ddp_dir = ddp_runs / Path(__file__).stem / "ddp"
    ddp = load_file(str(sorted((ddp_dir / "checkpoints").glob("step-*.safetensors"))[-1]))
    one = _weights(single)
    assert single.global_step == 4
    worst = max(float((ddp[k] - one[k]).abs().max()) for k in one)
    assert worst <= 1e-5, f"largest weight difference {worst:.3g}"
    # the logged training loss is the global batch's mean, not rank 0's half
    logged = [
        [
            r["loss"]
            for r in map(json.loads, (d / "metrics.jsonl").read_text().splitlines())
            if r.get("split") == "train"
        ]
        for d in (ddp_dir, tmp_path / "one")
    ]
    assert len(logged[0]) == len(logged[1]) == 4
    # files skipped are counted over every rank's batches, not rank 0's alone
    skips = [
        [
            r["skipped_files"]
            for r in map(json.loads, (d / "metrics.jsonl").read_text().splitlines())
            if r.get("split") == "train"
        ]
        for d in (ddp_dir, tmp_path / "one")
    ]
    assert skips[0] == skips[1] and skips[1][-1] > 0, skips
    assert logged[0] == pytest.approx(logged[1], rel=1e-5)


def _disk_full_os() -> Exception:
    import errno

    return OSError(errno.ENOSPC, "No space left on device")


def _disk_full_safetensors() -> Exception:  # what safetensors raises on a full disk
    from safetensors import SafetensorError

    return SafetensorError(
        'Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No '
        'space left on device" })'
    )


@pytest.mark.parametrize("full", [_disk_full_os, _disk_full_safetensors])
def test_disk_full_is_a_clear_error_and_keeps_the_previous_checkpoint(
    image_folder, tmp_path, monkeypatch, full
):
    from sem_train import checkpoint
    from sem_train.checkpoint import CheckpointWriteError

    train, val = _data(image_folder)
    real_save = checkpoint.save_file
    calls = {"n": 0}

    def flaky_save(state, path, metadata=None):
        calls["n"] += 1
        if calls["n"] > 1:  # the first checkpoint succeeds, the disk is full afterwards
            raise full()
        real_save(state, path, metadata=metadata)

    monkeypatch.setattr(checkpoint, "save_file", flaky_save)
    with pytest.raises(CheckpointWriteError, match="no space left on the device"):
        fit(DenoiseTask(), train, val, _run(tmp_path / "full_disk"), OPT)
    ck = tmp_path / "full_disk" / "checkpoints"
    latest = json.loads((ck / "latest.json").read_text())
    assert latest["global_step"] == 3 and (ck / latest["weights"]).is_file()
    assert not list(ck.glob(".*.tmp"))


def test_a_full_disk_at_the_first_checkpoint_says_there_is_none_to_keep(
    image_folder, tmp_path, monkeypatch
):
    """The first checkpoint's write fails: the line says the run has no earlier checkpoint
    (it had claimed "the previous checkpoint ... is intact"), and --resume starts it again."""
    from sem_train import checkpoint
    from sem_train.checkpoint import CheckpointWriteError

    train, val = _data(image_folder)

    def full(*args, **kwargs):
        raise _disk_full_os()

    with monkeypatch.context() as patch:
        patch.setattr(checkpoint, "save_file", full)
        with pytest.raises(CheckpointWriteError) as err:
            fit(DenoiseTask(), train, val, _run(tmp_path / "r", max_steps=4), OPT)
    ck = tmp_path / "r" / "checkpoints"
    assert "no earlier checkpoint in" in str(err.value) and "is intact" not in str(err.value)
    assert not (ck / "latest.json").exists() and not list(ck.glob("step-*"))
    resumed = fit(DenoiseTask(), train, val, _run(tmp_path / "r", max_steps=4), OPT, resume=True)
    assert resumed.global_step == 4


class _Killed(BaseException):
    """The process dying at this point (nothing after it runs)."""


@pytest.mark.parametrize("where", ["pruning a step checkpoint", "removing the old best"])
def test_a_run_killed_while_deleting_leaves_nothing_behind_once_resumed(
    image_folder, tmp_path, monkeypatch, where
):
    """A run killed after moving latest.json (best.json) and before deleting the checkpoint
    (the old best export) it no longer names left that file (folder) in checkpoints/ for good;
    the pointer lists it under ``dropped`` and the resume deletes it, and still ends as the
    uninterrupted run."""
    from sem_train import checkpoint

    train, val = _data(image_folder)
    out = tmp_path / "r"
    with monkeypatch.context() as patch:
        if where == "pruning a step checkpoint":
            unlink = Path.unlink

            def dies(self, missing_ok=False):
                if self.name.startswith("step-"):
                    raise _Killed
                return unlink(self, missing_ok=missing_ok)

            patch.setattr(Path, "unlink", dies)
        else:

            def dies(path, ignore_errors=False):
                raise _Killed

            patch.setattr(checkpoint.shutil, "rmtree", dies)
        with pytest.raises(_Killed):
            fit(DenoiseTask(), train, val, _run(out), OPT)
    ck = out / "checkpoints"
    before = sorted(p.name for p in ck.iterdir())
    assert "step-00000003.safetensors" in before or len([n for n in before if "best-" in n]) == 2
    resumed = fit(DenoiseTask(), train, val, _run(out), OPT, resume=True)
    full = fit(DenoiseTask(), train, val, _run(tmp_path / "full"), OPT)
    a, b = _weights(full), _weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert sorted(p.name for p in ck.iterdir()) == sorted(
        p.name for p in (tmp_path / "full" / "checkpoints").iterdir()
    )


def test_corrupt_files_met_during_training_are_skipped_counted_and_logged(image_folder, tmp_path):
    (image_folder / "group0" / "truncated.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    paths = build_index(image_folder, verify="none", refresh=True).paths()
    log = tmp_path / "run" / "skipped_files.jsonl"
    train = SEMImageDataset(paths, image_size_px=16, log_path=log)
    res = fit(DenoiseTask(), train, None, _run(tmp_path / "run", epochs=1), OPT)
    assert res.global_step == len(paths) // 2  # the epoch ran to its end
    recs = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert recs[-1]["skipped_files"] >= 1
    logged = [json.loads(x) for x in log.read_text().splitlines()]
    assert logged and all(r["path"].endswith("truncated.png") for r in logged)
    assert all(r["rank"] == 0 and r["worker"] is None for r in logged)  # which process met it


class NanValidationTask(DenoiseTask):
    """Validation loss turns NaN from the ``nan_at_val``-th validation on."""

    def __init__(self, nan_at_val: int) -> None:
        super().__init__()
        self.vals, self.nan_at_val = 0, nan_at_val

    def validation_step(self, model, batch):
        self.vals += 1
        loss, pred, x = super().validation_step(model, batch)
        return (loss * float("nan") if self.vals >= self.nan_at_val else loss), pred, x


def test_non_finite_validation_score_stops_and_keeps_the_last_good_checkpoint(
    image_folder, tmp_path
):
    train, val = _data(image_folder)  # 2 validation images, batch 2: one batch per validation
    # 4 steps per epoch, periodic checkpoints every 3: the epoch-2 validation (after step 8)
    # is NaN, so the step-8 checkpoint is never written and step 6 stays the newest.
    msg = r"validation loss \(nan\) after epoch 2, step 8.*last good checkpoint: .*step-00000006"
    with pytest.raises(NonFiniteLossError, match=msg):
        fit(NanValidationTask(nan_at_val=2), train, val, _run(tmp_path / "v"), OPT)
    ck = tmp_path / "v" / "checkpoints"
    latest = json.loads((ck / "latest.json").read_text())
    best = json.loads((ck / "best.json").read_text())
    assert latest["global_step"] == 6 and (ck / latest["weights"]).is_file()
    assert best["global_step"] == 4 and math.isfinite(best["val_loss"])


def test_a_fresh_run_into_an_existing_run_folder_is_refused(image_folder, tmp_path):
    from sem_train.checkpoint import RunExistsError

    train, val = _data(image_folder)
    fit(DenoiseTask(), train, val, _run(tmp_path / "r", epochs=1), OPT)
    before = {p: p.read_bytes() for p in (tmp_path / "r").rglob("*") if p.is_file()}
    with pytest.raises(RunExistsError, match="pass --resume"):
        fit(DenoiseTask(), train, val, _run(tmp_path / "r", epochs=1), OPT)
    after = {p: p.read_bytes() for p in (tmp_path / "r").rglob("*") if p.is_file()}
    assert after == before


def test_pruning_follows_the_checkpointers_record_not_file_names(image_folder, tmp_path):
    """Files the run did not write are never pruned, and latest.json never names a deleted
    file, even when a stray later-numbered checkpoint sits in the folder."""
    train, val = _data(image_folder)
    ck = tmp_path / "p" / "checkpoints"
    ck.mkdir(parents=True)
    stray = ck / "step-00009999.safetensors"
    stray.write_bytes(b"someone else's file")
    res = fit(DenoiseTask(), train, val, _run(tmp_path / "p", keep_last=1), OPT)
    latest = json.loads((ck / "latest.json").read_text())
    assert latest["global_step"] == 12 and res.latest_checkpoint == ck / latest["weights"]
    assert (ck / latest["weights"]).is_file() and (ck / latest["state"]).is_file()
    assert stray.read_bytes() == b"someone else's file"
    own = sorted(p.name for p in ck.glob("step-*") if p != stray)
    assert own == ["step-00000012.safetensors", "step-00000012.state.pt"]
    assert latest["kept"] == [["step-00000012.safetensors", "step-00000012.state.pt"]]


def test_resume_keeps_pruning_by_the_recorded_list(image_folder, tmp_path):
    train, val = _data(image_folder)
    fit(DenoiseTask(), train, val, _run(tmp_path / "k", max_steps=5, keep_last=2), OPT)
    ck = tmp_path / "k" / "checkpoints"
    assert (
        json.loads((ck / "latest.json").read_text())["kept"][-1][0] == "step-00000005.safetensors"
    )
    fit(DenoiseTask(), train, val, _run(tmp_path / "k", keep_last=2), OPT, resume=True)
    assert sorted(p.name for p in ck.glob("*.safetensors")) == [
        "step-00000009.safetensors",
        "step-00000012.safetensors",
    ]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("kept", "../../victim.txt"),
        ("kept", "ABS"),
        ("weights", "../victim.txt"),
        ("dropped", "../../victim.txt"),
    ],
)
def test_a_resume_never_deletes_or_reads_a_file_a_crafted_pointer_names(
    image_folder, tmp_path, field, value
):
    """latest.json names files of its own folder only: a run folder from elsewhere whose
    pointer lists "../../x" or an absolute path under "kept" made the resume's pruning delete
    that file; now the resume is refused in one line and the file stays."""
    train, val = _data(image_folder)
    fit(DenoiseTask(), train, val, _run(tmp_path / "k", max_steps=2, keep_last=1), OPT)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    value = str(victim) if value == "ABS" else value
    pointer = tmp_path / "k" / "checkpoints" / "latest.json"
    data = json.loads(pointer.read_text())
    if field in ("kept", "dropped"):
        data[field] = [[value, value], *data.get(field, [])]
    else:
        data[field] = value
    pointer.write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match=r"latest\.json names .*victim\.txt"):
        fit(DenoiseTask(), train, val, _run(tmp_path / "k", max_steps=4, keep_last=1), OPT,
            resume=True)  # fmt: skip
    assert victim.read_text() == "precious"


class _Payload:
    """Unpickling this runs ``os.mkdir(marker)``: what a hostile checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.mkdir, (str(self.marker),))


def test_a_training_state_carrying_code_is_refused_without_running_it(tmp_path):
    from sem_train.checkpoint import CheckpointError, load_training_state

    marker = tmp_path / "payload-ran"
    torch.save({"progress": {"step": 1}, "x": _Payload(marker)}, tmp_path / "s.state.pt")
    with pytest.raises(CheckpointError, match="never unpickled") as info:
        load_training_state(tmp_path / "s.state.pt")
    assert not marker.exists() and "weights_only" not in str(info.value)


class InterruptedTask(DenoiseTask):
    """Ctrl-C (KeyboardInterrupt) in the ``at_call``-th training step."""

    def __init__(self, at_call: int) -> None:
        super().__init__()
        self.at_call = at_call

    def training_loss(self, model, batch):
        if self.calls + 1 >= self.at_call:
            raise KeyboardInterrupt
        return super().training_loss(model, batch)


def _records(run_dir: Path) -> list[dict]:
    """metrics.jsonl without the wall-clock field."""
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(x).items() if k != "images_per_s"} for x in lines]


def test_a_run_interrupted_before_its_first_checkpoint_is_resumed_from_step_0(
    image_folder, tmp_path, caplog
):
    from sem_train.checkpoint import RunExistsError

    train, val = _data(image_folder)
    run = _run(tmp_path / "cut", validate_at_start=True)  # as the cpu-base preset
    full = fit(DenoiseTask(), train, val, _run(tmp_path / "full", validate_at_start=True), OPT)
    # Interrupted after the start-of-run validation and one step, before the step-3 checkpoint.
    with pytest.raises(KeyboardInterrupt):
        fit(InterruptedTask(at_call=2), train, val, run, OPT)
    assert [(r["split"], r["step"]) for r in _records(run.output_dir)] == [("val", 0), ("train", 1)]
    assert not (run.output_dir / "checkpoints" / "latest.json").exists()
    # A plain rerun is refused and says what --resume does here; nothing is touched.
    before = {p: p.read_bytes() for p in run.output_dir.rglob("*") if p.is_file()}
    with pytest.raises(RunExistsError, match=r"no checkpoint yet: pass --resume to start it again"):
        fit(DenoiseTask(), train, val, run, OPT)
    assert {p: p.read_bytes() for p in run.output_dir.rglob("*") if p.is_file()} == before
    # --resume runs it from step 0, with the result of the uninterrupted run.
    with caplog.at_level("INFO", logger="sem_train.engine"):
        resumed = fit(DenoiseTask(), train, val, run, OPT, resume=True)
    assert f"no checkpoint yet in {run.output_dir / 'checkpoints'}: starting from step 0" in (
        caplog.text
    )
    assert resumed.global_step == full.global_step == 12
    a, b = _weights(full), _weights(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.best_loss == full.best_loss
    # The metrics log reads like the uninterrupted run's: no line twice.
    assert _records(run.output_dir) == _records(tmp_path / "full")
    info = json.loads((run.output_dir / "run_info.json").read_text())
    assert info["resumed_from_step"] is None


class CtrlCTask(DenoiseTask):
    """Sends itself SIGINT (``times`` signals) inside the ``at_call``-th training step, as a
    Ctrl-C in the terminal would."""

    def __init__(self, at_call: int, times: int = 1) -> None:
        super().__init__()
        self.at_call, self.times = at_call, times

    def training_loss(self, model, batch):
        if self.calls + 1 == self.at_call:
            for i in range(self.times):
                if i:  # a person's second Ctrl-C, not one signal delivered twice
                    time.sleep(1.2 * SAME_REQUEST_S)
                signal.raise_signal(signal.SIGINT)
                time.sleep(0.01)  # the handler runs
        return super().training_loss(model, batch)


def test_ctrl_c_saves_the_step_it_lands_in_and_the_resume_is_exact(image_folder, tmp_path):
    """Ctrl-C in step 5 (between the periodic checkpoints at 3 and 6): the step finishes, a
    checkpoint is saved at step 5 and the resumed run ends bit-identical to an uninterrupted
    one; Python's Ctrl-C handler is back afterwards."""
    train, val = _data(image_folder)
    full = fit(DenoiseTask(), train, val, _run(tmp_path / "full"), OPT)
    run = _run(tmp_path / "cut")
    with pytest.raises(KeyboardInterrupt) as stop:  # a failure here, not pytest stopping
        fit(CtrlCTask(at_call=5), train, val, run, OPT)
    assert isinstance(stop.value, TrainingInterrupted)
    assert (stop.value.global_step, stop.value.epoch) == (5, 1)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    latest = json.loads((run.output_dir / "checkpoints" / "latest.json").read_text())
    assert latest["global_step"] == 5
    assert [r["step"] for r in _records(run.output_dir) if r["split"] == "train"] == [1, 2, 3, 4, 5]
    resumed = fit(DenoiseTask(), train, val, run, OPT, resume=True)
    a, b = _weights(full), _weights(resumed)
    assert resumed.global_step == 12 and all(torch.equal(a[k], b[k]) for k in a)
    assert _records(run.output_dir) == _records(tmp_path / "full")


def test_ctrl_c_at_an_epoch_end_stops_after_its_validation_and_checkpoint(image_folder, tmp_path):
    """Ctrl-C in the epoch's last step (4 steps an epoch): validation runs and the epoch's
    checkpoint is the one saved; the run stops before the next epoch starts."""
    train, val = _data(image_folder)
    run = _run(tmp_path / "cut")
    with pytest.raises(KeyboardInterrupt) as stop:
        fit(CtrlCTask(at_call=4), train, val, run, OPT)
    assert isinstance(stop.value, TrainingInterrupted)
    assert (stop.value.global_step, stop.value.epoch) == (4, 1)
    assert [(r["split"], r["step"]) for r in _records(run.output_dir)][-1] == ("val", 4)
    latest = json.loads((run.output_dir / "checkpoints" / "latest.json").read_text())
    assert (latest["global_step"], latest["epoch"], latest["step_in_epoch"]) == (4, 1, 0)


def test_a_second_ctrl_c_stops_at_once_without_saving(image_folder, tmp_path):
    """A second SIGINT stops inside the step, as Python's own Ctrl-C, and saves nothing."""
    train, val = _data(image_folder)
    run = _run(tmp_path / "twice")
    with pytest.raises(KeyboardInterrupt) as stop:
        fit(CtrlCTask(at_call=2, times=2), train, val, run, OPT)
    assert not isinstance(stop.value, TrainingInterrupted)
    assert not (run.output_dir / "checkpoints" / "latest.json").exists()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_ctrl_c_in_the_runs_last_step_lets_it_end_as_it_would_have(image_folder, tmp_path):
    """max_steps reached in the step a Ctrl-C lands in: the run ends normally there (a resume
    would otherwise train past the limit it was given)."""
    train, val = _data(image_folder)
    result = fit(CtrlCTask(at_call=5), train, val, _run(tmp_path / "cap", max_steps=5), OPT)
    assert result.global_step == 5 and result.stopped_early


def test_dataloader_workers_ignore_ctrl_c(image_folder, tmp_path):
    """The workers leave Ctrl-C to the loop: a worker that died of it would fail the run."""
    train, val = _data(image_folder)
    result = fit(
        DenoiseTask(), SignalsItsWorker(train), val, _run(tmp_path / "w"), OPT, num_workers=2
    )
    assert result.global_step == 12


@pytest.mark.parametrize("what", ["missing", "empty", "user-files"])
def test_resume_refuses_a_folder_that_holds_no_run(image_folder, tmp_path, what):
    """--resume starts from step 0 only in a run's folder: not in a mistyped path, an empty
    folder or someone's files (even named like a run's), which stay as they are."""
    train, val = _data(image_folder)
    out = tmp_path / "out"
    user_files = {"notes.txt": "keep me", "config.json": '{"mine": 1}', "metrics.jsonl": "{}\n"}
    if what != "missing":
        (out / "checkpoints").mkdir(parents=True)
    if what == "user-files":
        for name, text in user_files.items():
            (out / name).write_text(text)
    with pytest.raises(FileNotFoundError, match=r"no checkpoint in .* and no run started in"):
        fit(DenoiseTask(), train, val, _run(out), OPT, resume=True)
    if what == "missing":
        assert not out.exists()
        return
    expected = user_files if what == "user-files" else {}
    assert sorted(p.name for p in out.iterdir()) == sorted(["checkpoints", *expected])
    assert all((out / n).read_text() == t for n, t in expected.items())
    assert not any((out / "checkpoints").iterdir())


@pytest.mark.skipif(os.name != "posix", reason="process checks are POSIX-only")
def test_a_run_removes_the_temporaries_a_killed_run_left(image_folder, tmp_path, caplog):
    """kill -9 while writing a checkpoint leaves ``.<name>.<pid>.tmp<suffix>`` files (and
    safetensors' own ``.tmpXXXXXX``); the next run in the folder removes those of dead
    processes (and safetensors' in ``checkpoints/``) and keeps those of live ones."""
    train, val = _data(image_folder)
    out = tmp_path / "k"
    fit(DenoiseTask(), train, val, _run(out, max_steps=5), OPT)
    ck = out / "checkpoints"
    best = ck / json.loads((ck / "best.json").read_text())["dir"]
    dead, live = dead_pid(), os.getpid()
    stale = [
        ck / f".step-00000006.{dead}.tmp.safetensors",
        ck / f".step-00000006.state.{dead}.tmp.pt",
        ck / f".latest.{dead}.tmp.json",
        out / f".config.{dead}.tmp.json",
        best / f".model.{dead}.tmp.safetensors",
    ]
    stale += [ck / ".tmpAbC123", best / ".tmp9xYz0Q"]  # safetensors' save_file temporaries
    kept = [
        ck / f".step-00000099.{live}.tmp.safetensors",
        out / "notes.txt",
        out / ".tmpAbC123",  # safetensors writes no checkpoint here: not its temporary
        ck / ".tmpAbC1234",
        ck / ".tmp-bC123",
    ]
    for path in stale + kept:
        path.write_bytes(b"x" * 100)
    symlink_or_skip(ck / ".tmpLnK123", out / "notes.txt")  # a link and a folder are no temporary
    (ck / ".tmpDir123").mkdir()
    with caplog.at_level("INFO", logger="sem_train.engine"):
        fit(DenoiseTask(), train, val, _run(out), OPT, resume=True)
    assert not [p for p in stale if p.exists()] and all(p.is_file() for p in kept)
    assert all(str(p) in caplog.text for p in stale)
    assert (ck / ".tmpLnK123").is_symlink() and (ck / ".tmpDir123").is_dir()


def test_a_fresh_run_keeps_a_config_json_no_run_wrote(image_folder, tmp_path):
    """A run writes its own config.json: over someone's it stops first (their file kept); in
    the folder of one of its own runs it names --resume, as for every other mark of a run."""
    from sem_train.checkpoint import RunExistsError

    train, val = _data(image_folder)
    out = tmp_path / "out"
    out.mkdir()
    (out / "config.json").write_text('{"mine": 1}')
    with pytest.raises(RunExistsError, match=r"config\.json that no run wrote"):
        fit(DenoiseTask(), train, val, _run(out), OPT)
    assert (out / "config.json").read_text() == '{"mine": 1}'
    assert sorted(p.name for p in out.iterdir()) == ["config.json"]
    (out / "run_info.json").write_text("{}")  # a run's folder, stopped before its first line
    with pytest.raises(RunExistsError, match=r"run_info\.json exists.*--resume"):
        fit(DenoiseTask(), train, val, _run(out), OPT)


def test_a_checkpoint_carries_the_cuda_rng_of_its_own_device_only(monkeypatch):
    """A resume may see fewer GPUs than the run that saved (8 under torchrun, 1 now): each
    process saves and restores its own device's CUDA generator, never a list of all."""
    import torch
    from sem_train import checkpoint as ck

    restored: list[int] = []

    def every_device(*args):
        raise AssertionError("all devices' generators touched")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda: torch.tensor([7], dtype=torch.uint8))
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda s: restored.append(int(s[0])))
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", every_device)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", every_device)
    state = ck.capture_rng("cuda")
    ck.restore_rng(state, "cuda")
    assert restored == [7]
    # an older checkpoint: one state per GPU the saving run saw (8); this process is on GPU 1
    older = {k: v for k, v in state.items() if k != "cuda_current"}
    older["cuda"] = [torch.tensor([i], dtype=torch.uint8) for i in range(8)]
    restored.clear()
    ck.restore_rng(older, "cuda")
    assert restored == [1]
    older["cuda"] = older["cuda"][:1]  # saved on one GPU: nothing for GPU 1
    restored.clear()
    ck.restore_rng(older, "cuda")
    assert restored == []


def _no_cuda_generator(monkeypatch):
    """Pretend a GPU is present and fail on any use of a CUDA generator (each opens a CUDA
    context: memory on GPU 0 and seconds of start-up)."""

    def touched(*args, **kwargs):
        raise AssertionError("a CUDA generator was touched")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for name in ("get_rng_state", "set_rng_state", "get_rng_state_all", "set_rng_state_all"):
        monkeypatch.setattr(torch.cuda, name, touched)


def _tiny_parts():
    """A model, its AdamW and a constant schedule: what a Checkpointer saves and resumes."""
    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.AdamW(model.parameters())
    return model, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)


def test_a_cpu_run_on_a_machine_with_a_gpu_never_touches_a_cuda_generator(tmp_path, monkeypatch):
    """device=cpu: checkpoints carry the CPU generator only, saved and restored without CUDA;
    a checkpoint a GPU run wrote resumes on the CPU without touching CUDA either."""
    from sem_train import checkpoint as ck

    _no_cuda_generator(monkeypatch)
    parts = _tiny_parts()
    ck.Checkpointer(tmp_path, device="cpu").save(*parts, {"global_step": 1})
    state = torch.load(tmp_path / "checkpoints" / "step-00000001.state.pt")
    assert not {"cuda", "cuda_current", "mps"} & state["rng"].keys()
    saved_cpu = torch.get_rng_state()
    torch.randn(5)
    assert ck.Checkpointer(tmp_path, device="cpu").resume(*parts)["global_step"] == 1
    assert torch.equal(torch.get_rng_state(), saved_cpu)
    from_gpu = {**state["rng"], "cuda_current": torch.tensor([7], dtype=torch.uint8)}
    ck.restore_rng(from_gpu, "cpu")
    ck.restore_rng({**state["rng"], "cuda": [from_gpu["cuda_current"]]}, "cpu")


def test_a_run_s_checkpointer_knows_the_run_s_device(image_folder, tmp_path, monkeypatch):
    """fit hands the device it selected to the checkpointer, whose generator it saves."""
    from sem_train import checkpoint as ck

    devices: list[torch.device] = []
    capture = ck.capture_rng
    monkeypatch.setattr(ck, "capture_rng", lambda device: devices.append(device) or capture(device))
    monkeypatch.setattr("sem_train.engine.select_device", lambda *a: torch.device("cpu", 0))
    train, val = _data(image_folder)
    fit(DenoiseTask(), train, val, _run(tmp_path / "r", max_steps=3), OPT)
    assert devices == [torch.device("cpu", 0)]


def test_an_mps_run_saves_and_restores_the_mps_generator(tmp_path, monkeypatch):
    """On Apple's mps the checkpoint carries the mps generator (a resume was not exact
    without it); a checkpoint saved before it did still resumes, the generator left as is."""
    from sem_train import checkpoint as ck

    generator = {"state": torch.tensor([1, 2, 3], dtype=torch.uint8)}
    monkeypatch.setattr(torch.mps, "get_rng_state", lambda *a: generator["state"].clone())
    monkeypatch.setattr(torch.mps, "set_rng_state", lambda s, *a: generator.update(state=s))
    _no_cuda_generator(monkeypatch)
    model, optimizer, scheduler = _tiny_parts()
    ck.Checkpointer(tmp_path, device="mps").save(model, optimizer, scheduler, {"global_step": 1})
    saved_cpu = torch.get_rng_state()
    generator["state"] = torch.tensor([9, 9, 9], dtype=torch.uint8)  # drawn after the save
    torch.randn(5)
    ck.Checkpointer(tmp_path, device="mps").resume(model, optimizer, scheduler)
    assert generator["state"].tolist() == [1, 2, 3]
    assert torch.equal(torch.get_rng_state(), saved_cpu)
    older = {k: v for k, v in ck.capture_rng("mps").items() if k != "mps"}
    generator["state"] = torch.tensor([4, 5, 6], dtype=torch.uint8)
    ck.restore_rng(older, "mps")
    assert generator["state"].tolist() == [4, 5, 6]


def test_each_rank_gets_its_gpu_and_a_launcher_showing_one_gpu_gets_that_one(monkeypatch):
    import torch
    from sem_train.distributed import select_device

    chosen: list[int] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert select_device("auto", 3) == torch.device("cuda", 3)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)  # CUDA_VISIBLE_DEVICES per rank
    assert select_device("cuda", 3) == torch.device("cuda", 0)
    assert chosen == [3, 0]
    assert select_device("cpu", 3) == torch.device("cpu")


def test_fit_holds_its_run_folder(image_folder, tmp_path, hold_folder):
    """Training through the Python API (and each step of a recipe, whose command holds only
    the recipe's folder) stops at once when another run writes into its folder."""
    from sem_physics.locking import OutputFolderBusyError

    train, val = _data(image_folder)
    out = tmp_path / "recipe" / "stage1"
    child = hold_folder(out, "sem train recipe --output-dir recipe")
    with pytest.raises(OutputFolderBusyError, match=f"pid {child.pid}, sem train recipe"):
        fit(DenoiseTask(), train, val, _run(out), OPT, resume=True)
    assert sorted(p.name for p in out.iterdir()) == [".sem-lock"]  # nothing touched


class _PartsTask(DenoiseTask):
    """Reports a loss part as a device tensor (as the MoE stages do with their routing
    statistics) and one as a float."""

    def training_loss(self, model, batch):
        loss, _ = super().training_loss(model, batch)
        return loss, {"twice": 2 * loss.detach(), "one": 1.0}


def test_loss_parts_are_read_from_the_device_only_on_the_steps_logged(
    image_folder, tmp_path, monkeypatch
):
    """A host read per part per step stalls a GPU (the MoE stages report ~100 parts): parts
    stay device tensors until a step is logged, then come over in one transfer."""
    from sem_train import engine

    reads = []
    real = engine._host_values

    def counting(values):
        reads.append(sorted(values))
        return real(values)

    monkeypatch.setattr(engine, "_host_values", counting)
    train, val = _data(image_folder)
    fit(_PartsTask(), train, val, _run(tmp_path / "r", epochs=2, log_every_steps=2), OPT)
    lines = [r for r in _records(tmp_path / "r") if r["split"] == "train"]
    assert [r["step"] for r in lines] == [2, 4, 6, 8]  # 4 steps per epoch, every 2nd logged
    assert reads == [["loss", "one", "twice"]] * 4
    for r in lines:
        assert r["twice"] == pytest.approx(2 * r["loss"], rel=1e-6) and r["one"] == 1.0


@pytest.mark.parametrize(
    ("epochs", "max_steps", "every", "logged"),
    [(1, None, 100, [4]), (2, None, 3, [3, 6, 8]), (3, 5, 2, [2, 4, 5])],
    ids=["shorter-than-log_every", "last-epoch-end", "max_steps"],
)
def test_the_last_training_step_is_always_logged(
    image_folder, tmp_path, epochs, max_steps, every, logged
):
    """A run whose length is not a multiple of ``log_every_steps`` (or shorter than it) logs
    its last step too, with the loss the run reports; without validation a short run would
    otherwise leave no metrics at all. 8 images, batch 2: 4 steps per epoch."""
    train, _ = _data(image_folder)
    run = _run(tmp_path / "r", epochs=epochs, max_steps=max_steps, log_every_steps=every)
    res = fit(DenoiseTask(), train, None, run, OPT)
    lines = [r for r in _records(tmp_path / "r") if r["split"] == "train"]
    assert [r["step"] for r in lines] == logged and res.global_step == logged[-1]
    assert lines[-1]["loss"] == pytest.approx(res.last_train_loss, rel=1e-6)


def test_a_training_step_reads_from_the_device_once_and_checks_its_loss_before_stepping(
    image_folder, tmp_path, monkeypatch
):
    """Per optimizer step one reduction of [loss, skipped, loss check, norm, norm check,
    Ctrl-C] and one read (no per-micro-step float(loss) and collective, which stall a GPU);
    a non-finite loss in a micro-step still stops the run before the optimizer moves."""
    from sem_train.distributed import DistContext

    calls, flags = [], []
    real = DistContext.sum_over_ranks

    def counting(self, values, device):
        calls.append(len(values))
        return real(self, values, device)

    monkeypatch.setattr(DistContext, "sum_over_ranks", counting)
    monkeypatch.setattr(DistContext, "any_true", lambda *a: flags.append(a) or False)
    train, val = _data(image_folder)
    fit(DenoiseTask(), train, val, _run(tmp_path / "r", epochs=1, grad_accum_steps=2), OPT)
    assert calls == [6, 6]  # 8 images, batch 2, 2 micro-steps a step: 2 steps
    assert not flags  # no per-micro-step collective (one epoch: no end-of-epoch check either)
    monkeypatch.undo()
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss \(nan\) .*step 3"):
        fit(DenoiseTask(nan_at_step=3), train, val, _run(tmp_path / "n", epochs=1), OPT)
    assert not list((tmp_path / "n").rglob("step-00000003*"))  # that step was not taken


def test_a_resume_leaves_no_step_twice_in_the_tensorboard_curves(tmp_path):
    """The JSONL log is cut back to the checkpoint on resume; TensorBoard's events of the
    later steps are purged too, so its curves read like one uninterrupted run."""
    from sem_train.metrics import MetricsLogger
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tb = tmp_path / "tb"
    first = MetricsLogger(tmp_path / "m.jsonl", tensorboard_dir=tb)
    for step in range(1, 6):
        first.log({"split": "train", "step": step, "loss": float(step)})
    first.close()
    # a resume is a later process: event files are read in the order of their names, which
    # start with the second they were opened (within one second a per-process counter decides)
    time.sleep(1.1)
    again = MetricsLogger(tmp_path / "m.jsonl", tensorboard_dir=tb)
    again.truncate_after(2)  # resumed from the step-2 checkpoint
    for step in range(3, 5):
        again.log({"split": "train", "step": step, "loss": 10.0 * step})
    again.close()
    events = EventAccumulator(str(tb))
    events.Reload()
    curve = [(e.step, e.value) for e in events.Scalars("train/loss")]
    assert curve == [(1, 1.0), (2, 2.0), (3, 30.0), (4, 40.0)]
    assert [json.loads(x)["step"] for x in (tmp_path / "m.jsonl").read_text().splitlines()] == [
        1, 2, 3, 4
    ]  # fmt: skip


def test_git_commit_is_that_of_a_repository_tracking_the_source(tmp_path):
    """An installed copy inside someone's checkout (an untracked virtual environment) does not
    take that checkout's commit; the tracked source does, with its local changes flagged."""
    import shutil
    import subprocess

    from sem_train.runinfo import git_commit

    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}  # fmt: skip
    src = tmp_path / "src" / "sem_train"
    src.mkdir(parents=True)
    (src / "runinfo.py").write_text("x = 1\n")
    for argv in (["init", "-q"], ["add", "src"], ["commit", "-q", "-m", "one"]):
        subprocess.run(["git", *argv], cwd=tmp_path, check=True, env=env)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True,
                          text=True, encoding="utf-8", check=True).stdout.strip()  # fmt: skip
    assert git_commit(src) == {"commit": head, "dirty": False}
    (src / "runinfo.py").write_text("x = 2\n")
    assert git_commit(src) == {"commit": head, "dirty": True}
    installed = tmp_path / ".venv" / "lib" / "site-packages" / "sem_train"
    installed.mkdir(parents=True)
    (installed / "runinfo.py").write_text("x = 1\n")
    assert git_commit(installed) == {"commit": None}
    assert git_commit(tmp_path.parent) == {"commit": None}  # outside any repository


def test_a_run_stopped_before_its_first_validation_leaves_a_usable_model(image_folder, tmp_path):
    """``--max-steps`` inside the first epoch: the current weights are exported as the run's
    model (loss unknown); the resumed run's first validation replaces them, and the resumed
    run still ends as the uninterrupted one."""
    from sem_train.checkpoint import Checkpointer, read_pointer

    train, val = _data(image_folder)
    part = fit(DenoiseTask(), train, val, _run(tmp_path / "short", max_steps=2), OPT)
    assert part.stopped_early and part.global_step == 2 and part.best_loss is None
    ckpt_dir = tmp_path / "short" / "checkpoints"
    assert read_pointer(ckpt_dir / "best.json") == {
        "dir": "best-00000002", "global_step": 2, "val_loss": None
    }  # fmt: skip
    assert Checkpointer(tmp_path / "short").best_dir == part.best_dir
    assert any(part.best_dir.iterdir())  # the export is there
    resumed = fit(DenoiseTask(), train, val, _run(tmp_path / "short"), OPT, resume=True)
    full = fit(DenoiseTask(), train, val, _run(tmp_path / "full"), OPT)
    a, b = _weights(full), _weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)
    best = read_pointer(ckpt_dir / "best.json")
    assert best["val_loss"] is not None and best["global_step"] > 2
    assert best == read_pointer(tmp_path / "full" / "checkpoints" / "best.json")
    assert sorted(p.name for p in ckpt_dir.glob("best-*")) == [best["dir"]]


def test_training_metrics_refuse_images_and_name_the_image_metrics():
    """sem_train.psnr/ssim score tensor batches on 0..1; an image array (the notebook user's
    0..255 numpy image) is refused with the name of the image metric."""
    import numpy as np
    import sem_train

    ref = np.full((16, 16), 100.0)
    for name in ("psnr", "ssim"):
        with pytest.raises(TypeError, match=rf"sem_metrology\.{name}\(reference, image\)"):
            getattr(sem_train, name)(ref + 1.0, ref)
    x = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    assert sem_train.psnr(x, x.clamp(0.1, 0.9)).shape == (2,)


def test_an_apple_gpu_is_a_training_device_for_one_process(monkeypatch):
    """``run.device: mps`` selects the Apple GPU when present; without one, or under torchrun
    with more than one process (no collective backend runs on it), one clear refusal."""
    import typing

    import torch
    from sem_train.config import RunConfig
    from sem_train.device_names import DEVICES
    from sem_train.distributed import select_device

    assert typing.get_args(RunConfig.model_fields["device"].annotation) == DEVICES
    assert RunConfig(device="mps").device == "mps"
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(ValueError, match="no Apple GPU"):
        select_device("mps")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert select_device("mps") == torch.device("mps")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="one process"):
        select_device("mps")


class SigtermTask(DenoiseTask):
    """Sends itself SIGTERM inside the ``at_call``-th training step, as a scheduler would."""

    def __init__(self, at_call: int) -> None:
        super().__init__()
        self.at_call = at_call

    def training_loss(self, model, batch):
        if self.calls + 1 == self.at_call:
            signal.raise_signal(signal.SIGTERM)
            time.sleep(0.01)  # the handler runs
        return super().training_loss(model, batch)


def test_sigterm_is_a_first_ctrl_c_and_the_previous_handler_is_restored(image_folder, tmp_path):
    """SIGTERM in step 5: the step finishes, a checkpoint is saved there, the stop says it was
    SIGTERM; a handler installed before (the console script's) is back afterwards."""
    train, val = _data(image_folder)
    run = _run(tmp_path / "term")
    outer: list[int] = []

    def console_handler(signum, frame):  # never reached while the loop runs
        outer.append(signum)
        raise SystemExit(143)

    before = signal.signal(signal.SIGTERM, console_handler)
    try:
        with pytest.raises(KeyboardInterrupt) as stop:
            fit(SigtermTask(at_call=5), train, val, run, OPT)
        assert signal.getsignal(signal.SIGTERM) is console_handler
    finally:
        signal.signal(signal.SIGTERM, before)
    assert outer == []
    assert isinstance(stop.value, TrainingInterrupted) and stop.value.signum == signal.SIGTERM
    assert (stop.value.global_step, stop.value.epoch) == (5, 1)
    latest = json.loads((run.output_dir / "checkpoints" / "latest.json").read_text())
    assert latest["global_step"] == 5


def test_a_full_disk_in_torch_save_names_the_state_file_and_leaves_no_half_checkpoint(
    image_folder, tmp_path, monkeypatch
):
    """torch.save on a full disk raises RuntimeError (inline_container.cc, unexpected pos):
    a CheckpointWriteError naming the state file and saying the disk is full; the step's
    weights file, written just before, is removed; the previous checkpoint stays."""
    import shutil

    from sem_train import checkpoint
    from sem_train.checkpoint import CheckpointWriteError

    train, val = _data(image_folder)
    real_save = checkpoint.torch.save
    calls = {"n": 0}

    def full_save(obj, f, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 1:
            raise RuntimeError(
                "[enforce fail at inline_container.cc:671] . unexpected pos 1152 vs 1044"
            )
        return real_save(obj, f, *args, **kwargs)

    full = shutil._ntuple_diskusage(10**9, 10**9, 0)  # type: ignore[attr-defined]
    monkeypatch.setattr(checkpoint.torch, "save", full_save)
    monkeypatch.setattr(shutil, "disk_usage", lambda _p: full)
    with pytest.raises(CheckpointWriteError, match="no space left on the device") as err:
        fit(DenoiseTask(), train, val, _run(tmp_path / "full"), OPT)
    ck = tmp_path / "full" / "checkpoints"
    latest = json.loads((ck / "latest.json").read_text())
    assert latest["global_step"] == 3 and (ck / latest["weights"]).is_file()
    assert str(ck / "step-00000004.state.pt") in str(err.value)
    assert sorted(p.name for p in ck.glob("step-*")) == [latest["weights"], latest["state"]]
    assert not list(ck.glob(".*.tmp*"))


def test_the_saved_python_and_numpy_rng_states_come_from_the_runs_seed(image_folder, tmp_path):
    """state.pt saves Python's and numpy's global RNG states: seeded from the run's seed, two
    runs of one seed save the same ones, whatever this process drew before."""
    import random

    import numpy as np

    train, val = _data(image_folder)

    def host_rng(out):
        ck = out / "checkpoints"
        name = json.loads((ck / "latest.json").read_text())["state"]
        state = torch.load(ck / name, weights_only=True)
        return state["rng"]["python"], {k: str(v) for k, v in state["rng"]["numpy"].items()}

    fit(DenoiseTask(), train, val, _run(tmp_path / "a"), OPT)
    random.random(), np.random.rand()  # noqa: NPY002 (another process's history)
    fit(DenoiseTask(), train, val, _run(tmp_path / "b"), OPT)
    assert host_rng(tmp_path / "a") == host_rng(tmp_path / "b")


def test_each_validation_logs_one_progress_line(image_folder, tmp_path, caplog):
    """Without a terminal no bar is drawn: each epoch that validates says on stderr where the
    run is, its last training loss and its validation scores against the best so far (the
    numbers of metrics.jsonl), and the time to go until the last one."""
    import re

    train, val = _data(image_folder)
    with caplog.at_level("INFO", logger="sem_train.engine"):
        fit(DenoiseTask(), train, val, _run(tmp_path / "r"), OPT)
    lines = [m for m in caplog.messages if m.startswith("epoch ")]
    records = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    train_loss = {r["step"]: r["loss"] for r in records if r["split"] == "train"}
    vals = [r for r in records if r["split"] == "val"]
    assert len(lines) == len(vals) == 3
    best = math.inf
    for epoch, (line, rec) in enumerate(zip(lines, vals, strict=True), start=1):
        step = rec["step"]
        assert line.startswith(f"epoch {epoch}/3, step {step}/12: train loss ")
        said = re.search(r"train loss (\S+); val loss (\S+) \(([^)]*)\), PSNR (\S+) dB", line)
        assert said is not None, line
        assert float(said[1]) == pytest.approx(train_loss[step], rel=1e-4)
        assert float(said[2]) == pytest.approx(rec["loss"], rel=1e-4)
        assert float(said[4]) == pytest.approx(rec["psnr_db"], abs=0.006)
        assert (said[3] == "best so far") is (rec["loss"] < best)
        best = min(best, rec["loss"])
        assert ("to go" in line) is (epoch < 3)


def test_a_run_without_validation_logs_at_the_validation_cadence(image_folder, tmp_path, caplog):
    train, _ = _data(image_folder)
    run = _run(tmp_path / "r", validate_every_epochs=2)
    with caplog.at_level("INFO", logger="sem_train.engine"):
        fit(DenoiseTask(), train, None, run, OPT)
    lines = [m for m in caplog.messages if m.startswith("epoch ")]
    assert [line.split(":")[0] for line in lines] == [
        "epoch 2/3, step 8/12",
        "epoch 3/3, step 12/12",
    ]
    assert all("(no validation images: the newest weights are the model)" in x for x in lines)
