"""DataLoader workers persist across the epochs of a run (one loader per run), with each
epoch's data, worker seeding, resume and Ctrl-C behaviour those of a loader built per epoch.

A spawned worker (Windows, macOS) imports torch and the dataset's modules: once per run now,
not once per epoch. The names new with the persistent loader are imported inside the tests, so
that the file also runs against the loop that built a loader per epoch (where the persistence
tests fail and the seeding and resume tests pass).
"""

from __future__ import annotations

import json
import multiprocessing
import pickle
import random
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from sem_train.config import OptimConfig, RunConfig
from sem_train.data import EpochBatchSampler, SEMImageDataset, build_index
from sem_train.engine import NonFiniteLossError, Task, fit
from sem_train.interrupt import TrainingInterrupted, ignore_sigint
from torch.utils.data import DataLoader, Dataset, get_worker_info

OPT = OptimConfig(lr=3e-3, warmup_steps=2)
STEPS_PER_EPOCH = 4  # 8 training images, batches of 2


class WatchTask(Task):
    """Tiny conv denoiser (noise from each sample's seed) that records, at each training step,
    the child processes alive (the DataLoader workers) and the batch's seeds and extras."""

    def __init__(self, nan_at_call: int | None = None, ctrl_c_at_call: int | None = None) -> None:
        torch.manual_seed(0)
        self.model = torch.nn.Sequential(
            torch.nn.Conv2d(1, 4, 3, padding=1),
            torch.nn.GELU(),
            torch.nn.Conv2d(4, 1, 3, padding=1),
        )
        self.nan_at_call, self.ctrl_c_at_call = nan_at_call, ctrl_c_at_call
        self.children: list[frozenset[int]] = []  # per training call
        self.batches: list[tuple[list[int], list[list[int]]]] = []  # (seeds, draws) per call

    def _noisy(self, batch):
        x = batch["image"]
        noise = torch.stack(
            [
                torch.randn(x.shape[1:], generator=torch.Generator().manual_seed(int(s)))
                for s in batch["seed"]
            ]
        )
        return x + 0.1 * noise, x

    def training_loss(self, model, batch):
        call = len(self.children) + 1
        self.children.append(frozenset(p.pid for p in multiprocessing.active_children()))
        draws = batch["draws"].tolist() if "draws" in batch else []
        self.batches.append((batch["seed"].tolist(), draws))
        if call == self.ctrl_c_at_call:
            signal.raise_signal(signal.SIGINT)
            time.sleep(0.01)  # the handler runs
        y, x = self._noisy(batch)
        loss = (model(y) - x).abs().mean()
        if call == self.nan_at_call:
            loss = loss * float("nan")
        return loss, {}

    def validation_step(self, model, batch):
        y, x = self._noisy(batch)
        pred = model(y)
        return (pred - x).abs().mean(), pred, x

    def per_epoch(self, first_epoch: int = 0) -> dict[int, set[int]]:
        """The worker pids seen in each epoch (from the epoch the run started in)."""
        out: dict[int, set[int]] = {}
        for k, pids in enumerate(self.children):
            out.setdefault(first_epoch + k // STEPS_PER_EPOCH, set()).update(pids)
        return out


class GlobalDraws(Dataset):
    """``inner``'s items plus draws from the loading process's global RNGs (torch, ``random``,
    numpy) and the seed its worker info reports: what a dataset drawing from them would get.
    (Defined in the test module: used with forked workers only.)"""

    def __init__(self, inner: Dataset) -> None:
        self.inner = inner

    def __len__(self) -> int:
        return len(self.inner)  # type: ignore[arg-type]

    def __getitem__(self, key):
        info = get_worker_info()
        draws = [
            int(torch.randint(0, 2**62, ())),
            random.getrandbits(62),
            int(np.random.randint(0, 2**62)),  # noqa: NPY002 (the global RNG is the point)
            info.seed if info is not None else -1,
        ]
        return {**self.inner[key], "draws": torch.tensor(draws, dtype=torch.int64)}


@pytest.fixture
def start_method(request):
    """Workers started by ``request.param`` (fork, spawn) while the test runs."""
    method = request.param
    if method not in multiprocessing.get_all_start_methods():
        pytest.skip(f"no {method} start method on this platform")
    before = multiprocessing.get_start_method(allow_none=True)
    multiprocessing.set_start_method(method, force=True)
    yield method
    multiprocessing.set_start_method(before, force=True)


def _data(folder: Path) -> tuple[SEMImageDataset, SEMImageDataset]:
    paths = build_index(folder).paths()
    return (
        SEMImageDataset(paths[:8], image_size_px=16),
        SEMImageDataset(paths[8:10], image_size_px=16, train=False),
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
    return RunConfig(**{**base, **kw})


def _records(run_dir: Path) -> list[dict]:
    """metrics.jsonl without the wall-clock field."""
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(x).items() if k != "images_per_s"} for x in lines]


