"""Edges placed on the image they were measured in (``LineMeasurement.edge_points_px``) and the
PNG reports drawing them there: ``smile`` measures a region of the image turned by its tilt
(and inset), so its edges must be turned back, not only offset by the ``roi``.

Synthetic tilted lines with known edges (``make_line_image``, spaces near 0 so that SMILE's
threshold, half of its 0-based range, sits at the true half-level, and 2 grey levels of noise);
the figures are caught at ``savefig`` and their drawn edge lines compared with the true edges.
The outer edges (of the turned frame, and of the roi) lie about half a space from the border:
a wider flat margin rings in SMILE's Butterworth-filtered profile, and whether the ringing adds
lines depends on the sign of the noise there (noiseless: a derivative of exactly 0, a knife
edge); an edge within a few px of the roi's border gets SMILE's clipped fitting window.
"""

from __future__ import annotations

import dataclasses
import json
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from matplotlib.figure import Figure
from sem_metrology import (
    LineMeasurement,
    MetrologyInputError,
    make_contact_image,
    make_line_image,
    measure_contacts,
    measure_lines,
)
from sem_metrology.report import save_contact_report, save_line_report

TILT_DEG = 2.0
#: (row0, row1, col0, col1) in the vertical image, its columns mid-space (9 whole lines);
#: transposed for horizontal lines
ROI = (40, 360, 45, 378)


def _noise(shape: tuple[int, ...], seed: int = 0, sigma: float = 2.0) -> np.ndarray:
    """Gaussian noise of ``sigma`` grey levels (0-255 scale)."""
    return np.random.default_rng(seed).normal(0.0, sigma, shape)


def _make_samples() -> dict[str, Any]:
    """12 lines of a 36.9-px pitch, the outer edges ~9 px inside the turned frame's region."""
    out = {}
    for o in ("vertical", "horizontal"):
        s = make_line_image(
            n_lines=12,
            shape=(400, 460),
            pitch_nm=480 / 13 * 0.827,
            tilt_deg=TILT_DEG,
            space_level=5.0,
            orientation=o,
            seed=1,
        )
        noise = _noise(s.image.shape, seed=1 if o == "vertical" else 2)
        out[o] = dataclasses.replace(s, image=s.image + noise)
    return out


@pytest.fixture(scope="module")
def samples() -> dict[str, Any]:
    return _make_samples()


def _roi(orientation: str, roi: bool) -> tuple[int, int, int, int] | None:
    if not roi:
        return None
    return ROI if orientation == "vertical" else (ROI[2], ROI[3], ROI[0], ROI[1])


def _distances(x: np.ndarray, y: np.ndarray, sample: Any, horizontal: bool) -> np.ndarray:
    """Distance (px, across the lines) of each point from the nearest true edge."""
    across, along = (y, x) if horizontal else (x, y)
    truth = np.vstack([sample.leading_px, sample.trailing_px])
    n = truth.shape[1]
    inside = (along >= 0) & (along <= n - 1)
    edge_at = np.array([np.interp(along[inside], np.arange(n), t) for t in truth])
    return np.abs(edge_at - across[inside][None, :]).min(axis=0)


def _assert_on_true_edges(points: list[tuple[np.ndarray, np.ndarray]], sample, horizontal):
    d = np.concatenate([_distances(x, y, sample, horizontal) for x, y in points])
    assert d.size > 1000
    assert np.percentile(d, 99) < 1.0 and d.max() < 1.5, (np.percentile(d, 99), d.max())


@pytest.mark.parametrize("orientation", ["vertical", "horizontal"])
@pytest.mark.parametrize("roi", [False, True])
def test_smile_edges_are_placed_on_the_true_edges(samples, orientation, roi) -> None:
    sample = samples[orientation]
    m = measure_lines(
        sample.image, sample.pixel_size_nm, roi=_roi(orientation, roi), bootstrap_samples=0
    )
    assert m.valid and m.convention == "smile" and m.orientation == orientation
    assert m.rotation_deg and abs(m.tilt_deg - TILT_DEG) < 0.3  # turned, so mapped
    horizontal = orientation == "horizontal"
    for which in ("leading", "trailing"):
        points = m.edge_points_px(which)
        assert len(points) == m.n_lines
        _assert_on_true_edges(points, sample, horizontal)
    # the region offset alone (how the figures drew them) misses by several pixels
    r0, c0 = (m.roi[0], m.roi[2]) if m.roi else (0, 0)
    old = [
        (along + c0, across + r0) if horizontal else (across + c0, along + r0)
        for across, along in (
            (np.asarray(e), np.arange(len(e), dtype=float)) for e in m.leading_edges_px
        )
    ]
    assert max(np.percentile(_distances(x, y, sample, horizontal), 99) for x, y in old) > 4.0


