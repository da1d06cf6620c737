"""PNG reports: line measurements (the image with its edges, a zoom at the pixel scale, the
width histogram, PSDs with fits) and contact holes (contours on the image, CD and ellipticity
histograms).

Drawn on a matplotlib ``Figure`` with the Agg canvas (no pyplot state, no display needed);
written atomically (``sem_physics.atomic``: a temporary file, fsync, rename). Edges are drawn
where :meth:`LineMeasurement.edge_points_px` places them (``smile``'s rotation undone); image
panels carry a scale bar; a panel with nothing to show is turned off and says so.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import Any

import numpy as np

from .contacts import ContactMeasurement
from .errors import MetrologyInputError
from .lines import LineMeasurement

__all__ = [
    "add_scale_bar",
    "save_contact_report",
    "save_line_report",
    "scale_bar_length",
    "usable_pixel_size",
]

#: Colours told apart with the common colour-vision deficiencies (Okabe-Ito).
_ORANGE, _SKY, _YELLOW, _PURPLE = "#E69F00", "#56B4E9", "#F0E442", "#CC79A7"
#: Header text: font size (pt) and characters per inch of figure width at that size.
_HEAD_PT = 9
_CHARS_PER_INCH = 13.5


def _fmt(value: float | None, unit: str = " nm", se: float | None = None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3f}{unit}" if se is None else f"{value:.3f} ± {se:.3f}{unit}"


def _figure(image: np.ndarray, size_in: tuple[float, float]) -> tuple[np.ndarray, Any]:
    """The measured image as a 2-D float array and an empty figure on the Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    img = np.asarray(image, dtype=np.float64)
    if img.ndim != 2:
        raise ValueError(f"image must be 2-D (H, W), got shape {img.shape}")
    fig = Figure(figsize=size_in)
    FigureCanvasAgg(fig)
    return img, fig


def _grey_range(img: np.ndarray) -> tuple[float, float]:
    """Display range: the 0.5 and 99.5 percentiles (a few hot pixels do not grey out the rest)."""
    step = max(1, int(math.sqrt(img.size / 250_000)))
    lo, hi = np.percentile(img[::step, ::step], [0.5, 99.5])
    return (float(lo), float(hi)) if hi > lo else (float(img.min()), float(img.max()) + 1.0)


def scale_bar_length(width: float) -> float:
    """A round scale-bar length for an image ``width`` wide (any unit): the largest 1, 2 or 5
    × 10^k not over 35 % of the width, so that the bar spans a seventh to a third of it."""
    if not (math.isfinite(width) and width > 0):
        raise ValueError(f"width must be positive and finite, got {width}")
    target = 0.35 * width
    decade = 10.0 ** math.floor(math.log10(target))
    return next(m * decade for m in (5, 2, 1) if m * decade <= target * (1 + 1e-9))


def usable_pixel_size(pixel_size_nm: float | None) -> float | None:
    """``pixel_size_nm`` (nm/px) when it can scale a figure (positive and finite), else None."""
    if pixel_size_nm is None or not math.isfinite(pixel_size_nm) or pixel_size_nm <= 0:
        return None
    return float(pixel_size_nm)


def add_scale_bar(
    ax: Any,
    width_px: float,
    height_px: float,
    pixel_size_nm: float | None,
    *,
    fontsize: float = 8,
    bar_height_px: float | None = None,
) -> Any:
    """A scale bar of :func:`scale_bar_length` at the lower right of image axes ``ax`` showing
    ``width_px`` × ``height_px`` image pixels: white with a dark outline (it reads on any
    grey), in nm (µm from 1000 nm) when ``pixel_size_nm`` is a usable size, else in px.
    Returns the artist (gid ``"scale-bar"``)."""
    from matplotlib import patheffects, rc_context
    from matplotlib.font_manager import FontProperties
    from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

    size = usable_pixel_size(pixel_size_nm)
    length = scale_bar_length(width_px * size if size else width_px)
    if size is None:
        label = f"{length:g} px"
    else:
        label = f"{length / 1000:g} µm" if length >= 1000 else f"{length:g} nm"
    outline = [patheffects.withStroke(linewidth=2.5, foreground="black")]
    with rc_context({"path.effects": outline}):  # the bar and its label, each outlined
        bar = AnchoredSizeBar(
            ax.transData,
            length / size if size else length,
            label,
            "lower right",
            pad=0.3,
            borderpad=0.4,
            sep=3,
            frameon=False,
            size_vertical=bar_height_px or max(1.0, 0.015 * height_px),
            color="white",
            fontproperties=FontProperties(size=fontsize, weight="bold"),
        )
    bar.set_gid("scale-bar")
    ax.add_artist(bar)
    return bar


