"""What the two deconvolution baselines share: the PSF choice, the noise level, the boundaries,
the common config fields (:class:`DeconvConfig`) and the restore path (:class:`DeconvRestorer`).

Presets:

* ``"paper"``: the paper's deployment (arXiv 2604.05960, Sec. 4.2): one PSF for all images --
  Airy, ``Rx = Ry = 15.5`` px, ``beta = 1.95``, ``theta = 0``, kernel side
  ``ceil(6 * 15.5) = 93``, unit sum -- and fixed settings (RL 30 iterations, Wiener balance 0.01).
* ``"adaptive"`` (default): the PSF given in the config, else the blind estimate
  (:func:`sem_physics.estimate_degradation`) of each image; the regularisation (Wiener) or the
  iteration count (Richardson-Lucy) follows from the image's noise level by the discrepancy
  principle (Morozov): stop regularising less once the residual ``y - h ⊛ x`` is as large as
  the noise itself.

Boundaries: scikit-image's implementations treat the image as periodic (Wiener, FFT) or as
zero outside (Richardson-Lucy); both ring or darken at the borders of a non-periodic micrograph.
With ``boundary="reflect"`` (the default) the image is first extended by half a kernel on every
side by half-sample symmetric reflection -- the convention of the forward model in
``sem_physics`` -- deconvolved, and cropped back. ``boundary="none"`` uses the image as it is.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np
import scipy.fft as sfft
from pydantic import ConfigDict, Field
from sem_physics import PSFParams, airy_psf
from sem_physics.convolution import kernel_transfer as transfer  # re-exported
from sem_physics.convolution import symmetric_indices
from sem_physics.fields import NoBoolNumbers

from ..restorer import check_image

__all__ = [
    "DEFAULT_PSF",
    "NOISE_VAR_HINT",
    "UNIFORM_IMAGE_NOTE",
    "DeconvBoundary",
    "DeconvConfig",
    "DeconvPreset",
    "DeconvRestorer",
    "PSFChoice",
    "choose_psf",
    "fixed_psf",
    "irfft2_inplace",
    "pad_reflect",
    "transfer",
]

DeconvBoundary = Literal["reflect", "none"]
DeconvPreset = Literal["adaptive", "paper"]

DEFAULT_PSF = PSFParams(rx_px=15.5, ry_px=15.5, beta=1.95, theta_rad=0.0)
#: Smallest noise variance used (grey levels^2): the quantisation noise of 8-bit data, 1/12.
#: A noise-free float image would otherwise ask for no regularisation at all.
MIN_NOISE_VAR = 1.0 / 12.0
#: How the noise-floor note asks for the noise variance: the config setting as Python gives it
#: (``get_restorer(..., noise_var=...)``); a command line names its own spelling in its place.
NOISE_VAR_HINT = "(noise_var=...)"
#: What is said of a uniform image (every pixel the same), which no PSF or noise level changes:
#: the note of a deconvolution given one, and ``sem restore``'s error when the PSF is to be
#: estimated (``--psf`` cannot help there).
UNIFORM_IMAGE_NOTE = (
    "uniform image (every pixel the same): nothing to restore, whatever the PSF (a blur leaves "
    "a uniform image as it is); check that the file holds the micrograph meant (not a blank "
    "frame)"
)


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


@dataclass(frozen=True)
class PSFChoice:
    """The PSF and noise level a deconvolution used, and where they came from."""

    psf: PSFParams
    source: str  # "given", "paper" or "estimated" (with the reason when the estimate failed)
    noise_var: float | None  # mean noise variance, grey levels^2 (None: not needed)
    estimate: Any = None  # the DegradationEstimate when one was made
    noise_note: str | None = (
        None  # why the noise level is the floor, when it could not be estimated
    )
    estimate_s: float = field(default=0.0, compare=False)  # seconds the blind estimate took

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready record for the restorer's ``last_params``."""
        out: dict[str, Any] = {
            "psf": self.psf.model_dump(),
            "psf_source": self.source,
            "noise_var": self.noise_var,
        }
        if self.noise_note is not None:
            out["noise_note"] = self.noise_note
        if self.estimate is not None:
            out["estimate"] = self.estimate.model_dump(mode="json")
        return out


def choose_psf(
    image: np.ndarray,
    preset: DeconvPreset,
    psf: PSFParams | None,
    noise_var: float | None,
) -> PSFChoice:
    """The PSF (and, for the adaptive preset, the noise variance) to deconvolve ``image`` with.

    The blind estimate is made only for what the config leaves open; an image on which it fails
    (too small, flat) falls back to the paper's PSF and records why. ``image`` is one
    :func:`~sem_baselines.check_image` has passed (and warned about, when on 0..1): the
    estimate does not repeat that warning.
    """
    if preset == "paper":
        return PSFChoice(psf or DEFAULT_PSF, "given" if psf else "paper", noise_var)
    if psf is not None and noise_var is not None:
        return PSFChoice(psf, "given", noise_var)
    from sem_physics import estimate_degradation
    from sem_physics.validation import UnitScaleWarning

    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings():  # check_image has warned once already
            warnings.simplefilter("ignore", UnitScaleWarning)
            est = estimate_degradation(image)
    except ValueError as err:  # too small to estimate anything
        var = noise_var if noise_var is not None else MIN_NOISE_VAR
        note = None
        if image.size and np.ptp(image) == 0:  # every PSF and noise level leave it as it is
            note = UNIFORM_IMAGE_NOTE
        elif noise_var is None:  # the floor regularises as little as an 8-bit image's rounding
            note = (
                f"noise level not estimated ({err}): the deconvolution used the floor "
                f"noise_var={MIN_NOISE_VAR:.3g} grey levels², little regularisation for a noisy "
                f"image; give the noise variance if known {NOISE_VAR_HINT}"
            )
        spent = time.perf_counter() - t0
        if psf is not None:  # only the noise level was to be estimated
            return PSFChoice(psf, "given", var, noise_note=note, estimate_s=spent)
        source = f"paper (no estimate: {err})"
        return PSFChoice(DEFAULT_PSF, source, var, noise_note=note, estimate_s=spent)
    spent = time.perf_counter() - t0
    var = noise_var if noise_var is not None else max(est.noise_floor, MIN_NOISE_VAR)
    if psf is not None:
        return PSFChoice(psf, "given", var, est, estimate_s=spent)
    if est.rx_px is None:
        reason = "; ".join(est.quality.reasons)
        return PSFChoice(DEFAULT_PSF, f"paper (no estimate: {reason})", var, est, estimate_s=spent)
    return PSFChoice(est.psf_params(), "estimated", var, est, estimate_s=spent)


