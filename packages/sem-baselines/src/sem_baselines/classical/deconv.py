"""What the two deconvolution baselines share: the fixed PSF and the boundary handling.

The paper deploys Richardson-Lucy and Wiener with one PSF for all images (SPEC §4): Airy,
``Rx = Ry = 15.5`` px, ``beta = 1.95``, ``theta = 0``, kernel side ``ceil(6 * 15.5) = 93``,
unit sum. scikit-image's implementations treat the image as periodic (Wiener, FFT) or as
zero outside (Richardson-Lucy, ``scipy.signal.convolve(mode="same")``); both ring or darken at
the borders of a non-periodic micrograph. With ``boundary="reflect"`` (the default) the image is
first extended by half a kernel on every side by half-sample symmetric reflection -- the same
convention as the forward model in ``sem_physics`` -- deconvolved, and cropped back.
``boundary="none"`` hands the image to scikit-image as it is.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from sem_physics import PSFParams, airy_psf
from sem_physics.convolution import symmetric_indices

__all__ = ["DEFAULT_PSF", "DeconvBoundary", "fixed_psf", "pad_reflect"]

DeconvBoundary = Literal["reflect", "none"]

DEFAULT_PSF = PSFParams(rx_px=15.5, ry_px=15.5, beta=1.95, theta_rad=0.0)


def fixed_psf(params: PSFParams = DEFAULT_PSF) -> np.ndarray:
    """The deployment PSF as a unit-sum float64 kernel (93 x 93 for the default)."""
    return airy_psf(params)


def pad_reflect(image: np.ndarray, pad: int) -> np.ndarray:
    """Extend ``image`` by ``pad`` pixels per side, half-sample symmetric (any ``pad``)."""
    h, w = image.shape
    return image[np.ix_(symmetric_indices(h, pad), symmetric_indices(w, pad))]


def crop(image: np.ndarray, pad: int) -> np.ndarray:
    """Inverse of :func:`pad_reflect`."""
    if pad == 0:
        return image
    return image[pad:-pad, pad:-pad]