def _not_measured(ax: Any, title: str) -> None:
    """Turn off a panel with nothing to show, saying so."""
    ax.set_axis_off()
    ax.set_title(title)
    ax.text(0.5, 0.5, "not measured", ha="center", va="center", color="0.4", transform=ax.transAxes)


def _roi_text(roi: tuple[int, int, int, int] | None) -> str:
    return "" if roi is None else f", roi rows {roi[0]}:{roi[1]} × cols {roi[2]}:{roi[3]}"


def _draw_roi(ax: Any, roi: tuple[int, int, int, int] | None) -> Any:
    """The ``roi`` rectangle (its pixels' outer boundary), dashed yellow, labelled; None
    without a roi."""
    from matplotlib.patches import Rectangle

    if roi is None:
        return None
    r0, r1, c0, c1 = roi
    return ax.add_patch(
        Rectangle(
            (c0 - 0.5, r0 - 0.5),
            c1 - c0,
            r1 - r0,
            fill=False,
            ec=_YELLOW,
            ls="--",
            lw=1.2,
            label="roi",
            gid="roi",
        )
    )


def _finish(
    fig: Any,
    measurement: LineMeasurement | ContactMeasurement,
    summary: str,
    title: str | None,
    path: Path,
    dpi: int,
) -> Path:
    """Head the figure with the title and the summary (the reason instead when nothing was
    measured), wrapped to the figure's width with room left for it, and write it:
    ``fig.savefig`` through a temporary file renamed into place, with the measurement's
    source and versions, when it has them, in the PNG text chunk ``Provenance`` (JSON)."""
    from sem_physics.atomic import atomic_write

    from ._provenance import png_metadata

    if not measurement.valid:
        summary = f"INVALID: {measurement.reason}"
    width_in, height_in = fig.get_size_inches()
    chars = int(width_in * _CHARS_PER_INCH)
    lines = [
        wrapped
        for para in ((title + "\n" if title else "") + summary).split("\n")
        for wrapped in (textwrap.wrap(para, chars, break_on_hyphens=False) or [""])
    ]
    head_in = (len(lines) * 1.25 * _HEAD_PT) / 72.0 + 0.15
    top = 1.0 - head_in / height_in
    fig.text(
        0.5,
        1.0 - 0.08 / height_in,
        "\n".join(lines),
        ha="center",
        va="top",
        fontsize=_HEAD_PT,
        linespacing=1.25,
        color="black" if measurement.valid else "tab:red",
        gid="summary",
    )
    fig.tight_layout(rect=(0.0, 0.0, 1.0, top))
    meta = png_metadata(measurement)
    return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=dpi, format="png", metadata=meta))


def _edge_points(m: LineMeasurement) -> tuple[list[tuple[str, str, list]], str | None]:
    """(label, colour, points) of the leading and trailing edges, and why they cannot be
    placed (a measurement saved without its region's geometry), or None."""
    try:
        return [
            ("leading edges", _ORANGE, m.edge_points_px("leading")),
            ("trailing edges", "cyan", m.edge_points_px("trailing")),
        ], None
    except MetrologyInputError as err:
        return [], str(err)


