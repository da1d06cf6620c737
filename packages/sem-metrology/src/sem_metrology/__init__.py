"""sem_metrology: line/space SEM metrology (CD, LWR, LER, roughness PSD) at sub-nanometre level.

Works with numpy, scipy, scikit-image and pydantic only (no torch). Entry points:
:func:`measure_lines` (line/space), :func:`measure_contacts` (contact holes); synthetic images
of known truth: :func:`make_line_image`, :func:`make_contact_image`; image quality:
:func:`psnr`, :func:`ssim` (scikit-image), :func:`lpips_distance`, :func:`niqe` (torch, lpips and
pyiqa imported on first use).
"""

from .contacts import (
    ContactHole,
    ContactMeasurement,
    ContactOptions,
    measure_contacts,
    polygon_moments,
)
from .edges import coarse_edges, edge_spread_px, fill_gaps, subpixel_edges
from .lines import (
    TABLE_METRICS,
    LineMeasurement,
    LineOptions,
    compare_measurements,
    measure_lines,
)
from .preprocess import (
    detect_info_bar_rows,
    detect_orientation,
    estimate_tilt,
    flatten_background,
    median5_extrema,
    normalize_intensity,
    trailing_frame_rows,
)
from .psd import detrend_profiles, profile_psd, psd_variance
from .quality import (
    LPIPS_BACKBONES,
    WeightsNotFoundError,
    lpips_backbone_path,
    lpips_distance,
    niqe,
    niqe_params_mat,
    psnr,
    ssim,
)
from .roughness_fit import (
    PalasantzasFit,
    fit_palasantzas,
    noise_variance,
    palasantzas_psd,
    palasantzas_variance,
    unbiased_variance,
)
from .synthetic import (
    SyntheticContacts,
    SyntheticLines,
    SyntheticTruth,
    correlated_edges,
    make_contact_image,
    make_line_image,
    render_ellipses,
    render_lines,
)

__version__ = "0.1.0"

__all__ = [
    "LPIPS_BACKBONES",
    "TABLE_METRICS",
    "ContactHole",
    "ContactMeasurement",
    "ContactOptions",
    "LineMeasurement",
    "LineOptions",
    "PalasantzasFit",
    "SyntheticContacts",
    "SyntheticLines",
    "SyntheticTruth",
    "WeightsNotFoundError",
    "coarse_edges",
    "compare_measurements",
    "correlated_edges",
    "detect_info_bar_rows",
    "detect_orientation",
    "detrend_profiles",
    "edge_spread_px",
    "estimate_tilt",
    "fill_gaps",
    "fit_palasantzas",
    "flatten_background",
    "lpips_backbone_path",
    "lpips_distance",
    "make_contact_image",
    "make_line_image",
    "measure_contacts",
    "measure_lines",
    "median5_extrema",
    "niqe",
    "niqe_params_mat",
    "noise_variance",
    "normalize_intensity",
    "palasantzas_psd",
    "palasantzas_variance",
    "polygon_moments",
    "profile_psd",
    "psd_variance",
    "psnr",
    "render_ellipses",
    "render_lines",
    "ssim",
    "subpixel_edges",
    "trailing_frame_rows",
    "unbiased_variance",
]
