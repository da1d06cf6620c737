"""Report figures' legibility: scale bars that match the pixel size, crop sizes in the titles,
fixed colour-blind-safe PSD colours per method name, one legend outside the PSD axes."""

from __future__ import annotations

import itertools
import math
import re
from types import SimpleNamespace

import numpy as np
import pytest
from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar
from sem_train.evaluation import figures
from sem_train.evaluation.protocols import Case

#: Okabe-Ito's colours (black and yellow aside): every method curve's colour must be one.
OKABE_ITO = {"#D55E00", "#0072B2", "#009E73", "#E69F00", "#CC79A7", "#56B4E9"}
REFERENCES = ("focused", "defocused input", "control (y − b)/a")
PLUGINS = ("my-denoiser", "acme-deblur", "zz")


def _builtins() -> list[str]:
    from sem_baselines.restorer import BUILTIN_MODULES

    return [n for n in BUILTIN_MODULES if n != "input"]  # the input is shown as a reference


def _looks(styles: dict, names) -> list[tuple[str, str]]:
    return [(styles[n]["color"], styles[n].get("ls", "-")) for n in names]


def _lines_case(pixel_size_nm: float | None, case_id: str = "lines_00@random") -> Case:
    from sem_metrology.synthetic import make_line_image

    img = np.asarray(make_line_image(6, (320, 320), seed=0).image, np.float32)
    return Case(case_id, "img", "lines", "random", img, img, pixel_size_nm)


def _drawn(monkeypatch) -> dict:
    drawn: dict = {}

    def save(fig, path):
        drawn["fig"] = fig
        fig.savefig(path, dpi=90)  # the file must still be written
        return path

    monkeypatch.setattr(figures, "_save", save)
    return drawn


def _bars(fig) -> list[AnchoredSizeBar]:
    return [a for ax in fig.axes for a in ax.artists if isinstance(a, AnchoredSizeBar)]


def _bar_length_and_label(bar: AnchoredSizeBar) -> tuple[float, str]:
    rect = bar.size_bar.get_children()[0]
    return float(rect.get_width()), bar.txt_label.get_text()


def test_a_method_has_the_same_psd_style_whatever_the_order_and_the_other_methods():
    names = [*_builtins(), *PLUGINS]
    full = figures.psd_styles({n: [SimpleNamespace(valid=True)] for n in [*REFERENCES, *names]})
    rng = np.random.default_rng(0)
    for _ in range(20):
        subset = [n for n in names if rng.random() < 0.5] or names[:1]
        order = [*REFERENCES, *rng.permutation(subset)]
        styles = figures.psd_styles({n: [SimpleNamespace(valid=True)] for n in order})
        for n in order:
            if n not in PLUGINS:  # built-ins and references: fixed, whatever the company
                assert styles[n] == full[n], n
    # a report with one plugin, or with the plugins in another order: the same styles
    for perm in itertools.permutations(PLUGINS):
        styles = figures.psd_styles({n: [1] for n in ["focused", *perm]})
        assert [styles[p] for p in PLUGINS] == [
            figures.psd_styles({"focused": [1], p: [1]})[p] for p in PLUGINS
        ]


def test_the_psd_palette_gives_no_two_methods_one_colour_and_dash_and_is_colour_blind_safe():
    builtins = _builtins()
    every = [*REFERENCES, *builtins, *PLUGINS]
    styles = figures.psd_styles({n: [1] for n in every})
    looks = _looks(styles, every)
    assert len(set(looks)) == len(every)
    for n in [*builtins, *PLUGINS]:
        assert styles[n]["color"].upper() in OKABE_ITO, n
    refs = {styles[n]["color"] for n in REFERENCES}
    assert len(refs) == 3 and not refs & OKABE_ITO  # references and control: their own greys
    # a plugin alone with the focused image never takes a built-in's colour and dash
    builtin_looks = set(_looks(styles, builtins))
    for p in [*PLUGINS, *(f"plugin-{i}" for i in range(30))]:
        alone = figures.psd_styles({"focused": [1], p: [1]})
        assert _looks(alone, [p])[0] not in builtin_looks, p


