"""sem_metrology: line/space and contact-hole SEM metrology at sub-nanometre level.

Entry points: :func:`measure_lines` (CD, CD std, LWR, LER, roughness PSD, unbiased roughness;
``convention="smile"`` reproduces SMILE3, ``convention="truth"`` puts edges at the true
half-level), :func:`measure_contacts` (contact holes); synthetic images of known truth:
:func:`make_line_image`, :func:`make_contact_image`; image quality: :func:`psnr`,
:func:`ssim`, :func:`lpips_distance`, :func:`niqe`; the PSNR a noisy reference allows:
:func:`noise_ceiling_psnr`; CSV text a spreadsheet opens as written:
:func:`spreadsheet_csv_file`.

Depends on sem-physics (image I/O and metadata, atomic output, CSV rows), numpy, scipy,
scikit-image and pydantic; matplotlib draws the PNG reports (``sem_metrology.report``); torch, lpips and pyiqa (the
``quality`` extra) serve LPIPS and NIQE. Names are imported on first use, so
``import sem_metrology`` loads none of them (nor torch or matplotlib).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sem_physics.lazy import lazy_exports

__version__ = "0.2.0"

__all__ = [
    "LPIPS_BACKBONES",
    "TABLE_METRICS",
    "ContactHole",
    "ContactMeasurement",
    "ContactOptions",
    "LineMeasurement",
    "LineOptions",
    "MetrologyInputError",
    "PalasantzasFit",
    "SyntheticContacts",
    "SyntheticLines",
    "SyntheticTruth",
    "WeightsNotFoundError",
    "compare_measurements",
    "correlated_edges",
    "detrend_profiles",
    "fit_palasantzas",
    "lpips_backbone_path",
    "lpips_distance",
    "make_contact_image",
    "make_line_image",
    "measure_contacts",
    "measure_lines",
    "niqe",
    "niqe_params_mat",
    "noise_ceiling_psnr",
    "noise_sigma",
    "noise_variance",
    "palasantzas_psd",
    "palasantzas_variance",
    "polygon_moments",
    "profile_psd",
    "psd_variance",
    "psnr",
    "render_ellipses",
    "render_lines",
    "spreadsheet_csv_file",
    "ssim",
    "unbiased_variance",
]


# Each name's submodule comes from the TYPE_CHECKING imports below (one list, read once).
__getattr__, __dir__, _EXPORTS = lazy_exports(__name__, __file__, __all__)

if TYPE_CHECKING:  # pragma: no cover
    from ._csv import spreadsheet_csv_file
    from .contacts import (
        ContactHole,
        ContactMeasurement,
        ContactOptions,
        measure_contacts,
        polygon_moments,
    )
    from .errors import MetrologyInputError
    from .lines import (
        TABLE_METRICS,
        LineMeasurement,
        LineOptions,
        compare_measurements,
        measure_lines,
    )
    from .psd import detrend_profiles, profile_psd, psd_variance
    from .quality import (
        LPIPS_BACKBONES,
        WeightsNotFoundError,
        lpips_backbone_path,
        lpips_distance,
        niqe,
        niqe_params_mat,
        noise_ceiling_psnr,
        noise_sigma,
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
