"""Report figures: side-by-side image panels, edge overlays, PSD plots (PNG, written atomically).

Figures are drawn on matplotlib ``Figure`` objects with the Agg canvas (no display, no pyplot
state). Image panels share one grey scale, taken from the focused reference, so that contrast
and offset errors of a method are visible rather than normalised away. Image figures give
their crop's size in px and nm and carry a scale bar; PSD curves keep one colour and dash per
method name in every report.
"""

from __future__ import annotations

import hashlib
import math
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from sem_metrology import LineMeasurement
from sem_metrology.report import add_scale_bar, usable_pixel_size
from sem_physics.atomic import atomic_write

from .protocols import Case

__all__ = [
    "BUILTIN_PSD_STYLES",
    "EDGE_CROP_PX",
    "OKABE_ITO",
    "PANEL_CROP_PX",
    "Tile",
    "psd_styles",
    "save_edge_overlays",
    "save_panels",
    "save_psd_plot",
]

#: One panel tile: (title, image or None when the method has no output, note under the title).
Tile = tuple[str, "np.ndarray | None", str]


def _save(fig, path: str | Path) -> Path:
    return atomic_write(Path(path), lambda tmp: fig.savefig(tmp, dpi=90))


def _figure(
    width: float, height: float, layout: Literal["constrained", "compressed", "tight"] | None = None
):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout=layout)
    FigureCanvasAgg(fig)
    return fig


#: Side of the centre crops (px) of the panels and of the edge overlays (closer: edges visible).
PANEL_CROP_PX, EDGE_CROP_PX = 256, 192

#: Tile grid geometry (inches): a tile's image box, the title band above it, the suptitle band
#: (one line; each further line of a wrapped suptitle adds _SUPTITLE_LINE).
_TILE_W, _TILE_IMG, _TILE_TITLE, _SUPTITLE, _SUPTITLE_LINE = 3.0, 3.0, 0.6, 0.35, 0.17
#: Characters of a 9-pt suptitle per inch of figure width: wrapped above this, never clipped.
_SUPTITLE_CHARS_PER_IN = 12


def _tile_axes(n: int, max_cols: int, title: str) -> tuple[Any, list[Any]]:
    """A figure with ``n`` image tiles on a fixed grid (no layout engine: tight_layout's text
    measurements cost more than drawing), axes off, room above each tile for a title, and
    ``title`` above all, wrapped to the figure's width."""
    nr, nc = _grid(n, max_cols)
    lines = textwrap.wrap(title, int(_TILE_W * nc * _SUPTITLE_CHARS_PER_IN)) or [""]
    sup = _SUPTITLE + _SUPTITLE_LINE * (len(lines) - 1)
    width, height = _TILE_W * nc, (_TILE_IMG + _TILE_TITLE) * nr + sup
    fig = _figure(width, height)
    fig.text(0.5, 1 - 0.5 * sup / height, "\n".join(lines), ha="center", va="center", fontsize=9)
    axes = []
    pad = 0.05
    for i in range(n):
        r, c = divmod(i, nc)
        bottom = height - sup - (r + 1) * (_TILE_IMG + _TILE_TITLE)
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


def _crop_text(what: str, rs: slice, cs: slice, pixel_size_nm: float | None) -> str:
    """The crop's size, width first, in px and (pixel size known) nm: ``centre 256×256 px
    (212×212 nm at 0.827 nm/px)``."""
    w, h = cs.stop - cs.start, rs.stop - rs.start
    size = usable_pixel_size(pixel_size_nm)
    nm = "pixel size unknown" if size is None else f"{w * size:.0f}×{h * size:.0f} nm"
    return f"{what} {w}×{h} px ({nm}" + ("" if size is None else f" at {size:.4g} nm/px") + ")"


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
    crop_px: int | None = PANEL_CROP_PX,
    max_cols: int = 5,
) -> Path:
    """Side-by-side ``tiles`` (input, every method, the focused reference) of one case.

    Tiles show the same centre crop (``crop_px`` square, None for the full frame) on the grey
    scale of the focused reference (0.5-99.5 percentiles); a tile without image says why. The
    title gives the crop's size in px and nm, the first image tile has a scale bar (in px when
    the case's pixel size is unknown).
    """
    rs, cs = _crop_box(case.reference.shape, crop_px)
    lo, hi = np.percentile(case.reference[rs, cs], [0.5, 99.5])
    if hi <= lo:
        lo, hi = float(case.reference.min()), float(case.reference.max()) + 1e-3
    crop = _crop_text("full frame" if crop_px is None else "centre", rs, cs, case.pixel_size_nm)
    title = f"{case.case_id} — {crop}, grey scale of the focused image"
    fig, axes = _tile_axes(len(tiles), max_cols, title)
    barred = False
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
        if not barred:
            add_scale_bar(ax, cs.stop - cs.start, rs.stop - rs.start, case.pixel_size_nm)
            barred = True
    return _save(fig, path)