def _region_outline(m: LineMeasurement) -> tuple[np.ndarray, np.ndarray] | None:
    """Corners (x, y) of the measured region where ``smile`` turned the image, else None."""
    if not m.rotation_deg or m.region_px is None or m.rotation_centre_px is None:
        return None
    r0, r1, c0, c1 = m.region_px
    rows = np.array([r0, r0, r1, r1, r0], dtype=np.float64) - 0.5
    cols = np.array([c0, c1, c1, c0, c0], dtype=np.float64) - 0.5
    a = math.radians(m.rotation_deg)
    cr, cc = m.rotation_centre_px
    u, v = rows - cr, cols - cc
    return cc - math.sin(a) * u + math.cos(a) * v, cr + math.cos(a) * u + math.sin(a) * v


def _zoom_box(
    shape: tuple[int, int], edges: list[tuple[str, str, list]], m: LineMeasurement, size: int
) -> tuple[int, int, int, int]:
    """(row0, row1, col0, col1) of a ``size``-px square at the centre of the edges (of the
    measured region when there are none), inside the image."""
    xs = [x for _, _, e in edges for x, _ in e]
    if xs:
        cx = float(np.median(np.concatenate(xs)))
        cy = float(np.median(np.concatenate([y for _, _, e in edges for _, y in e])))
    else:
        r0, r1, c0, c1 = m.region_px or m.roi or (0, shape[0], 0, shape[1])
        cy, cx = 0.5 * (r0 + r1), 0.5 * (c0 + c1)
    h, w = min(size, shape[0]), min(size, shape[1])
    row0 = int(min(max(round(cy - h / 2), 0), shape[0] - h))
    col0 = int(min(max(round(cx - w / 2), 0), shape[1] - w))
    return row0, row0 + h, col0, col0 + w


def _line_summary(m: LineMeasurement) -> str:
    lwr_fit = m.lwr_fit
    summary = (
        f"convention {m.convention}, tone {m.tone} ({m.tone_source}), crop {m.crop or 'none'}"
        f"{_roi_text(m.roi)}"
        f"\nlines {m.n_lines}, rows {m.n_rows}, pixel {m.pixel_size_nm:.4g} nm "
        f"({m.pixel_size_source}), tilt {_fmt(m.tilt_deg, '°')} | CD {_fmt(m.cd_nm, se=m.cd_se_nm)}"
        f", CD std {_fmt(m.cd_std_nm, se=m.cd_std_se_nm)}"
        f"\nLWR 3σ {_fmt(m.lwr_nm, se=m.lwr_se_nm)} (unbiased "
        f"{_fmt(m.lwr_unbiased_nm, se=m.lwr_unbiased_se_nm)}) | LER 3σ "
        f"{_fmt(m.ler_nm, se=m.ler_se_nm)} (unbiased {_fmt(m.ler_unbiased_nm, se=m.ler_unbiased_se_nm)})"
        f"\nLER fit: ξ {_fmt(m.correlation_length_nm)}, H {_fmt(m.roughness_exponent, '')}"
        f" | LWR fit: ξ {_fmt(lwr_fit.correlation_length_nm if lwr_fit else None)}, "
        f"H {_fmt(lwr_fit.roughness_exponent if lwr_fit else None, '')}"
    )
    if m.fit_flags:
        summary += "\nWARNING: " + "; ".join(m.fit_flags) + f" (unbiased: {m.unbiased_method})"
    return summary


