"""Make docs/img/restore_before_after.png: ``sem restore`` on a defocused real micrograph.

The focused micrograph ``lines_euv_resist_0p827nm.tif`` (Hitachi, 0.827 nm/px; from
``$SEM_REAL_DATA`` or ``../shared/data/sem`` beside the clone) is defocused with the forward
model (arXiv 2604.05960, Eq. 1: Airy PSF, Poisson-Gaussian noise) below its info bar, written
as an 8-bit TIFF with the original's Hitachi tags, and restored with ``sem restore`` exactly as
a user would (Richardson-Lucy with the blind PSF estimate). The figure shows a crop of the
defocused input, the restored output and the focused original, each with its PSNR against the
original, drawn at ``ZOOM`` (2) screen px per image px (nearest neighbour: no pixel lost) with a
scale bar, and the full input and restored frames with their info bar, the crop outlined.

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
CROP = (slice(356, 500), slice(496, 688))  # rows, columns of the zoomed panels (px)
ZOOM = 2  # screen px per image px of the zoomed panels
FRAME_SCALE = 0.375  # screen px per image px of the full frames (an overview)
DPI = 100


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
    fig.savefig(buf, format="png", dpi=DPI)
    Image.open(buf).convert("L").save(path, format="PNG", optimize=True)


def _figure(panels, frames, pixel_nm: float, plt):
    """The figure on a pixel grid: each zoomed panel exactly ``ZOOM`` screen px per image px,
    the frames below at ``FRAME_SCALE``, titles and suptitle in fixed bands (no layout pass)."""
    from matplotlib import patheffects
    from matplotlib.patches import Rectangle
    from sem_metrology.report import add_scale_bar

    gap, title, top = 16, 22, 44  # px
    ch, cw = (s.stop - s.start for s in CROP)
    zh, zw = ZOOM * ch, ZOOM * cw
    fh, fw = (round(FRAME_SCALE * n) for n in frames[0].shape)
    width = max(3 * zw + 4 * gap, 2 * fw + 3 * gap)
    height = top + title + zh + gap + title + fh + gap
    fig = plt.figure(figsize=(width / DPI, height / DPI), dpi=DPI)

    def axes(x: float, y: float, w: int, h: int):  # x, y: top-left corner in px
        ax = fig.add_axes((x / width, 1 - (y + h) / height, w / width, h / height))
        ax.axis("off")
        return ax

    outline = [patheffects.withStroke(linewidth=2.5, foreground="black")]
    x0 = (width - 3 * zw - 2 * gap) / 2
    for i, (im, text) in enumerate(panels):
        ax = axes(x0 + i * (zw + gap), top + title, zw, zh)
        ax.imshow(im, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        ax.set_title(text, fontsize=9, pad=4)
        if i == 0:
            add_scale_bar(ax, cw, ch, pixel_nm, fontsize=9, bar_height_px=2)
    x0 = (width - 2 * fw - gap) / 2
    y0 = top + title + zh + gap + title
    for i, (im, text) in enumerate(
        zip(frames, ["input frame (info bar below)", "output frame: info bar kept"], strict=True)
    ):
        ax = axes(x0 + i * (fw + gap), y0, fw, fh)
        ax.imshow(im, cmap="gray", vmin=0, vmax=255, interpolation="antialiased")
        box = Rectangle((CROP[1].start - 0.5, CROP[0].start - 0.5), cw, ch, fill=False)
        box.set(ec="white", lw=1, path_effects=outline)
        ax.add_patch(box)
        ax.set_title(f"{text}; the zoomed crop outlined", fontsize=9, pad=4)
    fig.suptitle(
        f"{NAME} ({pixel_nm:.3f} nm/px) defocused with an Airy PSF r = {DEFOCUS['rx_px']:g} px, "
        f"sigma = {NOISE['sigma']:g}, dose = {NOISE['dose']:g}; restored with Richardson-Lucy\n"
        f"top: crop {cw}×{ch} px ({cw * pixel_nm:.0f}×{ch * pixel_nm:.0f} nm) at "
        f"{ZOOM}× (one image px = {ZOOM}×{ZOOM} screen px); bottom: full frames",
        fontsize=10,
        y=1 - 4 / height,
        va="top",
    )
    return fig


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
    pixel_nm = read_image(source_image()).pixel_size_nm or 0.827
    fig = _figure(panels, [before, restored], pixel_nm, plt)
    atomic_write(args.out, lambda tmp: _save_gray_png(fig, tmp))
    print(
        f"wrote {args.out}; PSNR input {psnr(focused, before[:h]):.2f} dB, restored "
        f"{psnr(focused, restored[:h]):.2f} dB; {how}; info bar {bar} rows; restore "
        f"{record['timings_s']['total']:.2f} s"
    )


if __name__ == "__main__":
    main()
