"""Synthetic line/space SEM images of known truth, for testing metrology.

Edges are independent stationary Gaussian processes with the Palasantzas PSD
``S(f) ∝ 1/[1 + (2π f ξ)²]^(H+1/2)`` scaled to variance ``σ²`` (FFT synthesis on a record four
times longer than the image, then cropped, so the edges are not periodic). Lines are rendered
with exact area coverage: every pixel row is split into ``supersample`` sub-rows, each sub-row
holds straight edge positions, and a pixel's value is the covered fraction of its area. An
optional edge bloom adds a Gaussian ridge on each edge. Blur and noise come from
:func:`sem_physics.degrade`.

The truth is computed from the rendered edges themselves: the edge of a pixel row is the mean
of its sub-row edges (the area-equivalent position), so the truth contains exactly the
roughness present in the image (including the cropping of low frequencies), not the nominal
``σ``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ._args import int_arg, real_arg, shape_arg

__all__ = [
    "SyntheticContacts",
    "SyntheticLines",
    "SyntheticTruth",
    "correlated_edges",
    "make_contact_image",
    "make_line_image",
    "render_ellipses",
    "render_lines",
]


def correlated_edges(
    n_edges: int,
    n_samples: int,
    spacing_nm: float,
    sigma_nm: float,
    correlation_length_nm: float,
    roughness_exponent: float,
    rng: np.random.Generator,
    *,
    record_factor: int = 4,
) -> np.ndarray:
    """Independent edge deviations (nm) with a Palasantzas PSD and process std ``sigma_nm``.

    A record of ``M = record_factor · n_samples`` points is synthesised in Fourier space,
    ``Z_k = sqrt(S(f_k)) · (complex normal)``, and scaled so that the periodic process on ``M``
    points has variance ``σ² = (S_0 + 2 Σ_interior S_k + S_Nyq) / M²`` times the scale²; the
    first ``n_samples`` points are returned.

    Returns
    -------
    (n_edges, n_samples) float64, nm.
    """
    if n_edges < 0 or n_samples < 2:
        raise ValueError(f"n_edges must be >= 0 and n_samples >= 2, got {n_edges}, {n_samples}")
    if not (sigma_nm >= 0 and correlation_length_nm > 0 and roughness_exponent > 0):
        raise ValueError(
            "sigma_nm must be >= 0, correlation_length_nm and roughness_exponent > 0, got "
            f"{sigma_nm}, {correlation_length_nm}, {roughness_exponent}"
        )
    m = int(record_factor) * n_samples
    f = np.fft.rfftfreq(m, d=spacing_nm)
    shape = (1.0 + (2.0 * np.pi * f * correlation_length_nm) ** 2) ** (-(roughness_exponent + 0.5))
    shape[0] = 0.0  # zero-mean edges at their nominal positions
    coeff = rng.standard_normal((n_edges, f.size)) + 1j * rng.standard_normal((n_edges, f.size))
    coeff *= np.sqrt(shape / 2.0)
    coeff[:, -1] = coeff[:, -1].real * math.sqrt(2.0) if m % 2 == 0 else coeff[:, -1]
    weights = np.full(f.size, 2.0)
    weights[0] = 1.0
    if m % 2 == 0:
        weights[-1] = 1.0
    var_unit = float(np.sum(weights * shape)) / m**2
    x = np.fft.irfft(coeff, n=m, axis=1)
    scale = sigma_nm / math.sqrt(var_unit) if var_unit > 0 else 0.0
    return x[:, :n_samples] * scale


def render_lines(
    leading_px: np.ndarray,
    trailing_px: np.ndarray,
    width_px: int,
    supersample: int,
) -> np.ndarray:
    """Area coverage (0..1) of lines ``[leading, trailing]`` given per sub-row, vertical lines.

    Parameters
    ----------
    leading_px, trailing_px : (L, H · supersample) edge columns per sub-row (pixel ``j`` covers
        ``[j − 1/2, j + 1/2]``); lines must not overlap.
    width_px : image width W.
    supersample : sub-rows per pixel row.

    Returns
    -------
    (H, W) float64 coverage.
    """
    lead = np.clip(np.asarray(leading_px, dtype=np.float64), -0.5, width_px - 0.5 - 1e-9)
    trail = np.clip(np.asarray(trailing_px, dtype=np.float64), -0.5, width_px - 0.5 - 1e-9)
    n_sub = lead.shape[1]
    h = n_sub // supersample
    row = np.broadcast_to((np.arange(n_sub) // supersample)[None, :], lead.shape).ravel()
    a, b = lead.ravel(), np.maximum(trail.ravel(), lead.ravel())
    ja = np.floor(a + 0.5).astype(np.intp)
    jb = np.floor(b + 0.5).astype(np.intp)
    wgt = 1.0 / supersample
    frac = np.zeros((h, width_px + 1))
    diff = np.zeros((h, width_px + 1))
    same = ja == jb
    np.add.at(frac, (row[same], ja[same]), (b - a)[same] * wgt)
    d = ~same
    np.add.at(frac, (row[d], ja[d]), (ja[d] + 0.5 - a[d]) * wgt)
    np.add.at(frac, (row[d], jb[d]), (b[d] - (jb[d] - 0.5)) * wgt)
    np.add.at(diff, (row[d], ja[d] + 1), wgt)
    np.add.at(diff, (row[d], jb[d]), -wgt)
    return (np.cumsum(diff, axis=1) + frac)[:, :width_px]


class SyntheticTruth(BaseModel):
    """Metrology truth of a synthetic image, computed from its rendered edges (nm)."""

    model_config = ConfigDict(extra="forbid")

    n_lines: int
    n_rows: int
    pixel_size_nm: float
    tilt_deg: float
    pitch_nm: float
    cd_nm: float = Field(description="mean over lines of the per-line mean width")
    cd_std_nm: float = Field(description="std (ddof 0) of per-line mean widths")
    lwr_nm: float = Field(description="3 sigma of widths about each line's mean, pooled")
    ler_nm: float = Field(description="3 sigma of edges about their own line, pooled, both")
    ler_leading_nm: float
    ler_trailing_nm: float
    sigma_nm: float = Field(description="nominal edge std of the generating process")
    correlation_length_nm: float
    roughness_exponent: float


@dataclass(frozen=True)
class SyntheticLines:
    """A synthetic line/space image, its noise-free version, its edges and its truth.

    ``leading_px``/``trailing_px`` are (L, H) area-equivalent edge columns per row (for
    ``orientation='horizontal'`` they are rows per column of the returned, transposed image).
    """

    image: np.ndarray
    clean: np.ndarray
    leading_px: np.ndarray
    trailing_px: np.ndarray
    truth: SyntheticTruth

    @property
    def pixel_size_nm(self) -> float:
        """Pixel size (nm)."""
        return self.truth.pixel_size_nm


def _truth_sigma3(edges_nm: np.ndarray, linear: bool) -> float:
    rows = np.arange(edges_nm.shape[1], dtype=np.float64)
    res = []
    for e in edges_nm:
        fit = np.polyval(np.polyfit(rows, e, 1), rows) if linear else e.mean()
        res.append(e - fit)
    return float(3.0 * np.sqrt(np.mean(np.square(res))))


def make_line_image(
    n_lines: int = 37,
    shape: tuple[int, int] = (896, 1280),
    *,
    pixel_size_nm: float = 0.827,
    pitch_nm: float | None = None,
    cd_nm: float | None = None,
    sigma_nm: float = 1.2,
    correlation_length_nm: float = 15.0,
    roughness_exponent: float = 0.6,
    line_level: float = 150.0,
    space_level: float = 50.0,
    bloom_amplitude: float = 0.0,
    bloom_width_px: float = 1.0,
    bloom_inset_px: float = 0.0,
    tilt_deg: float = 0.0,
    supersample: int = 4,
    degradation: object | None = None,
    orientation: Literal["vertical", "horizontal"] = "vertical",
    seed: int | np.random.Generator | None = 0,
) -> SyntheticLines:
    """Render a line/space image with rough edges of known statistics; optionally degrade it.

    Parameters
    ----------
    n_lines : number of complete lines, centred in the image.
    shape : (H, W) for vertical lines (rows along the lines).
    pixel_size_nm : nm per pixel.
    pitch_nm, cd_nm : line pitch and nominal width, across the lines (also when tilted); defaults
        ``W / (n_lines + 1)`` pixels and half the pitch.
    sigma_nm, correlation_length_nm, roughness_exponent : edge process (Palasantzas PSD).
    line_level, space_level : intensities (0..255 scale) of lines and spaces.
    bloom_amplitude, bloom_width_px : Gaussian ridge added on every edge (0 = none).
    bloom_inset_px : the ridge's centre lies this far inside the line from the edge (px).
    tilt_deg : lines rotated by this angle (edge ``x`` drifts by ``tan`` per row).
    supersample : sub-rows per row for anti-aliasing along the lines.
    degradation : a ``sem_physics.DegradationParams`` (blur, gain/offset, noise) or None.
    orientation : ``'horizontal'`` returns the transposed image.
    seed : seed or generator (edges, then degradation noise).

    Returns
    -------
    SyntheticLines.
    """
    n_lines = int_arg("n_lines", n_lines, 1)
    h, w = shape = shape_arg(shape, 4)
    supersample = int_arg("supersample", supersample, 1)
    pixel_size_nm = real_arg("pixel_size_nm", pixel_size_nm, " > 0", lambda v: v > 0)
    if pitch_nm is not None:
        pitch_nm = real_arg("pitch_nm", pitch_nm, " > 0 (or None)", lambda v: v > 0)
    if cd_nm is not None:
        cd_nm = real_arg("cd_nm", cd_nm, " > 0 (or None)", lambda v: v > 0)
    sigma_nm = real_arg("sigma_nm", sigma_nm, " >= 0", lambda v: v >= 0)
    correlation_length_nm = real_arg(
        "correlation_length_nm", correlation_length_nm, " > 0", lambda v: v > 0
    )
    roughness_exponent = real_arg("roughness_exponent", roughness_exponent, " > 0", lambda v: v > 0)
    line_level = real_arg("line_level", line_level)
    space_level = real_arg("space_level", space_level)
    bloom_amplitude = real_arg("bloom_amplitude", bloom_amplitude)
    bloom_width_px = real_arg("bloom_width_px", bloom_width_px, " > 0", lambda v: v > 0)
    bloom_inset_px = real_arg("bloom_inset_px", bloom_inset_px)
    tilt_deg = real_arg("tilt_deg", tilt_deg, " in (-90, 90)", lambda v: -90 < v < 90)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    pitch_px = (pitch_nm / pixel_size_nm) if pitch_nm else w / (n_lines + 1)
    cd_px = (cd_nm / pixel_size_nm) if cd_nm else 0.5 * pitch_px
    if not 0 < cd_px < pitch_px:
        raise ValueError(f"cd_nm must be in (0, pitch_nm), got cd {cd_px} px, pitch {pitch_px} px")
    slope = math.tan(math.radians(tilt_deg))
    drift = abs(slope) * 0.5 * h
    step_px = pitch_px / math.cos(math.radians(tilt_deg))  # along a row: pitch and CD are
    span = n_lines * step_px + 2 * drift  # both across the tilted lines
    if span > w - 2:
        raise ValueError(f"{n_lines} lines of pitch {pitch_px:.2f} px do not fit in width {w}")
    n_sub = h * supersample
    y_sub = (np.arange(n_sub) + 0.5) / supersample - 0.5  # sub-row centres in pixel rows
    x0 = 0.5 * (w - 1) - 0.5 * n_lines * step_px + step_px * (np.arange(n_lines) + 0.5)
    centre = x0[:, None] + (y_sub - 0.5 * (h - 1))[None, :] * slope
    spacing_nm = pixel_size_nm / supersample / math.cos(math.radians(tilt_deg))
    rough = correlated_edges(
        2 * n_lines, n_sub, spacing_nm, sigma_nm, correlation_length_nm, roughness_exponent, rng
    ) / (pixel_size_nm * math.cos(math.radians(tilt_deg)))
    half_cd = 0.5 * cd_px / math.cos(math.radians(tilt_deg))
    lead_sub = centre - half_cd + rough[:n_lines]
    trail_sub = centre + half_cd + rough[n_lines:]
    if np.any(trail_sub <= lead_sub) or np.any(lead_sub[1:] <= trail_sub[:-1]):
        space_px = pitch_px - cd_px
        raise ValueError(
            f"edges cross: lines {cd_px * pixel_size_nm:.3g} nm wide with spaces "
            f"{space_px * pixel_size_nm:.3g} nm ({n_lines} lines in {w} px at {pixel_size_nm:g} "
            f"nm/px) against edge roughness sigma_nm={sigma_nm:g}; reduce sigma_nm or n_lines, "
            "or widen cd_nm / the spaces (pitch_nm, a wider image)"
        )
    coverage = render_lines(lead_sub, trail_sub, w, supersample)
    clean = space_level + (line_level - space_level) * coverage
    lead = lead_sub.reshape(n_lines, h, supersample).mean(axis=2)
    trail = trail_sub.reshape(n_lines, h, supersample).mean(axis=2)
    if bloom_amplitude:
        reach = math.ceil(5.0 * bloom_width_px)
        offsets = np.arange(-reach, reach + 1)
        rows = np.broadcast_to(np.arange(h)[:, None], (h, offsets.size))
        inset = np.r_[np.full(n_lines, bloom_inset_px), np.full(n_lines, -bloom_inset_px)]
        for e in np.vstack([lead, trail]) + inset[:, None]:
            cols = np.rint(e)[:, None].astype(np.intp) + offsets[None, :]
            ridge = bloom_amplitude * np.exp(-0.5 * ((cols - e[:, None]) / bloom_width_px) ** 2)
            ok = (cols >= 0) & (cols < w)
            np.add.at(clean, (rows[ok], cols[ok]), ridge[ok])
    image = clean
    if degradation is not None:
        from sem_physics import degrade

        image = degrade(clean, degradation, rng)  # type: ignore[arg-type]
    cos_t = math.cos(math.radians(tilt_deg))
    scale = pixel_size_nm * cos_t
    widths = (trail - lead) * scale
    line_cd = widths.mean(axis=1)
    w_res = widths - line_cd[:, None]
    truth = SyntheticTruth(
        n_lines=n_lines,
        n_rows=h,
        pixel_size_nm=pixel_size_nm,
        tilt_deg=tilt_deg,
        pitch_nm=pitch_px * pixel_size_nm,
        cd_nm=float(line_cd.mean()),
        cd_std_nm=float(line_cd.std()),
        lwr_nm=float(3.0 * np.sqrt(np.mean(w_res**2))),
        ler_nm=_truth_sigma3(np.vstack([lead, trail]) * scale, linear=True),
        ler_leading_nm=_truth_sigma3(lead * scale, linear=True),
        ler_trailing_nm=_truth_sigma3(trail * scale, linear=True),
        sigma_nm=sigma_nm,
        correlation_length_nm=correlation_length_nm,
        roughness_exponent=roughness_exponent,
    )
    image32 = np.asarray(image, dtype=np.float32)
    clean32 = np.asarray(clean, dtype=np.float32)
    if orientation == "horizontal":
        image32, clean32 = np.ascontiguousarray(image32.T), np.ascontiguousarray(clean32.T)
    return SyntheticLines(
        image=image32, clean=clean32, leading_px=lead, trailing_px=trail, truth=truth
    )


@dataclass(frozen=True)
class SyntheticContacts:
    """A synthetic contact-hole image, its noise-free version and the truth of every hole.

    Only holes lying fully inside the image are listed: ``centres_px`` (N, 2) are ``[x, y]``;
    ``cd_nm`` the equivalent diameter of the *rendered* area of each hole (sum of its
    anti-aliased coverage); ``margin_px`` the distance from the hole's bounding circle to the
    nearest image border (holes within a pixel or two of it may be cut after blurring).
    """

    image: np.ndarray
    clean: np.ndarray
    centres_px: np.ndarray
    cd_nm: np.ndarray
    ellipticity: float
    margin_px: np.ndarray
    pixel_size_nm: float

    @property
    def n_complete(self) -> int:
        """Number of holes fully inside the image."""
        return len(self.cd_nm)


def render_ellipses(
    shape: tuple[int, int],
    centres_px: np.ndarray,
    semi_axes_px: np.ndarray,
    angles_rad: np.ndarray,
    supersample: int = 8,
) -> tuple[np.ndarray, np.ndarray]:
    """Area coverage of filled ellipses, by ``supersample²`` point samples per pixel.

    Ellipse ``i``: centre ``[x, y]``, semi-axes ``(a, b)``, major axis at ``angle`` from +x
    (counter-clockwise as displayed, image y down). Ellipses must not overlap.

    Returns
    -------
    coverage (H, W) in 0..1, and each ellipse's rendered area (px², sum of its coverage).
    """
    h, w = shape
    cov = np.zeros(shape, dtype=np.float64)
    areas = np.zeros(len(centres_px))
    offs = (np.arange(supersample) + 0.5) / supersample - 0.5
    for i, ((cx, cy), (a, b), t) in enumerate(
        zip(centres_px, semi_axes_px, angles_rad, strict=True)
    ):
        r = math.ceil(max(a, b)) + 1
        x0, x1 = max(0, int(cx) - r), min(w, int(cx) + r + 2)
        y0, y1 = max(0, int(cy) - r), min(h, int(cy) + r + 2)
        if x0 >= x1 or y0 >= y1:
            continue
        xs = (np.arange(x0, x1)[:, None] + offs[None, :]).ravel() - cx
        ys = (np.arange(y0, y1)[:, None] + offs[None, :]).ravel() - cy
        u = xs[None, :] * math.cos(t) - ys[:, None] * math.sin(t)  # along the major axis
        v = xs[None, :] * math.sin(t) + ys[:, None] * math.cos(t)
        inside = (u / a) ** 2 + (v / b) ** 2 <= 1.0
        block = inside.reshape(y1 - y0, supersample, x1 - x0, supersample).mean(axis=(1, 3))
        cov[y0:y1, x0:x1] += block
        areas[i] = block.sum()
    return cov, areas


def make_contact_image(
    shape: tuple[int, int] = (256, 320),
    *,
    pixel_size_nm: float = 0.9,
    pitch_nm: float = 44.0,
    cd_nm: float = 26.0,
    cd_sigma_nm: float = 1.0,
    ellipticity: float = 0.0,
    ellipse_angle_deg: float = 0.0,
    hole_level: float = 40.0,
    space_level: float = 140.0,
    supersample: int = 8,
    degradation: object | None = None,
    seed: int | np.random.Generator | None = 0,
) -> SyntheticContacts:
    """Render a hexagonal contact-hole array with known per-hole CDs; optionally degrade it.

    Hole diameters are drawn from ``N(cd_nm, cd_sigma_nm²)``; holes are ellipses with
    ``1 − b/a = ellipticity`` and area ``π (d/2)²``. Anti-aliasing by point supersampling;
    blur and noise from :func:`sem_physics.degrade` (``degradation``). Truth CDs come from the
    rendered coverage of each hole.
    """
    h, w = shape = shape_arg(shape, 1)
    supersample = int_arg("supersample", supersample, 1)
    pixel_size_nm = real_arg("pixel_size_nm", pixel_size_nm, " > 0", lambda v: v > 0)
    pitch_nm = real_arg("pitch_nm", pitch_nm, " > 0", lambda v: v > 0)
    cd_nm = real_arg(
        "cd_nm", cd_nm, f" in (0, pitch_nm = {pitch_nm:g})", lambda v: 0 < v < pitch_nm
    )
    cd_sigma_nm = real_arg("cd_sigma_nm", cd_sigma_nm, " >= 0", lambda v: v >= 0)
    ellipticity = real_arg("ellipticity", ellipticity, " in [0, 1)", lambda v: 0 <= v < 1)
    ellipse_angle_deg = real_arg("ellipse_angle_deg", ellipse_angle_deg)
    hole_level = real_arg("hole_level", hole_level)
    space_level = real_arg("space_level", space_level)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    pitch = pitch_nm / pixel_size_nm
    row_step = pitch * math.sqrt(3.0) / 2.0
    phase = rng.uniform(0, 1, size=2)
    centres = []
    for j in range(-1, int(h / row_step) + 2):
        y = (j + phase[1]) * row_step
        shift = 0.5 * pitch if j % 2 else 0.0
        for i in range(-1, int(w / pitch) + 2):
            centres.append(((i + phase[0]) * pitch + shift, y))
    c = np.array(centres)
    d_px = rng.normal(cd_nm, cd_sigma_nm, size=len(c)) / pixel_size_nm
    d_px = np.clip(d_px, 0.2 * cd_nm / pixel_size_nm, 0.95 * pitch)
    ratio = 1.0 - ellipticity  # b / a, with a b = (d/2)^2
    semi = np.column_stack([0.5 * d_px / math.sqrt(ratio), 0.5 * d_px * math.sqrt(ratio)])
    angles = np.full(len(c), math.radians(ellipse_angle_deg))
    cov, areas = render_ellipses(shape, c, semi, angles, supersample)
    # Pixel j covers [j - 1/2, j + 1/2]: distance of each hole's bounding circle to the border.
    margin = (
        np.min([c[:, 0] + 0.5, w - 0.5 - c[:, 0], c[:, 1] + 0.5, h - 0.5 - c[:, 1]], axis=0)
        - semi[:, 0]
    )
    complete = margin > 0
    clean = space_level + (hole_level - space_level) * cov
    image = clean
    if degradation is not None:
        from sem_physics import degrade

        image = degrade(clean, degradation, rng)  # type: ignore[arg-type]
    return SyntheticContacts(
        image=np.asarray(image, dtype=np.float32),
        clean=np.asarray(clean, dtype=np.float32),
        centres_px=c[complete],
        cd_nm=2.0 * np.sqrt(areas[complete] / math.pi) * pixel_size_nm,
        ellipticity=ellipticity,
        margin_px=margin[complete],
        pixel_size_nm=pixel_size_nm,
    )
