"""sem_physics: the SEM defocus forward model and SEM image handling.

``y = N(a (x ⊛ h) + b)`` with an elliptical Airy PSF ``h`` and Poisson-Gaussian noise ``N``.
"""

from .convolution import convolve_reflect, convolve_reflect_torch
from .forward import degrade, degrade_torch, validate_image
from .noise import poisson_gaussian, poisson_gaussian_torch
from .params import DegradationParams, ParameterRanges
from .psf import PSFParams, airy_profile, airy_psf, airy_psf_torch, kernel_size

__version__ = "0.1.0"

__all__ = [
    "DegradationParams",
    "PSFParams",
    "ParameterRanges",
    "airy_profile",
    "airy_psf",
    "airy_psf_torch",
    "convolve_reflect",
    "convolve_reflect_torch",
    "degrade",
    "degrade_torch",
    "kernel_size",
    "poisson_gaussian",
    "poisson_gaussian_torch",
    "validate_image",
]
