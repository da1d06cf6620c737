"""Report figures: side-by-side image panels, edge overlays, PSD plots (PNG, written atomically).

Figures are drawn on matplotlib ``Figure`` objects with the Agg canvas (no display, no pyplot
state). Image panels share one grey scale, taken from the focused reference, so that contrast
and offset errors of a method are visible rather than normalised away.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sem_metrology import LineMeasurement
from sem_physics.atomic import atomic_write

from .protocols import Case

__all__ = ["Tile", "save_edge_overlays", "save_panels", "save_psd_plot"]

#: One panel tile: (title, image or None when the method has no output, note under the title).
Tile = tuple[str, "np.ndarray | None", str]


def _save(fig, path: str | Path) -> Path:
    return atomic_write(Path(path), lambda tmp: fig.savefig(tmp, dpi=90))


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


#: Tile grid geometry (inches): a tile's image box, the title band above it, the suptitle band.
_TILE_W, _TILE_IMG, _TILE_TITLE, _SUPTITLE = 3.0, 3.0, 0.6, 0.35


def _tile_axes(n: int, max_cols: int) -> tuple[Any, list[Any]]:
    """A figure with ``n`` image tiles on a fixed grid (no layout engine: tight_layout's text
    measurements cost more than drawing), axes off, room above each tile for a title."""
    nr, nc = _grid(n, max_cols)
    width, height = _TILE_W * nc, (_TILE_IMG + _TILE_TITLE) * nr + _SUPTITLE
    fig = _figure(width, height)
    axes = []
    pad = 0.05
    for i in range(n):
        r, c = divmod(i, nc)
        bottom = height - _SUPTITLE - (r + 1) * (_TILE_IMG + _TILE_TITLE)
        ax = fig.add_axes(
            (
                (c * _TILE_W + pad) / width,
                (bottom + pad) / height,
                (_TILE_W - 2 * pad) / width,
                (_TILE_IMG - 2 * pad) / height,
            )
        )
        ax.set_axis_off()
        axes.append(ax)
    return fig, axes


def _tile_title(ax: Any, text: str, **style: Any) -> None:
    """A title just above the tile's image (plain text: no title-placement pass)."""
    ax.text(0.5, 1.01, text, transform=ax.transAxes, ha="center", va="bottom", **style)


def _suptitle(fig: Any, text: str) -> None:
    fig.text(
        0.5, 1 - 0.5 * _SUPTITLE / fig.get_figheight(), text, ha="center", va="center", fontsize=9
    )


def _crop_box(shape: tuple[int, ...], size: int | None) -> tuple[slice, slice]:
    h, w = shape[:2]
    if size is None or (h <= size and w <= size):
        return slice(0, h), slice(0, w)
    ch, cw = min(h, size), min(w, size)
    r0, c0 = (h - ch) // 2, (w - cw) // 2
    return slice(r0, r0 + ch), slice(c0, c0 + cw)


def _grid(n: int, max_cols: int = 5) -> tuple[int, int]:
    cols = min(n, max_cols)
    return math.ceil(n / cols), cols


def _fit_text(text: str, max_chars: int, width: int) -> str:
    """``text`` shortened to ``max_chars`` and wrapped at ``width``, to sit inside one tile.

    A long single line would make tight_layout shrink every tile; report.md keeps the full text.
    """
    return textwrap.fill(textwrap.shorten(text, max_chars, placeholder=" …"), width)


