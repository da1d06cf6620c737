"""Blind estimation of the defocus PSF and of the Poisson-Gaussian noise from one image.

The forward model ``y = N(a (x ⊛ h) + b)`` (arXiv 2604.05960, Sec. 3.1) leaves two traces
in a single observation:

* PSF. The OTF of the Airy^2 PSF is the autocorrelation of an elliptical disc: it vanishes
  beyond the ellipse ``rho(f) = |diag(Rx, Ry) R(theta) f| = 1`` (``f`` in cycles/px), where the
  image power spectrum falls to the flat noise floor. The periodogram of the periodic component
  of ``y`` (no edge leakage) is averaged in polar bins and fitted, in the log domain and with a
  robust loss, by ``N + (A_s |f|^-alpha_s + W) |OTF(rho(f))|^2``: a flat floor ``N``, a power-law
  image prior free in every angular sector ``s`` (line patterns are strongly anisotropic), a
  white term ``W`` and the simulator's own OTF (:func:`._spectrum.otf_table`). ``W`` is the
  focused image's own shot noise, which the defocus blurs like any other detail: being flat and
  isotropic it shows the OTF in every direction up to the cut-off, including the far end of an
  elongated PSF's short axis, where the image's power law has long fallen under the floor.
  Without it the free per-sector slopes imitate the OTF there and the short axis of elongated
  PSFs collapses (estimates of 0.1-0.4 px for true radii of 3-9 px, ``bench_estimate.py``).
  The ellipse is parametrised without a singularity at ``Rx = Ry``:
  ``rho^2 = r^2 f^T exp(E) f``, ``E = [[e1, e2], [e2, -e1]]``. The fit starts from two round
  ellipses and from the ellipse through the sectors' visible cut-offs, by absolute and by
  relative least squares; without the latter a PSF of 29.7 x 1.1 px (within the paper's
  ranges; its short-axis OTF reaches past Nyquist, so the pass band is a strip ``2 / Rx``
  cycles/px wide) was fitted as a round 10-16 px ellipse on line images, marked ok: the
  absolute fit, ruled by the sectors of low cut-off, then has no positive-definite solution.
* Misfit check. Past the fitted cut-off a defocused image holds noise only, so power clearly
  above the fitted model there (pooled per sector beyond ``rho = MISFIT_RHO``, more
  than ``MISFIT_EXCESS`` above it at more than ``MISFIT_Z`` standard errors) means the fit
  cut off signal; the estimate is flagged. It flags every far-off round fit of the case above
  (the fit as it was), none of the 288 estimates at the benchmark's random settings and 2 of
  144 at its extreme ones (``bench_estimate.py --settings extreme``). What it cannot see: a
  short radius of 1-3 px fitted as 3-5 px where the image's own spectrum fades into the noise
  before either cut-off (most of the extreme settings' remaining errors, see the benchmark).
* Signal-to-noise check. Per sector, the highest fitted ``rho`` whose bin stands clearly above
  the floor; the median over the sectors is about 0.8 where the cut-off is seen. Below
  ``VISIBLE_MIN`` (noisy fast scans, doses of about 1 electron per grey level or less) the
  spectrum sinks into the floor before the cut-off, the radii rest on its roll-off, which the
  image's own fall-off imitates (a line pattern's edge roughness along the lines, the
  reference's own blur), and come out too large with errors far too narrow (a round 5 px PSF
  on a line image at dose 0.3: 22 x 5 px +- 4.5, ok): the estimate is flagged.
  ``bench_estimate.py --settings lowdose`` (144 estimates): 84 flagged instead of 34; the ok
  ones' worst-axis error 90th percentile 109 % instead of 133 %, above 50 % in 26 instead of 46
  (most of the rest lie below the reference's own blur). At the random settings it flags 14 more
  of 288 (ok: 90th percentile 28.0 % instead of 31.0 %), at the extreme ones 3 more of 144.
  Sample line images at high dose are flagged too where only the reference's own (white) noise
  shows the cut-off along the lines. A flagged estimate's radius errors widen by
  ``LOW_SNR_ERR_SCALE x (1 - extent) x r`` (low-dose radii within 1 / 2 / 3 errors: 68 / 81 /
  85 % instead of 40 / 62 / 74 %).
* Leakage cross-check. The periodic component has no leakage from the frame's edges, but a
  line or contact pattern's harmonics stand 10^5-10^6 above the floor and, with a non-integer
  number of periods in the frame, leak into their neighbours enough to read as signal; a
  Tukey taper removes that leakage but widens each harmonic. The same fit on the tapered
  periodogram (started also from the first fit) must agree: the radius change counts as one
  more standard deviation of each radius, and a change above ``LEAKAGE_TOLERANCE`` is a flag
  (the harmonics bracket the cut-off, and the spectrum does not place it between them). A
  flagged estimate reports the midpoint of the two ellipses, the mean of their
  ``(log r, e1, e2)`` (``LEAKAGE_MIDPOINT``; see :func:`estimate_degradation` for why).
* Frequency sampling. The cut-off ``1 / R`` along an axis lies ``N / R`` frequency steps ``1 / N``
  from zero (``N`` the shorter side): on a small frame or under a large blur only a handful (a
  256 px frame and R = 20 px: 12.8, with one or two frequencies per polar bin there), and the fit
  places the cut-off to a few steps only, which its covariance does not see. Mostly it reads a
  round PSF as an ellipse with a short minor radius: 256 x 256 contact arrays with a 20 px blur
  read 12-15 px along the minor axis in most seeds, ok, with errors of 2-3 px. Each radius's
  error holds ``CUTOFF_STEPS_ERR x R^2 / N`` besides (the cut-off placed to 3 steps; ``R / N``
  relative per step). ``bench_estimate_coverage.py`` (generated images of the five kinds at
  128 x 128, 256 x 256 and 480 x 640, radii 2-30 px, 3 noise settings, 2 seeds; the 843 cases not
  below the image's own blur): the ok radii within 1 / 2 / 3 errors 77 / 97 / 99 % instead of
  62 / 90 / 97 %, ok estimates beyond 3 errors of the truth 4 instead of 23 (the 17 short ones
  all below 16 steps, where the coverage was 49 / 78 / 91 %); the 4 left are 2-3 px minor radii
  at the own-blur limit. Where the term makes the major radius uncertain by more than 30 %
  (above about a tenth of the shorter side) the "radius uncertain" flag names the steps: 41
  more of those cases flagged, all on the 128 and 256 px frames.
* Noise. Frequencies beyond the fitted ellipse carry noise only; their inverse transform ``n``
  is a noise image with variance ``c v(p)`` (``c`` the fraction of the spectrum kept) and the rest
  is the local mean ``z(p)``. The variance-versus-mean line ``v = z / dose + sigma^2``
  (Poisson-Gaussian, Foi et al. 2008) fitted on ``z`` bins gives ``dose`` and ``sigma``. Each
  bin's variance carries a model error of ``NOISE_BIN_ERR`` besides its statistics (a real
  micrograph's own structure reaches the noise band): without it, at doses below 1 electron
  per grey level, where sigma^2 is a fraction of a per cent of the variance, sigma lay within
  three of its errors in 81 % of ``bench_estimate.py --settings lowdose``. A clipped detector
  range cuts the variance of every bin whose noise reaches it (and bends the line: a bright
  fast scan read "no shot noise, sigma 32" for dose 0.15, sigma 2): bins within
  ``CLIP_REACH`` noise standard deviations of a level holding ``NOISE_CLIP_FRACTION`` of the
  pixels at the minimum or maximum leave the fit; with fewer than five left, sigma and dose are
  flagged as not measured and their errors span the whole noise.

``beta`` (U(1.9, 2.0) in the paper) moves the OTF by a few per cent only and is not identifiable
from one image: it is reported at the prior's midpoint with the prior's standard deviation.
Uncertainties are one standard deviation: the fit's statistical error combined with a model
term measured by ``benchmarks/bench_estimate.py`` and, for the radii, the frequency-sampling
term and the leakage cross-check's change.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections import OrderedDict

import numpy as np
import scipy.fft as sfft
from pydantic import BaseModel, ConfigDict, Field
from scipy import ndimage as ndi
from scipy.special import digamma, polygamma

from ._spectrum import otf_table, periodic_spectrum, polar_bins, rfft_weights
from .forward import validate_image
from .params import DegradationParams
from .psf import PSFParams
from .validation import MAX_GREY, refuse_negative_counts, scale_hint, warn_if_unit_scale

__all__ = [
    "DegradationEstimate",
    "EstimateQuality",
    "canonical_ellipse",
    "estimate_degradation",
    "estimate_errors",
]

MIN_SIDE_PX = 32  # below this nothing can be estimated
DOSE_CAP = 1e9  # the dose reported when no signal-dependent (shot) noise is found
SMALL_SIDE_PX = 128  # below this the estimate is flagged
BETA_PRIOR = (1.9, 2.0)
_MODEL_ERR = 0.15  # relative model error of one binned periodogram value
_RADIUS_SYST = 0.06  # relative model error of the radii (benchmark spread, added in quadrature)
_THETA_SYST = math.radians(3.0)
CUTOFF_STEPS_ERR = 3.0  # each radius's cut-off 1 / R is placed to this many frequency steps
_NOISE_SYST = 0.08  # relative model error of sigma and dose
_SATURATION_FRACTION = 0.01
_MIN_RADIUS_PX, _MAX_RADIUS_FRACTION = 0.5, 0.25
N_SECTORS = 24  # angular sectors over the half plane, each with its own image prior
WHITE_START = 0.3  # initial blurred white term W, as a fraction of the noise floor
_NG = 5  # global parameters: log r, e1, e2, log N (noise floor), log W (blurred white term)
ANISOTROPIC_START = True  # a third start from the ellipse through the sector cut-offs
RELATIVE_START = True  # a fourth: that ellipse by relative least squares (extreme elongation)
START_SCALES = (1.0, 0.75)  # initial radius multipliers; the fit with the lower cost wins
LM_RTOL = 1e-5  # stop when an iteration lowers the cost by less than this fraction
LOW_CUT = 0.5  # measured by bench_estimate: 0.3 and 0.65 give a larger 90th percentile
_MIN_SIGNAL_BINS = 8  # polar bins clearly above the floor needed to call the image structured
_MIN_BIN_PIXELS = 50  # pixels per intensity bin of the noise fit
_NOISE_BINS = 20  # intensity bins (quantiles) of the noise fit
TAPER = 0.3  # tapered fraction of each side in the cross-check's Tukey window
LEAKAGE_ERR_SCALE = 1.0  # that change (px) enters the radii's one-sigma errors times this
LEAKAGE_TOLERANCE = 0.25  # relative radius change under the taper above which the fit is flagged
LEAKAGE_MIDPOINT = True  # flagged: report the two fits' midpoint (estimate_degradation)
MISFIT_RHO = 1.25  # the misfit check pools the bins beyond this normalised frequency
MISFIT_Z, MISFIT_EXCESS = 8.0, 0.25  # ... and flags an excess above both (z, fraction)
VISIBLE_MIN = 0.6  # flag when the signal sinks into the floor below this rho (sector median)
LOW_SNR_ERR_SCALE = 1.0  # flagged: the radii's errors widen by this x (1 - visible extent) x r
VISIBLE_Z = 4.0  # a bin is signal when above the floor by this many standard errors
NOISE_BIN_ERR = 0.02  # relative model error of one intensity bin's noise variance
CLIP_REACH = 3.0  # a bin within this many noise stds of a clipped level leaves the noise fit
NOISE_CLIP_FRACTION = 1e-3  # ... a level holding this fraction of the pixels at the min or max
_MIN_CLEAR_BINS = 5  # fewer bins clear of the clipped levels: sigma and dose not measured


class EstimateQuality(BaseModel):
    """Why an estimate may not be trusted; ``ok`` when no flag is set."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    flat: bool = Field(default=False, description="no structure above the noise floor")
    too_small: bool = Field(default=False, description=f"a side below {SMALL_SIDE_PX} px")
    saturated: bool = Field(default=False, description="clipped pixels at the grey-level limits")
    unreliable: bool = Field(default=False, description="fit poorly constrained or at a bound")
    reasons: list[str] = Field(default_factory=list, description="one sentence per flag")
    notes: list[str] = Field(
        default_factory=list,
        description="what the estimate did that flags nothing but changes its numbers",
    )

    @property
    def ok(self) -> bool:
        """No flag set."""
        return not (self.flat or self.too_small or self.saturated or self.unreliable)