@pytest.mark.parametrize("orientation", ["vertical", "horizontal"])
def test_smile_and_truth_edges_coincide_on_the_image(samples, orientation) -> None:
    sample = samples[orientation]
    roi = _roi(orientation, True)
    smile = measure_lines(sample.image, sample.pixel_size_nm, roi=roi, bootstrap_samples=0)
    truth = measure_lines(
        sample.image, sample.pixel_size_nm, roi=roi, convention="truth", bootstrap_samples=0
    )
    assert truth.rotation_deg is None and truth.region_px == roi
    horizontal = orientation == "horizontal"
    for which in ("leading", "trailing"):
        _assert_on_true_edges(truth.edge_points_px(which), sample, horizontal)
        tx, ty = truth.edge_points_px(which)[0]
        # truth's first line, where smile's nearest line lies along it
        for x, y in smile.edge_points_px(which):
            along, across = (x, y) if horizontal else (y, x)
            t_along, t_across = (tx, ty) if horizontal else (ty, tx)
            gap = np.abs(np.interp(along, t_along, t_across) - across)
            if np.median(gap) < 5:
                assert np.percentile(gap, 99) < 1.0
                break
        else:
            raise AssertionError("no smile edge beside truth's first edge")


def test_a_turned_frame_with_an_info_bar_places_the_edges(samples) -> None:
    """With a roi, SMILE turns the whole frame, info bar included, about its centre."""
    sample = samples["vertical"]
    frame = np.vstack([sample.image, np.zeros((40, sample.image.shape[1]), np.float32)])
    sem = SimpleNamespace(data=frame, pixel_size_nm=sample.pixel_size_nm, info_bar_rows=40)
    m = measure_lines(sem, roi=ROI, bootstrap_samples=0)
    assert m.valid and m.rotation_centre_px == ((frame.shape[0] - 1) / 2, (frame.shape[1] - 1) / 2)
    _assert_on_true_edges(m.edge_points_px("trailing"), sample, False)


def _caught_figure(monkeypatch: pytest.MonkeyPatch) -> list[Figure]:
    """The figures the reports save, kept for inspection."""
    caught: list[Figure] = []
    original = Figure.savefig

    def savefig(self: Figure, *args: Any, **kwargs: Any) -> Any:
        caught.append(self)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", savefig)
    return caught


