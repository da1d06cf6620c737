"""Make docs/img/restore_before_after.png: ``sem restore`` on a defocused real micrograph.

The focused micrograph ``lines_euv_resist_0p827nm.tif`` (Hitachi, 0.827 nm/px; from
``$SEM_REAL_DATA`` or ``../shared/data/sem`` beside the clone) is defocused with the forward
model (arXiv 2604.05960, Eq. 1: Airy PSF, Poisson-Gaussian noise) below its info bar, written
as an 8-bit TIFF with the original's Hitachi tags, and restored with ``sem restore`` exactly as
a user would (Richardson-Lucy with the blind PSF estimate). The figure shows a crop of the defocused input, the restored output and the focused
original, each with its PSNR against the original, and the full restored frame with its info
bar.

    uv run python scripts/make_restore_figure.py [--out docs/img/restore_before_after.png]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import numpy as np

NAME = "lines_euv_resist_0p827nm.tif"
DEFOCUS = {"rx_px": 5.0, "ry_px": 5.0, "beta": 1.95, "theta_rad": 0.0}
NOISE = {"gain": 1.0, "offset": 0.0, "sigma": 2.0, "dose": 50.0}
CROP = (slice(300, 556), slice(400, 784))  # rows, columns of the zoomed panels (px)


def source_image() -> Path:
    env = os.environ.get("SEM_REAL_DATA")
    here = Path(__file__).resolve().parents[1]
    for folder in ([Path(env)] if env else []) + [here.parent / "shared" / "data" / "sem"]:
        if (folder / NAME).is_file():
            return folder / NAME
    raise SystemExit(f"{NAME} not found: set SEM_REAL_DATA to the folder holding it")


def defocused_copy(src: Path, dst: Path, seed: int = 0) -> tuple[np.ndarray, int]:
    """Write ``dst``: ``src`` defocused above its untouched info bar, Hitachi tags kept."""
    import tifffile
    from sem_physics import DegradationParams, degrade, read_image

    img = read_image(src)
    bar = img.info_bar_rows or 0
    focused = img.data[: img.data.shape[0] - bar]
    params = DegradationParams(**DEFOCUS, **NOISE)
    y = degrade(focused, params, rng=np.random.default_rng(seed))
    frame = np.concatenate([np.clip(np.rint(y), 0, 255), img.data[focused.shape[0] :]])
    with tifffile.TiffFile(src) as tif:
        tags = tif.pages[0].tags
        extratags = [(c, tags[c].dtype, tags[c].count, tags[c].value, True) for c in (40092,)]
    tifffile.imwrite(dst, frame.astype(np.uint8), photometric="minisblack", extratags=extratags)
    return focused, bar


def psnr(ref: np.ndarray, x: np.ndarray) -> float:
    mse = float(np.mean((ref.astype(np.float64) - x.astype(np.float64)) ** 2))
    return 10 * np.log10(255.0**2 / mse)


def _save_gray_png(fig, path: Path) -> None:
    """The figure as an 8-bit grayscale PNG (a third of the RGBA size; the figure is gray)."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    Image.open(buf).convert("L").save(path, format="PNG", optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/img/restore_before_after.png"))
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sem_physics import read_image
    from sem_physics.atomic import atomic_write
    from sem_train.cli import main as sem

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        defocused = tmp_path / "defocused" / NAME
        defocused.parent.mkdir()
        focused, bar = defocused_copy(source_image(), defocused)
        argv = ["restore", str(defocused), "-o", str(tmp_path / "restored"), "--psf", "auto"]
        if sem(argv) != 0:
            raise SystemExit("sem restore failed")
        restored = read_image(tmp_path / "restored" / NAME).data
        record = json.loads((tmp_path / "restored" / "restore.json").read_text())["restored"][0]
        before = read_image(defocused).data
    h = focused.shape[0]
    used = record["psf"]
    how = f"blind PSF estimate r = {used['rx_px']:.1f} x {used['ry_px']:.1f} px"
    panels = [
        (before[CROP], f"defocused input, {psnr(focused, before[:h]):.1f} dB"),
        (restored[CROP], f"sem restore ({how}), {psnr(focused, restored[:h]):.1f} dB"),
        (focused[CROP], "focused original"),
    ]
    fig = plt.figure(figsize=(12, 7.2), dpi=80)
    grid = fig.add_gridspec(2, 6, height_ratios=[1, 1.25])
    for i, (im, title) in enumerate(panels):
        ax = fig.add_subplot(grid[0, 2 * i : 2 * i + 2])
        ax.imshow(im, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    for i, (im, title) in enumerate(
        [(before, "input frame (info bar below)"), (restored, "output frame: info bar kept")]
    ):
        ax = fig.add_subplot(grid[1, 3 * i : 3 * i + 3])
        ax.imshow(im, cmap="gray", vmin=0, vmax=255)
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.suptitle(
        f"{NAME} (0.827 nm/px) defocused with an Airy PSF r = {DEFOCUS['rx_px']:g} px, "
        f"sigma = {NOISE['sigma']:g}, dose = {NOISE['dose']:g}; restored with Richardson-Lucy",
        fontsize=10,
    )
    fig.tight_layout()
    atomic_write(args.out, lambda tmp: _save_gray_png(fig, tmp))
    print(
        f"wrote {args.out}; PSNR input {psnr(focused, before[:h]):.2f} dB, restored "
        f"{psnr(focused, restored[:h]):.2f} dB; {how}; info bar {bar} rows; restore "
        f"{record['timings_s']['total']:.2f} s"
    )


if __name__ == "__main__":
    main()
