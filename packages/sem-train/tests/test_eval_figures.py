"""Report figures: each tile shows its image on the reference's grey scale, in grid order."""

from __future__ import annotations

import numpy as np
from matplotlib.image import imread
from sem_train.evaluation.figures import save_panels
from sem_train.evaluation.protocols import Case

DPI = 90  # the figures' resolution (figures._save)


def _case(shape: tuple[int, int] = (64, 80)) -> Case:
    ramp = np.tile(np.linspace(0.0, 255.0, shape[1], dtype=np.float32), (shape[0], 1))
    return Case("c0", "img", "lines", "midpoint", ramp, ramp, 1.0)


def test_panel_tiles_show_their_images_in_grid_order_on_the_reference_scale(tmp_path):
    case = _case()
    dark, bright = np.zeros((64, 80), np.float32), np.full((64, 80), 255.0, np.float32)
    # 7 tiles on a 5-column grid: row 0 = dark, bright, dark, bright, no image; row 1 = 2 tiles.
    tiles = [
        ("a", dark, ""),
        ("b", bright, "PSNR 1.0 dB"),
        ("c", dark, ""),
        ("d", bright, ""),
        ("e", None, "failed: a reason"),
        ("f", bright, ""),
        ("focused (reference)", case.reference, ""),
    ]
    path = save_panels(tmp_path / "p.png", case, tiles, crop_px=None)
    rgb = imread(path)[..., :3].mean(-1)  # 0..1
    h_px, w_px = rgb.shape
    tile_w_in, tile_img_in, title_in, sup_in = 3.0, 3.0, 0.6, 0.35
    assert w_px == int(5 * tile_w_in * DPI)
    assert h_px == int((2 * (tile_img_in + title_in) + sup_in) * DPI)

    def centre(r: int, c: int) -> float:
        y_in = sup_in + r * (tile_img_in + title_in) + title_in + tile_img_in / 2
        x_in = c * tile_w_in + tile_w_in / 2
        return float(rgb[int(y_in * DPI), int(x_in * DPI)])

    assert centre(0, 0) < 0.05 and centre(0, 2) < 0.05  # dark tiles: black
    assert centre(0, 1) > 0.95 and centre(0, 3) > 0.95 and centre(1, 0) > 0.95
    assert 0.3 < centre(1, 1) < 0.7  # the ramp's middle on its own grey scale: mid-grey
    # The tile without an image shows its note, not an image: mostly white background.
    y0 = int((sup_in + title_in) * DPI)
    box = rgb[y0 : y0 + int(tile_img_in * DPI), int(4 * tile_w_in * DPI) : w_px]
    assert box.mean() > 0.9 and box.min() < 0.5  # white, with dark text


def test_psd_plot_draws_every_method_in_its_own_colour_and_dash(tmp_path, monkeypatch):
    from sem_metrology import measure_lines
    from sem_metrology.synthetic import make_line_image
    from sem_train.evaluation import figures

    names = ["focused", *(f"method-{i}" for i in range(14))]
    ms = [measure_lines(make_line_image(6, (128, 192), seed=i).image, 0.827) for i in range(15)]
    assert all(m.valid for m in ms)
    drawn = {}
    monkeypatch.setattr(figures, "_save", lambda fig, path: drawn.setdefault("fig", fig) and path)
    figures.save_psd_plot(
        tmp_path / "psd.png", "t", {n: [m] for n, m in zip(names, ms, strict=True)}
    )
    for ax in drawn["fig"].axes:
        lines = {ln.get_label(): ln for ln in ax.lines}
        assert set(lines) == set(names)
        looks = [(ln.get_color(), ln.get_linestyle()) for n, ln in lines.items() if n != "focused"]
        assert len(set(looks)) == 14  # no two methods share a colour and a line style
        assert lines["focused"].get_color() == "black"