def _weights(result) -> dict[str, torch.Tensor]:
    return load_file(str(result.latest_checkpoint))


def _same_weights(a, b) -> bool:
    wa, wb = _weights(a), _weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def _gone(pids: set[int]) -> bool:
    """None of ``pids`` is a live child any more (the workers were stopped and reaped)."""
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline:
        alive = {p.pid for p in multiprocessing.active_children()} & pids
        if not alive:
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize(
    "start_method", ["fork", pytest.param("spawn", marks=pytest.mark.slow)], indirect=True
)
def test_the_workers_of_a_run_persist_across_its_epochs(image_folder, tmp_path, start_method):
    """The same two worker processes load every epoch (a loader per epoch started two new ones
    each epoch: under spawn each imported torch again) and are stopped when the run ends; the
    weights are those of a run loading in the main process."""
    train, val = _data(image_folder)
    task = WatchTask()
    result = fit(task, train, val, _run(tmp_path / "w"), OPT, num_workers=2)
    assert result.global_step == 3 * STEPS_PER_EPOCH
    epochs = task.per_epoch()
    assert sorted(epochs) == [0, 1, 2]
    assert len(epochs[0]) >= 2  # the two workers (and any other child of this process)
    assert epochs[1] == epochs[0] and epochs[2] == epochs[0]
    assert _gone(epochs[0])
    in_main = fit(WatchTask(), train, val, _run(tmp_path / "main"), OPT, num_workers=0)
    assert _same_weights(result, in_main)
    assert _records(tmp_path / "w") == _records(tmp_path / "main")


@pytest.mark.parametrize("end", ["max_steps", "error", "ctrl_c"])
def test_the_workers_stop_however_the_run_ends(image_folder, tmp_path, end):
    """max_steps inside an epoch, a non-finite loss, a Ctrl-C: the persistent workers, alive
    until then (the same ones in both epochs), are stopped when fit returns or raises."""
    train, val = _data(image_folder)
    call = STEPS_PER_EPOCH + 2  # in the second epoch
    task = {
        "max_steps": WatchTask(),
        "error": WatchTask(nan_at_call=call),
        "ctrl_c": WatchTask(ctrl_c_at_call=call),
    }[end]
    run = _run(tmp_path / end, max_steps=call if end == "max_steps" else None)
    if end == "max_steps":
        assert fit(task, train, val, run, OPT, num_workers=2).stopped_early
    else:
        stop = NonFiniteLossError if end == "error" else TrainingInterrupted
        with pytest.raises(stop):
            fit(task, train, val, run, OPT, num_workers=2)
    epochs = task.per_epoch()
    assert len(epochs[0]) >= 2 and epochs[1] == epochs[0]
    assert _gone(epochs[0])
    if end == "ctrl_c":
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


@pytest.mark.parametrize("accum", [1, 2], ids=["accum1", "accum2"])
def test_a_run_resumed_mid_epoch_with_workers_equals_the_uninterrupted_one(
    image_folder, tmp_path, accum
):
    """Stopped inside epoch 2 (max_steps), then resumed: bit-identical weights and log to the
    uninterrupted run, with two persistent workers (each process starts its own) and with
    gradient accumulation (the resumed epoch starts at micro-step ``step * accum``)."""
    train, val = _data(image_folder)
    per_epoch = STEPS_PER_EPOCH // accum
    full = fit(
        WatchTask(), train, val, _run(tmp_path / "full", grad_accum_steps=accum), OPT, num_workers=2
    )
    assert full.global_step == 3 * per_epoch
    cut = _run(tmp_path / "cut", grad_accum_steps=accum, max_steps=per_epoch + 1)
    part = fit(WatchTask(), train, val, cut, OPT, num_workers=2)
    assert part.stopped_early and part.global_step == per_epoch + 1
    task = WatchTask()
    resumed = fit(
        task,
        train,
        val,
        _run(tmp_path / "cut", grad_accum_steps=accum),
        OPT,
        resume=True,
        num_workers=2,
    )
    assert resumed.global_step == full.global_step
    assert _same_weights(full, resumed) and resumed.best_loss == full.best_loss
    assert _records(tmp_path / "cut") == _records(tmp_path / "full")
    # the resumed process's two workers served the rest of epoch 2 and all of epoch 3
    pids = set().union(*task.children)
    assert len(pids) >= 2 and all(seen == pids for seen in task.children)


def _loader_per_epoch(dataset: Dataset, seed: int, epoch: int, start_step: int = 0) -> list:
    """The (seeds, draws) of each batch of ``epoch`` from a loader built for that epoch alone,
    as the loop built one before its workers persisted (generator seeded from the run's seed
    and the epoch)."""
    loader = DataLoader(
        dataset,
        batch_sampler=EpochBatchSampler(
            len(dataset), 2, seed=seed, epoch=epoch, start_step=start_step
        ),
        num_workers=2,
        generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch + 1),
        worker_init_fn=ignore_sigint,
    )
    return [(b["seed"].tolist(), b["draws"].tolist()) for b in loader]


