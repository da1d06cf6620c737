"""BM3D denoising (the ``bm3d`` package) with the noise level estimated per image.

Noise estimate on the [0, 1] scale (``x = image / 255``)::

    r     = x - median3x3(x)                       (high-pass residual, reflective borders)
    sigma = 1.4826 * median(|r - median(r)|) / c

``1.4826 = 1 / Phi^-1(3/4)`` turns the median absolute deviation of Gaussian data into its
standard deviation. The residual of white Gaussian noise is neither of variance ``sigma^2`` nor
Gaussian (the 3x3 median is correlated with the centre pixel), so the raw estimate is
``c = 0.862`` times the true sigma (measured by simulation on 8 Mpx of N(0, 1) noise; the test
suite re-measures it). ``correct_highpass=True`` (default) divides by ``c``; ``False`` keeps the
raw MAD estimate. The estimate is reliable on smooth content; where the grey level changes
from pixel to pixel by more than the noise, the median tends to pick the centre pixel's own
value and the estimate is biased low (tests document this: sharp lines, and defocused lines at
the least noise of the paper's ranges, 23 % low at the midpoint blur). The forward model's
noise is Poisson-Gaussian; no variance-stabilising transform is applied: BM3D denoises white
Gaussian noise of the one estimated sigma, the paper's setting. Other BM3D settings are the
package defaults (profile "np", both stages); ``profile="lc"`` selects the authors' fast
profile (:class:`BM3DProfileLC`).

Threads: by default as many as torch's intra-op threads, this process's share of the cores (an
evaluation's worker processes have one each); with one thread the output is deterministic
(the package warns that several threads may change the last digits: up to a few hundredths of
a grey level between 1 and 2 threads on a real micrograph). The count used is kept in
``last_threads`` (``sem restore`` records it).

Licence note: the ``bm3d`` package ships compiled binaries under a non-commercial licence.
"""

from __future__ import annotations

import bm3d as _bm3d
import numpy as np
from pydantic import ConfigDict, Field
from scipy.ndimage import median_filter
from sem_physics.fields import NoBoolNumbers

from ..restorer import check_image, register

__all__ = [
    "HIGHPASS_MAD_FACTOR",
    "MAD_TO_SIGMA",
    "BM3DConfig",
    "BM3DProfileLC",
    "BM3DRestorer",
    "estimate_sigma",
]


class BM3DProfileLC(_bm3d.BM3DProfile):
    """The authors' fast profile "lc" (reference BM3D.m, Dabov et al. 2007): reference blocks
    every 6 px (hard thresholding) and 5 px (Wiener) instead of 3, 25-px search windows instead
    of 39, at most 16 blocks per Wiener group instead of 32. About 2-3x faster than "np" for
    about 0.1-0.2 dB less PSNR on white noise (its fast-search shortcuts are not in the
    ``bm3d`` package)."""

    step_ht = 6
    search_window_ht = 25
    step_wiener = 5
    max_3d_size_wiener = 16
    search_window_wiener = 25


#: The package's named profiles (``bm3d.bm3d(profile="np")`` builds the same object), and
#: the authors' fast profile "lc".
_PROFILES = {
    "np": _bm3d.BM3DProfile,
    "lc": BM3DProfileLC,
    "refilter": _bm3d.BM3DProfileRefilter,
    "vn": _bm3d.BM3DProfileVN,
    "vn_old": _bm3d.BM3DProfileVNOld,
    "high": _bm3d.BM3DProfileHigh,
    "deb": _bm3d.BM3DProfileDeb,
}

MAD_TO_SIGMA = 1.4826
MIN_SIDE_PX = 9  # smallest side the bm3d package handles (8 px blocks; 8 x 8 crashes it)
HIGHPASS_MAD_FACTOR = 0.862


def estimate_sigma(image01: np.ndarray, correct_highpass: bool = True) -> float:
    """Gaussian noise std of an image on the [0, 1] scale (MAD of the median high-pass)."""
    x = np.asarray(image01, dtype=np.float64)
    r = x - median_filter(x, size=3, mode="reflect")
    sigma = MAD_TO_SIGMA * float(np.median(np.abs(r - np.median(r))))
    return sigma / HIGHPASS_MAD_FACTOR if correct_highpass else sigma


class BM3DConfig(NoBoolNumbers):
    """BM3D with a per-image noise estimate (or a fixed ``sigma`` on the [0, 1] scale)."""

    model_config = ConfigDict(extra="forbid")

    sigma: float | None = Field(
        default=None, gt=0, le=1, description="noise std on the [0, 1] scale; None = estimate"
    )
    correct_highpass: bool = Field(default=True, description="divide the MAD estimate by 0.862")
    profile: str = Field(
        default="np",
        pattern="^(np|lc|refilter|vn|vn_old|high|deb)$",
        description="np = the standard profile; lc = the authors' fast profile (BM3DProfileLC)",
    )
    threads: int | None = Field(
        default=None, ge=1, le=1024, description="threads; None = torch.get_num_threads()"
    )
    clip: bool = Field(default=True, description="clip the output to 0..255")


@register("bm3d", BM3DConfig)
class BM3DRestorer:
    """BM3D collaborative filtering; the per-image sigma of the last call is kept in
    ``last_sigma`` (on the [0, 1] scale)."""

    def __init__(self, config: BM3DConfig | None = None) -> None:
        self.config = config or BM3DConfig()
        self.last_sigma: float | None = None
        self.last_threads: int | None = None

    def _profile(self) -> _bm3d.BM3DProfile:
        import torch

        profile = _PROFILES[self.config.profile]()
        profile.num_threads = self.config.threads or torch.get_num_threads()
        self.last_threads = int(profile.num_threads)  # recorded: the digits depend on it
        return profile

    def restore(self, image: np.ndarray) -> np.ndarray:
        x = check_image(image).astype(np.float64) / 255.0
        if min(x.shape) < MIN_SIDE_PX:  # the bm3d package crashes (segfault) at 8 x 8
            raise ValueError(
                f"bm3d needs an image of at least {MIN_SIDE_PX} x {MIN_SIDE_PX} px (its blocks "
                f"are 8 px), got {x.shape[0]} x {x.shape[1]}"
            )
        sigma = self.config.sigma
        if sigma is None:
            sigma = estimate_sigma(x, self.config.correct_highpass)
        self.last_sigma = sigma
        if sigma <= 0:  # a noise-free (e.g. constant) image: nothing to denoise
            out = x
        else:
            out = np.asarray(_bm3d.bm3d(x, sigma_psd=sigma, profile=self._profile()))
        out = out.reshape(x.shape) * 255.0
        if self.config.clip:
            out = np.clip(out, 0.0, 255.0)
        return out.astype(np.float32)