def _edge_lines(fig: Figure, n_rows: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Every drawn line of one point per along-line pixel: the edges."""
    return [
        (np.asarray(ln.get_xdata(), float), np.asarray(ln.get_ydata(), float))
        for ax in fig.axes
        for ln in ax.get_lines()
        if len(ln.get_xdata()) == n_rows
    ]


@pytest.mark.parametrize("orientation", ["vertical", "horizontal"])
@pytest.mark.parametrize("roi", [False, True])
def test_the_line_report_draws_the_edges_on_the_true_edges(
    samples, orientation, roi, tmp_path, monkeypatch
) -> None:
    sample = samples[orientation]
    m = measure_lines(
        sample.image, sample.pixel_size_nm, roi=_roi(orientation, roi), bootstrap_samples=0
    )
    caught = _caught_figure(monkeypatch)
    save_line_report(m, sample.image, tmp_path / "r.png")
    lines = _edge_lines(caught[0], m.n_rows)
    assert len(lines) >= 2 * m.n_lines
    _assert_on_true_edges(lines, sample, orientation == "horizontal")


def test_the_roi_rectangle_is_drawn_at_the_roi_and_named(samples, tmp_path, monkeypatch) -> None:
    sample = samples["vertical"]
    m = measure_lines(sample.image, sample.pixel_size_nm, roi=ROI, bootstrap_samples=0)
    caught = _caught_figure(monkeypatch)
    save_line_report(m, sample.image, tmp_path / "r.png")
    fig = caught[0]
    rects = [p for ax in fig.axes for p in ax.patches if p.get_gid() == "roi"]
    assert len(rects) == 1
    r0, r1, c0, c1 = ROI
    assert rects[0].get_xy() == (c0 - 0.5, r0 - 0.5)
    assert (rects[0].get_width(), rects[0].get_height()) == (c1 - c0, r1 - r0)
    head = next(t for t in fig.texts if t.get_gid() == "summary").get_text()
    assert f"roi rows {r0}:{r1} × cols {c0}:{c1}" in head
    assert "LWR 3σ" in head and "LER fit: ξ" in head and "LWR fit: ξ" in head


def _texts_inside(fig: Figure) -> None:
    """Everything drawn lies inside the figure, the summary above every panel."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    box = fig.get_tightbbox(renderer)  # inches
    width, height = fig.get_size_inches()
    assert box.x0 >= -0.01 and box.y0 >= -0.01, box
    assert box.x1 <= width + 0.01 and box.y1 <= height + 0.01, box
    heads = [t for t in fig.texts if t.get_gid() == "summary"]
    heads += [fig._suptitle] if getattr(fig, "_suptitle", None) is not None else []
    assert heads
    head = heads[0].get_window_extent(renderer)
    for ax in fig.axes:
        assert ax.get_tightbbox(renderer).y1 <= head.y0 + 1, ax.get_title()


def _empty_axes_with_ticks(fig: Figure) -> list[str]:
    return [
        ax.get_title()
        for ax in fig.axes
        if ax.axison and not (ax.lines or ax.patches or ax.images or ax.collections)
    ]


def test_a_failed_line_figure_has_no_empty_axes_and_its_reason_is_whole(tmp_path, monkeypatch):
    holes = make_contact_image(seed=0)
    m = measure_lines(holes.image, holes.pixel_size_nm)
    assert not m.valid and len(m.reason) > 200
    caught = _caught_figure(monkeypatch)
    save_line_report(m, holes.image, tmp_path / "r.png")
    fig = caught[0]
    assert _empty_axes_with_ticks(fig) == []
    notes = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert notes.count("not measured") == 3
    _texts_inside(fig)
    head = " ".join(t.get_text() for t in fig.texts).replace("\n", " ")
    assert m.reason.split()[-1] in head  # the reason's last word, not clipped


def test_the_line_report_has_scale_bars_and_a_zoom(samples, tmp_path, monkeypatch) -> None:
    sample = samples["vertical"]
    m = measure_lines(sample.image, sample.pixel_size_nm, bootstrap_samples=0)
    caught = _caught_figure(monkeypatch)
    save_line_report(m, sample.image, tmp_path / "r.png")
    fig = caught[0]
    _texts_inside(fig)
    bars = [a for ax in fig.axes for a in ax.artists if a.get_gid() == "scale-bar"]
    assert len(bars) == 2
    labels = {t.get_text() for ax in fig.axes for t in ax.findobj() if hasattr(t, "get_text")}
    assert {"100 nm", "20 nm"} <= labels  # 35 % of 480 and 128 px of 0.827 nm, rounded down
    zoom = [p for ax in fig.axes for p in ax.patches if p.get_gid() == "zoom"]
    assert len(zoom) == 1 and zoom[0].get_width() == 128
    hist = next(ax for ax in fig.axes if ax.get_title().startswith("width"))
    assert hist.get_ylabel() == "count (line × row)"


def test_the_contact_report_shows_the_border_cut_holes(tmp_path, monkeypatch) -> None:
    sample = make_contact_image(seed=0)
    m = measure_contacts(sample.image, sample.pixel_size_nm)
    assert m.valid and m.n_border_excluded > 0
    caught = _caught_figure(monkeypatch)
    save_contact_report(m, sample.image, tmp_path / "c.png", title="contacts")
    fig = caught[0]
    _texts_inside(fig)
    legend = [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().texts]
    assert f"cut by the border ({m.n_border_excluded})" in legend
    assert any(t.startswith("±LCDU/2") for t in legend)
    assert all(ax.get_title() for ax in fig.axes)
    colours = {str(ln.get_color()).lower() for ax in fig.axes for ln in ax.get_lines()}
    assert not colours & {"lime", "#00ff00"}


def test_the_geometry_is_in_the_json_not_in_the_csv(samples) -> None:
    sample = samples["vertical"]
    m = measure_lines(sample.image, sample.pixel_size_nm, roi=ROI, bootstrap_samples=0)
    data = json.loads(m.to_json())
    assert data["region_px"] == list(ROI) and data["rotation_deg"] == pytest.approx(-m.tilt_deg)
    for key in ("region_px", "rotation_deg", "rotation_centre_px"):
        assert key not in m.summary() and key not in m.to_csv().splitlines()[0].split(",")
    again = LineMeasurement.model_validate_json(m.to_json(include_edges=True))
    assert again == m
    np.testing.assert_array_equal(
        again.edge_points_px("leading")[3], m.edge_points_px("leading")[3]
    )


def test_a_measurement_saved_without_its_geometry(samples) -> None:
    """Older saved results: truth (and smile without a turn) are placed by the roi; a turned
    smile result says it cannot be placed."""
    sample = samples["vertical"]
    for convention in ("truth", "smile"):
        m = measure_lines(
            sample.image, sample.pixel_size_nm, roi=ROI, convention=convention, bootstrap_samples=0
        )
        old = json.loads(m.to_json(include_edges=True))
        for key in ("region_px", "rotation_deg", "rotation_centre_px"):
            del old[key]
        loaded = LineMeasurement.model_validate(old)
        if convention == "truth":
            x, _ = loaded.edge_points_px("leading")[0]
            np.testing.assert_array_equal(x, m.edge_points_px("leading")[0][0])
        else:
            with pytest.raises(MetrologyInputError, match="measure again"):
                loaded.edge_points_px("leading")
    with pytest.raises(MetrologyInputError, match="leading"):
        m.edge_points_px("left")  # type: ignore[arg-type]
