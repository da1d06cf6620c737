"""Fixtures for sem-train tests: tiny folders of generated SEM-like images."""

from __future__ import annotations

import os
import shutil
import subprocess
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import pytest
from filelock import FileLock
from sem_physics.samples import SAMPLE_KINDS, make_sample
from sem_physics.testing import folder_held

_HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A RestoreWarning that a sem-train test does not expect (``pytest.warns``) fails it: the
    warnings a user would see are part of what these tests check."""
    mark = pytest.mark.filterwarnings("error::sem_train.restoration.api.RestoreWarning")
    for item in items:
        if _HERE in item.path.resolve().parents:
            item.add_marker(mark)


def write_folder(root: Path, n: int, size: int = 48, seed: int = 0) -> list[Path]:
    """``n`` sem_physics sample images (lines, contacts, texture) under nested folders,
    in mixed formats: 8/16-bit TIFF, PNG, JPEG, BMP."""
    import tifffile
    from PIL import Image

    paths = []
    for k in range(n):
        kind = SAMPLE_KINDS[k % len(SAMPLE_KINDS)]
        img = make_sample(kind, (size, size + 8), seed=seed * 1000 + k)
        sub = root / f"group{k % 3}"
        sub.mkdir(parents=True, exist_ok=True)
        fmt = k % 5
        if fmt == 0:
            p = sub / f"im{k:03d}.tif"
            tifffile.imwrite(p, img.astype(np.uint8))
        elif fmt == 1:
            p = sub / f"im{k:03d}.tiff"
            tifffile.imwrite(p, (img * 257).astype(np.uint16))
        elif fmt == 2:
            p = sub / f"im{k:03d}.png"
            Image.fromarray(img.astype(np.uint8)).save(p)
        elif fmt == 3:
            p = sub / f"im{k:03d}.jpg"
            Image.fromarray(img.astype(np.uint8)).save(p, quality=95)
        else:
            p = sub / f"im{k:03d}.bmp"
            Image.fromarray(img.astype(np.uint8)).save(p)
        paths.append(p)
    return paths


@pytest.fixture(scope="session")
def folder_writer():
    """The :func:`write_folder` helper (test modules cannot import conftest directly)."""
    return write_folder


@pytest.fixture
def image_folder(tmp_path) -> Path:
    root = tmp_path / "images"
    write_folder(root, 12)
    return root


@pytest.fixture
def corpus_dir() -> Path:
    env = os.environ.get("SEM_CORPUS_DATA")
    if not env or not Path(env).is_dir():
        pytest.skip("SEM_CORPUS_DATA not set (folder of real SEM micrographs)")
    return Path(env)


@pytest.fixture
def real_image():
    """``real_image(name)``: the path of a real SEM test image (``SEM_REAL_DATA``); skips, naming
    the variable, when it is absent (a failure under ``SEM_REQUIRE_REAL_DATA=1``)."""

    def get(name: str) -> Path:
        path = Path(os.environ.get("SEM_REAL_DATA", "/nonexistent")) / name
        if not path.is_file():
            pytest.skip(f"{path} missing: set SEM_REAL_DATA to the folder holding {name}")
        return path

    return get


@pytest.fixture
def hold_folder():
    """``hold_folder(folder, what)``: a child process writing into ``folder`` as another run
    would (it holds the folder's lock, described as ``what``); killed when the test ends."""
    with ExitStack() as stack:

        def start(folder: Path, what: str = "sem restore in -o out") -> subprocess.Popen:
            return stack.enter_context(folder_held(folder, what))

        yield start


@pytest.fixture
def one_torch_thread():
    """One torch thread while the test runs (tiny tensors; the machine is shared)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def methods_run(monkeypatch) -> list[str]:
    """The names of the methods a benchmark runs (not reuses), in order: a spy on the runner."""
    from sem_train.evaluation import runner

    ran: list[str] = []
    real = runner.run_method

    def spy(name, *a, **k):
        ran.append(name)
        return real(name, *a, **k)

    monkeypatch.setattr(runner, "run_method", spy)
    return ran


def ddp_jobs_main(jobs: list[tuple[str, str, str]]) -> None:
    """Body of each torchrun rank of :func:`ddp_runs`: ``ddp_worker_main(folder, out)`` of each
    test module in turn, in one Gloo process group (each module's runs join it)."""
    import importlib.util

    import torch
    from sem_train.distributed import DistContext

    torch.set_num_threads(1)
    ctx = DistContext.from_env(torch.device("cpu"))
    try:
        for module_file, folder, out in jobs:
            name = f"ddp_job_{Path(module_file).stem}"
            spec = importlib.util.spec_from_file_location(name, module_file)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            module.ddp_worker_main(folder, out)
            ctx.barrier()
    finally:
        ctx.close()


@pytest.fixture(scope="session")
def ddp_runs(request, tmp_path_factory, folder_writer) -> Path:
    """The DDP runs of every selected test module that uses this fixture, from one torchrun
    launch of 2 CPU ranks: each rank's start (importing torch and the model code) costs far
    more than these tiny runs. Module ``m``'s ``ddp_worker_main(folder, out)`` writes under
    ``<root>/<m's file stem>``; the images (12, as :func:`image_folder`) are ``<root>/images``.
    """
    from sem_models.testing import run_torchrun
    from sem_train.data import build_index

    modules = sorted(
        {
            str(item.path)
            for item in request.session.items
            if "ddp_runs" in getattr(item, "fixturenames", ())
        }
    )

    def launch(root: Path) -> None:
        folder = root / "images"
        folder_writer(folder, 12)
        build_index(folder)  # cache the index before the workers start
        jobs = [(m, str(folder), str(root / Path(m).stem)) for m in modules]
        proc = run_torchrun(__file__, "ddp_jobs_main", jobs, workdir=root, timeout_s=600)
        assert proc.returncode == 0, f"{[Path(m).name for m in modules]}: {proc.stderr[-3000:]}"

    if not os.environ.get("PYTEST_XDIST_WORKER"):
        root = tmp_path_factory.mktemp("ddp_runs")
        launch(root)
        return root
    # Under pytest-xdist each worker process would launch the same runs: the first that needs
    # them does, under a lock in the folder the workers share; the others read its results.
    root = tmp_path_factory.getbasetemp().parent / "ddp_runs"
    with FileLock(f"{root}.lock"):
        if not (root / "complete").is_file():
            shutil.rmtree(root, ignore_errors=True)  # a failed launch's leftovers
            root.mkdir()
            launch(root)
            (root / "complete").touch()
    return root