class DegradationEstimate(BaseModel):
    """Forward-model parameters read from one image, each with a one-sigma uncertainty.

    Radii in pixels, angle in radians (``rx_px >= ry_px``, ``theta_rad`` in [0, pi): the ellipse
    ``(Rx, Ry, theta)`` equals ``(Ry, Rx, theta + pi/2)``), ``sigma`` on the 0..255 scale,
    ``dose`` in electrons per grey level. PSF fields are None for a flat image.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    rx_px: float | None = Field(description="PSF scale along x' (major axis), px")
    rx_px_err: float | None = None
    ry_px: float | None = Field(description="PSF scale along y' (minor axis), px")
    ry_px_err: float | None = None
    theta_rad: float | None = Field(description="orientation of x' in [0, pi), rad")
    theta_rad_err: float | None = None
    beta: float = Field(description="Airy exponent (prior midpoint, not identifiable)")
    beta_err: float
    sigma: float = Field(ge=0, description="Gaussian read-noise std, 0..255 scale")
    sigma_err: float
    dose: float = Field(gt=0, description="electrons per grey level (Poisson term)")
    dose_err: float
    noise_floor: float = Field(description="mean noise variance over the image, grey levels^2")
    shape: tuple[int, int] = Field(description="(rows, cols) of the image analysed")
    method: str = "power-spectrum"
    seconds: float = Field(description="time taken")
    quality: EstimateQuality = Field(default_factory=EstimateQuality)

    def psf_params(self) -> PSFParams:
        """The estimated PSF for :func:`sem_physics.airy_psf` (ValueError for a flat image)."""
        if self.rx_px is None or self.ry_px is None or self.theta_rad is None:
            raise ValueError(f"no PSF estimate: {'; '.join(self.quality.reasons)}")
        return PSFParams(
            rx_px=self.rx_px, ry_px=self.ry_px, beta=self.beta, theta_rad=self.theta_rad
        )


# The estimates of recent images, by (pixel digest, shape, beta): one image is often estimated
# by several methods in one process (a benchmark case's deconvolutions and guides).
_RECENT_SIZE = 8
_RECENT: OrderedDict[tuple[bytes, tuple[int, ...], float], DegradationEstimate] = OrderedDict()
_RECENT_LOCK = threading.Lock()


# ----------------------------------------------------------------------------------------------
# PSF: parametric fit of the binned periodogram


def _ellipse_rho2(geo: np.ndarray, fx: np.ndarray, fy: np.ndarray) -> np.ndarray:
    """``rho^2 = r^2 f^T exp(E) f`` for ``geo = (log r, e1, e2)``."""
    log_r, e1, e2 = geo
    e = math.hypot(e1, e2)
    ch, shc = math.cosh(e), (math.sinh(e) / e if e > 1e-12 else 1.0)
    qxx, qyy, qxy = ch + shc * e1, ch - shc * e1, shc * e2
    return math.exp(2 * log_r) * (qxx * fx * fx + 2 * qxy * fx * fy + qyy * fy * fy)


def _geo_to_psf(geo: np.ndarray) -> tuple[float, float, float]:
    """``(Rx, Ry, theta)`` with ``Rx >= Ry`` and ``theta`` in [0, pi)."""
    log_r, e1, e2 = geo
    e = math.hypot(e1, e2)
    r = math.exp(log_r)
    theta = 0.5 * math.atan2(e2, e1) % math.pi
    return r * math.exp(e / 2), r * math.exp(-e / 2), theta


class _SpectrumFit:
    """Binned log-periodogram model ``log(N + A_s f^-alpha_s OTF(rho)^2)`` and its Jacobian."""

    def __init__(self, pbar: np.ndarray, bins, keep: np.ndarray, beta: float) -> None:
        # The mean of n periodogram values is Gamma(n)-distributed around the model: its log has
        # mean log(model) + digamma(n) - log(n) and variance trigamma(n).
        n = bins.count[keep]
        self.y = np.log(pbar[keep]) - (digamma(n) - np.log(n))
        self.w = 1.0 / np.sqrt(polygamma(1, n) + _MODEL_ERR**2)
        self.fx, self.fy = bins.fx[keep], bins.fy[keep]
        self.f2 = self.fx**2 + self.fy**2
        self.d, self.c = self.fx**2 - self.fy**2, self.fx * self.fy
        self.logf = 0.5 * np.log(self.f2)
        self.sector = bins.sector[keep]
        self.n_sectors = bins.n_sectors
        rho_tab, otf_tab = otf_table(beta)
        self.step = float(rho_tab[1] - rho_tab[0])
        # value and slope of each linear-interpolation segment (zero beyond the table)
        self.otf_seg = np.append(otf_tab, 0.0)
        self.dotf_seg = np.append(np.diff(otf_tab) / self.step, [0.0, 0.0])

    def residuals_jac(self, params: np.ndarray) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
        """Weighted residuals ``w (log P - model)`` and their sparse Jacobian.

        The Jacobian is returned as ``(G, JA, JS)``: ``G`` (n, 5) for
        ``(log r, e1, e2, log N, log W)``,
        and one column each for the amplitude and the slope of the bin's own sector.
        """
        ns = self.n_sectors
        log_r, e1, e2 = params[:3]
        floor = math.exp(params[3])
        white = math.exp(params[4])
        amp = params[_NG : _NG + ns][self.sector]
        slope = params[_NG + ns :][self.sector]
        e = math.hypot(e1, e2)
        ch = math.cosh(e)
        shc = math.sinh(e) / e if e > 1e-6 else 1.0 + e * e / 6
        g = (e * ch - math.sinh(e)) / e**3 if e > 1e-4 else 1.0 / 3.0
        aniso = e1 * self.d + 2 * e2 * self.c
        q = ch * self.f2 + shc * aniso
        r2 = math.exp(2 * log_r)
        rho = np.sqrt(r2 * q)
        pos = rho / self.step
        seg = np.minimum(pos.astype(np.intp), self.otf_seg.size - 1)
        dotf = self.dotf_seg[seg]
        otf = np.where(
            seg < self.otf_seg.size - 1, self.otf_seg[seg] + (pos - seg) * self.step * dotf, 0.0
        )
        prior = np.exp(amp - slope * self.logf)
        signal = prior * otf * otf
        wsig = white * otf * otf
        total = floor + signal + wsig
        res = self.w * (self.y - np.log(total))
        ds = -self.w * signal / total  # d residual / d log A_s
        drho = -self.w * (prior + white) * 2 * otf * dotf / total  # d residual / d rho
        dq1 = shc * e1 * self.f2 + g * e1 * aniso + shc * self.d
        dq2 = shc * e2 * self.f2 + g * e2 * aniso + shc * 2 * self.c
        half_r2_over_rho = r2 / (2 * np.maximum(rho, 1e-12))
        geo = np.stack(
            [
                drho * rho,
                drho * half_r2_over_rho * dq1,
                drho * half_r2_over_rho * dq2,
                -self.w * floor / total,
                -self.w * wsig / total,
            ],
            axis=1,
        )
        return res, (geo, ds, -self.logf * ds)


def _normal_equations(
    jac: tuple[np.ndarray, ...], wt: np.ndarray, r: np.ndarray, sector: np.ndarray, ns: int
) -> tuple[np.ndarray, ...]:
    """``J^T W J`` and ``J^T W r`` in blocks: (g x g, (ns,g,2), (ns,2,2)) and (g, (ns,2)).

    Assembled with ``einsum`` and ``bincount``: multithreaded BLAS on a loaded machine can be
    a hundred times slower than these few million multiply-adds.
    """
    geo, ja, js = jac
    gw = geo * wt[:, None]
    a_gg = np.einsum("ij,ik->jk", gw, geo)
    g_g = np.einsum("ij,i->j", gw, r)
    cols = (ja * wt, js * wt)
    ng = geo.shape[1]
    a_gs = np.empty((ns, ng, 2))
    a_ss = np.empty((ns, 2, 2))
    g_s = np.empty((ns, 2))
    for k, cw in enumerate(cols):
        for j in range(ng):
            a_gs[:, j, k] = np.bincount(sector, weights=geo[:, j] * cw, minlength=ns)
        a_ss[:, k, 0] = np.bincount(sector, weights=cw * ja, minlength=ns)
        a_ss[:, k, 1] = np.bincount(sector, weights=cw * js, minlength=ns)
        g_s[:, k] = np.bincount(sector, weights=cw * r, minlength=ns)
    return a_gg, a_gs, a_ss, g_g, g_s


def _inv2(m: np.ndarray) -> np.ndarray:
    """Inverse of a stack of 2x2 matrices (ns, 2, 2)."""
    det = m[:, 0, 0] * m[:, 1, 1] - m[:, 0, 1] * m[:, 1, 0]
    det = np.where(np.abs(det) > 1e-300, det, 1e-300)
    inv = np.empty_like(m)
    inv[:, 0, 0], inv[:, 1, 1] = m[:, 1, 1] / det, m[:, 0, 0] / det
    inv[:, 0, 1], inv[:, 1, 0] = -m[:, 0, 1] / det, -m[:, 1, 0] / det
    return inv


def _solve_blocks(
    blocks: tuple[np.ndarray, ...], lam: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Damped Gauss-Newton step by the Schur complement on the global parameters.

    Returns ``(step_global, step_sectors (ns, 2), inverse Schur complement)``; the latter is the
    covariance of the global parameters up to the residual variance. A nearly singular system
    (a saturated or featureless spectrum) may give steps that overflow: they come back
    non-finite, without numpy's warning, for the caller to damp harder.
    """
    a_gg, a_gs, a_ss, g_g, g_s = blocks
    a_gg = a_gg + lam * np.diag(np.maximum(np.diag(a_gg), 1e-12))
    a_ss = a_ss.copy()
    for k in range(2):
        a_ss[:, k, k] += lam * np.maximum(a_ss[:, k, k], 1e-12)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        dinv = _inv2(a_ss)
        pd = np.einsum("sjk,skl->sjl", a_gs, dinv)  # (ns, g, 2)
        schur = a_gg - np.einsum("sjl,sml->jm", pd, a_gs)
        rhs = g_g - np.einsum("sjl,sl->j", pd, g_s)
        schur_inv = np.linalg.inv(schur)
        step_g = -schur_inv @ rhs
        step_s = -np.einsum("skl,sl->sk", dinv, g_s + np.einsum("sjl,j->sl", a_gs, step_g))
    return step_g, step_s, schur_inv


