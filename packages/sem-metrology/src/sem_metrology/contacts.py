"""Contact-hole metrology: per-hole CD (equivalent diameter), LCDU, ellipticity, count, pitch.

Method
------
1. Segmentation: the image is smoothed (Gaussian, ``segmentation_sigma_px``) and split into two
   intensity classes by Otsu's threshold; the two class medians give global levels, and pixels
   beyond ``threshold`` between them on the hole side are hole pixels. ``tone='auto'`` takes the
   class covering less area as the holes (holes are dark on most top-down images: ``'dark'``).
   Connected components are candidate holes; components touching the image border are cut by it
   and excluded (counted); specks below ``min_area_fraction`` of the typical area (area-weighted
   median, robust to many noise specks) are noise and dropped; components above
   ``max_area_fraction`` × the typical area are merged holes (excluded, counted).
2. Sub-pixel contour per hole on a lightly smoothed copy (``measurement_sigma_px``), normalised
   *locally* as SMILE normalises lines: ``lo`` = median of the hole's core (within half its
   radius of the centre), ``hi`` = median of the surrounding space (within ``ring_px`` of the
   hole, other holes masked). The ``threshold`` (default 0.5) iso-contour is traced by marching
   squares (linear interpolation between pixel centres); the closed contour enclosing the
   hole's centre is the hole's boundary.
3. From the contour polygon (Green's theorem, exact for the polygon): area ``A``, centroid and
   second central moments. ``CD = 2 sqrt(A/π)`` (equivalent diameter); the ellipse with the same
   moments has semi-axes ``a = 2 sqrt(λ₁)``, ``b = 2 sqrt(λ₂)`` (eigenvalues of the moment
   matrix per unit area), so ``major = 2a``, ``minor = 2b``, ``ellipticity = 1 − b/a``
   (0 for a circle) and the orientation of the major axis (degrees, counter-clockwise from the
   image ``x`` axis, image ``y`` pointing down as displayed).
4. Statistics over holes: ``cd_nm`` = mean CD, ``cd_std_nm`` = std (ddof 0), ``lcdu_nm = 3 σ``,
   ``pitch_nm`` = median nearest-neighbour centre distance.
5. Checks: too few holes, sparse irregular specks (no array) and line segments (mean
   ellipticity above :data:`MAX_HOLE_ELLIPTICITY`) are refused; centres off a lattice (spread of
   the nearest-neighbour spacing) and holes of very uneven size (CD spread) give warnings.

Convention: the 0.5 iso-contour of a blurred convex hole lies slightly inside the true edge
(by about ``σ²/(2R)`` for a Gaussian edge spread ``σ`` and radius ``R``); at the default
smoothing this is below 0.2 px for holes wider than 20 px (tested against rendered truth).
"""

from __future__ import annotations

import math
from typing import Any, Literal, TypedDict

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from scipy import ndimage
from sem_physics.cli_support import model_json
from sem_physics.protocol import SourceRecord

from ._csv import spreadsheet_csv
from ._inputs import InfoBar, begin_measurement
from ._provenance import FIELDS as _PROVENANCE
from ._provenance import source_field, versions_field
from ._repr import ShortListRepr
from .preprocess import label_counts, split_medians, step_noise  # by bands: less memory

__all__ = [
    "ContactHole",
    "ContactMeasurement",
    "ContactOptions",
    "measure_contacts",
    "pixel_noise_std",
    "polygon_moments",
]