def save_edge_overlays(
    path: str | Path,
    case: Case,
    images: Mapping[str, np.ndarray],
    measurements: Mapping[str, LineMeasurement],
    *,
    crop_px: int | None = EDGE_CROP_PX,
    max_cols: int = 5,
) -> Path:
    """Detected line edges drawn on each image (leading orange, trailing cyan), same crop.

    ``images`` and ``measurements`` are keyed by the tile name (e.g. ``'focused'``, methods).
    The crop is closer than the panels' so that the edges can be followed; the title says its
    size and that LWR is 3σ, the first tile has a scale bar.
    """
    rs, cs = _crop_box(case.reference.shape, crop_px)
    lo, hi = np.percentile(case.reference[rs, cs], [0.5, 99.5])
    names = list(images)
    crop = _crop_text("full frame" if crop_px is None else "centre", rs, cs, case.pixel_size_nm)
    title = (
        f"{case.case_id} — detected edges (leading orange, trailing cyan), {crop}; "
        "CD and LWR (3σ of the line width) of each image"
    )
    fig, axes = _tile_axes(len(names), max_cols, title)
    for i, (ax, name) in enumerate(zip(axes, names, strict=True)):
        ax.imshow(images[name][rs, cs], cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
        if i == 0:
            add_scale_bar(ax, cs.stop - cs.start, rs.stop - rs.start, case.pixel_size_nm)
        m = measurements.get(name)
        if m is None or not m.valid:
            why = "not measured" if m is None else f"✗ {m.reason}"
            _tile_title(ax, f"{name}\n{_fit_text(why, 120, 44)}", fontsize=7, color="tab:red")
            continue
        sides: tuple[tuple[Literal["leading", "trailing"], str], ...] = (
            ("leading", "tab:orange"),
            ("trailing", "cyan"),
        )
        for which, colour in sides:
            try:  # image coordinates: roi, orientation and smile's rotation undone
                points = m.edge_points_px(which)
            except ValueError:  # a smile result saved without its region's geometry
                points = []
            for x, y in points:
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
    return _save(fig, path)


#: Okabe-Ito's colour-blind-safe colours of the methods' PSD curves (its black is the focused
#: reference's; its yellow, hard to see as a thin line on white, is left out).
OKABE_ITO: dict[str, str] = {
    "vermillion": "#D55E00",
    "blue": "#0072B2",
    "bluish green": "#009E73",
    "orange": "#E69F00",
    "reddish purple": "#CC79A7",
    "sky blue": "#56B4E9",
}
#: Every (colour, dash) a method's PSD curve can take, solid ones first.
_SLOTS = tuple((c, d) for d in ("-", "--", "-.", ":") for c in OKABE_ITO.values())
#: The built-in methods' fixed (colour, dash), the same in every report: a variant of a method
#: (true PSF, zero-shot) has its colour dashed; an unrelated method sharing it, dash-dotted.
BUILTIN_PSD_STYLES: dict[str, tuple[str, str]] = {
    "sem-foundation": (OKABE_ITO["vermillion"], "-"),
    "sem-foundation-zero-shot": (OKABE_ITO["vermillion"], "--"),
    "richardson-lucy": (OKABE_ITO["bluish green"], "-"),
    "richardson-lucy-true-psf": (OKABE_ITO["bluish green"], "--"),
    "wiener": (OKABE_ITO["blue"], "-"),
    "wiener-true-psf": (OKABE_ITO["blue"], "--"),
    "bm3d": (OKABE_ITO["reddish purple"], "-"),
    "n2v": (OKABE_ITO["orange"], "-"),
    "n2n": (OKABE_ITO["sky blue"], "-"),
    "mrn": (OKABE_ITO["orange"], "-."),
    "mae-imagenet": (OKABE_ITO["reddish purple"], "-."),
    "mae-sem": (OKABE_ITO["sky blue"], "-."),
}
#: The references' and the control's styles: black and greys, apart from every method's.
_REFERENCE_STYLES: dict[str, dict[str, Any]] = {
    "focused": {"color": "black", "lw": 2.0},
    "defocused input": {"color": "0.55", "lw": 2.2},
    "control (y − b)/a": {"color": "0.3", "lw": 1.2, "ls": "--"},
}
#: The slots no built-in takes: where another (plugin) method's name hashes to.
_FREE_SLOTS = tuple(s for s in _SLOTS if s not in BUILTIN_PSD_STYLES.values())


def _hash_slot(name: str) -> int:
    """A stable index into :data:`_FREE_SLOTS` from ``name`` (not Python's salted hash)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big") % len(_FREE_SLOTS)


def psd_styles(measurements: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Line style of every name of ``measurements`` (name -> measurements), whatever their order.

    The focused reference is black, the defocused input thick grey, the control dark grey
    dashed; a built-in method has its fixed colour and dash (:data:`BUILTIN_PSD_STYLES`), so it
    looks the same in every report. Any other name (a plugin) takes the first slot, from the one
    its name hashes to, among the slots no built-in takes, preferring a colour no other method
    of ``measurements`` shows; when those run out, a slot of a built-in absent here. Names are
    placed in sorted order, and a method without a valid measurement draws no curve and takes
    no slot. Given every setting's measurements, a method keeps its style in each figure.
    """

    def drawn(name: str) -> bool:
        return any(getattr(m, "valid", True) for m in measurements[name])

    taken = {BUILTIN_PSD_STYLES[n] for n in measurements if n in BUILTIN_PSD_STYLES and drawn(n)}
    spare = [s for s in BUILTIN_PSD_STYLES.values() if s not in taken]
    slots: dict[str, tuple[str, str]] = {}
    for name in sorted(set(measurements) - set(BUILTIN_PSD_STYLES) - set(_REFERENCE_STYLES)):
        start = _hash_slot(name)
        order = [*_FREE_SLOTS[start:], *_FREE_SLOTS[:start], *spare]
        if not drawn(name):
            slots[name] = order[0]
            continue
        shown = {c for c, _ in taken}
        slot = next(
            (s for s in order if s not in taken and s[0] not in shown),
            next((s for s in order if s not in taken), order[0]),
        )
        slots[name] = slot
        taken.add(slot)
    styles = {}
    for name in measurements:
        if name in _REFERENCE_STYLES:
            styles[name] = dict(_REFERENCE_STYLES[name])
        else:
            colour, dash = BUILTIN_PSD_STYLES.get(name) or slots[name]
            styles[name] = {"color": colour, "ls": dash, "lw": 1.3}
    return styles


#: Two PSD curves closer than this in every plotted bin (|log10 ratio|, 0.4 %) are one line on
#: the log-log axes: the later one is drawn dotted over the other and its legend says so.
_SAME_CURVE_LOG10 = 0.002


def _coincide(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two PSDs (bin 0, the mean, not plotted) would be drawn as one line."""
    a, b = np.asarray(a, np.float64)[1:], np.asarray(b, np.float64)[1:]
    if a.shape != b.shape or not (np.all(a > 0) and np.all(b > 0)):
        return bool(a.shape == b.shape and np.allclose(a, b, rtol=1e-6, atol=0))
    return bool(np.max(np.abs(np.log10(a / b))) < _SAME_CURVE_LOG10)


#: What the PSD figure's curves are, said once under its title.
_PSD_NOTE = (
    "one-sided PSDs: the area under a curve is the variance σ² of the edge positions (LER) or "
    "line widths (LWR); LER and LWR are quoted as 3σ"
)


def save_psd_plot(
    path: str | Path,
    title: str,
    measurements: Mapping[str, Sequence[LineMeasurement]],
    styles: Mapping[str, dict[str, Any]] | None = None,
) -> Path:
    """LER and LWR power spectral densities of every method on one pair of log-log axes.

    Each method's curve is the mean PSD over its valid measurements that share the frequency
    grid of its first one, in its style of :func:`psd_styles`; a curve equal to an earlier one
    is drawn dotted on top of it, its legend entry saying so (``control (y − b)/a (= defocused
    input, dotted)``). One legend, right of both axes, hides no curve.
    """
    fig = _figure(14, 4.8, layout="constrained")
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
    for ax, what in ((ax_ler, "LER PSD (edge positions)"), (ax_lwr, "LWR PSD (line widths)")):
        ax.set_xlabel("spatial frequency (nm⁻¹)")
        ax.set_ylabel("one-sided PSD (nm³)")
        ax.set_title(what, fontsize=10)
        if not ax.lines:
            ax.text(0.5, 0.5, "no measurable line edges", ha="center", transform=ax.transAxes)
    if ax_ler.lines:
        fig.legend(*ax_ler.get_legend_handles_labels(), loc="outside right center", fontsize=8)
    fig.suptitle(f"{title}\n{_PSD_NOTE}", fontsize=9)
    return _save(fig, path)