def _robust_lm(
    fit: _SpectrumFit,
    x0: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    f_scale: float = 2.0,
    max_iter: int = 100,
) -> tuple[np.ndarray, float, np.ndarray]:
    """Levenberg-Marquardt with a soft-L1 loss (IRLS weights) and box bounds (clipping).

    Returns ``(params, robust cost, covariance of the global parameters / residual var)``.
    """
    ns = fit.n_sectors

    def cost_of(r: np.ndarray) -> float:
        return float(np.sum(2 * f_scale**2 * (np.sqrt(1 + (r / f_scale) ** 2) - 1)))

    def unpack(step_g: np.ndarray, step_s: np.ndarray) -> np.ndarray:
        return np.concatenate([step_g, step_s[:, 0], step_s[:, 1]])

    x = np.clip(x0, lower, upper)
    r, jac = fit.residuals_jac(x)
    cost, lam = cost_of(r), 1e-2
    schur_inv = np.full((_NG, _NG), np.inf)
    for _ in range(max_iter):
        wt = 1.0 / np.sqrt(1 + (r / f_scale) ** 2)
        blocks = _normal_equations(jac, wt, r, fit.sector, ns)
        improved = False
        for _ in range(10):
            try:
                step_g, step_s, _ = _solve_blocks(blocks, lam)
            except np.linalg.LinAlgError:
                lam *= 10
                continue
            if not (np.isfinite(step_g).all() and np.isfinite(step_s).all()):
                lam *= 10  # an overflowing step would be clipped to the bounds and taken
                continue
            x_new = np.clip(x + unpack(step_g, step_s), lower, upper)
            r_new, jac_new = fit.residuals_jac(x_new)
            cost_new = cost_of(r_new)
            if np.isfinite(cost_new) and cost_new < cost:
                improved = True
                break
            lam *= 6
        if not improved:
            break
        rel = (cost - cost_new) / max(cost, 1e-300)
        x, r, jac, cost = x_new, r_new, jac_new, cost_new
        lam = max(lam / 5, 1e-7)
        if rel < LM_RTOL:
            break
    wt = 1.0 / np.sqrt(1 + (r / f_scale) ** 2)
    try:
        _, _, schur_inv = _solve_blocks(_normal_equations(jac, wt, r, fit.sector, ns), 0.0)
    except np.linalg.LinAlgError:
        pass
    return x, cost, schur_inv