class ContactOptions(BaseModel):
    """Options of :func:`measure_contacts`."""

    model_config = ConfigDict(extra="forbid")

    tone: Literal["auto", "dark", "bright"] = Field(
        default="auto", description="holes darker or brighter than the space; auto = minority class"
    )
    threshold: float = Field(
        default=0.5, gt=0.0, lt=1.0, description="of locally normalised intensity"
    )
    measurement_sigma_px: float = Field(
        default=1.0, ge=0.0, le=5.0, description="Gaussian smoothing before contouring (px)"
    )
    segmentation_sigma_px: float = Field(
        default=2.0, ge=0.0, le=10.0, description="Gaussian smoothing before segmentation (px)"
    )
    ring_px: float = Field(
        default=4.0,
        gt=0.0,
        le=50.0,
        description="width of the space ring giving the local bright level",
    )
    min_area_fraction: float = Field(
        default=0.2, ge=0.0, le=1.0, description="components below this × median area are noise"
    )
    max_area_fraction: float = Field(
        default=2.0, gt=1.0, description="components above this × median area are merged holes"
    )
    min_diameter_px: float = Field(
        default=4.0, ge=1.0, description="smaller holes are not measured"
    )
    min_holes: int = Field(
        default=3, ge=1, description="fewer measured holes: no LCDU, pitch or array check, refused"
    )
    roi: tuple[int, int, int, int] | None = Field(
        default=None, description="(row0, row1, col0, col1) half-open region measured"
    )
    info_bar: InfoBar = "auto"
    saturation_limit: float = Field(default=0.95, gt=0.0, le=1.0)
    min_contrast_to_noise: float = Field(
        default=0.8,
        ge=0.0,
        description="hole/space level difference over pixel noise below which nothing is measured",
    )


class ContactHole(ShortListRepr, BaseModel):
    """One measured hole. Positions in pixels of the measured image (ROI origin when given)."""

    model_config = ConfigDict(extra="forbid")

    centre_x_px: float
    centre_y_px: float
    area_nm2: float
    cd_nm: float = Field(description="equivalent diameter 2 sqrt(area / pi)")
    major_nm: float = Field(description="major axis of the moment-equivalent ellipse")
    minor_nm: float = Field(description="minor axis of the moment-equivalent ellipse")
    ellipticity: float = Field(description="1 - minor/major (0 = circle)")
    orientation_deg: float = Field(description="major axis, degrees from +x, counter-clockwise")
    level_hole: float = Field(description="local hole level (image units)")
    level_space: float = Field(description="local space level (image units)")
    contour_px: list[list[float]] = Field(
        default_factory=list, description="closed contour as [x, y] pairs (px)"
    )


class ContactMeasurement(ShortListRepr, BaseModel):
    """Result of :func:`measure_contacts`. Quantities are ``None`` when not measurable."""

    model_config = ConfigDict(extra="forbid")

    valid: bool
    reason: str | None = None
    warnings: list[str] = Field(default_factory=list)
    pixel_size_nm: float
    pixel_size_source: str
    acquisition: dict[str, Any] = Field(
        default_factory=dict,
        description="acquisition conditions from the file's vendor tags (sem_physics.Acquisition)",
    )
    roi: tuple[int, int, int, int] | None = None
    crop: str | None = Field(default=None, description="rows removed before measuring, and why")
    tone: Literal["dark", "bright"] | None = None
    threshold: float = 0.5
    n_holes: int = Field(default=0, description="holes measured")
    n_border_excluded: int = Field(default=0, description="holes cut by the image border")
    n_merged_excluded: int = Field(default=0, description="components larger than a hole (merged)")
    n_failed: int = Field(default=0, description="holes without a closed contour at the threshold")
    cd_nm: float | None = Field(default=None, description="mean equivalent diameter")
    cd_std_nm: float | None = Field(default=None, description="std of hole CDs (ddof 0)")
    lcdu_nm: float | None = Field(
        default=None, description="local CD uniformity, 3 sigma of hole CDs"
    )
    ellipticity: float | None = Field(default=None, description="mean of 1 - minor/major")
    major_nm: float | None = None
    minor_nm: float | None = None
    pitch_nm: float | None = Field(
        default=None, description="median nearest-neighbour centre distance"
    )
    holes: list[ContactHole] = Field(default_factory=list)
    source: SourceRecord | None = source_field()
    versions: dict[str, str | None] | None = versions_field()

    def to_json(self, *, include_contours: bool = False, indent: int | None = 2) -> str:
        """JSON text; the per-hole contours only with ``include_contours`` (they are large)."""
        exclude = None if include_contours else {"holes": {"__all__": {"contour_px"}}}
        return model_json(self, exclude=exclude, indent=indent)  # a name not valid UTF-8: \xNN

    def summary(self) -> dict[str, Any]:
        """The scalar fields (what one CSV row holds)."""
        return {
            k: v
            for k, v in self.model_dump(
                exclude={"warnings", "acquisition", "holes", "roi", *_PROVENANCE}
            ).items()
            if not isinstance(v, list)
        }

    def cds_nm(self) -> np.ndarray:
        """Per-hole CDs (nm) as an array."""
        return np.array([h.cd_nm for h in self.holes], dtype=np.float64)

    def to_csv(self, kind: Literal["summary", "holes"] = "summary") -> str:
        """CSV text: one row of scalar results (``'summary'``) or one row per hole (``'holes'``)."""
        if kind == "summary":
            return spreadsheet_csv([{**self.summary(), "warnings": "; ".join(self.warnings)}])
        if kind == "holes":
            fields = [f for f in ContactHole.model_fields if f != "contour_px"]
            rows = [
                {"hole": i, **h.model_dump(exclude={"contour_px"})}
                for i, h in enumerate(self.holes)
            ]
            return spreadsheet_csv(rows, ["hole", *fields])
        raise ValueError(f"kind must be 'summary' or 'holes', got {kind!r}")