def save_line_report(
    measurement: LineMeasurement,
    image: np.ndarray,
    path: str | Path,
    *,
    dpi: int = 100,
    title: str | None = None,
    zoom_px: int = 128,
) -> Path:
    """Write a five-panel PNG report and return its path.

    Panels: the whole image (antialiased) with the edges, the ``roi``, the region ``smile``
    measured after turning the image, and the zoom's square; a ``zoom_px`` square at the
    centre at the pixel scale with the leading (orange) and trailing (cyan) edges; the
    histogram of the per-row widths with the CD; the LER and LWR PSDs (log-log) with their
    Palasantzas fits and noise floors. Scale bars on the image panels; panels without data
    (an invalid result) are turned off with a note.

    Parameters
    ----------
    measurement : result of :func:`sem_metrology.measure_lines` on ``image``.
    image : the (H, W) image that was measured (before any ``roi`` crop; an info bar below it
        may be left out, as it does not move the image's coordinates).
    path : output ``.png`` path.
    zoom_px : side of the zoomed square (px).
    """
    from matplotlib.lines import Line2D
    from matplotlib.patches import Rectangle

    m = measurement
    img, fig = _figure(image, (15, 10))
    grid = fig.add_gridspec(2, 3)
    ax_img = fig.add_subplot(grid[0, :2])
    ax_zoom = fig.add_subplot(grid[0, 2])
    ax_hist, ax_ler, ax_lwr = (fig.add_subplot(grid[1, k]) for k in range(3))
    vmin, vmax = _grey_range(img)
    ax_img.imshow(img, cmap="gray", vmin=vmin, vmax=vmax, interpolation="antialiased")
    edges, unplaced = _edge_points(m)
    zr0, zr1, zc0, zc1 = _zoom_box(img.shape, edges, m, zoom_px)
    ax_zoom.imshow(
        img[zr0:zr1, zc0:zc1],
        cmap="gray",
        vmin=vmin,
        vmax=vmax,
        interpolation="nearest",
        extent=(zc0 - 0.5, zc1 - 0.5, zr1 - 0.5, zr0 - 0.5),
    )
    handles: list[Any] = []
    for label, colour, points in edges:
        for x, y in points:
            ax_img.plot(x, y, color=colour, lw=0.4, alpha=0.7)
            ax_zoom.plot(x, y, color=colour, lw=1.0)
        if points:
            handles.append(Line2D([], [], color=colour, lw=1.5, label=label))
    ax_zoom.set_xlim(zc0 - 0.5, zc1 - 0.5)
    ax_zoom.set_ylim(zr1 - 0.5, zr0 - 0.5)
    outline = _region_outline(m)
    if outline is not None:
        handles += ax_img.plot(
            *outline, color=_PURPLE, ls=":", lw=1.4, label="measured region (turned)"
        )
    roi = _draw_roi(ax_img, m.roi)
    handles += [roi] if roi is not None else []
    handles.append(
        ax_img.add_patch(
            Rectangle(
                (zc0 - 0.5, zr0 - 0.5),
                zc1 - zc0,
                zr1 - zr0,
                fill=False,
                ec=_SKY,
                lw=1.5,
                label="zoom (right)",
                gid="zoom",
            )
        )
    )
    ax_img.legend(
        handles=handles,
        loc="upper left",
        bbox_to_anchor=(1.0, 1.0),
        fontsize=8,
        framealpha=0.9,
    )
    ax_img.set_xlim(-0.5, img.shape[1] - 0.5)
    ax_img.set_ylim(img.shape[0] - 0.5, -0.5)
    ax_img.set_title("image and edges" + (f" ({unplaced})" if unplaced else ""), fontsize=10)
    ax_zoom.set_title(f"zoom {zr1 - zr0}×{zc1 - zc0} px at the centre", fontsize=10)
    for ax, (h, w) in ((ax_img, img.shape[:2]), (ax_zoom, (zr1 - zr0, zc1 - zc0))):
        ax.set_axis_off()
        add_scale_bar(ax, w, h, m.pixel_size_nm)

    widths = m.widths_nm().ravel()
    hist_title = "width distribution (all lines, all rows)"
    if widths.size:
        ax_hist.hist(widths, bins=60, color="0.4")
        if m.cd_nm is not None:
            ax_hist.axvline(m.cd_nm, color="tab:red", label=f"CD {m.cd_nm:.2f} nm")
            ax_hist.legend(fontsize=8)
        ax_hist.set_xlabel("line width (nm)")
        ax_hist.set_ylabel("count (line × row)")
        ax_hist.set_title(hist_title)
    else:
        _not_measured(ax_hist, hist_title)

    f = np.asarray(m.psd_frequency_per_nm)
    for ax, psd, fit, what, sigma3 in (
        (ax_ler, m.psd_ler_nm3, m.ler_fit, "LER", m.ler_nm),
        (ax_lwr, m.psd_lwr_nm3, m.lwr_fit, "LWR", m.lwr_nm),
    ):
        ax_title = f"{what} PSD" + (f" ({what} 3σ {sigma3:.3f} nm)" if sigma3 is not None else "")
        if f.size <= 1:
            _not_measured(ax, ax_title)
            continue
        ax.loglog(f[1:], np.asarray(psd)[1:], ".", ms=3, color="0.3", label=f"{what} PSD")
        if fit is not None:
            ax.loglog(
                f[1:],
                fit.evaluate(f[1:]),
                color="tab:red",
                label=f"{what} fit, Palasantzas + floor: ξ {fit.correlation_length_nm:.3g} nm,"
                f" H {fit.roughness_exponent:.2f}",
            )
            ax.axhline(
                fit.noise_floor_nm3,
                color="tab:blue",
                ls="--",
                lw=0.8,
                label=f"noise floor {fit.noise_floor_nm3:.3g} nm³",
            )
        ax.legend(fontsize=8)
        ax.set_xlabel("frequency (nm⁻¹)")
        ax.set_ylabel("PSD (nm³), one-sided")
        ax.set_title(ax_title)
    return _finish(fig, m, _line_summary(m), title, Path(path), dpi)