def _sector_cutoffs(pbar: np.ndarray, bins, keep: np.ndarray, floor: float) -> np.ndarray:
    """Per sector, the highest frequency whose bin is clearly above the floor (0: none)."""
    pb = pbar.reshape(bins.n_sectors, bins.n_rings)
    ok = keep.reshape(bins.n_sectors, bins.n_rings)
    f = np.hypot(bins.fx, bins.fy).reshape(bins.n_sectors, bins.n_rings)
    n = bins.count.reshape(bins.n_sectors, bins.n_rings)
    above = ok & (pb > floor * (1.0 + 6.0 / np.sqrt(np.maximum(n, 1))))
    return np.where(above, f, 0.0).max(axis=1)


def _ellipse_from_cutoffs(
    cut: np.ndarray, n_sectors: int, relative: bool = False
) -> tuple[float, float, float] | None:
    """``(log r, e1, e2)`` of the ellipse through the sectors' visible cut-offs, or None.

    ``rho = 1`` at the cut-off ``f_s`` in direction ``phi_s``: ``f_s^2 u^T Q u = 1`` is linear in
    the entries of ``Q = r^2 exp(E)``; solved by least squares over the sectors with a cut-off,
    on ``u^T Q u - 1 / f_s^2`` or, ``relative``, on ``f_s^2 u^T Q u - 1``. The former is ruled by
    the sectors of low cut-off; with an extremely elongated PSF (axis ratio >= 10) it often has
    no positive-definite solution, while the latter still finds the thin pass band.
    """
    has = cut > 0
    if has.sum() < 4:
        return None
    phi = (np.arange(n_sectors) + 0.5) / n_sectors * np.pi - np.pi / 2
    c, s = np.cos(phi[has]), np.sin(phi[has])
    design = np.stack([c * c, 2 * c * s, s * s], axis=1)
    target = 1.0 / cut[has] ** 2
    if relative:
        design, target = design / target[:, None], np.ones_like(target)
    qxx, qxy, qyy = np.linalg.lstsq(design, target, rcond=None)[0]
    det = qxx * qyy - qxy * qxy
    if not (qxx > 0 and qyy > 0 and det > 0):
        return None
    log_r = 0.25 * math.log(det)  # det Q = r^4
    half_tr = 0.5 * (qxx + qyy) / math.sqrt(det)  # cosh(e)
    e = math.acosh(max(half_tr, 1.0))
    psi = 0.5 * math.atan2(2 * qxy, qxx - qyy)
    e = min(e, 3.5)
    return log_r, e * math.cos(2 * psi), e * math.sin(2 * psi)


def _fit_psf(
    pbar: np.ndarray,
    bins,
    keep: np.ndarray,
    beta: float,
    max_radius: float,
    extra_starts: tuple[np.ndarray, ...] = (),
) -> tuple[np.ndarray, np.ndarray, float]:
    """Robust fit; returns ``(params, covariance of (log r, e1, e2), floor)``.

    ``extra_starts``: further ``(log r, e1, e2)`` to start from besides the two round ones and
    the ellipse through the sectors' visible cut-offs (by absolute and relative least squares).
    """
    f = np.hypot(bins.fx, bins.fy)
    outer = keep & (f > np.quantile(f[keep], 0.9))
    floor0 = float(np.median(pbar[outer]))
    cut = _sector_cutoffs(pbar, bins, keep, floor0)
    has = cut > 0
    r0 = 1.0 / max(float(np.percentile(cut[has], 75)), 1e-3) if has.any() else 10.0
    r0 = float(np.clip(r0, 1.0, max_radius))
    # The prior need only be a power law near the band edge: drop each sector's lowest
    # frequencies (below LOW_CUT x its visible cut-off), where real spectra bend.
    keep = keep & (f >= LOW_CUT * cut[bins.sector])
    fit = _SpectrumFit(pbar, bins, keep, beta)
    ns = bins.n_sectors
    amp0 = np.empty(ns)
    for s in range(ns):
        sector = keep & (bins.sector == s)
        low = sector & (f < 0.3 / r0)
        # a sector with no bin kept (a spectrum of a few harmonics, e.g. a binary pattern):
        # the kept bins of every sector give its start
        vals = pbar[low] if low.any() else pbar[sector] if sector.any() else pbar[keep]
        f_ref = float(np.median(f[low])) if low.any() else 0.3 / r0
        amp0[s] = math.log(max(float(np.median(vals)) - floor0, floor0 * 1e-3)) + 2 * math.log(
            f_ref
        )
    lo_r, hi_r = math.log(_MIN_RADIUS_PX), math.log(max_radius)
    lower = np.concatenate(
        [[lo_r, -4.0, -4.0, -50.0, -50.0], np.full(ns, -100.0), np.full(ns, -2.0)]
    )
    upper = np.concatenate([[hi_r, 4.0, 4.0, 50.0, 50.0], np.full(ns, 100.0), np.full(ns, 6.0)])
    starts = [(math.log(r0 * scale), 0.0, 0.0) for scale in START_SCALES]
    if ANISOTROPIC_START:
        for relative in (False, True) if RELATIVE_START else (False,):
            aniso = _ellipse_from_cutoffs(cut, bins.n_sectors, relative)
            if aniso is not None:
                starts.append(aniso)
    starts += [(float(g[0]), float(g[1]), float(g[2])) for g in extra_starts]
    best = None
    for geo0 in starts:
        x0 = np.concatenate(
            [[*geo0, math.log(floor0), math.log(WHITE_START * floor0)], amp0, np.full(ns, 2.0)]
        )
        x0[0] = float(np.clip(x0[0], lo_r, hi_r))
        x, cost, cov4 = _robust_lm(fit, x0, lower, upper)
        if best is None or cost < best[1]:
            best = (x, cost, cov4)
    assert best is not None  # starts holds the two round starts at least
    x, cost, cov4 = best
    dof = max(fit.y.size - x.size, 1)
    return x, cov4[:3, :3] * (2.0 * cost / dof), math.exp(x[3])


def _psf_errors(
    geo: np.ndarray, cov: np.ndarray, side_px: int
) -> tuple[float, float, float, float]:
    """The fit's errors of ``(Rx, Ry, theta)`` (:func:`geo_errors`) with the model terms, and
    the frequency-sampling part of the major radius's error (px).

    The sampling term: the cut-off ``1 / R`` along each axis lies ``side_px / R`` frequency
    steps ``1 / side_px`` from zero, and the fit places it to about ``CUTOFF_STEPS_ERR`` steps:
    ``R^2 CUTOFF_STEPS_ERR / side_px`` (see the module docstring, "Frequency sampling").
    """
    rx, ry, _ = _geo_to_psf(geo)
    rx_err, ry_err, th_err = geo_errors(geo, cov)
    sampling_x = CUTOFF_STEPS_ERR * rx * rx / side_px
    sampling_y = CUTOFF_STEPS_ERR * ry * ry / side_px
    return (
        math.hypot(rx_err, _RADIUS_SYST * rx, sampling_x),
        math.hypot(ry_err, _RADIUS_SYST * ry, sampling_y),
        math.hypot(th_err, _THETA_SYST),
        sampling_x,
    )