def irfft2_inplace(spec: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``scipy.fft.irfft2(spec, s=shape)``, bit for bit, overwriting ``spec``.

    ``irfft2`` makes a complex copy of ``spec`` for its first pass (along axis 0); here that
    pass runs in place, both passes unnormalised, and the one ``1 / (rows * cols)`` product
    pocketfft applies (its factor computed in long double) comes last: one spectrum-sized
    buffer less at the peak.
    """
    spec = sfft.ifft(spec, axis=0, norm="forward", overwrite_x=True)
    out = sfft.irfft(spec, n=shape[1], axis=1, norm="forward")
    return np.multiply(out, np.float64(1 / np.longdouble(shape[0] * shape[1])), out=out)


class DeconvConfig(NoBoolNumbers):
    """The settings both deconvolutions share; each adds its regularisation strength."""

    model_config = ConfigDict(extra="forbid")

    preset: DeconvPreset = Field(default="adaptive", description="adaptive or paper")
    psf: PSFParams | None = Field(
        default=None, description="PSF (radii in px); None = blind estimate (adaptive) or paper's"
    )
    noise_var: float | None = Field(
        default=None, ge=0, description="mean noise variance, grey levels^2; None = estimate"
    )
    tau: float = Field(default=1.0, gt=0, le=10, description="discrepancy factor")
    boundary: DeconvBoundary = Field(default="reflect", description="image extension")
    clip: bool = Field(default=True, description="clip the output to 0..255")


class DeconvRestorer:
    """``restore`` of both deconvolutions: choose the PSF (and the noise level where the
    discrepancy principle needs it), extend the image, deconvolve, crop back, clip.

    A subclass names its regularisation-strength field (``strength_field``: fixed when set,
    else the paper's ``paper_strength`` or, adaptive, chosen from the noise) and gives the two
    presets' deconvolutions (:meth:`paper_deconvolve`, :meth:`adaptive`). What was used is kept
    in ``last_params``.
    """

    config_cls: ClassVar[type[DeconvConfig]]
    strength_field: ClassVar[str]
    paper_strength: ClassVar[float]
    non_negative: ClassVar[bool] = False  # clip the extended image to >= 0 first

    def __init__(self, config: DeconvConfig | None = None) -> None:
        self.config = config or self.config_cls()
        self.last_params: dict[str, Any] = {}
        self.last_estimate_s = 0.0  # seconds the last restore spent on a blind estimate

    @staticmethod
    def paper_deconvolve(ext01: np.ndarray, kernel: np.ndarray, strength: float) -> np.ndarray:
        """The paper's deployment: scikit-image on the [0, 1] scale, its output clip off."""
        raise NotImplementedError

    def adaptive(
        self, ext: np.ndarray, kernel: np.ndarray, choice: PSFChoice, pad: int
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """The deconvolved extended image ``ext`` and the settings used (for ``last_params``)."""
        raise NotImplementedError

    def restore(self, image: np.ndarray) -> np.ndarray:
        y = check_image(image).astype(np.float64)
        cfg = self.config
        strength = getattr(cfg, self.strength_field)
        need_noise = cfg.preset == "adaptive" and strength is None
        choice = choose_psf(y, cfg.preset, cfg.psf, cfg.noise_var if need_noise else 0.0)
        self.last_estimate_s = choice.estimate_s
        radius = max(choice.psf.rx_px, choice.psf.ry_px)
        if radius > min(y.shape):
            raise ValueError(
                f"PSF radius {radius:g} px ({choice.source}) exceeds the image "
                f"({y.shape[0]} x {y.shape[1]} px): the blur leaves nothing to deconvolve"
            )
        kernel = airy_psf(choice.psf)
        pad = kernel.shape[0] // 2 if cfg.boundary == "reflect" else 0
        ext = pad_reflect(y, pad)
        del y  # only the extended copy is needed from here on
        if self.non_negative:
            np.clip(ext, 0.0, None, out=ext)  # ext is a fresh copy: clipped in place
        if cfg.preset == "paper":
            strength = self.paper_strength if strength is None else strength
            out = self.paper_deconvolve(ext / 255.0, kernel, strength) * 255.0
            used: dict[str, Any] = {self.strength_field: strength}
        else:
            out, used = self.adaptive(ext, kernel, choice, pad)
        self.last_params = {"preset": cfg.preset, **used, **choice.as_dict()}
        out = crop(out, pad)
        if cfg.clip:  # in place: ``out`` is the deconvolution's own array, a view at most
            np.clip(out, 0.0, 255.0, out=out)
        return out.astype(np.float32)