@pytest.mark.parametrize("start_method", ["fork"], indirect=True)
@pytest.mark.parametrize("seed", [0, 7])
def test_each_epochs_worker_randomness_is_that_of_a_loader_built_for_the_epoch(
    image_folder, tmp_path, start_method, seed
):
    """A dataset drawing from its worker's global RNGs (torch, random, numpy) gets, in every
    epoch, the draws it got from a loader built for that epoch (the workers are reseeded at
    each epoch's first batch), and so does a run resumed mid-epoch; the worker info reports the
    epoch's seed. Augmentations themselves come from each sample's seed."""
    train, val = _data(image_folder)
    data = GlobalDraws(train)
    expected = [b for e in range(3) for b in _loader_per_epoch(data, seed, e)]
    assert len({tuple(d) for _, draws in expected for d in draws}) == len(expected) * 2
    task = WatchTask()
    fit(task, data, val, _run(tmp_path / "full", seed=seed), OPT, num_workers=2)
    assert task.batches == expected
    # stopped at step 6 (epoch 2, step 2), resumed there: a loader starting at step 2
    fit(WatchTask(), data, val, _run(tmp_path / "cut", seed=seed, max_steps=6), OPT, num_workers=2)
    task = WatchTask()
    fit(task, data, val, _run(tmp_path / "cut", seed=seed), OPT, resume=True, num_workers=2)
    assert task.batches == _loader_per_epoch(data, seed, 1, start_step=2) + expected[8:]


def test_set_epoch_gives_the_batches_of_a_sampler_built_for_the_epoch():
    """One sampler moved by set_epoch yields, per epoch, start step and rank, what a sampler
    built for them yields, each batch an EpochBatch that keeps its epoch through pickling (to
    a worker); an iteration keeps the epoch it started with."""
    from sem_train.data.sampler import EpochBatch

    for rank in (0, 1):
        moved = EpochBatchSampler(37, 4, seed=5, rank=rank, world_size=2)
        for epoch, start in [(0, 0), (3, 2), (1, 0), (2, 3), (2, 0)]:
            moved.set_epoch(epoch, start)
            built = EpochBatchSampler(
                37, 4, seed=5, epoch=epoch, rank=rank, world_size=2, start_step=start
            )
            batches = list(moved)
            assert batches == list(built) and len(moved) == len(built) == len(batches)
            assert all(isinstance(b, EpochBatch) and b.epoch == epoch for b in batches)
    back = pickle.loads(pickle.dumps(batches[0], protocol=pickle.HIGHEST_PROTOCOL))
    assert back == batches[0] and back.epoch == 2
    moved.set_epoch(1)
    running = iter(moved)
    moved.set_epoch(4, 1)
    assert list(running) == list(EpochBatchSampler(37, 4, seed=5, epoch=1, rank=1, world_size=2))
    with pytest.raises(ValueError, match="start_step"):
        moved.set_epoch(0, -1)


def test_epoch_seeded_workers_leave_the_main_process_alone(image_folder):
    """Outside a worker (num_workers=0) the wrapper passes items through and seeds nothing."""
    from sem_train.data.sampler import EpochBatch, EpochSeededWorkers

    train, _ = _data(image_folder)
    wrapped = EpochSeededWorkers(train, seed=3)
    state, py_state = torch.get_rng_state(), random.getstate()
    batch = EpochBatch([(1, 11), (5, 12)], epoch=2)
    items = wrapped.__getitems__(batch)
    assert torch.equal(torch.get_rng_state(), state) and random.getstate() == py_state
    assert len(wrapped) == len(train)
    for got, key in zip(items, batch, strict=True):
        assert torch.equal(got["image"], train[key]["image"]) and int(got["seed"]) == key[1]
    assert torch.equal(wrapped[(1, 11)]["image"], items[0]["image"])


def test_the_train_loader_gives_each_rank_its_slice(image_folder):
    """DDP: the run's one loader, moved to an epoch and start step, gives rank r of W the
    items (and sample seeds) of a sampler built for that rank, epoch and step."""
    from sem_train.distributed import DistContext
    from sem_train.engine import TrainLoader

    train, _ = _data(image_folder)
    run = _run(Path("unused"), batch_size_per_process=1)
    for rank in (0, 1):
        held = TrainLoader(train, run, DistContext(rank=rank, world_size=2), torch.device("cpu"), 0)
        for epoch, start in [(0, 0), (1, 2), (2, 1)]:
            got = [b["seed"].tolist() for b in held.epoch(epoch, start)]
            want = EpochBatchSampler(8, 1, epoch=epoch, rank=rank, world_size=2, start_step=start)
            assert got == [[s for _, s in b] for b in want]
        held.close()