def save_panels(
    path: str | Path,
    case: Case,
    tiles: Sequence[Tile],
    *,
    crop_px: int | None = 256,
    max_cols: int = 5,
) -> Path:
    """Side-by-side ``tiles`` (input, every method, the focused reference) of one case.

    Tiles show the same centre crop (``crop_px`` square, None for the full frame) on the grey
    scale of the focused reference (0.5-99.5 percentiles); a tile without image says why.
    """
    rs, cs = _crop_box(case.reference.shape, crop_px)
    lo, hi = np.percentile(case.reference[rs, cs], [0.5, 99.5])
    if hi <= lo:
        lo, hi = float(case.reference.min()), float(case.reference.max()) + 1e-3
    fig, axes = _tile_axes(len(tiles), max_cols)
    for ax, (name, img, note) in zip(axes, tiles, strict=True):
        if img is None:
            ax.text(
                0.5,
                0.5,
                f"✗ {name}\n" + _fit_text(note, 300, 38),
                ha="center",
                va="center",
                fontsize=7,
                transform=ax.transAxes,
            )
            continue
        ax.imshow(img[rs, cs], cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
        _tile_title(ax, name + (f"\n{note}" if note else ""), fontsize=8)
    crop = (
        "full frame" if crop_px is None else f"centre {rs.stop - rs.start}×{cs.stop - cs.start} px"
    )
    _suptitle(fig, f"{case.case_id} — {crop}, grey scale of the focused image")
    return _save(fig, path)


def save_edge_overlays(
    path: str | Path,
    case: Case,
    images: Mapping[str, np.ndarray],
    measurements: Mapping[str, LineMeasurement],
    *,
    crop_px: int | None = 192,
    max_cols: int = 5,
) -> Path:
    """Detected line edges drawn on each image (leading orange, trailing cyan), same crop.

    ``images`` and ``measurements`` are keyed by the tile name (e.g. ``'focused'``, methods).
    """
    rs, cs = _crop_box(case.reference.shape, crop_px)
    lo, hi = np.percentile(case.reference[rs, cs], [0.5, 99.5])
    names = list(images)
    fig, axes = _tile_axes(len(names), max_cols)
    for ax, name in zip(axes, names, strict=True):
        ax.imshow(images[name][rs, cs], cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
        m = measurements.get(name)
        if m is None or not m.valid:
            why = "not measured" if m is None else f"✗ {m.reason}"
            _tile_title(ax, f"{name}\n{_fit_text(why, 120, 44)}", fontsize=7, color="tab:red")
            continue
        r0, c0 = (m.roi[0], m.roi[2]) if m.roi else (0, 0)
        for edges, colour in ((m.leading_edges_px, "tab:orange"), (m.trailing_edges_px, "cyan")):
            for e in edges:
                across = np.asarray(e, dtype=np.float64)
                along = np.arange(across.size, dtype=np.float64)
                if m.orientation == "horizontal":
                    x, y = along + c0, across + r0
                else:
                    x, y = across + c0, along + r0
                keep = (y >= rs.start) & (y < rs.stop) & (x >= cs.start) & (x < cs.stop)
                ax.plot(
                    np.where(keep, x - cs.start, np.nan),
                    np.where(keep, y - rs.start, np.nan),
                    color=colour,
                    lw=0.7,
                )
        ax.set_xlim(-0.5, cs.stop - cs.start - 0.5)
        ax.set_ylim(rs.stop - rs.start - 0.5, -0.5)
        _tile_title(ax, f"{name}\nCD {m.cd_nm:.2f} nm, LWR {m.lwr_nm:.2f} nm", fontsize=8)
    _suptitle(fig, f"{case.case_id} — detected edges (leading orange, trailing cyan)")
    return _save(fig, path)


#: Line colours of :func:`save_psd_plot`: tab10 without its grey (the
#: defocused input's) and without orange next to red, so that no two methods look alike.
_DISTINCT_COLOURS = (
    "tab:blue",
    "tab:red",
    "tab:green",
    "tab:purple",
    "tab:brown",
    "tab:pink",
    "tab:olive",
    "tab:cyan",
    "tab:orange",
)
#: Line styles the colours cycle through (a 10th method repeats a colour, dashed).
_DISTINCT_DASHES = ("-", "--", "-.", ":")


#: Two PSD curves closer than this in every plotted bin (|log10 ratio|, 0.4 %) are one line on
#: the log-log axes: the later one is drawn dotted over the other and its legend says so.
_SAME_CURVE_LOG10 = 0.002


def _coincide(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two PSDs (bin 0, the mean, not plotted) would be drawn as one line."""
    a, b = np.asarray(a, np.float64)[1:], np.asarray(b, np.float64)[1:]
    if a.shape != b.shape or not (np.all(a > 0) and np.all(b > 0)):
        return bool(a.shape == b.shape and np.allclose(a, b, rtol=1e-6, atol=0))
    return bool(np.max(np.abs(np.log10(a / b))) < _SAME_CURVE_LOG10)


def _distinct_style(name: str, index: int) -> dict[str, Any]:
    if name == "focused":
        return {"color": "black", "lw": 2.0}
    if name == "defocused input":
        return {"color": "0.55", "lw": 2.2}
    n = len(_DISTINCT_COLOURS)
    return {
        "color": _DISTINCT_COLOURS[index % n],
        "lw": 1.1,
        "ls": _DISTINCT_DASHES[(index // n) % len(_DISTINCT_DASHES)],
    }


def psd_styles(measurements: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Line style of every method, from its place among the methods of ``measurements`` with
    a valid measurement (a method that measured nothing, e.g. one without its weights, takes no
    colour). Given every setting's measurements, a method keeps its colour in each setting's
    figure, also in one where it has no curve."""
    styles, index = {}, 0
    for name, ms in measurements.items():
        styles[name] = _distinct_style(name, index)
        if name not in ("focused", "defocused input") and any(
            getattr(m, "valid", True) for m in ms
        ):
            index += 1
    return styles


def save_psd_plot(
    path: str | Path,
    title: str,
    measurements: Mapping[str, Sequence[LineMeasurement]],
    styles: Mapping[str, dict[str, Any]] | None = None,
) -> Path:
    """LER and LWR power spectral densities of every method on one pair of log-log axes.

    Each method's curve is the mean PSD over its valid measurements that share the frequency
    grid of its first one; the focused reference is drawn in black, the defocused input in
    thick grey, the methods in colours told apart (:func:`psd_styles`), and a curve equal to an
    earlier one dotted on top of it, its legend entry saying so
    (``control (= defocused input, dotted)``).
    """
    fig = _figure(12, 4.8)
    ax_ler, ax_lwr = fig.subplots(1, 2)
    fields = ("psd_ler_nm3", "psd_lwr_nm3")
    drawn: dict[str, tuple[np.ndarray, list[np.ndarray]]] = {}
    styles = styles or psd_styles(measurements)
    for name, ms in measurements.items():
        valid = [m for m in ms if m.valid and len(m.psd_frequency_per_nm) > 1]
        if not valid:
            continue
        f = np.asarray(valid[0].psd_frequency_per_nm)
        same = [m for m in valid if len(m.psd_frequency_per_nm) == f.size]
        psds = [np.mean([np.asarray(getattr(m, k)) for m in same], axis=0) for k in fields]
        label = name
        style = styles[name]
        twin = next(
            (
                other
                for other, (g, ps) in drawn.items()
                if g.shape == f.shape
                and np.allclose(g, f)
                and all(_coincide(a, b) for a, b in zip(ps, psds, strict=True))
            ),
            None,
        )
        if twin is not None:  # it would hide under the earlier curve: dotted, on top
            style = {**style, "ls": (0, (1, 2)), "lw": 1.8, "zorder": 3}
            label = f"{name} (= {twin}, dotted)"
        drawn[name] = (f, psds)
        for ax, psd in zip((ax_ler, ax_lwr), psds, strict=True):
            ax.loglog(f[1:], psd[1:], label=label, **style)
    for ax, what in ((ax_ler, "LER"), (ax_lwr, "LWR")):
        ax.set_xlabel("spatial frequency (nm⁻¹)")
        ax.set_ylabel("PSD (nm³)")
        ax.set_title(f"{what} PSD")
        if ax.lines:
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "no measurable line edges", ha="center", transform=ax.transAxes)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    return _save(fig, path)
