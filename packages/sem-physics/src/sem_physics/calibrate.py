"""The defocus PSF measured from a focused and a defocused image of the same field of view.

The blind estimate (:func:`sem_physics.estimate_degradation`) reads the PSF off one image's
power spectrum, which a line pattern's few harmonics or a noisy fast scan leave open (a
28 x 10 px blur on line images read as 17 x 11 px). With a focused reference of the same area
(a calibration sample imaged in focus and at the working defocus, or a slow focused frame beside
fast defocused ones) the PSF is a measurement: ``y = a (x ⊛ h) + b + noise`` is fitted directly,
``h`` the simulator's own Airy PSF (:func:`sem_physics.airy_psf`), by least squares over the
pixels whose blur lies wholly inside the frame, with the stage drift between the two frames (a
sub-pixel shift, started from phase correlation) fitted too. Both images are cropped to their
centred ``MAX_SIDE_PX`` square at most (the fit's cost; the PSF does not vary across the frame
in this model).

Uncertainties are one standard deviation: the fit's (its Jacobian and residual variance) and,
for the radii, a model term of ``RADIUS_SYST`` (the simulator's kernel grows in steps).
The residual is also compared with the defocused image's own noise (its blind estimate): a
residual well above it (``MISFIT_RATIO``) means the pair is not one field of view blurred by one
Airy PSF (rotation or scale between the frames, charging, a different area), and the estimate
says so. ``beta`` is not fitted: it moves the OTF by a few per cent only (U(1.9, 2.0) in the
paper) and is given.
"""

from __future__ import annotations

import math
import time

import numpy as np
import scipy.fft as sfft
from pydantic import BaseModel, ConfigDict, Field

from .convolution import kernel_transfer
from .estimate import _geo_to_psf, estimate_degradation, geo_errors
from .psf import PSFParams, airy_psf, kernel_size
from .validation import validate_image

__all__ = ["PairEstimate", "estimate_psf_from_pair"]

MIN_SIDE_PX = 64  # below this no interior is left for a useful blur
MAX_SIDE_PX = 768  # the fit uses the centred square of at most this side
MISFIT_RATIO = 1.5  # residual variance / the defocused image's noise variance above which: flag
GOOD_FIT = 1.05  # ... below which the other starts are skipped
MAX_DRIFT_FRACTION = 0.15  # a misfit with a larger drift: no common field of view?
SHARED_NOISE_RATIO = 0.5  # residual variance / noise below which the frames share their noise
MIN_RESOLVED_PX = 1.0  # a smaller fitted radius: no resolvable blur
RADIUS_SYST = 0.015  # relative model error of the radii, added to the fit's in quadrature
EDGE_MARGIN_PX = 4  # left out besides blur and drift: a frame's own edge rows and columns
MAX_EVALUATIONS = 300  # model evaluations per start (a good pair converges in about 100)
_MIN_RADIUS_PX = 0.3
_STARTS = (1.0, 0.6, 1.6)  # radius multipliers of the blind estimate tried as starts