def _border_cut_mask(m: ContactMeasurement, img: np.ndarray) -> np.ndarray | None:
    """The components :func:`measure_contacts` left out as cut by the image border, found
    again with its default segmentation (and the result's tone and threshold); None when
    that does not give the result's count (other options were used)."""
    from scipy import ndimage

    from .contacts import ContactOptions, _global_levels, _typical_area
    from .preprocess import label_counts

    if not m.n_border_excluded or m.tone is None:
        return None
    opts = ContactOptions()
    r0, r1, c0, c1 = m.roi or (0, img.shape[0], 0, img.shape[1])
    data = img[r0:r1, c0:c1]
    seg = ndimage.gaussian_filter(data, opts.segmentation_sigma_px)
    lo, hi, _ = _global_levels(seg)
    dark = m.tone == "dark"
    hole, space = (lo, hi) if dark else (hi, lo)
    cut = hole + m.threshold * (space - hole)
    labels, n = ndimage.label(seg < cut if dark else seg > cut)
    if n == 0:
        return None
    areas = label_counts(labels, n)[1:]
    h, w = data.shape
    border = np.array(
        [
            s[0].start == 0 or s[1].start == 0 or s[0].stop == h or s[1].stop == w
            for s in ndimage.find_objects(labels)
        ]
    )
    ref = _typical_area(areas[~border] if (~border).any() else areas)
    min_area = max(opts.min_area_fraction * ref, math.pi * (0.5 * opts.min_diameter_px) ** 2)
    keep = border & (areas >= min_area)
    if int(keep.sum()) != m.n_border_excluded:
        return None
    return np.isin(labels, np.nonzero(keep)[0] + 1)


