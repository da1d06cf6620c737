"""``sem restore`` on a real 1280x960 micrograph with every registered method, in one run.

For each method: seconds of the bare restorer on the micrograph (info bar removed; prepared
once, as ``sem restore`` does) and seconds of the whole ``sem restore FILE -o OUT`` call
(reading, info-bar split, PSF, restoring, writing the TIFF with its vendor tags, hashing,
``restore.json``), their difference and ratio: what the file handling costs on top of the
method (a few tenths of a second; the ratio is noise for methods slower than that).
Deconvolutions use ``--psf auto`` where sem-physics provides the blind estimate, else the PSF
``--psf`` given here. Learned methods run with random stand-in weights written to a temporary
folder (inference cost does not depend on training): N2V/N2N/MRN at their default sizes, the
two ViT-MAE entries with the ``--mae-preset`` architecture (224-px windows, 8-px overlap).

Run: uv run --frozen python benchmarks/bench_restore.py [--image PATH] [--skip NAME ...]
     [--psf RX,RY,THETA,BETA] [--mae-preset tiny]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import tempfile
import time
from pathlib import Path

import torch
from sem_baselines import get_restorer, list_restorers
from sem_physics import read_image
from sem_train.cli import main as sem
from sem_train.restoration import method_needs, prepare

NAME = "lines_euv_resist_0p827nm.tif"


def default_image() -> Path:
    env = os.environ.get("SEM_REAL_DATA")
    here = Path(__file__).resolve().parents[1]
    for folder in ([Path(env)] if env else []) + [here.parent / "shared" / "data" / "sem"]:
        if (folder / NAME).is_file():
            return folder / NAME
    raise SystemExit(f"{NAME} not found: set SEM_REAL_DATA or pass --image")


def stand_in(name: str, folder: Path, preset: str) -> tuple[Path | None, dict]:
    """(checkpoint, options) with random weights of the kind method ``name`` loads."""
    from sem_models import RestorationModel, build_mae, save_model

    kind = method_needs(name).checkpoint
    torch.manual_seed(0)
    if kind == "restorer":
        get_restorer(name).save(folder / name)
        return folder / name, {}
    if kind == "checkpoint_dir":
        save_model(RestorationModel(build_mae(preset, in_chans=1)), folder / name)
        return folder / name, {}
    if kind == "weights_path":
        mae = build_mae(preset, in_chans=3)
        state = {k: v for k, v in mae.state_dict().items() if not k.startswith("decoder")}
        torch.save({"model": state}, folder / f"{name}.pth")
        return folder / f"{name}.pth", {"preset": preset}
    return None, {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", type=Path, default=None)
    parser.add_argument("--skip", nargs="*", default=[])
    parser.add_argument("--psf", default="auto", help="auto (blind estimate) or RX,RY,THETA,BETA")
    parser.add_argument("--mae-preset", default="tiny")
    args = parser.parse_args()
    src = args.image or default_image()
    img = read_image(src)
    micrograph = img.data[: img.data.shape[0] - (img.info_bar_rows or 0)]
    psf = args.psf
    print(
        f"{src.name}: {img.data.shape[1]}x{img.data.shape[0]} px, info bar "
        f"{img.info_bar_rows} rows; --psf {psf}; torch threads {torch.get_num_threads()}"
    )
    print(
        f"{'method':16s} {'restorer s':>10s} {'sem restore s':>14s} {'extra s':>8s} {'ratio':>6s}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        warned: dict[str, list[str]] = {}
        for name in list_restorers():
            if name in args.skip:
                continue
            needs = method_needs(name)
            ckpt, options = stand_in(name, tmp_path, args.mae_preset)
            kw = {"psf": psf} if needs.takes_psf else {}
            method = prepare(name, checkpoint=ckpt, **kw, **options)
            t0 = time.perf_counter()
            method(micrograph)
            bare = time.perf_counter() - t0
            argv = ["restore", str(src), "-o", str(tmp_path / f"out-{name}"), "--method", name]
            argv += (["--psf", psf] if needs.takes_psf else []) + (
                ["--checkpoint", str(ckpt)] if ckpt else []
            )
            argv += [f"--set={k}={v}" for k, v in options.items()]
            t0 = time.perf_counter()
            said = io.StringIO()
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(said):
                status = sem(argv)
            whole = time.perf_counter() - t0
            if status != 0:
                print(f"{name:16s} sem restore exited {status}: {said.getvalue().strip()}")
                continue
            if said.getvalue().strip():
                warned.setdefault(said.getvalue().strip(), []).append(name)
            rec = json.loads((tmp_path / f"out-{name}" / "restore.json").read_text())
            assert rec["restored"][0]["info_bar_rows"] == img.info_bar_rows
            print(f"{name:16s} {bare:10.2f} {whole:14.2f} {whole - bare:8.2f} {whole / bare:6.2f}")
    for text, names in warned.items():  # once per distinct message, not in the table
        print(f"\nsem restore said, for {', '.join(names)}:\n{text}")


if __name__ == "__main__":
    main()