def test_the_scale_bar_is_as_long_as_its_label_says_and_the_title_gives_the_crop(
    tmp_path, monkeypatch
):
    drawn = _drawn(monkeypatch)
    pixel = 0.827
    case = _lines_case(pixel)
    tiles = [
        ("defocused input", case.input, ""),
        ("m", None, "failed"),
        ("focused", case.input, ""),
    ]
    path = figures.save_panels(tmp_path / "p.png", case, tiles)
    assert path.is_file()
    fig = drawn["fig"]
    bars = _bars(fig)
    assert len(bars) == 1 and bars[0].axes is fig.axes[0]  # one bar, on the first image
    length_px, label = _bar_length_and_label(bars[0])
    nm = float(re.fullmatch(r"([\d.]+) nm", label).group(1))
    assert length_px == pytest.approx(nm / pixel, rel=1e-9)
    mantissa = nm / 10 ** math.floor(math.log10(nm))
    assert mantissa in (1, 2, 5) and 0.14 < nm / (256 * pixel) <= 0.35  # round, readable
    title = fig.texts[0].get_text()
    assert "256×256 px" in title and f"{256 * pixel:.0f}×{256 * pixel:.0f} nm" in title
    # the edge figure: its own (closer) crop in its title, a bar, LWR said to be 3σ once
    from sem_metrology import measure_lines

    m = measure_lines(case.reference, pixel)
    assert m.valid
    images = {"focused": case.reference, "wiener": case.input}
    figures.save_edge_overlays(tmp_path / "e.png", case, images, {"focused": m, "wiener": m})
    fig = drawn["fig"]
    title = fig.texts[0].get_text()
    assert "192×192 px" in title and f"{192 * pixel:.0f}×{192 * pixel:.0f} nm" in title
    length_px, label = _bar_length_and_label(_bars(fig)[0])
    assert length_px * pixel == pytest.approx(float(label.split()[0]))
    every_text = " ".join(t.get_text() for t in fig.findobj(lambda a: hasattr(a, "get_text")))
    assert every_text.count("3σ") == 1 and "LWR" in every_text


def test_figures_of_a_case_without_pixel_size_are_written_with_a_px_scale_bar(
    tmp_path, monkeypatch
):
    drawn = _drawn(monkeypatch)
    case = _lines_case(None)
    tiles = [("defocused input", case.input, ""), ("focused", case.reference, "")]
    assert figures.save_panels(tmp_path / "p.png", case, tiles).is_file()
    length_px, label = _bar_length_and_label(_bars(drawn["fig"])[0])
    assert label == f"{length_px:g} px" and 0.14 < length_px / 256 <= 0.35
    assert "256×256 px (pixel size unknown)" in drawn["fig"].texts[0].get_text()
    path = figures.save_edge_overlays(tmp_path / "e.png", case, {"focused": case.reference}, {})
    assert path.is_file()
    length_px, label = _bar_length_and_label(_bars(drawn["fig"])[0])
    assert label == f"{length_px:g} px"


def test_a_one_tile_figure_wraps_its_long_title_inside_the_figure(tmp_path, monkeypatch):
    drawn = _drawn(monkeypatch)
    case = _lines_case(0.827, case_id="lines_euv_resist_0p827nm_and_a_long_name@random")
    figures.save_edge_overlays(tmp_path / "e.png", case, {"focused": case.reference}, {})
    fig = drawn["fig"]
    renderer = fig.canvas.get_renderer()
    box = fig.texts[0].get_window_extent(renderer)
    assert box.x0 >= 0 and box.x1 <= fig.bbox.width and box.y1 <= fig.bbox.height
    assert not fig.axes[0].get_window_extent(renderer).overlaps(box)  # above the tile


def test_the_psd_legend_is_outside_both_axes_and_the_axes_say_one_sided(tmp_path, monkeypatch):
    from sem_metrology import measure_lines
    from sem_metrology.synthetic import make_line_image

    names = ["focused", "defocused input", "wiener", "sem-foundation", "my-plugin"]
    ms = [measure_lines(make_line_image(6, (128, 192), seed=i).image, 0.827) for i in range(5)]
    drawn = _drawn(monkeypatch)
    figures.save_psd_plot(
        tmp_path / "psd.png", "t", {n: [m] for n, m in zip(names, ms, strict=True)}
    )
    fig = drawn["fig"]
    renderer = fig.canvas.get_renderer()
    assert len(fig.legends) == 1 and not any(ax.get_legend() for ax in fig.axes)
    legend = fig.legends[0].get_window_extent(renderer)
    assert legend.x1 <= fig.bbox.width  # not clipped
    for ax in fig.axes:
        assert not ax.get_window_extent(renderer).overlaps(legend)
        assert "one-sided" in ax.get_ylabel()
    assert {t.get_text() for t in fig.legends[0].get_texts()} == set(names)
    every_text = " ".join(t.get_text() for t in fig.findobj(lambda a: hasattr(a, "get_text")))
    assert every_text.count("3σ") == 1
