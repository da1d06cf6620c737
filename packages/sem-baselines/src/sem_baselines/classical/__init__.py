"""Classical restorers: Richardson-Lucy and Wiener deconvolution with one fixed PSF, BM3D."""

from .bm3d import BM3DConfig, BM3DRestorer, estimate_sigma
from .deconv import DeconvBoundary, fixed_psf
from .richardson_lucy import RichardsonLucyConfig, RichardsonLucyRestorer
from .wiener import WienerConfig, WienerRestorer

__all__ = [
    "BM3DConfig",
    "BM3DRestorer",
    "DeconvBoundary",
    "RichardsonLucyConfig",
    "RichardsonLucyRestorer",
    "WienerConfig",
    "WienerRestorer",
    "estimate_sigma",
    "fixed_psf",
]
