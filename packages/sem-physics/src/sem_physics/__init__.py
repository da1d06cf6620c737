"""sem_physics: the SEM defocus forward model and SEM image handling.

``y = N(a (x ⊛ h) + b)`` with an elliptical Airy PSF ``h`` and Poisson-Gaussian noise ``N``;
seeded protocols with manifests, SEM image I/O (pixel size, info bar) and sample images.
torch is optional: only the ``*_torch`` functions and :mod:`sem_physics.convert` need it.
"""

from .convert import image_to_tensor, tensor_to_image
from .convolution import convolve_reflect, convolve_reflect_torch
from .estimate import DegradationEstimate, EstimateQuality, estimate_degradation
from .forward import degrade, degrade_torch, validate_image
from .io import ImageReadError, SEMImage, crop_info_bar, read_image, write_image
from .noise import poisson_gaussian, poisson_gaussian_torch
from .params import DegradationParams, ParameterRanges
from .protocol import Manifest, ManifestEntry, degrade_files, replay_manifest
from .psf import PSFParams, airy_profile, airy_psf, airy_psf_torch, kernel_size
from .samples import SAMPLE_KINDS, make_sample, write_samples

__version__ = "0.1.0"

__all__ = [
    "SAMPLE_KINDS",
    "DegradationEstimate",
    "DegradationParams",
    "EstimateQuality",
    "ImageReadError",
    "Manifest",
    "ManifestEntry",
    "PSFParams",
    "ParameterRanges",
    "SEMImage",
    "airy_profile",
    "airy_psf",
    "airy_psf_torch",
    "convolve_reflect",
    "convolve_reflect_torch",
    "crop_info_bar",
    "degrade",
    "degrade_files",
    "degrade_torch",
    "estimate_degradation",
    "image_to_tensor",
    "kernel_size",
    "make_sample",
    "poisson_gaussian",
    "poisson_gaussian_torch",
    "read_image",
    "replay_manifest",
    "tensor_to_image",
    "validate_image",
    "write_image",
    "write_samples",
]