#: One-sigma error of an angle uniform on [0, pi): an orientation the data do not determine.
UNIFORM_ANGLE_ERR = math.pi / math.sqrt(12)


def angle_error_from_axes(delta_px: float, delta_err_px: float) -> float:
    """Lower bound of the orientation's one-sigma error (rad) from the axes' difference
    ``Rx - Ry`` and its error (px): the orientation is half the direction of the ellipticity
    vector, whose length is proportional to the difference, so ``sigma_theta =
    sigma_delta / (2 delta)``; :data:`UNIFORM_ANGLE_ERR` (undetermined) when the difference is
    within its error.

    Calibration (480 x 640 generated lines, contacts, texture and resist; doses 1.06, 5 and
    25.5; five PSFs of axis ratio 1.2-2.5 at 40, 75 and 130 deg; five seeds): of the 732
    estimates marked ok, the angle's error exceeded three stated errors 143 times with the
    fit's covariance alone (contacts at dose 1.06: 76 deg off, stated 14 deg), 79 times with
    this bound (78 of them on line patterns, whose comb of harmonics pulls the angle towards
    the lines: see the sem-physics README); the median stated error of the texture and contact
    cases rose from 5.6 and 7.1 deg to 8.7 and 11.1 deg.
    """
    if delta_px <= 0 or delta_err_px >= delta_px:
        return UNIFORM_ANGLE_ERR
    return min(0.5 * delta_err_px / delta_px, UNIFORM_ANGLE_ERR)


def geo_errors(geo: np.ndarray, cov: np.ndarray) -> tuple[float, float, float]:
    """One-sigma errors of ``(Rx, Ry, theta)`` from the covariance of ``(log r, e1, e2)``,
    propagated numerically (central differences)."""
    jac = np.zeros((3, 3))
    for i in range(3):  # central differences
        step = np.zeros(3)
        step[i] = 1e-5
        d = np.array(_geo_to_psf(geo + step)) - np.array(_geo_to_psf(geo - step))
        d[2] = (d[2] + math.pi / 2) % math.pi - math.pi / 2
        jac[:, i] = d / 2e-5
    var = np.clip(np.einsum("ij,jk,ik->i", jac, cov, jac), 0, None)
    return float(math.sqrt(var[0])), float(math.sqrt(var[1])), float(math.sqrt(var[2]))


# ----------------------------------------------------------------------------------------------
# Noise: variance versus mean of the out-of-band image


