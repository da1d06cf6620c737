"""PNG reports: line measurements (edges, width histogram, PSDs with fits) and contact holes
(contours on the image, CD and ellipticity histograms).

Drawn on a matplotlib ``Figure`` with the Agg canvas (no pyplot state, no display needed);
written atomically (``sem_physics.atomic``: a temporary file, fsync, rename).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .contacts import ContactMeasurement
from .lines import LineMeasurement

__all__ = ["save_contact_report", "save_line_report"]


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


def _finish(
    fig: Any,
    measurement: LineMeasurement | ContactMeasurement,
    summary: str,
    title: str | None,
    path: Path,
    dpi: int,
) -> Path:
    """Title the figure (the reason instead of the summary when nothing was measured) and
    write it: ``fig.savefig`` through a temporary file renamed into place."""
    from sem_physics.atomic import atomic_write

    if not measurement.valid:
        summary = f"INVALID: {measurement.reason}"
    fig.suptitle((title + "\n" if title else "") + summary, fontsize=9)
    fig.tight_layout()
    return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=dpi, format="png"))


def save_line_report(
    measurement: LineMeasurement,
    image: np.ndarray,
    path: str | Path,
    *,
    dpi: int = 100,
    title: str | None = None,
) -> Path:
    """Write a four-panel PNG report and return its path.

    Panels: the image with leading (orange) and trailing (cyan) edges overlaid; histogram of
    the per-row widths with the CD; LER PSD and LWR PSD (log-log) with the Palasantzas fit and
    the noise floor.

    Parameters
    ----------
    measurement : result of :func:`sem_metrology.measure_lines` on ``image``.
    image : the (H, W) image that was measured (before any ``roi`` crop).
    path : output ``.png`` path.
    """
    img, fig = _figure(image, (12, 9))
    axes = fig.subplots(2, 2)
    ax_img, ax_hist, ax_ler, ax_lwr = axes.ravel()
    ax_img.imshow(img, cmap="gray", interpolation="nearest")
    ax_img.set_title("edges (leading: orange, trailing: cyan)")
    ax_img.set_axis_off()
    r0, c0 = (measurement.roi[0], measurement.roi[2]) if measurement.roi else (0, 0)
    for edges, colour in (
        (measurement.leading_edges_px, "tab:orange"),
        (measurement.trailing_edges_px, "cyan"),
    ):
        for e in edges:
            across = np.asarray(e)
            along = np.arange(across.size)
            if measurement.orientation == "horizontal":
                ax_img.plot(along + c0, across + r0, color=colour, lw=0.6)
            else:
                ax_img.plot(across + c0, along + r0, color=colour, lw=0.6)

    widths = measurement.widths_nm().ravel()
    if widths.size:
        ax_hist.hist(widths, bins=60, color="0.4")
        if measurement.cd_nm is not None:
            ax_hist.axvline(
                measurement.cd_nm, color="tab:red", label=f"CD {measurement.cd_nm:.2f} nm"
            )
            ax_hist.legend()
    ax_hist.set_xlabel("line width (nm)")
    ax_hist.set_ylabel("rows")
    ax_hist.set_title("width distribution (all lines, all rows)")

    f = np.asarray(measurement.psd_frequency_per_nm)
    for ax, psd, fit, what in (
        (ax_ler, measurement.psd_ler_nm3, measurement.ler_fit, "LER"),
        (ax_lwr, measurement.psd_lwr_nm3, measurement.lwr_fit, "LWR"),
    ):
        if f.size > 1:
            ax.loglog(f[1:], np.asarray(psd)[1:], ".", ms=3, color="0.3", label=f"{what} PSD")
            if fit is not None:
                ax.loglog(f[1:], fit.evaluate(f[1:]), color="tab:red", label="Palasantzas + floor")
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
        ax.set_title(f"{what} PSD")

    m = measurement
    summary = (
        f"convention {m.convention}, tone {m.tone} ({m.tone_source}), crop {m.crop or 'none'}"
        f"\nlines {m.n_lines}, rows {m.n_rows}, pixel {m.pixel_size_nm:.4g} nm "
        f"({m.pixel_size_source}) | CD {_fmt(m.cd_nm, se=m.cd_se_nm)}, CD std "
        f"{_fmt(m.cd_std_nm, se=m.cd_std_se_nm)}\nLWR {_fmt(m.lwr_nm, se=m.lwr_se_nm)} (unbiased "
        f"{_fmt(m.lwr_unbiased_nm, se=m.lwr_unbiased_se_nm)}) | LER {_fmt(m.ler_nm, se=m.ler_se_nm)}"
        f" (unbiased {_fmt(m.ler_unbiased_nm, se=m.ler_unbiased_se_nm)}) | ξ "
        f"{_fmt(m.correlation_length_nm)}, H {_fmt(m.roughness_exponent, '')}"
    )
    if m.fit_flags:
        summary += "\nWARNING: " + "; ".join(m.fit_flags) + f" (unbiased: {m.unbiased_method})"
    return _finish(fig, m, summary, title, Path(path), dpi)


def save_contact_report(
    measurement: ContactMeasurement,
    image: np.ndarray,
    path: str | Path,
    *,
    dpi: int = 100,
    title: str | None = None,
) -> Path:
    """Write a contact-hole PNG report and return its path.

    Panels: the image with every measured hole's threshold contour (green) and centre; the
    histogram of hole CDs with the mean and ±LCDU/2 (1.5 σ); the histogram of ellipticities.

    Parameters
    ----------
    measurement : result of :func:`sem_metrology.measure_contacts` on ``image``.
    image : the (H, W) image that was measured (before any ``roi`` crop).
    path : output ``.png`` path.
    """
    m = measurement
    img, fig = _figure(image, (14, 7))
    grid = fig.add_gridspec(2, 2, width_ratios=(2.2, 1))
    ax_img = fig.add_subplot(grid[:, 0])
    ax_cd = fig.add_subplot(grid[0, 1])
    ax_ell = fig.add_subplot(grid[1, 1])
    ax_img.imshow(img, cmap="gray", interpolation="nearest")
    ax_img.set_axis_off()
    ax_img.set_title("threshold contours of the measured holes")
    r0, c0 = (m.roi[0], m.roi[2]) if m.roi else (0, 0)
    for hole in m.holes:
        xy = np.asarray(hole.contour_px)
        if xy.size:
            ax_img.plot(
                np.r_[xy[:, 0], xy[0, 0]] + c0, np.r_[xy[:, 1], xy[0, 1]] + r0, "lime", lw=0.6
            )
        ax_img.plot(hole.centre_x_px + c0, hole.centre_y_px + r0, "+", color="tab:red", ms=3)
    cds = m.cds_nm()
    if cds.size and m.cd_nm is not None and m.lcdu_nm is not None:
        ax_cd.hist(cds, bins=min(40, max(5, cds.size // 5)), color="0.4")
        ax_cd.axvline(m.cd_nm, color="tab:red", label=f"CD {m.cd_nm:.2f} nm")
        for sign in (-1, 1):
            ax_cd.axvline(m.cd_nm + sign * 0.5 * m.lcdu_nm, color="tab:red", ls="--", lw=0.8)
        ax_cd.legend(fontsize=8)
        ell = np.array([h.ellipticity for h in m.holes])
        ax_ell.hist(ell, bins=min(40, max(5, ell.size // 5)), color="0.4")
    ax_cd.set_xlabel("hole CD, equivalent diameter (nm)")
    ax_cd.set_ylabel("holes")
    ax_ell.set_xlabel("ellipticity 1 − minor/major")
    ax_ell.set_ylabel("holes")
    summary = (
        f"holes {m.n_holes} (border-cut {m.n_border_excluded}, merged {m.n_merged_excluded}, "
        f"failed {m.n_failed}), pixel {m.pixel_size_nm:.4g} nm ({m.pixel_size_source})"
        f" | CD {_fmt(m.cd_nm)} | LCDU {_fmt(m.lcdu_nm)} | pitch {_fmt(m.pitch_nm)}"
        f" | ellipticity {_fmt(m.ellipticity, '')}"
    )
    if m.crop:
        summary += f" | crop: {m.crop}"
    return _finish(fig, m, summary, title, Path(path), dpi)