def save_contact_report(
    measurement: ContactMeasurement,
    image: np.ndarray,
    path: str | Path,
    *,
    dpi: int = 100,
    title: str | None = None,
) -> Path:
    """Write a contact-hole PNG report and return its path.

    Panels: the image with every measured hole's threshold contour (orange) and centre
    (white), the holes left out as cut by the border (dashed sky blue) and the ``roi``; the
    histogram of hole CDs with the mean and ±LCDU/2 (1.5 σ); the histogram of ellipticities.
    A scale bar on the image; panels without data are turned off with a note.

    Parameters
    ----------
    measurement : result of :func:`sem_metrology.measure_contacts` on ``image``.
    image : the (H, W) image that was measured (before any ``roi`` crop).
    path : output ``.png`` path.
    """
    from matplotlib.lines import Line2D

    m = measurement
    img, fig = _figure(image, (14, 7.5))
    grid = fig.add_gridspec(2, 2, width_ratios=(2.2, 1))
    ax_img = fig.add_subplot(grid[:, 0])
    ax_cd = fig.add_subplot(grid[0, 1])
    ax_ell = fig.add_subplot(grid[1, 1])
    vmin, vmax = _grey_range(img)
    ax_img.imshow(img, cmap="gray", vmin=vmin, vmax=vmax, interpolation="antialiased")
    ax_img.set_axis_off()
    ax_img.set_title("threshold contours of the measured holes", fontsize=10)
    r0, c0 = (m.roi[0], m.roi[2]) if m.roi else (0, 0)
    handles: list[Any] = []
    for hole in m.holes:
        xy = np.asarray(hole.contour_px)
        if xy.size:
            ax_img.plot(
                np.r_[xy[:, 0], xy[0, 0]] + c0,
                np.r_[xy[:, 1], xy[0, 1]] + r0,
                color=_ORANGE,
                lw=0.7,
            )
    if m.holes:
        ax_img.plot(
            [h.centre_x_px + c0 for h in m.holes],
            [h.centre_y_px + r0 for h in m.holes],
            "+",
            color="white",
            ms=3,
            mew=0.6,
        )
        handles += [
            Line2D([], [], color=_ORANGE, lw=1.5, label=f"measured holes ({m.n_holes})"),
            Line2D([], [], color="white", marker="+", ls="", mec="0.3", label="centres"),
        ]
    cut = _border_cut_mask(m, img)
    if cut is not None:
        h, w = cut.shape
        ax_img.contour(
            np.arange(c0, c0 + w),
            np.arange(r0, r0 + h),
            cut.astype(np.float32),
            [0.5],
            colors=[_SKY],
            linestyles="dashed",
            linewidths=0.9,
        )
        handles.append(
            Line2D(
                [],
                [],
                color=_SKY,
                ls="--",
                lw=1.5,
                label=f"cut by the border ({m.n_border_excluded})",
            )
        )
    roi = _draw_roi(ax_img, m.roi)
    handles += [roi] if roi is not None else []
    if handles:
        ax_img.legend(handles=handles, loc="upper right", fontsize=8, framealpha=0.85)
    ax_img.set_xlim(-0.5, img.shape[1] - 0.5)
    ax_img.set_ylim(img.shape[0] - 0.5, -0.5)
    add_scale_bar(ax_img, img.shape[1], img.shape[0], m.pixel_size_nm)

    cds = m.cds_nm()
    cd_title, ell_title = f"hole CD ({cds.size} holes)", "ellipticity"
    if cds.size and m.cd_nm is not None and m.lcdu_nm is not None:
        ax_cd.hist(cds, bins=min(40, max(5, cds.size // 5)), color="0.4")
        ax_cd.axvline(m.cd_nm, color="tab:red", label=f"CD {m.cd_nm:.2f} nm")
        for sign in (-1, 1):
            ax_cd.axvline(
                m.cd_nm + sign * 0.5 * m.lcdu_nm,
                color="tab:red",
                ls="--",
                lw=0.8,
                label=f"±LCDU/2 (LCDU 3σ {m.lcdu_nm:.2f} nm)" if sign > 0 else None,
            )
        ax_cd.legend(fontsize=8)
        ax_cd.set_xlabel("hole CD, equivalent diameter (nm)")
        ax_cd.set_ylabel("holes")
        ax_cd.set_title(cd_title, fontsize=10)
        ell = np.array([h.ellipticity for h in m.holes])
        ax_ell.hist(ell, bins=min(40, max(5, ell.size // 5)), color="0.4")
        ax_ell.set_xlabel("ellipticity 1 − minor/major")
        ax_ell.set_ylabel("holes")
        ax_ell.set_title(f"{ell_title} (mean {np.mean(ell):.3f})", fontsize=10)
    else:
        _not_measured(ax_cd, cd_title)
        _not_measured(ax_ell, ell_title)
    summary = (
        f"holes {m.n_holes} (border-cut {m.n_border_excluded}, merged {m.n_merged_excluded}, "
        f"failed {m.n_failed}), pixel {m.pixel_size_nm:.4g} nm ({m.pixel_size_source})"
        f" | CD {_fmt(m.cd_nm)} | LCDU 3σ {_fmt(m.lcdu_nm)} | pitch {_fmt(m.pitch_nm)}"
        f" | ellipticity {_fmt(m.ellipticity, '')}"
        f" | crop: {m.crop or 'none'}{_roi_text(m.roi)}"
    )
    return _finish(fig, m, summary, title, Path(path), dpi)
