"""Classical restorers: Richardson-Lucy and Wiener deconvolution with one fixed PSF, BM3D.

Names are imported on first use: Richardson-Lucy and Wiener do not load bm3d.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sem_physics.lazy import lazy_exports

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

__getattr__, __dir__, _EXPORTS = lazy_exports(__name__, __file__, __all__)

if TYPE_CHECKING:
    from .bm3d import BM3DConfig, BM3DRestorer, estimate_sigma
    from .deconv import DeconvBoundary, fixed_psf
    from .richardson_lucy import RichardsonLucyConfig, RichardsonLucyRestorer
    from .wiener import WienerConfig, WienerRestorer