class PairEstimate(BaseModel):
    """The PSF, gain, offset and drift that map a focused image onto a defocused one.

    Radii in pixels (``rx_px >= ry_px``), angle in radians in [0, pi), ``gain`` and ``offset``
    of ``y = gain (x ⊛ h) + offset`` on the 0..255 scale, ``shift_px`` the (row, column) drift
    of the defocused frame against the focused one, ``residual_rms`` the root-mean-square misfit
    in grey levels and ``noise_rms`` the defocused image's own noise (its blind estimate).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    rx_px: float
    rx_px_err: float
    ry_px: float
    ry_px_err: float
    theta_rad: float
    theta_rad_err: float
    beta: float = Field(description="Airy exponent (given, not fitted)")
    gain: float
    gain_err: float
    offset: float
    offset_err: float
    shift_px: tuple[float, float] = Field(description="(rows, columns) drift, px")
    residual_rms: float = Field(description="misfit of the fitted model, grey levels")
    noise_rms: float = Field(description="the defocused image's noise, grey levels")
    pixels_fitted: int
    shape: tuple[int, int] = Field(description="(rows, cols) of the images given")
    seconds: float
    reasons: list[str] = Field(default_factory=list, description="why not to trust it, if any")

    @property
    def ok(self) -> bool:
        """No reason to distrust the estimate."""
        return not self.reasons

    def psf_params(self) -> PSFParams:
        """The measured PSF for :func:`sem_physics.airy_psf` (or ``sem restore --psf``)."""
        return PSFParams(
            rx_px=self.rx_px, ry_px=self.ry_px, beta=self.beta, theta_rad=self.theta_rad
        )


def _psf_to_geo(rx: float, ry: float, theta: float) -> np.ndarray:
    e = math.log(max(rx, _MIN_RADIUS_PX) / max(ry, _MIN_RADIUS_PX))
    return np.array(
        [0.5 * math.log(max(rx, _MIN_RADIUS_PX) * max(ry, _MIN_RADIUS_PX)),
         e * math.cos(2 * theta), e * math.sin(2 * theta)]
    )  # fmt: skip


class _PairModel:
    """``a (x ⊛ h) + b`` with ``x`` shifted by ``s``, on the pixels whose blur (``border`` px)
    and drift (``drift``: rows, columns) lie inside the frame, at least 32 px a side."""

    def __init__(
        self,
        x: np.ndarray,
        y: np.ndarray,
        beta: float,
        border: int,
        drift: tuple[float, float],
        limit: float,
    ) -> None:
        self.shape = x.shape
        self.beta = beta
        self.border = border
        self.limit = limit
        self.spec = sfft.rfft2(x)
        self.fy = sfft.fftfreq(x.shape[0])[:, None]
        self.fx = sfft.rfftfreq(x.shape[1])[None, :]
        self.inner = tuple(_inside(n, border, d) for n, d in zip(x.shape, drift, strict=True))
        self.y = y[self.inner].ravel()

    def predict(self, p: np.ndarray) -> np.ndarray:
        rx, ry, theta = _geo_to_psf(p[:3])
        rx, ry = min(rx, self.limit), min(ry, self.limit)  # the kernel never outgrows the crop
        kernel = airy_psf(PSFParams(rx_px=rx, ry_px=ry, beta=self.beta, theta_rad=theta))
        ramp = np.exp(-2j * np.pi * (self.fy * p[5] + self.fx * p[6]))
        blurred = sfft.irfft2(self.spec * kernel_transfer(kernel, self.shape) * ramp, s=self.shape)
        return p[3] * blurred[self.inner].ravel() + p[4]

    def residual(self, p: np.ndarray) -> np.ndarray:
        return self.predict(p) - self.y

    def blur_reaches_past(self, radius: float) -> bool:
        """Whether a blur of ``radius`` (as the model clamps it) reaches past ``border``."""
        return _blur_px(min(radius, self.limit)) > self.border


def _check_max_side(value: object) -> None:
    """Refuse a ``max_side_px`` that is no integer >= MIN_SIDE_PX, naming it."""
    ok = isinstance(value, int | np.integer) and not isinstance(value, bool)
    if not (ok and value >= MIN_SIDE_PX):  # type: ignore[operator]
        raise ValueError(f"max_side_px must be an integer >= {MIN_SIDE_PX}, got {value!r}")


def _crop(a: np.ndarray, side: int) -> np.ndarray:
    h, w = a.shape
    top, left = max(0, (h - side) // 2), max(0, (w - side) // 2)
    return a[top : top + min(h, side), left : left + min(w, side)]


def _drift(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """(rows, cols) shift that moves ``x`` onto ``y`` (phase correlation of the mean-free
    images, 0.1 px: its peak is found in magnitude, so an inverted contrast registers too) and
    the sign of their correlation once registered (-1: inverted contrast)."""
    from skimage.registration import phase_cross_correlation

    xc, yc = x - x.mean(), y - y.mean()
    shift, _, _ = phase_cross_correlation(yc, xc, upsample_factor=10, normalization=None)
    fy, fx = sfft.fftfreq(x.shape[0])[:, None], sfft.rfftfreq(x.shape[1])[None, :]
    ramp = np.exp(-2j * np.pi * (fy * shift[0] + fx * shift[1]))
    corr = float(np.sum(sfft.irfft2(sfft.rfft2(xc) * ramp, s=x.shape) * yc))
    return float(shift[0]), float(shift[1]), 1.0 if corr >= 0 else -1.0


def estimate_psf_from_pair(
    focused: np.ndarray,
    defocused: np.ndarray,
    *,
    beta: float = 1.95,
    max_side_px: int = MAX_SIDE_PX,
) -> PairEstimate:
    """Fit the Airy PSF, gain, offset and drift that turn ``focused`` into ``defocused``.

    Parameters
    ----------
    focused, defocused : (H, W) images of the same field of view at the same pixel size, on the
        0..255 scale (:func:`sem_physics.read_image` gives that), info bars removed.
    beta : Airy exponent assumed (not fitted).
    max_side_px : the fit uses the centred square of at most this side (speed); an integer
        >= 64 (the smallest image side the fit takes).

    Examples
    --------
    >>> from sem_physics import DegradationParams, degrade, make_sample, estimate_psf_from_pair
    >>> x = make_sample("texture", (256, 256))
    >>> p = DegradationParams(rx_px=9, ry_px=5, beta=1.95, theta_rad=0.5, gain=1.05,
    ...                       offset=12, sigma=3, dose=30)
    >>> est = estimate_psf_from_pair(x, degrade(x, p, rng=0))
    >>> abs(est.rx_px - 9) < 0.5 and abs(est.ry_px - 5) < 0.5 and abs(est.gain - 1.05) < 0.02
    True
    """
    t0 = time.perf_counter()
    x = validate_image(focused, "focused image")
    y = validate_image(defocused, "defocused image")
    if x.shape != y.shape:
        raise ValueError(
            f"the focused image is {x.shape[0]} x {x.shape[1]} px and the defocused one "
            f"{y.shape[0]} x {y.shape[1]} px: the pair must show the same field of view at the "
            "same pixel size"
        )
    if min(x.shape) < MIN_SIDE_PX:
        raise ValueError(
            f"images of shape {x.shape} are too small: both sides must be >= {MIN_SIDE_PX} px"
        )
    if not 0 < beta <= 10:
        raise ValueError(f"beta must be in (0, 10], got {beta}")
    for name, img in (("focused", x), ("defocused", y)):
        if float(img.min()) == float(img.max()):
            raise ValueError(f"the {name} image is uniform ({float(img.min()):g}): nothing to fit")
    _check_max_side(max_side_px)
    shape = x.shape
    x, y = _crop(x, max_side_px), _crop(y, max_side_px)
    blind = estimate_degradation(y, beta=beta)
    noise_var = max(blind.noise_floor, 1e-12)
    if blind.rx_px is not None and blind.ry_px is not None and blind.theta_rad is not None:
        start_psf = (blind.rx_px, blind.ry_px, blind.theta_rad)
    else:
        start_psf = (3.0, 3.0, 0.0)
    dy, dx, sign = _drift(x, y)
    side = min(x.shape)
    limit = side / 6  # the largest radius whose blur leaves an interior
    gain0 = sign * float(np.std(y) / max(np.std(x), 1e-12))
    p0s = []
    for scale in _STARTS:
        r0 = min(max(start_psf[0] * scale, _MIN_RADIUS_PX), limit)
        geo0 = _psf_to_geo(r0, min(max(start_psf[1] * scale, _MIN_RADIUS_PX), r0), start_psf[2])
        p0s.append(np.r_[geo0, gain0, float(y.mean() - gain0 * x.mean()), dy, dx])
    # One interior for every start (their costs compare): the blur of twice the largest start;
    # a fit whose blur reaches past it is fitted again inside its own blur's border.
    r_top = min(max(start_psf[0] * max(_STARTS), _MIN_RADIUS_PX), limit)
    model = _PairModel(x, y, beta, _blur_border(2 * r_top, side), (dy, dx), limit)
    fit = _fit(model, p0s, noise_var, limit)
    rx = _geo_to_psf(fit.x[:3])[0]
    if model.blur_reaches_past(rx):
        drift = (float(fit.x[5]), float(fit.x[6]))
        model = _PairModel(x, y, beta, _blur_border(rx, side), drift, limit)
        fit = _fit(model, [fit.x], noise_var, limit)
    rx, ry, theta = _geo_to_psf(fit.x[:3])
    rx, ry = min(rx, limit), min(ry, limit)  # as the model used them
    n, k = model.y.size, fit.x.size
    res_var = float(2 * fit.cost / max(n - k, 1))
    try:
        cov = np.linalg.inv(fit.jac.T @ fit.jac) * res_var
    except np.linalg.LinAlgError:
        cov = np.full((k, k), np.inf)
    rx_err, ry_err, th_err = geo_errors(fit.x[:3], cov[:3, :3])
    # The model term: the simulator's kernel grows in steps (side ceil(6 R)), which the fit sees
    # as small jumps of the cost; radii come back within 1-3 % (tests/test_calibrate.py).
    rx_err, ry_err = math.hypot(rx_err, RADIUS_SYST * rx), math.hypot(ry_err, RADIUS_SYST * ry)
    reasons = _pair_reasons(res_var / noise_var, rx, float(fit.x[3]), fit.x[5:7], model, limit)
    theta_err = th_err if rx / ry >= 1.05 else math.pi / math.sqrt(12)
    return PairEstimate(
        rx_px=rx,
        rx_px_err=rx_err,
        ry_px=ry,
        ry_px_err=ry_err,
        theta_rad=theta,
        theta_rad_err=theta_err,
        beta=beta,
        gain=float(fit.x[3]),
        gain_err=float(math.sqrt(max(cov[3, 3], 0.0))),
        offset=float(fit.x[4]),
        offset_err=float(math.sqrt(max(cov[4, 4], 0.0))),
        shift_px=(float(fit.x[5]), float(fit.x[6])),
        residual_rms=math.sqrt(res_var),
        noise_rms=math.sqrt(noise_var),
        pixels_fitted=int(n),
        shape=(int(shape[0]), int(shape[1])),
        seconds=time.perf_counter() - t0,
        reasons=reasons,
    )


def _blur_border(radius: float, side: int) -> int:
    """Pixels a blur of ``radius`` reaches (its kernel's half side), at most a third of ``side``."""
    return min(_blur_px(radius), side // 3)


def _blur_px(radius: float) -> int:
    """How far a blur of ``radius`` reaches: its kernel's half side (px)."""
    return kernel_size(max(radius, _MIN_RADIUS_PX), 1.0) // 2


def _inside(n: int, border: int, drift: float) -> slice:
    """The rows (or columns) of ``n`` whose blur and drifted source lie in the frame: a drift
    of ``d`` px takes the first ``d`` (or last ``-d``) away, the blur ``border`` and
    ``EDGE_MARGIN_PX`` at each end;
    at least 32 are kept (the blur then reaches past them, which the estimate says)."""
    first = border + max(0, math.ceil(drift)) + EDGE_MARGIN_PX
    last = n - border - max(0, math.ceil(-drift)) - EDGE_MARGIN_PX
    if last - first < 32:
        mid = min(max((first + last) // 2, 16), n - 16)
        first, last = mid - 16, mid + 16
    return slice(first, last)


def _fit(model: _PairModel, starts: list[np.ndarray], noise_var: float, limit: float):
    """The least-squares fit of ``model`` with the lowest cost over ``starts`` (the others are
    skipped once one reaches the noise)."""
    from scipy.optimize import least_squares

    e_max = 2 * math.log(limit / _MIN_RADIUS_PX)  # no ellipse beyond the radius bound
    lo = np.r_[math.log(_MIN_RADIUS_PX), -e_max, -e_max, -np.inf, -np.inf, -np.inf, -np.inf]
    hi = np.r_[math.log(limit), e_max, e_max, np.inf, np.inf, np.inf, np.inf]
    best = None
    for p0 in starts:
        gain = max(abs(float(p0[3])), 1e-3)
        fit = least_squares(model.residual, np.clip(p0, lo + 1e-9, hi - 1e-9), bounds=(lo, hi),
                            x_scale=np.r_[0.1, 0.1, 0.1, 0.01 * gain, 1.0, 0.1, 0.1],
                            diff_step=1e-4, max_nfev=MAX_EVALUATIONS)  # fmt: skip
        if best is None or fit.cost < best.cost:
            best = fit
        if 2 * best.cost / model.y.size < GOOD_FIT * noise_var:
            break  # the fit reaches the noise: no other start can do better
    return best


def _pair_reasons(
    ratio: float, rx: float, gain: float, shift: np.ndarray, model: _PairModel, limit: float
) -> list[str]:
    """Why not to trust a pair fit (empty when nothing is wrong)."""
    reasons = []
    drift = float(math.hypot(*shift))
    side = min(model.shape)
    if ratio > MISFIT_RATIO:
        far = f"; the frames lie {drift:.0f} px apart" if drift > MAX_DRIFT_FRACTION * side else ""
        reasons.append(
            f"misfit: the residual variance is {ratio:.1f} x the defocused image's noise: the "
            "pair is not one field of view blurred by one Airy PSF (rotation or scale between "
            f"the frames, charging, another area?){far}"
        )
    if ratio < SHARED_NOISE_RATIO:
        reasons.append(
            f"the residual variance is {ratio:.2f} x the defocused image's noise: the two "
            "images share their noise (one frame given twice?)"
        )
    if rx < MIN_RESOLVED_PX:
        reasons.append(f"no resolvable blur: radius {rx:.2f} px, below {MIN_RESOLVED_PX:g} px")
    if gain <= 0:
        reasons.append(f"inverted contrast between the frames: gain {gain:.3f}")
    if model.blur_reaches_past(rx):
        reasons.append(f"radius {rx:.1f} px: its blur reaches past the fitted interior")
    if rx > 0.98 * limit:
        reasons.append(f"radius at the bound {limit:.0f} px (min side / 6 of the fitted crop)")
    return reasons