def polygon_moments(xy: np.ndarray) -> tuple[float, float, float, np.ndarray]:
    """Area, centroid and central second moments per unit area of a simple polygon.

    Green's theorem over the vertices ``(x_i, y_i)`` (closed or not, either orientation), with
    ``c_i = x_i y_{i+1} − x_{i+1} y_i``::

        A = ½ Σ c_i,   ∫x dA = ⅙ Σ c_i (x_i + x_{i+1}),
        ∫x² dA = 1/12 Σ c_i (x_i² + x_i x_{i+1} + x_{i+1}²),
        ∫xy dA = 1/24 Σ c_i (x_i y_{i+1} + 2 x_i y_i + 2 x_{i+1} y_{i+1} + x_{i+1} y_i).

    Returns
    -------
    (area, cx, cy, cov) : ``|A|``, centroid, and the 2×2 matrix ``[[μxx, μxy], [μxy, μyy]]``
    of central moments divided by the area (an ellipse with semi-axes a, b has eigenvalues
    a²/4, b²/4).
    """
    p = np.asarray(xy, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 2 or len(p) < 3:
        raise ValueError(f"polygon must be (N >= 3, 2) [x, y] vertices, got shape {p.shape}")
    # Centre first: the moment sums are then free of cancellation.
    x0, y0 = p.mean(axis=0)
    x, y = p[:, 0] - x0, p[:, 1] - y0
    xn, yn = np.roll(x, -1), np.roll(y, -1)
    c = x * yn - xn * y
    a = 0.5 * c.sum()
    if a == 0:
        raise ValueError("polygon has zero area")
    sx = (c * (x + xn)).sum() / 6.0
    sy = (c * (y + yn)).sum() / 6.0
    sxx = (c * (x * x + x * xn + xn * xn)).sum() / 12.0
    syy = (c * (y * y + y * yn + yn * yn)).sum() / 12.0
    sxy = (c * (x * yn + 2 * x * y + 2 * xn * yn + xn * y)).sum() / 24.0
    cx, cy = sx / a, sy / a
    cov = np.array([[sxx / a - cx * cx, sxy / a - cx * cy], [sxy / a - cx * cy, syy / a - cy * cy]])
    return float(abs(a)), float(cx + x0), float(cy + y0), cov


def _point_in_polygon(x: float, y: float, poly: np.ndarray) -> bool:
    """Even-odd rule (ray casting) for one point."""
    px, py = poly[:, 0], poly[:, 1]
    qx, qy = np.roll(px, -1), np.roll(py, -1)
    crosses = (py > y) != (qy > y)
    with np.errstate(divide="ignore", invalid="ignore"):
        xint = px + (y - py) * (qx - px) / (qy - py)
    return bool(np.count_nonzero(crosses & (x < xint)) % 2)


def pixel_noise_std(image: np.ndarray) -> float:
    """Robust pixel-noise std from horizontal neighbour differences
    (:func:`~sem_metrology.preprocess.step_noise`, ``axis=1``).

    Differences of neighbours cancel the (smooth) pattern and leave ``√2 σ`` of white noise;
    the trimmed spread ignores the few differences across edges. Not the MAD: on 8-bit images
    the differences are whole grey levels and the MAD reads 1.05 for any noise of 0.5-1.0
    grey levels (holes 0.6-0.8 levels deep under noise of 0.5-0.8 were refused as having no
    contrast; they measure within 0.15 nm of the true CD).
    """
    return float(step_noise(image, axis=1))


def _typical_area(areas: np.ndarray) -> float:
    """Area-weighted median component area: the size of the component a typical hole *pixel*
    belongs to, so that many one-pixel noise specks cannot pull it down."""
    a = np.sort(np.asarray(areas, dtype=np.float64))
    mass = np.cumsum(a)
    return float(a[int(np.searchsorted(mass, 0.5 * mass[-1]))])


def _global_levels(smooth: np.ndarray) -> tuple[float, float, float]:
    from skimage.filters import threshold_otsu

    t = float(threshold_otsu(smooth))
    # medians of smooth <= t and > t by bands (same bits), no selected copies
    below, above, n_below = split_medians(smooth, t)
    frac_below = n_below / smooth.size
    return below, above, frac_below


def _hole_from_patch(
    patch: np.ndarray,
    hole_mask: np.ndarray,
    space_mask: np.ndarray,
    centre: tuple[float, float],
    radius_px: float,
    dark: bool,
    threshold: float,
) -> tuple[np.ndarray, float, float] | None:
    """Closed sub-pixel contour (x, y in patch pixels) of one hole, and its local levels."""
    from skimage.measure import find_contours

    yy, xx = np.indices(patch.shape)
    cy, cx = centre
    core = hole_mask & ((yy - cy) ** 2 + (xx - cx) ** 2 <= (0.5 * radius_px) ** 2)
    if core.sum() < 3:
        core = hole_mask
    if core.sum() < 1 or space_mask.sum() < 5:
        return None
    level_hole = float(np.median(patch[core]))
    level_space = float(np.median(patch[space_mask]))
    if dark != (level_hole < level_space) or level_hole == level_space:
        return None
    level = level_hole + threshold * (level_space - level_hole)
    best, best_area = None, 0.0
    for c in find_contours(patch, level):
        if len(c) < 4 or not np.allclose(c[0], c[-1]):
            continue
        xy = c[:-1, ::-1]  # (row, col) -> (x, y)
        if not _point_in_polygon(cx, cy, xy):
            continue
        area = abs(
            0.5 * np.sum(xy[:, 0] * np.roll(xy[:, 1], -1) - np.roll(xy[:, 0], -1) * xy[:, 1])
        )
        if area > best_area:
            best, best_area = xy, area
    if best is None:
        return None
    return best, level_hole, level_space


#: Share of the image covered by the measured holes below which, together with a mean
#: ellipticity above :data:`MAX_ARRAY_ELLIPTICITY`, the holes are no contact array. Measured
#: where 3 or more holes were found: 43 contact images (the real one, its crops and blurred
#: copies, ``make_sample`` contacts focused and degraded, ``make_contact_image`` arrays)
#: 11.6-28.6 %; 72 textures and smooth random blobs 0.4-5.2 %.
MIN_ARRAY_SHARE = 0.08
#: Mean ellipticity above which sparse holes are irregular specks: round-hole arrays 0.00-0.09,
#: generated elliptical holes (0.3) 0.30; the "holes" of textures and blobs 0.22-0.50.
MAX_ARRAY_ELLIPTICITY = 0.15


class _HoleCounts(TypedDict):
    n_border_excluded: int
    n_merged_excluded: int
    n_failed: int


def _few_holes_reason(n: int, min_holes: int, counts: _HoleCounts) -> str | None:
    """Why too few holes were measured for LCDU, pitch and the array check, or None."""
    if n >= min_holes:
        return None
    return (
        f"too few contact holes: {n} measured (min_holes={min_holes}; "
        f"{counts['n_border_excluded']} cut by the border, {counts['n_merged_excluded']} merged, "
        f"{counts['n_failed']} without a closed contour); LCDU, pitch and the check that the "
        "holes form an array need more: measure a larger region"
    )


#: Sparse elliptical holes still form an array when their CDs spread by less than this
#: (relative std) and their long axes point one way (mean resultant length of twice the
#: orientation at least :data:`MIN_AXIS_ALIGNMENT`): generated sparse arrays of holes or slots
#: of ellipticity 0.2-0.67 (3-8 % coverage, 3-56 holes) spread 0-3 % and align 0.99-1.00;
#: the textures' and blobs' specks spread 14 % and more with their axes scattered.
MAX_ARRAY_CD_SPREAD = 0.1
MIN_AXIS_ALIGNMENT = 0.8


def _aligned_and_even(holes: list[ContactHole]) -> bool:
    """Whether the holes have one size and one orientation, as an array's do."""
    cds = np.array([h.cd_nm for h in holes])
    spread = float(cds.std() / cds.mean()) if cds.mean() > 0 else math.inf
    angles = np.radians([2.0 * h.orientation_deg for h in holes])
    alignment = float(np.hypot(np.mean(np.cos(angles)), np.mean(np.sin(angles))))
    return spread < MAX_ARRAY_CD_SPREAD and alignment >= MIN_AXIS_ALIGNMENT


def _array_reason(holes: list[ContactHole], shape: tuple[int, ...], px: float) -> str | None:
    """Why the measured holes are no contact array (sparse *and* irregular), or None."""
    share = sum(h.area_nm2 for h in holes) / (px * px * shape[0] * shape[1])
    ellipticity = float(np.mean([h.ellipticity for h in holes]))
    if share >= MIN_ARRAY_SHARE or ellipticity <= MAX_ARRAY_ELLIPTICITY:
        return None
    if _aligned_and_even(holes):  # sparse slots or elliptical holes of one size and axis
        return None
    return (
        f"no contact-hole array: the {len(holes)} holes found cover {100 * share:.1f} % of the "
        f"image (< {100 * MIN_ARRAY_SHARE:g} %) with mean ellipticity {ellipticity:.2f} "
        f"(> {MAX_ARRAY_ELLIPTICITY:g}), of uneven size or orientation: sparse, irregular specks "
        "(as of a texture), not a hole array (contact arrays: 12-29 % of the image, or holes of "
        "one size and orientation)"
    )


#: Mean ellipticity above which the "holes" are line segments (line ends, trench segments),
#: i.e. a major/minor axis ratio above 4:1. Valid arrays (holes and slots of ellipticity
#: 0-0.67, 604 generated arrays, the real image and its crops) measure at most 0.67;
#: generated line/space images whose lines end in the field and trench segments 0.81-0.91.
MAX_HOLE_ELLIPTICITY = 0.75


def _elongation_reason(holes: list[ContactHole]) -> str | None:
    """Why the measured features are line segments rather than contact holes, or None."""
    ellipticity = float(np.mean([h.ellipticity for h in holes]))
    if ellipticity <= MAX_HOLE_ELLIPTICITY:
        return None
    major = float(np.mean([h.major_nm for h in holes]))
    minor = float(np.mean([h.minor_nm for h in holes]))
    return (
        f"line segments, not contact holes: the {len(holes)} features found have mean "
        f"ellipticity {ellipticity:.2f} (> {MAX_HOLE_ELLIPTICITY:g}; axes {major:.1f} x "
        f"{minor:.1f} nm, {major / max(minor, 1e-12):.1f}:1): line ends or trench segments "
        "(contact holes and slots: ellipticity up to 0.67, 3:1); measure them as lines or "
        "choose a region without line ends"
    )


#: Robust spread of the nearest-neighbour spacing (1.4826 MAD / median) above which the hole
#: centres lie on no lattice (warning; needs :data:`MIN_SPACING_HOLES` holes). Arrays: real
#: image and 48 crops of it <= 0.028, 587 generated arrays <= 0.007, placement jitter of 7.5 %
#: of the pitch 0.07; randomly placed particles 0.20-0.54, real precipitates and pores
#: 0.08-0.34. Particles packed at a minimum distance (0.07) pass unflagged.
MAX_SPACING_SPREAD = 0.1
MIN_SPACING_HOLES = 6
#: Spread of the hole CDs (std/mean) above which the sizes are too uneven for an array
#: (warning). Real image and crops <= 0.071, generated arrays <= 0.092 but for two of 604 with
#: nearly touching holes blurred by 4 px (0.22-0.24, CD +6-8 %); the real array blurred by a
#: 30-px PSF and restored (Wiener, Richardson-Lucy) 0.38-0.40 with CD +24-49 %; real
#: precipitates and pores 0.29-0.45.
MAX_HOLE_CD_SPREAD = 0.2


def _nn_distances(holes: list[ContactHole]) -> np.ndarray:
    """Distance (px) from each hole centre to the nearest other one."""
    from scipy.spatial import cKDTree

    centres = np.array([[h.centre_x_px, h.centre_y_px] for h in holes])
    d, _ = cKDTree(centres).query(centres, k=2)
    return d[:, 1]


def _regularity_warnings(
    holes: list[ContactHole], nn_px: np.ndarray | None, px: float
) -> list[str]:
    """Warnings when the holes lie on no lattice or differ too much in size."""
    out: list[str] = []
    if nn_px is not None and len(holes) >= MIN_SPACING_HOLES:
        med = float(np.median(nn_px))
        spread = 1.4826 * float(np.median(np.abs(nn_px - med))) / med if med > 0 else math.inf
        if spread > MAX_SPACING_SPREAD:
            out.append(
                f"hole centres on no regular array: nearest-neighbour spacing (median "
                f"{med * px:.1f} nm) spreads by {100 * spread:.0f} % (MAD; arrays <= 3 %, "
                f"limit {100 * MAX_SPACING_SPREAD:g} %): particles or texture, not contact holes?"
            )
    cds = np.array([h.cd_nm for h in holes])
    cd_spread = float(cds.std() / cds.mean()) if cds.mean() > 0 else math.inf
    if cd_spread > MAX_HOLE_CD_SPREAD:
        out.append(
            f"hole CDs spread by {100 * cd_spread:.0f} % (std/mean, mean {cds.mean():.1f} nm; "
            f"focused arrays <= 9 %, limit {100 * MAX_HOLE_CD_SPREAD:g} %): blurred and restored, "
            "merged or no contact holes? CD and LCDU doubtful"
        )
    return out


def measure_contacts(
    image: Any,
    pixel_size_nm: float | None = None,
    options: ContactOptions | None = None,
    **overrides: Any,
) -> ContactMeasurement:
    """Measure a contact-hole SEM image: per-hole CD, LCDU, ellipticity, count and pitch.

    Parameters
    ----------
    image : (H, W) array on any intensity scale, or an object with ``.data`` and
        ``.pixel_size_nm`` such as ``sem_physics.io.SEMImage`` (its pixel size is used when
        ``pixel_size_nm`` is not given, and its ``info_bar_rows`` are not measured); an
        array's info bar is found as ``sem-measure`` finds it and left out, with a warning
        (option ``info_bar``).
    pixel_size_nm : nm per pixel.
    options : :class:`ContactOptions`; keyword ``overrides`` replace single fields.

    Returns
    -------
    ContactMeasurement; ``valid`` False with a ``reason`` when nothing can be measured
    (constant, saturated or two-level image, no holes, fewer than ``min_holes``, holes
    that form no array: sparse and irregular, as a texture's specks, or line segments).
    Warnings when the hole centres lie on no lattice or their CDs spread widely. Bad arguments raise
    :class:`~sem_metrology.MetrologyInputError` (a ValueError).

    Examples
    --------
    >>> from sem_metrology import make_contact_image, measure_contacts
    >>> sample = make_contact_image(shape=(160, 200), seed=0)
    >>> m = measure_contacts(sample.image, sample.pixel_size_nm)
    >>> m.valid, m.n_holes == sample.n_complete
    (True, True)
    """
    m = begin_measurement(
        ContactOptions, ContactMeasurement, image, pixel_size_nm, options, overrides
    )
    opts, prep, base, warnings, invalid = m.opts, m.prep, m.base, m.warnings, m.invalid
    data, px = prep.data, prep.pixel_size_nm
    if m.reason is not None:
        return invalid(m.reason)

    seg = (
        ndimage.gaussian_filter(data, opts.segmentation_sigma_px)
        if opts.segmentation_sigma_px
        else data
    )
    meas = (
        ndimage.gaussian_filter(data, opts.measurement_sigma_px)
        if opts.measurement_sigma_px
        else data
    )
    lo, hi, frac_low = _global_levels(seg)
    noise = pixel_noise_std(data)
    if noise > 0 and (hi - lo) < opts.min_contrast_to_noise * noise:
        return invalid(
            f"no contact holes: level contrast {hi - lo:.3g} is below "
            f"{opts.min_contrast_to_noise:g} x the pixel noise {noise:.3g}"
        )
    dark = frac_low <= 0.5 if opts.tone == "auto" else opts.tone == "dark"
    base["tone"] = "dark" if dark else "bright"
    hole_lvl, space_lvl = (lo, hi) if dark else (hi, lo)
    cut = hole_lvl + opts.threshold * (space_lvl - hole_lvl)
    holes_px = seg < cut if dark else seg > cut
    labels, n_comp = ndimage.label(holes_px)
    if n_comp == 0:
        return invalid("no contact holes found")
    areas = label_counts(labels, n_comp)[1:]  # np.bincount(labels.ravel()) by bands
    slices = ndimage.find_objects(labels)
    h, w = data.shape
    border = np.array(
        [s[0].start == 0 or s[1].start == 0 or s[0].stop == h or s[1].stop == w for s in slices]
    )
    inner = ~border
    ref_area = _typical_area(areas[inner] if inner.any() else areas)
    min_area = max(opts.min_area_fraction * ref_area, math.pi * (0.5 * opts.min_diameter_px) ** 2)
    real = areas >= min_area
    n_border = int(np.sum(border & real))
    merged = inner & real & (areas > opts.max_area_fraction * ref_area)
    if merged.any():
        warnings.append(f"{int(merged.sum())} component(s) larger than one hole (merged): excluded")
    candidates = np.nonzero(inner & real & ~merged)[0]
    # Space = neither hole nor the dilated rim of any hole (the rim holds the transition).
    any_hole = labels > 0
    rim = ndimage.binary_dilation(any_hole, iterations=2)
    del seg, holes_px, any_hole  # not used below; frees image-sized arrays
    holes: list[ContactHole] = []
    failed = 0
    for k in candidates:
        sl = slices[k]
        radius = math.sqrt(areas[k] / math.pi)
        pad = math.ceil(opts.ring_px + 3 + opts.measurement_sigma_px)
        r0, r1 = max(0, sl[0].start - pad), min(h, sl[0].stop + pad)
        c0, c1 = max(0, sl[1].start - pad), min(w, sl[1].stop + pad)
        lab = labels[r0:r1, c0:c1]
        mine = lab == k + 1
        cy, cx = ndimage.center_of_mass(mine)
        dist = ndimage.distance_transform_edt(~mine)
        space = ~rim[r0:r1, c0:c1] & (dist <= 2 + opts.ring_px)
        found = _hole_from_patch(
            meas[r0:r1, c0:c1], mine, space, (cy, cx), radius, dark, opts.threshold
        )
        if found is None:
            failed += 1
            continue
        xy, lvl_hole, lvl_space = found
        if (
            xy[:, 0].min() <= 0
            or xy[:, 1].min() <= 0
            or xy[:, 0].max() >= c1 - c0 - 1
            or xy[:, 1].max() >= r1 - r0 - 1
        ):
            failed += 1  # contour leaves the patch: not a separated hole at this threshold
            continue
        area, mx, my, cov = polygon_moments(xy)
        evals, evecs = np.linalg.eigh(cov)
        lam_min, lam_max = max(evals[0], 0.0), max(evals[1], 0.0)
        semi_a, semi_b = 2.0 * math.sqrt(lam_max), 2.0 * math.sqrt(lam_min)
        vx, vy = evecs[:, 1]
        angle = math.degrees(math.atan2(-vy, vx)) % 180.0  # y down in the image
        holes.append(
            ContactHole(
                centre_x_px=mx + c0,
                centre_y_px=my + r0,
                area_nm2=area * px * px,
                cd_nm=2.0 * math.sqrt(area / math.pi) * px,
                major_nm=2.0 * semi_a * px,
                minor_nm=2.0 * semi_b * px,
                ellipticity=1.0 - semi_b / semi_a if semi_a > 0 else 0.0,
                orientation_deg=angle,
                level_hole=lvl_hole,
                level_space=lvl_space,
                contour_px=(xy + np.array([c0, r0])).round(3).tolist(),
            )
        )
    counts: _HoleCounts = {
        "n_border_excluded": n_border,
        "n_merged_excluded": int(merged.sum()),
        "n_failed": failed,
    }
    if failed:
        warnings.append(f"{failed} hole(s) without a closed contour at the threshold: excluded")
    if not holes:
        return invalid(
            "no measurable contact holes (all cut by the border or unresolved)", **counts
        )
    reason = (
        _few_holes_reason(len(holes), opts.min_holes, counts)
        or _array_reason(holes, data.shape, px)
        or _elongation_reason(holes)
    )
    if reason:
        return invalid(reason, **counts)
    cds = np.array([hh.cd_nm for hh in holes])
    nn_px = _nn_distances(holes) if len(holes) > 1 else None
    pitch = float(np.median(nn_px) * px) if nn_px is not None else None
    warnings.extend(_regularity_warnings(holes, nn_px, px))
    return ContactMeasurement(
        valid=True,
        warnings=warnings,
        **base,
        **counts,
        n_holes=len(holes),
        cd_nm=float(cds.mean()),
        cd_std_nm=float(cds.std()),
        lcdu_nm=float(3.0 * cds.std()),
        ellipticity=float(np.mean([hh.ellipticity for hh in holes])),
        major_nm=float(np.mean([hh.major_nm for hh in holes])),
        minor_nm=float(np.mean([hh.minor_nm for hh in holes])),
        pitch_nm=pitch,
        holes=holes,
    )
