"""sem_metrology: line/space and contact-hole SEM metrology at sub-nanometre level.

Entry points: :func:`measure_lines` (CD, CD std, LWR, LER, roughness PSD, unbiased roughness;
``convention="smile"`` reproduces SMILE3, ``convention="truth"`` puts edges at the true
half-level), :func:`measure_contacts` (contact holes); synthetic images of known truth:
:func:`make_line_image`, :func:`make_contact_image`; image quality: :func:`psnr`,
:func:`ssim`, :func:`lpips_distance`, :func:`niqe`.

Depends on sem-physics (image I/O and metadata), numpy, scipy, scikit-image and pydantic;
matplotlib draws the PNG reports (``sem_metrology.report``); torch, lpips and pyiqa (the
``quality`` extra) serve LPIPS and NIQE. Names are imported on first use, so
``import sem_metrology`` loads none of them (nor torch or matplotlib).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"

_EXPORTS: dict[str, str] = {
    "ContactHole": "contacts",
    "ContactMeasurement": "contacts",
    "ContactOptions": "contacts",
    "measure_contacts": "contacts",
    "polygon_moments": "contacts",
    "MetrologyInputError": "errors",
    "TABLE_METRICS": "lines",
    "LineMeasurement": "lines",
    "LineOptions": "lines",
    "compare_measurements": "lines",
    "measure_lines": "lines",
    "detrend_profiles": "psd",
    "profile_psd": "psd",
    "psd_variance": "psd",
    "LPIPS_BACKBONES": "quality",
    "WeightsNotFoundError": "quality",
    "lpips_backbone_path": "quality",
    "lpips_distance": "quality",
    "niqe": "quality",
    "niqe_params_mat": "quality",
    "psnr": "quality",
    "ssim": "quality",
    "PalasantzasFit": "roughness_fit",
    "fit_palasantzas": "roughness_fit",
    "noise_variance": "roughness_fit",
    "palasantzas_psd": "roughness_fit",
    "palasantzas_variance": "roughness_fit",
    "unbiased_variance": "roughness_fit",
    "SyntheticContacts": "synthetic",
    "SyntheticLines": "synthetic",
    "SyntheticTruth": "synthetic",
    "correlated_edges": "synthetic",
    "make_contact_image": "synthetic",
    "make_line_image": "synthetic",
    "render_ellipses": "synthetic",
    "render_lines": "synthetic",
}

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
    "noise_variance",
    "palasantzas_psd",
    "palasantzas_variance",
    "polygon_moments",
    "profile_psd",
    "psd_variance",
    "psnr",
    "render_ellipses",
    "render_lines",
    "ssim",
    "unbiased_variance",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'sem_metrology' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:  # pragma: no cover
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
