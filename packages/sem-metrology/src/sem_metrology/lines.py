"""Line/space metrology: CD, CD std, LWR, LER, roughness PSD, unbiased roughness.

Definitions (all lengths in nm, perpendicular to the lines)
-----------------------------------------------------------
* width profile of line ``l``: ``w_l(y) = (x_T(y) − x_L(y)) cos θ`` (``θ`` = tilt of the lines);
* ``CD`` = mean over lines of the per-line mean width; ``CD std`` = standard deviation (ddof 0)
  of the per-line means over lines;
* ``LWR = 3 σ_w`` with ``σ_w² = mean_l var_y w_l(y)`` (pooled within-line variance: line-to-line
  CD variation is CD std, not LWR);
* ``LER = 3 σ_e`` with ``σ_e²`` the pooled variance of each edge about its own least-squares
  line in ``y``; reported for leading, trailing and both edge sets;
* the PSDs (one-sided, ``Σ P df = σ²``, see :mod:`sem_metrology.psd`) of the width profiles
  and of the detrended edges are averaged over lines/edges; along-line sample spacing is
  ``pixel / cos θ``;
* Palasantzas fit with white-noise floor on each PSD; unbiased LWR/LER (Mack) subtract the
  floor's share of the variance. Biased values equal ``3 sqrt(Σ P df)`` exactly.
"""

from __future__ import annotations

import csv
import io
import math
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator
from scipy.ndimage import gaussian_filter1d

from ._inputs import clipping_levels, resolve_image, unmeasurable_reason
from .edges import EdgeMethod, coarse_edges, edge_spread_px, fill_gaps, subpixel_edges
from .preprocess import (
    detect_orientation,
    estimate_tilt,
    flatten_background,
    normalize_intensity,
    sheared_profile,
)
from .psd import detrend_profiles, profile_psd
from .roughness_fit import PalasantzasFit, fit_palasantzas, unbiased_variance

__all__ = [
    "TABLE_METRICS",
    "LineMeasurement",
    "LineOptions",
    "compare_measurements",
    "measure_lines",
]


