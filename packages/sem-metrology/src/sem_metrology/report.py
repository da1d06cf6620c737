"""PNG report of a line measurement: edges on the image, width histogram, PSDs with their fits.

Drawn on a matplotlib ``Figure`` with the Agg canvas (no pyplot state, no display needed).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .lines import LineMeasurement

__all__ = ["save_line_report"]


def _fmt(value: float | None, unit: str = " nm") -> str:
    return "n/a" if value is None else f"{value:.3f}{unit}"


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
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    img = np.asarray(image, dtype=np.float64)
    if img.ndim != 2:
        raise ValueError(f"image must be 2-D (H, W), got shape {img.shape}")
    out = Path(path)
    fig = Figure(figsize=(12, 9))
    FigureCanvasAgg(fig)
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
        f"lines {m.n_lines}, rows {m.n_rows}, pixel {m.pixel_size_nm:.4g} nm ({m.pixel_size_source})"
        f" | CD {_fmt(m.cd_nm)} ± {_fmt(m.cd_std_nm)} | LWR {_fmt(m.lwr_nm)}"
        f" (unbiased {_fmt(m.lwr_unbiased_nm)}) | LER {_fmt(m.ler_nm)}"
        f" (unbiased {_fmt(m.ler_unbiased_nm)}) | ξ {_fmt(m.correlation_length_nm)}"
        f", H {_fmt(m.roughness_exponent, '')}"
    )
    if not m.valid:
        summary = f"INVALID: {m.reason}"
    fig.suptitle((title + "\n" if title else "") + summary, fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=dpi)
    return out