def _fit_noise(
    image: np.ndarray,
    spectrum: list[np.ndarray],
    geo: np.ndarray | None,
    saturated_levels: tuple[float, float] | None,
    clip_levels: tuple[float, float],
) -> tuple[float, float, float, float, float, str | None, bool]:
    """``(sigma, sigma_err, dose, dose_err, mean variance, clip note, unmeasured)`` from the
    noise-only frequencies: the note (None where clipping does not matter) says how many
    intensity bins the ``clip_levels`` (-inf / inf where none) took from the fit, and
    ``unmeasured`` that too few were left.

    ``spectrum``: a list holding the only reference to the periodic component's transform,
    which is taken from it, overwritten and freed here (a full-frame complex array).
    """
    h, w = image.shape
    fy = sfft.fftfreq(h)[:, None]
    fx = sfft.rfftfreq(w)[None, :]
    if geo is None:  # flat image: what structure there is lies below 1/4 cycles/px
        mask = (np.hypot(fx, fy) > 0.25).astype(np.float64)
    else:
        rho = np.sqrt(_ellipse_rho2(geo, fx, fy))
        mask = np.clip((rho - 1.1) / 0.2, 0.0, 1.0)  # smooth edge, no signal left beyond 1.1
        del rho
    keep_fraction = float((mask**2 * rfft_weights(w)[None, :]).sum() / (h * w))
    if keep_fraction < 0.02:
        # a radius below ~1.4 px leaves hardly any noise-only band: use the outer corners
        mask = (np.hypot(fx, fy) > 0.45).astype(np.float64)
        keep_fraction = float((mask**2 * rfft_weights(w)[None, :]).sum() / (h * w))
    # Full-frame arrays are released as soon as they are used (a 64-Mpx frame: 0.5 GB each).
    band = spectrum.pop()
    band *= mask  # in place: the same values as band * mask
    del mask
    noise = sfft.irfft2(band, s=(h, w), workers=-1)
    del band
    local = image - noise
    border = 4
    n2 = np.square(noise[border:-border, border:-border]).ravel()
    n2 /= keep_fraction
    del noise
    r_px = 1.0 if geo is None else math.exp(geo[0]) * math.exp(-0.5 * math.hypot(*geo[1:]))
    size = 2 * int(np.clip(0.35 * r_px, 0.5, 3.0)) + 1  # box mean: cuts the noise left in z
    local = ndi.uniform_filter(local, size, mode="reflect")
    z = local[border:-border, border:-border].ravel()
    del local
    if saturated_levels is not None:
        lo, hi = saturated_levels
        img = image[border:-border, border:-border].ravel()
        good = (img > lo) & (img < hi)
        z, n2 = z[good], n2[good]
    # A frame of 32-39 px a side has fewer than _NOISE_BINS bins' worth of pixels inside the
    # border: fewer bins then, as long as the line through them has _MIN_CLEAR_BINS points
    # (a 32 px side leaves 576 pixels: only saturated levels can leave too few).
    n_bins = min(_NOISE_BINS, z.size // (_MIN_BIN_PIXELS + 1))
    if n_bins < _MIN_CLEAR_BINS:
        raise ValueError(
            f"only {z.size} pixels away from the saturated levels and the border: "
            f"{_MIN_CLEAR_BINS * (_MIN_BIN_PIXELS + 1)} are needed to estimate the noise"
        )
    mean_var = float(n2.mean())
    edges = np.quantile(z[::7], np.linspace(0.0, 1.0, n_bins + 1))
    edges[0], edges[-1] = -np.inf, np.inf
    idx = np.searchsorted(edges, z, side="right")
    idx -= 1
    np.clip(idx, 0, n_bins - 1, out=idx)
    cnt = np.bincount(idx, minlength=n_bins).astype(np.float64)
    zm = np.bincount(idx, weights=z, minlength=n_bins) / np.maximum(cnt, 1)
    vm = np.bincount(idx, weights=n2, minlength=n_bins) / np.maximum(cnt, 1)
    del idx
    use = cnt > _MIN_BIN_PIXELS
    zm, vm, cnt = zm[use], vm[use], cnt[use]
    note, unmeasured = None, False
    clip_lo, clip_hi = clip_levels
    if math.isfinite(clip_lo) or math.isfinite(clip_hi):
        # A bin whose noise reaches a clipped level has its variance cut (at low dose its
        # skewed Poisson tail more than a Gaussian's would be), which bends the line: such bins
        # leave the fit; with too few left, the farthest from the clip stand in, unmeasured.
        reach = np.minimum(zm - clip_lo, clip_hi - zm) / np.sqrt(np.maximum(vm, 1e-12))
        clear = reach >= CLIP_REACH
        n_cut = int(len(zm) - clear.sum())
        if clear.sum() < _MIN_CLEAR_BINS:
            unmeasured = True
            clear = reach >= np.sort(reach)[-min(_MIN_CLEAR_BINS, reach.size)]
        note = (
            f"the noise reaches a clipped level in {n_cut} of {len(zm)} intensity bins"
            if n_cut
            else None
        )
        zm, vm, cnt = zm[clear], vm[clear], cnt[clear]
    # weighted least squares v = sigma^2 + z / dose; a bin mean's variance is 2 v^2 / (n c)
    # (statistics) plus (NOISE_BIN_ERR v)^2 (the noise band's own model error)
    wts = 1.0 / (np.maximum(vm, 1e-12) ** 2 * (2.0 / (cnt * keep_fraction) + NOISE_BIN_ERR**2))
    design = np.stack([np.ones_like(zm), zm], axis=1)
    a = design.T @ (design * wts[:, None])
    coef = np.linalg.solve(a, design.T @ (wts * vm))
    cov = np.linalg.inv(a)
    chi2 = float(np.sum(wts * (vm - design @ coef) ** 2)) / max(len(vm) - 2, 1)
    cov *= max(chi2, 1.0)
    s2, slope = float(coef[0]), float(coef[1])
    s2_err, slope_err = math.sqrt(cov[0, 0]), math.sqrt(cov[1, 1])
    if slope <= 0 or s2 < 0:  # one term absent: refit with the other alone
        if slope <= 0:
            slope, slope_err = 1e-9, max(slope_err, 1e-9)
            s2 = float(np.sum(wts * vm) / np.sum(wts))
        else:
            s2 = 0.0
            slope = float(np.sum(wts * vm * zm) / np.sum(wts * zm * zm))
    sigma = math.sqrt(max(s2, 0.0))
    sigma_err = s2_err / (2 * sigma) if sigma > 0 else math.sqrt(s2_err)
    dose = 1.0 / slope
    dose_err = dose * slope_err / slope
    sigma_err = math.hypot(sigma_err, _NOISE_SYST * sigma)
    dose_err = math.hypot(dose_err, _NOISE_SYST * dose)
    if unmeasured:  # anything from no read noise to all of it, from no shot noise to all of it
        sigma_err = max(sigma_err, sigma, math.sqrt(mean_var))
        dose_err = max(dose_err, dose)
    return sigma, sigma_err, dose, dose_err, mean_var, note, unmeasured


# ----------------------------------------------------------------------------------------------


def _excess_beyond_cutoff(
    pbar: np.ndarray, bins, params: np.ndarray, beta: float
) -> tuple[float, float, float]:
    """Power above the fitted model beyond the fitted ellipse: ``(z, excess, direction)``.

    On the fit's bins (``pbar``: their mean periodogram); in each sector the bins whose mean
    frequency lies beyond ``rho = MISFIT_RHO`` are pooled, and
    ``excess`` is their pixel-weighted mean of ``power / model - 1`` (the model there is the
    noise floor plus the OTF's faint tail), ``z`` that divided by its standard error
    ``1 / sqrt(pixels)`` (a periodogram value is exponential about its mean). Returned for the
    sector of the largest ``z`` (``direction`` its angle from the x axis, rad). Past the
    cut-off a defocused image holds noise alone, so a clear excess there is signal the fitted
    ellipse cuts off: the blur is shorter than fitted along that direction.
    """
    ns = bins.n_sectors
    rho = np.sqrt(_ellipse_rho2(params[:3], bins.fx, bins.fy))
    beyond = (bins.count > 0) & (rho > MISFIT_RHO)
    if not beyond.any():
        return 0.0, 0.0, 0.0
    sector = bins.sector
    logf = 0.5 * np.log(np.maximum(bins.fx**2 + bins.fy**2, 1e-300))
    amp, slope = params[_NG : _NG + N_SECTORS], params[_NG + N_SECTORS :]
    rho_tab, otf_tab = otf_table(beta)
    otf2 = np.interp(rho, rho_tab, otf_tab, right=0.0) ** 2
    prior = np.exp(np.minimum(amp[sector] - slope[sector] * logf, 700.0))
    model = math.exp(params[3]) + (prior + math.exp(params[4])) * otf2
    n = np.where(beyond, bins.count, 0.0)
    dev = np.where(beyond, pbar / model - 1.0, 0.0)
    pixels = np.bincount(sector, weights=n, minlength=ns)
    excess = np.bincount(sector, weights=n * dev, minlength=ns) / np.maximum(pixels, 1)
    z = excess * np.sqrt(pixels)
    k = int(np.argmax(z))
    return float(z[k]), float(excess[k]), (k + 0.5) / ns * math.pi - math.pi / 2


def _visible_extent(
    pbar: np.ndarray, bins, keep: np.ndarray, geo: np.ndarray, floor: float
) -> float:
    """How far the signal reaches towards the fitted cut-off: per sector the highest ``rho`` of
    the fitted ellipse whose bin stands ``VISIBLE_Z`` standard errors above the fitted floor
    (0 where none does), and the median over the sectors.

    About 0.8 where the cut-off is seen. At a low signal-to-noise ratio (e.g. doses below about
    1 electron per grey level) the spectrum sinks into the floor well before it, and the fit
    reads the radius off the roll-off alone, which the image's own fall-off imitates (a line
    pattern's edge roughness along the lines, the reference's own blur): the radii come out
    too large (``bench_estimate.py --settings lowdose``).
    """
    rho = np.sqrt(_ellipse_rho2(geo, bins.fx, bins.fy))
    above = keep & (pbar > floor * (1.0 + VISIBLE_Z / np.sqrt(np.maximum(bins.count, 1))))
    per_sector = np.where(above, rho, 0.0).reshape(bins.n_sectors, bins.n_rings).max(axis=1)
    return float(np.median(per_sector))


def _tukey(n: int, alpha: float) -> np.ndarray:
    """Tukey window of ``n`` points: cosine tapers over ``alpha / 2`` of each end, flat between
    (``scipy.signal.windows.tukey``, without importing ``scipy.signal``)."""
    x = np.linspace(0.0, 1.0, n)
    edge = np.minimum(x, 1.0 - x)
    return np.where(edge < alpha / 2, 0.5 * (1 - np.cos(2 * np.pi * edge / alpha)), 1.0)


def _tapered_power(y: np.ndarray) -> np.ndarray:
    """Periodogram of ``y`` under a separable Tukey window (``TAPER``), normalised by the
    window's energy (white noise reads as its variance, as in the untapered periodogram)."""
    h, w = y.shape
    win = np.outer(_tukey(h, TAPER), _tukey(w, TAPER))
    energy = float(np.sum(win * win))
    tapered = y - y.mean()
    tapered *= win  # in place, as every step below: two full-frame arrays alive at most
    del win
    spec = sfft.rfft2(tapered, workers=-1)
    del tapered
    power = spec.real**2
    power += spec.imag**2
    del spec
    power /= energy
    return power


def _leakage_check(
    y: np.ndarray, bins, geo: np.ndarray, beta: float, max_radius: float
) -> np.ndarray:
    """``(log r, e1, e2)`` of the same fit on the tapered periodogram, started also from ``geo``.

    The untapered periodogram of the periodic component has no leakage from the frame's edges,
    but a line or contact pattern's harmonics stand 10^5-10^6 above the noise floor and, with a
    non-integer number of periods in the frame, leak into the neighbouring bins enough to read
    as signal; a taper removes that leakage but widens each harmonic. Where the fit depends on
    either, the two disagree: the harmonics bracket the cut-off, and the spectrum does not fix
    the radius between them.
    """
    pbar = bins.mean(_tapered_power(y))
    keep = (bins.count >= 1) & (pbar > 0)
    params, _, _ = _fit_psf(pbar, bins, keep, beta, max_radius, (geo,))
    return params[:3]


def _extremes(image: np.ndarray) -> tuple[float, float, float, float]:
    """``(min, fraction of the pixels at it, max, fraction at it)``: one pass for the
    saturation flag and the noise fit's clipped levels."""
    lo, hi = float(image.min()), float(image.max())
    return lo, float(np.mean(image <= lo)), hi, float(np.mean(image >= hi))


def _clipped_levels(
    extremes: tuple[float, float, float, float], fraction: float
) -> tuple[float, float]:
    """The minimum and the maximum where each holds at least ``fraction`` of the pixels (a
    detector's clipped range), else -inf / inf."""
    lo, frac_lo, hi, frac_hi = extremes
    return (lo if frac_lo >= fraction else -math.inf), (hi if frac_hi >= fraction else math.inf)


def _saturation(
    extremes: tuple[float, float, float, float],
) -> tuple[tuple[float, float] | None, str | None]:
    """Clipped grey levels: a level holding >= 1 % of the pixels at the image's min or max."""
    lo, frac_lo, hi, frac_hi = extremes
    parts = []
    if frac_lo >= _SATURATION_FRACTION:
        parts.append(f"{100 * frac_lo:.1f} % of pixels at the minimum {lo:g}")
    if frac_hi >= _SATURATION_FRACTION:
        parts.append(f"{100 * frac_hi:.1f} % at the maximum {hi:g}")
    if not parts:
        return None, None
    levels = _clipped_levels(extremes, _SATURATION_FRACTION)
    return levels, "saturated: " + ", ".join(parts) + " (excluded from the noise fit)"


def estimate_degradation(image: np.ndarray, *, beta: float = 1.95) -> DegradationEstimate:
    """Estimate the defocus PSF and the noise of one SEM image (0..255 scale, info bar removed).

    Parameters
    ----------
    image : (H, W) grayscale, at least 32 px a side (128 px or more for a trusted estimate),
        within -382.5..382.5 and not substantially negative (the noise model is of counts >= 0:
        :func:`~sem_physics.validation.refuse_negative_counts`).
    beta : Airy exponent assumed for the OTF (not identifiable from one image).

    Returns
    -------
    :class:`DegradationEstimate`; ``estimate.psf_params()`` feeds :func:`sem_physics.airy_psf`.
    The PSF is the fit of the untapered periodogram, except where the leakage cross-check
    flags it (the tapered fit moves a radius by more than ``LEAKAGE_TOLERANCE``): then it is
    the midpoint of the two fits' ellipses (the mean of their ``(log r, e1, e2)``: geometric
    mean of the radii for aligned ellipses), unless the tapered fit sits at a bound of the fit
    (minor radius 0.5 px, major min side / 4). Neither periodogram is better everywhere, and
    the truth lies beyond either fit as often as between them, so no choice between the two
    (tapered fit, lower cross-fitted cost, larger radius) helped in every setting; the
    midpoint did (``benchmarks/bench_estimate.py``, worst-axis relative radius error of the
    flagged cases, median / 90th percentile / count above 25 %): at the paper's random
    settings, 26 of 288 flagged, 25.4 / 66.4 % / 14 with the first fit, 16.6 / 46.5 % / 6 with
    the midpoint, 20.5 / 59.1 % / 11 with the tapered fit; at the midpoint setting, 6 of 288
    flagged (contact lattices), 17.9 / 21.2 % / 0, 14.2 / 19.5 % / 0, and 44.2 / 50.4 % / 6
    with the tapered fit. The unflagged estimates are the first fit's, unchanged. The flag and
    its sentence stay, naming both fits; the radii's errors still hold the whole change
    between them, theta's the change of angle, and the noise is measured beyond the first
    fit's ellipse.
    The estimates of the last few images are kept: the same pixels again (every deconvolution
    and the physics guides of one image ask for it) return the same, immutable result, its
    ``seconds`` those of the first call, at the cost of one hash of the image.

    Examples
    --------
    >>> from sem_physics import DegradationParams, degrade, make_sample, estimate_degradation
    >>> p = DegradationParams(rx_px=8, ry_px=8, beta=1.95, theta_rad=0, gain=1, offset=10,
    ...                       sigma=4, dose=20)
    >>> est = estimate_degradation(degrade(make_sample("texture", (256, 256)), p, rng=0))
    >>> 6 < est.rx_px < 10.5 and 2.5 < est.sigma < 5.5
    True
    """
    t0 = time.perf_counter()
    y = validate_image(image)
    h, w = y.shape
    if min(h, w) < MIN_SIDE_PX:
        raise ValueError(
            f"image of shape {(h, w)} is too small: both sides must be >= {MIN_SIDE_PX} px"
        )
    if isinstance(beta, bool | np.bool_) or not isinstance(beta, int | float | np.number):
        raise TypeError(f"beta must be a number in (0, 10], got {beta!r}")
    if not 0 < beta <= 10:
        raise ValueError(f"beta must be in (0, 10], got {beta}")
    if float(y.min()) == float(y.max()):
        raise ValueError(f"uniform image (every pixel {float(y.min()):g}): nothing to estimate")
    refuse_negative_counts(y)  # the noise model is of counts >= 0
    peak = float(np.abs(y).max())
    if peak > MAX_GREY:  # sigma and dose are on the 0..255 scale
        raise ValueError(
            f"image reaches {peak:g}, beyond the 0..255 grey scale the noise model is on "
            f"({scale_hint(peak)})"
        )
    warn_if_unit_scale(y)
    key = (hashlib.blake2b(y.tobytes(), digest_size=16).digest(), y.shape, float(beta))
    with _RECENT_LOCK:
        if key in _RECENT:
            _RECENT.move_to_end(key)
            return _RECENT[key]
    estimate = _estimate(y, beta, t0)
    with _RECENT_LOCK:
        _RECENT[key] = estimate
        while len(_RECENT) > _RECENT_SIZE:
            _RECENT.popitem(last=False)
    return estimate


def _estimate(y: np.ndarray, beta: float, t0: float) -> DegradationEstimate:
    """The estimate of the validated float64 image ``y`` (:func:`estimate_degradation`)."""
    h, w = y.shape
    flags: dict[str, bool] = {}
    reasons: list[str] = []
    notes: list[str] = []
    if min(h, w) < SMALL_SIDE_PX:
        flags["too_small"] = True
        reasons.append(f"too small: shape {(h, w)}, a side below {SMALL_SIDE_PX} px")
    extremes = _extremes(y)
    sat_levels, sat_reason = _saturation(extremes)
    if sat_reason:
        flags["saturated"] = True
        reasons.append(sat_reason)

    periodic = periodic_spectrum(y - y.mean())[0]  # the smooth part is not needed
    bins = polar_bins(h, w, N_SECTORS)
    power = periodic.real**2  # in place from here: the same values, fewer full-frame arrays
    power += periodic.imag**2
    power /= h * w
    pbar = bins.mean(power)
    del power
    keep = (bins.count >= 1) & (pbar > 0)

    max_radius = _MAX_RADIUS_FRACTION * min(h, w)
    f = np.hypot(bins.fx, bins.fy)
    floor_guess = float(np.median(pbar[keep & (f > np.quantile(f[keep], 0.9))]))
    significant = keep & (pbar > floor_guess * (1.0 + 6.0 / np.sqrt(np.maximum(bins.count, 1))))
    flat = int(significant.sum()) < _MIN_SIGNAL_BINS
    geo = None
    rx = ry = theta = rx_err = ry_err = th_err = None
    if flat:
        flags["flat"] = True
        reasons.append("flat: no structure above the noise floor, the PSF is not estimated")
    else:
        params, cov, floor = _fit_psf(pbar, bins, keep, beta, max_radius)
        geo = params[:3]
    # The noise is measured beyond the first fit's ellipse, before the leakage cross-check,
    # which needs another full-frame transform: the spectrum, only referenced by the list
    # handed over, is freed by then (peak memory 36 instead of 48 bytes per pixel).
    spectrum = [periodic]
    del periodic
    noise_fit = _fit_noise(
        y, spectrum, geo, sat_levels, _clipped_levels(extremes, NOISE_CLIP_FRACTION)
    )
    if geo is not None:
        rx, ry, theta = _geo_to_psf(geo)
        rx_err, ry_err, th_err, sampling = _psf_errors(geo, cov, min(h, w))
        if not np.all(np.isfinite([rx_err, ry_err, th_err])) or rx_err > 0.3 * rx:
            flags["unreliable"] = True
            reason = f"unreliable: radius uncertain by {100 * rx_err / rx:.0f} %"
            if sampling**2 > rx_err**2 - sampling**2:  # the sampling term is most of it
                reason += (
                    f": the cut-off lies only {min(h, w) / rx:.1f} frequency steps from zero on "
                    f"the {min(h, w)} px side, too few to place it (a frame with more pixels "
                    "would place it better)"
                )
            reasons.append(reason)
        visible = _visible_extent(pbar, bins, keep, geo, floor)
        if visible < VISIBLE_MIN:
            flags["unreliable"] = True
            reasons.append(
                f"unreliable: low signal-to-noise: the spectrum sinks into the noise floor at "
                f"{100 * visible:.0f} % of the fitted cut-off (median over directions), so the "
                f"radii {rx:.1f} x {ry:.1f} px rest on its roll-off, which the image's own "
                "fall-off imitates (at doses below about 1 per grey level: too large)"
            )
            # the radii are then no measurement: their errors widen by what was not seen
            widen = LOW_SNR_ERR_SCALE * (1.0 - visible)
            rx_err, ry_err = math.hypot(rx_err, widen * rx), math.hypot(ry_err, widen * ry)
        # Power clearly above the fitted model past the fitted cut-off: the fit cut off signal
        # (a thin pass band missed, e.g. a short radius near or below 2 px); see MISFIT_Z.
        z, excess, direction = _excess_beyond_cutoff(pbar, bins, params, beta)
        if z > MISFIT_Z and excess > MISFIT_EXCESS:
            flags["unreliable"] = True
            reasons.append(
                f"unreliable: the fitted ellipse {rx:.1f} x {ry:.1f} px does not fit the "
                f"spectrum, which holds {100 * excess:.0f} % more power than the noise floor "
                f"past its cut-off at {math.degrees(direction) % 180:.0f} deg (the blur is "
                "shorter along that direction than fitted)"
            )
        # How much a tapered periodogram moves the fit is part of its uncertainty; a large move
        # is a flag of its own (bench_estimate: the flagged estimates' worst-axis error has a
        # median of 25 %, the others' 7 %), and the estimate is then the midpoint of the two fits
        # (see LEAKAGE_MIDPOINT).
        geo_t = _leakage_check(y, bins, geo, beta, max_radius)
        rx_t, ry_t, theta_t = _geo_to_psf(geo_t)
        # The orientation is that of the axes' difference: its error is at least the
        # difference's relative error over two (see angle_error_from_axes).
        fit_rx_err, fit_ry_err, _ = geo_errors(geo, cov)
        delta_err = math.hypot(fit_rx_err, fit_ry_err, (rx_t - ry_t) - (rx - ry))
        floor = angle_error_from_axes(rx - ry, delta_err)
        th_err = min(math.hypot(th_err, floor), UNIFORM_ANGLE_ERR)
        if floor >= UNIFORM_ANGLE_ERR:
            notes.append(
                f"orientation undetermined: the axes differ by {rx - ry:.2f} px, within that "
                f"difference's error ({delta_err:.2f} px); theta_rad_err is that of an angle "
                "uniform on [0, pi)"
            )
        rx_err = math.hypot(rx_err, LEAKAGE_ERR_SCALE * (rx_t - rx))
        ry_err = math.hypot(ry_err, LEAKAGE_ERR_SCALE * (ry_t - ry))
        change = max(abs(rx_t / rx - 1), abs(ry_t / ry - 1))
        if change > LEAKAGE_TOLERANCE:
            flags["unreliable"] = True
            reason = (
                f"unreliable: the spectrum does not fix the blur (a periodic pattern whose "
                f"harmonics bracket the OTF cut-off?): {rx:.1f} x {ry:.1f} px, but "
                f"{rx_t:.1f} x {ry_t:.1f} px from a tapered periodogram"
            )
            # A tapered fit at a bound of the fit is no measurement: keep the first fit then.
            if LEAKAGE_MIDPOINT and ry_t > 1.02 * _MIN_RADIUS_PX and rx_t < 0.98 * max_radius:
                dtheta = (theta_t - theta + math.pi / 2) % math.pi - math.pi / 2
                rx, ry, theta = _geo_to_psf(0.5 * (geo + geo_t))
                th_err = min(math.hypot(th_err, dtheta), UNIFORM_ANGLE_ERR)
                reason += (
                    f"; reported: their midpoint in log radius and ellipticity, "
                    f"{rx:.1f} x {ry:.1f} px"
                )
            reasons.append(reason)
        if ry < 2.0:
            flags["unreliable"] = True
            reasons.append(
                f"unreliable: radius {ry:.2f} px below 2 px, the OTF cut-off lies beyond Nyquist"
            )
        if rx > 0.98 * max_radius:
            flags["unreliable"] = True
            reasons.append(f"unreliable: radius at the bound {max_radius:.0f} px (min side / 4)")
        if rx / ry < 1.05:
            th_err = UNIFORM_ANGLE_ERR  # no orientation for a round PSF: uniform on [0, pi)
    sigma, sigma_err, dose, dose_err, mean_var, clip_note, unmeasured = noise_fit
    if unmeasured:
        flags["unreliable"] = True
        reasons.append(
            f"unreliable: sigma and dose not measured: {clip_note} (the variance there is "
            "cut), too few are left, and their errors span the whole noise"
        )
    elif clip_note and sat_reason:
        reasons[reasons.index(sat_reason)] = f"{sat_reason[:-1]}; {clip_note}, left out too)"
    elif clip_note:  # clipped pixels below the saturation flag's share: a note, not a flag
        notes.append(f"noise: {clip_note} (clipped grey levels), left out of the noise fit")
    beta_err = (BETA_PRIOR[1] - BETA_PRIOR[0]) / math.sqrt(12)
    return DegradationEstimate(
        rx_px=rx,
        rx_px_err=rx_err,
        ry_px=ry,
        ry_px_err=ry_err,
        theta_rad=theta,
        theta_rad_err=th_err,
        beta=beta,
        beta_err=beta_err,
        sigma=sigma,
        sigma_err=sigma_err,
        dose=min(dose, DOSE_CAP),
        dose_err=min(dose_err, 1e3 * DOSE_CAP),
        noise_floor=mean_var,
        shape=(h, w),
        seconds=time.perf_counter() - t0,
        quality=EstimateQuality(**flags, reasons=reasons, notes=notes),
    )


def canonical_ellipse(rx_px: float, ry_px: float, theta_rad: float) -> tuple[float, float, float]:
    """The same PSF ellipse written with ``rx_px >= ry_px`` and ``theta_rad`` in [0, pi)."""
    if rx_px < ry_px:
        rx_px, ry_px, theta_rad = ry_px, rx_px, theta_rad + math.pi / 2
    return rx_px, ry_px, theta_rad % math.pi


def estimate_errors(
    estimate: DegradationEstimate, truth: DegradationParams, min_axis_ratio: float = 1.5
) -> dict[str, float | None]:
    """Errors of an estimate against the true setting (both ellipses in canonical form).

    Relative errors (``estimate / truth - 1``) of ``rx_px``, ``ry_px``, ``sigma``, ``dose``; the
    angle error in degrees (modulo 180) where the true axis ratio is at least
    ``min_axis_ratio`` (else None: a round PSF has no orientation). PSF entries are None when
    the estimate has no PSF (flat image).
    """
    trx, try_, tth = canonical_ellipse(truth.rx_px, truth.ry_px, truth.theta_rad)
    out: dict[str, float | None] = {
        "sigma": estimate.sigma / truth.sigma - 1 if truth.sigma > 0 else None,
        "dose": estimate.dose / truth.dose - 1,
        "rx_px": None,
        "ry_px": None,
        "theta_deg": None,
    }
    if estimate.rx_px is None or estimate.ry_px is None or estimate.theta_rad is None:
        return out
    out["rx_px"] = estimate.rx_px / trx - 1
    out["ry_px"] = estimate.ry_px / try_ - 1
    if trx / try_ >= min_axis_ratio:
        diff = (estimate.theta_rad - tth + math.pi / 2) % math.pi - math.pi / 2
        out["theta_deg"] = abs(math.degrees(diff))
    return out