class LineOptions(BaseModel):
    """Options of :func:`measure_lines` (defaults follow SMILE's defaults where it has them)."""

    model_config = ConfigDict(extra="forbid")

    tone: Literal["auto", "bright", "dark"] = Field(
        "auto", description="bright lines on dark spaces, or the reverse; auto = bright"
    )
    orientation: Literal["auto", "vertical", "horizontal"] = "auto"
    edge_method: EdgeMethod = "polynomial"
    polynomial_degree: int = Field(4, ge=1, le=8)
    threshold: float = Field(0.5, gt=0.0, lt=1.0, description="of normalised intensity")
    edge_window_px: int | None = Field(
        None, ge=1, le=64, description="half-width of the edge fit window; None = auto"
    )
    intensity_levels: Literal["smile", "percentile"] = Field(
        "smile",
        description="0/1 levels: min/max of the 5x5 median filter (SMILE), or its percentiles",
    )
    level_percentiles: tuple[float, float] = Field(
        (1.0, 99.0), description="percentiles used when intensity_levels='percentile'"
    )
    correct_tilt: bool = True
    max_tilt_deg: float = Field(5.0, ge=0.0, le=20.0)
    flatten_background: bool = False
    roi: tuple[int, int, int, int] | None = Field(
        None, description="(row0, row1, col0, col1) half-open region measured"
    )
    min_rows: int = Field(32, ge=4, description="fewer rows: result flagged invalid")
    max_gap_fraction: float = Field(0.5, ge=0.0, le=1.0, description="drop edges above this")
    fit_noise_floor: bool = True
    saturation_limit: float = Field(0.95, gt=0.0, le=1.0)
    min_profile_contrast: float = Field(
        0.2, ge=0.0, le=1.0, description="mean-profile contrast below which no lines are found"
    )
    recentre_windows: bool = Field(
        True, description="second pass with windows centred on each row's first-pass edge"
    )

    @field_validator("level_percentiles")
    @classmethod
    def _percentiles_in_range(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0.0 <= v[0] < v[1] <= 100.0:
            raise ValueError(f"must satisfy 0 <= low < high <= 100, got {v}")
        return v


class LineMeasurement(BaseModel):
    """Result of :func:`measure_lines`. Quantities are ``None`` when not measurable (never NaN).

    Edge positions are in the measurement frame: image columns for vertical lines, image rows
    for horizontal ones (the image is transposed), one value per along-line pixel index, within
    the ``roi`` when one was given.
    """

    model_config = ConfigDict(extra="forbid")

    valid: bool
    reason: str | None = None
    warnings: list[str] = Field(default_factory=list)
    pixel_size_nm: float
    pixel_size_source: str
    roi: tuple[int, int, int, int] | None = Field(None, description="(row0, row1, col0, col1)")
    orientation: Literal["vertical", "horizontal"] | None = None
    tone: Literal["bright", "dark"] | None = None
    tilt_deg: float | None = None
    edge_method: str = "polynomial"
    intensity_levels: str = "smile"
    threshold: float = 0.5
    edge_window_px: int | None = None
    n_lines: int = 0
    n_rows: int = 0
    cd_nm: float | None = None
    cd_std_nm: float | None = None
    pitch_nm: float | None = None
    lwr_nm: float | None = None
    ler_nm: float | None = None
    ler_leading_nm: float | None = None
    ler_trailing_nm: float | None = None
    lwr_unbiased_nm: float | None = None
    ler_unbiased_nm: float | None = None
    correlation_length_nm: float | None = Field(None, description="from the LER PSD fit")
    roughness_exponent: float | None = Field(None, description="from the LER PSD fit")
    noise_floor_nm3: float | None = Field(None, description="LER PSD white-noise floor")
    lwr_fit: PalasantzasFit | None = None
    ler_fit: PalasantzasFit | None = None
    psd_frequency_per_nm: list[float] = Field(default_factory=list)
    psd_lwr_nm3: list[float] = Field(default_factory=list)
    psd_ler_nm3: list[float] = Field(default_factory=list)
    psd_lwr_fit_nm3: list[float] = Field(default_factory=list)
    psd_ler_fit_nm3: list[float] = Field(default_factory=list)
    line_cd_nm: list[float] = Field(default_factory=list)
    line_lwr_nm: list[float] = Field(default_factory=list)
    n_gaps: int = 0
    gaps_leading: list[int] = Field(default_factory=list)
    gaps_trailing: list[int] = Field(default_factory=list)
    n_lines_dropped: int = 0
    leading_edges_px: list[list[float]] = Field(default_factory=list)
    trailing_edges_px: list[list[float]] = Field(default_factory=list)

    def to_json(self, *, include_edges: bool = False, indent: int | None = 2) -> str:
        """JSON text; per-row edge positions only with ``include_edges`` (they are large)."""
        exclude = None if include_edges else {"leading_edges_px", "trailing_edges_px"}
        return self.model_dump_json(exclude=exclude, indent=indent)

    def summary(self) -> dict[str, Any]:
        """The scalar fields (what one CSV row holds)."""
        return {
            k: v
            for k, v in self.model_dump(exclude={"warnings", "lwr_fit", "ler_fit", "roi"}).items()
            if not isinstance(v, list)
        }

    def widths_nm(self) -> np.ndarray:
        """(n_lines, n_rows) width profiles in nm (``(trailing − leading) · pixel · cos θ``)."""
        if not self.leading_edges_px:
            return np.empty((0, self.n_rows))
        cos_t = math.cos(math.radians(self.tilt_deg or 0.0))
        lead = np.asarray(self.leading_edges_px)
        trail = np.asarray(self.trailing_edges_px)
        return (trail - lead) * self.pixel_size_nm * cos_t

    def to_csv(self, kind: Literal["summary", "lines"] = "summary") -> str:
        """CSV text: one row of scalar results (``'summary'``) or one row per line (``'lines'``)."""
        buf = io.StringIO()
        if kind == "summary":
            row = self.summary()
            row["warnings"] = "; ".join(self.warnings)
            writer = csv.DictWriter(buf, fieldnames=list(row))
            writer.writeheader()
            writer.writerow(row)
        elif kind == "lines":
            writer = csv.writer(buf)
            writer.writerow(
                ["line", "leading_mean_px", "trailing_mean_px", "cd_nm", "lwr_nm", "gaps"]
            )
            for i, cd in enumerate(self.line_cd_nm):
                lead = self.leading_edges_px[i] if self.leading_edges_px else []
                trail = self.trailing_edges_px[i] if self.trailing_edges_px else []
                writer.writerow(
                    [
                        i,
                        f"{np.mean(lead):.4f}" if lead else "",
                        f"{np.mean(trail):.4f}" if trail else "",
                        f"{cd:.4f}",
                        f"{self.line_lwr_nm[i]:.4f}",
                        self.gaps_leading[i] + self.gaps_trailing[i],
                    ]
                )
        else:
            raise ValueError(f"kind must be 'summary' or 'lines', got {kind!r}")
        return buf.getvalue()


def _sigma3(residuals: np.ndarray) -> float:
    """``3 sqrt(mean over profiles of the per-profile variance)`` of mean-free residuals."""
    return float(3.0 * np.sqrt(np.mean(residuals**2)))


def _fit_and_unbias(
    freq: np.ndarray, psd: np.ndarray, n: int, fit_noise: bool, what: str, warnings: list[str]
) -> tuple[PalasantzasFit | None, float | None, list[float]]:
    fit = fit_palasantzas(freq, psd, fit_noise_floor=fit_noise)
    if not fit.success:
        warnings.append(f"{what} PSD fit failed: {fit.message}")
        return None, None, []
    unb = unbiased_variance(freq, psd, fit.noise_floor_nm3, n)
    return fit, float(3.0 * math.sqrt(unb)), fit.evaluate(freq).tolist()


def measure_lines(
    image: Any,
    pixel_size_nm: float | None = None,
    options: LineOptions | None = None,
    **overrides: Any,
) -> LineMeasurement:
    """Measure a line/space SEM image: CD, CD std, LWR, LER, PSDs and unbiased roughness.

    Steps: intensity normalisation from the 5×5 median's min/max; optional background
    flattening; orientation (transpose horizontal lines); tilt by projection sharpness; coarse
    edges from the mean profile along the (tilted) lines; sub-pixel threshold crossing per row
    (polynomial fit by default); gaps filled by interpolation and counted; metrics as defined in
    the module docstring.

    Parameters
    ----------
    image : (H, W) array on any intensity scale, or an object with ``.data`` and
        ``.pixel_size_nm`` (e.g. ``sem_physics.io.SEMImage``; its pixel size is used when
        ``pixel_size_nm`` is not given, and its ``info_bar_rows`` are not measured).
    pixel_size_nm : nm per pixel.
    options : :class:`LineOptions`; keyword ``overrides`` replace single fields.

    Returns
    -------
    LineMeasurement; ``valid`` is False with a ``reason`` when the image cannot be measured
    (constant, saturated, no lines, too few rows). Bad arguments raise ValueError.

    Examples
    --------
    >>> from sem_metrology import measure_lines, make_line_image
    >>> sample = make_line_image(n_lines=6, shape=(128, 200), seed=0)
    >>> m = measure_lines(sample.image, pixel_size_nm=sample.pixel_size_nm)
    >>> m.valid, m.n_lines
    (True, 6)
    """
    opts = (options or LineOptions()).model_copy(update=overrides)
    opts = LineOptions.model_validate(opts.model_dump())
    data, px, source, dtype_range = resolve_image(image, pixel_size_nm, opts.roi)
    warnings: list[str] = []
    base: dict[str, Any] = {
        "pixel_size_nm": px,
        "pixel_size_source": source,
        "edge_method": opts.edge_method,
        "intensity_levels": opts.intensity_levels,
        "threshold": opts.threshold,
        "roi": opts.roi,
    }

    def invalid(reason: str, **extra: Any) -> LineMeasurement:
        return LineMeasurement(valid=False, reason=reason, warnings=warnings, **base, **extra)

    reason, sat = unmeasurable_reason(data, dtype_range, opts.saturation_limit)
    if reason is not None:
        return invalid(reason)
    if dtype_range is not None and sat > 0.2:
        warnings.append(f"{100 * sat:.1f} % of pixels at {clipping_levels(dtype_range)}")
    if opts.flatten_background:
        data = flatten_background(data)
    orientation, anisotropy = detect_orientation(data)
    if opts.orientation != "auto":
        orientation = opts.orientation
    elif anisotropy < 1.5:
        warnings.append(f"weak line orientation (gradient anisotropy {anisotropy:.2f})")
    base["orientation"] = orientation
    work = data.T if orientation == "horizontal" else data
    try:
        norm, _, _ = normalize_intensity(work, opts.intensity_levels, opts.level_percentiles)
    except ValueError as err:
        return invalid(f"constant image: {err}")
    n_rows, width = norm.shape
    base["n_rows"] = n_rows
    if n_rows < opts.min_rows:
        return invalid(f"too few rows along the lines: {n_rows} < min_rows={opts.min_rows}")
    tone = "bright" if opts.tone == "auto" else opts.tone
    base["tone"] = tone
    slope, tilt_deg = (
        estimate_tilt(norm, opts.max_tilt_deg)
        if opts.correct_tilt and opts.max_tilt_deg > 0
        else (0.0, 0.0)
    )
    base["tilt_deg"] = tilt_deg
    x_prof, profile = sheared_profile(norm, slope)
    if x_prof.size < 8:
        return invalid("tilt leaves too few columns covered by every row")
    contrast = float(np.subtract(*np.percentile(gaussian_filter1d(profile, 1.0), [99.0, 1.0])))
    if contrast < opts.min_profile_contrast:
        return invalid(
            f"no measurable lines: contrast of the mean profile across the lines is {contrast:.3f}"
            f" of the normalised range (< min_profile_contrast={opts.min_profile_contrast})"
        )
    lead0, trail0 = coarse_edges(x_prof, profile, tone=tone, threshold=opts.threshold)
    if lead0.size == 0:
        return invalid("no measurable lines: no complete line found in the mean profile")
    spaces = lead0[1:] - trail0[:-1]
    cd_px0 = float(np.median(trail0 - lead0))
    space_px0 = float(np.median(spaces)) if spaces.size else cd_px0
    hw = opts.edge_window_px or int(np.clip(0.5 * min(cd_px0, space_px0), 2, 20))
    base["edge_window_px"] = hw
    drift = abs(slope) * 0.5 * (n_rows - 1) + 1.0
    inside = (lead0 - drift - hw >= 0) & (trail0 + drift + hw <= width - 1)
    dropped = int(np.sum(~inside))
    lead0, trail0 = lead0[inside], trail0[inside]
    if lead0.size == 0:
        return invalid("no measurable lines: every line's edge window leaves the image")
    rising_lead = tone == "bright"
    ys_c = np.arange(n_rows, dtype=np.float64) - 0.5 * (n_rows - 1)

    def locate(pred_l: np.ndarray, pred_t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        kw = {
            "half_window_px": hw,
            "method": opts.edge_method,
            "degree": opts.polynomial_degree,
            "threshold": opts.threshold,
        }
        return (
            subpixel_edges(norm, pred_l, rising=rising_lead, **kw),
            subpixel_edges(norm, pred_t, rising=not rising_lead, **kw),
        )

    # Pass 1: windows follow the straight coarse lines.
    lead, trail = locate(lead0[:, None] + ys_c * slope, trail0[:, None] + ys_c * slope)
    if opts.recentre_windows:
        # Pass 2: windows centred on each row's pass-1 edge, so the fit sees the edge
        # symmetrically whatever the local roughness (removes a roughness-dependent gain).
        lead_f, _ = fill_gaps(lead)
        trail_f, _ = fill_gaps(trail)
        usable = np.isfinite(lead_f).all(axis=1) & np.isfinite(trail_f).all(axis=1)
        if np.any(usable):
            both = np.vstack([lead_f[usable], trail_f[usable]])
            slope = float(np.median(np.polyfit(ys_c, both.T, 1)[0]))
            tilt_deg = math.degrees(math.atan(slope))
            base["tilt_deg"] = tilt_deg
        fallback_l = lead0[:, None] + ys_c * slope
        fallback_t = trail0[:, None] + ys_c * slope
        if opts.edge_window_px is None:
            # Narrow the window to the edge's own width: a polynomial over a window much
            # wider than the transition fits the plateaus, not the edge (sub-pixel bias).
            spread = edge_spread_px(
                norm,
                np.vstack([lead_f, trail_f]),
                np.r_[np.full(len(lead_f), rising_lead), np.full(len(trail_f), not rising_lead)],
                hw,
            )
            if np.isfinite(spread):
                lo_hw = max(3, math.ceil(opts.polynomial_degree / 2))
                hw = int(np.clip(math.ceil(1.2 * spread), lo_hw, max(hw, lo_hw)))
                base["edge_window_px"] = hw
        lead, trail = locate(
            np.where(np.isfinite(lead_f), lead_f, fallback_l),
            np.where(np.isfinite(trail_f), trail_f, fallback_t),
        )
    lead, gaps_l = fill_gaps(lead)
    trail, gaps_t = fill_gaps(trail)
    gap_frac = np.maximum(gaps_l.mean(axis=1), gaps_t.mean(axis=1))
    good = gap_frac <= opts.max_gap_fraction
    if np.any(~good):
        warnings.append(
            f"{int(np.sum(~good))} line(s) dropped: more than {100 * opts.max_gap_fraction:.0f} % "
            "of rows without an edge crossing"
        )
    dropped += int(np.sum(~good))
    lead, trail, gaps_l, gaps_t = lead[good], trail[good], gaps_l[good], gaps_t[good]
    n_lines = int(lead.shape[0])
    if n_lines == 0:
        return invalid(
            "no measurable lines: edges not found in enough rows", n_lines_dropped=dropped
        )
    n_gaps = int(gaps_l.sum() + gaps_t.sum())
    if n_gaps:
        warnings.append(f"{n_gaps} edge gap(s) filled by interpolation")

    cos_t = 1.0 / math.sqrt(1.0 + slope * slope)
    scale = px * cos_t
    spacing = px / cos_t
    widths = (trail - lead) * scale  # (L, R) nm
    line_cd = widths.mean(axis=1)
    w_res = detrend_profiles(widths, "mean")
    lead_res = detrend_profiles(lead * scale, "linear")
    trail_res = detrend_profiles(trail * scale, "linear")
    edges_res = np.vstack([lead_res, trail_res])
    freq, psd_lwr = profile_psd(w_res, spacing, detrend=None)
    _, psd_ler = profile_psd(edges_res, spacing, detrend=None)
    lwr_fit, lwr_unb, lwr_fit_curve = _fit_and_unbias(
        freq, psd_lwr, n_rows, opts.fit_noise_floor, "LWR", warnings
    )
    ler_fit, ler_unb, ler_fit_curve = _fit_and_unbias(
        freq, psd_ler, n_rows, opts.fit_noise_floor, "LER", warnings
    )
    centres = 0.5 * (lead.mean(axis=1) + trail.mean(axis=1))
    pitch = float(np.median(np.diff(centres)) * scale) if n_lines > 1 else None
    return LineMeasurement(
        valid=True,
        warnings=warnings,
        **base,
        n_lines=n_lines,
        cd_nm=float(line_cd.mean()),
        cd_std_nm=float(line_cd.std()),
        pitch_nm=pitch,
        lwr_nm=_sigma3(w_res),
        ler_nm=_sigma3(edges_res),
        ler_leading_nm=_sigma3(lead_res),
        ler_trailing_nm=_sigma3(trail_res),
        lwr_unbiased_nm=lwr_unb,
        ler_unbiased_nm=ler_unb,
        correlation_length_nm=ler_fit.correlation_length_nm if ler_fit else None,
        roughness_exponent=ler_fit.roughness_exponent if ler_fit else None,
        noise_floor_nm3=ler_fit.noise_floor_nm3 if ler_fit else None,
        lwr_fit=lwr_fit,
        ler_fit=ler_fit,
        psd_frequency_per_nm=freq.tolist(),
        psd_lwr_nm3=psd_lwr.tolist(),
        psd_ler_nm3=psd_ler.tolist(),
        psd_lwr_fit_nm3=lwr_fit_curve,
        psd_ler_fit_nm3=ler_fit_curve,
        line_cd_nm=line_cd.tolist(),
        line_lwr_nm=(3.0 * w_res.std(axis=1)).tolist(),
        n_gaps=n_gaps,
        gaps_leading=gaps_l.sum(axis=1).astype(int).tolist(),
        gaps_trailing=gaps_t.sum(axis=1).astype(int).tolist(),
        n_lines_dropped=dropped,
        leading_edges_px=lead.tolist(),
        trailing_edges_px=trail.tolist(),
    )


TABLE_METRICS: tuple[str, ...] = ("cd_nm", "cd_std_nm", "lwr_nm", "ler_nm", "lwr_unbiased_nm")
"""The five quantities averaged into ``avg_abs_error`` (the paper's Table 4 columns CD, CD std,
LWR, LER and PSD; the PSD column is read as the LWR obtained from the PSD with the noise
floor removed)."""

_COMPARED = (
    "cd_nm",
    "cd_std_nm",
    "pitch_nm",
    "lwr_nm",
    "ler_nm",
    "ler_leading_nm",
    "ler_trailing_nm",
    "lwr_unbiased_nm",
    "ler_unbiased_nm",
    "correlation_length_nm",
    "roughness_exponent",
)


def compare_measurements(
    measured: LineMeasurement,
    reference: LineMeasurement,
    metrics: tuple[str, ...] = TABLE_METRICS,
) -> dict[str, float | None]:
    """Absolute differences ``|measured − reference|`` of the scalar results.

    Returns a dict with ``abs_error_<field>`` for every compared field (None when either side
    has no value or is invalid), ``cd_abs_error_nm`` (the CD(MAE) term of one image) and
    ``avg_abs_error`` = mean of the ``metrics`` errors (None if any is missing).
    """
    unknown = [m for m in metrics if m not in _COMPARED]
    if unknown:
        raise ValueError(f"metrics {unknown} not comparable; choose from {list(_COMPARED)}")
    out: dict[str, float | None] = {}
    for name in _COMPARED:
        a, b = getattr(measured, name), getattr(reference, name)
        ok = measured.valid and reference.valid and a is not None and b is not None
        out[f"abs_error_{name}"] = abs(float(a) - float(b)) if ok else None
    out["cd_abs_error_nm"] = out["abs_error_cd_nm"]
    errs = [out[f"abs_error_{m}"] for m in metrics]
    out["avg_abs_error"] = (
        float(np.mean([e for e in errs if e is not None]))
        if errs and all(e is not None for e in errs)
        else None
    )
    return out
