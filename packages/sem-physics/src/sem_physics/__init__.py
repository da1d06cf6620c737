"""sem_physics: the SEM defocus forward model and SEM image handling.

``y = N(a (x ⊛ h) + b)`` with an elliptical Airy PSF ``h`` and Poisson-Gaussian noise ``N``;
seeded protocols with manifests, SEM image I/O (pixel size, info bar) and sample images.
torch is optional: only the ``*_torch`` functions and :mod:`sem_physics.convert` need it.

Names are loaded on first use (module ``__getattr__``): ``import sem_physics`` imports neither
numpy, scipy, pydantic nor torch, so command lines built on it start at once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .lazy import lazy_exports

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_CROP_FRACTION",
    "SAMPLE_KINDS",
    "Acquisition",
    "DegradationEstimate",
    "DegradationParams",
    "EstimateQuality",
    "ImageReadError",
    "Manifest",
    "ManifestEntry",
    "PSFParams",
    "PairEstimate",
    "ParameterRanges",
    "ProtocolError",
    "RowJitter",
    "SEMImage",
    "SourceRecord",
    "airy_profile",
    "airy_psf",
    "airy_psf_torch",
    "check_pixel_size_nm",
    "convolve_reflect",
    "convolve_reflect_torch",
    "crop_info_bar",
    "degrade",
    "degrade_files",
    "degrade_torch",
    "estimate_degradation",
    "estimate_psf_from_pair",
    "file_sha256",
    "image_to_tensor",
    "kernel_size",
    "make_sample",
    "pixels_sha256",
    "poisson_gaussian",
    "poisson_gaussian_torch",
    "read_image",
    "replay_manifest",
    "row_jitter",
    "shortest_period_px",
    "tensor_to_image",
    "validate_image",
    "write_image",
    "write_samples",
]


# Each name's submodule comes from the TYPE_CHECKING imports below (one list, read once).
__getattr__, __dir__, _EXPORTS = lazy_exports(__name__, __file__, __all__)

if TYPE_CHECKING:  # for type checkers and IDEs: the same names, imported eagerly
    from .acquisition import Acquisition
    from .calibrate import PairEstimate, estimate_psf_from_pair
    from .convert import image_to_tensor, tensor_to_image
    from .convolution import convolve_reflect, convolve_reflect_torch
    from .estimate import DegradationEstimate, EstimateQuality, estimate_degradation
    from .forward import degrade, degrade_torch
    from .io import (
        DEFAULT_CROP_FRACTION,
        ImageReadError,
        SEMImage,
        check_pixel_size_nm,
        crop_info_bar,
        read_image,
        write_image,
    )
    from .noise import poisson_gaussian, poisson_gaussian_torch
    from .params import DegradationParams, ParameterRanges
    from .protocol import (
        Manifest,
        ManifestEntry,
        ProtocolError,
        SourceRecord,
        degrade_files,
        file_sha256,
        pixels_sha256,
        replay_manifest,
    )
    from .psf import (
        PSFParams,
        airy_profile,
        airy_psf,
        airy_psf_torch,
        kernel_size,
        shortest_period_px,
    )
    from .samples import SAMPLE_KINDS, make_sample, write_samples
    from .scan import RowJitter, row_jitter
    from .validation import validate_image
