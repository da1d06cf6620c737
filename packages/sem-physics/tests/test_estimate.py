"""Blind estimate of the PSF and the noise: accuracy targets on seeded degradations, flags."""

from __future__ import annotations

import math
import os
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from sem_physics import (
    SAMPLE_KINDS,
    DegradationParams,
    ParameterRanges,
    PSFParams,
    airy_psf,
    crop_info_bar,
    degrade,
    estimate_degradation,
    make_sample,
    read_image,
)
from sem_physics.estimate import canonical_ellipse, estimate_errors

# The paper's ranges with the radii restricted to the targets' 2-30 px.
RANGES = ParameterRanges(rx_px=(2.0, 30.0), ry_px=(2.0, 30.0))
# Real micrographs of the corpus, at least 1024 px wide, cropped to 600 x 800 (info bar removed),
# each sharp at the pixel scale (own blur below the targets' smallest radius, 2 px; checked in
# the test): a defocus radius below a reference's own blur cannot be measured by any method, as
# the composite OTF vanishes beyond the smaller of the two cut-offs.
REAL = [
    "usnistgov_grain-size-analysis-tools/sem_alpha_beta_ti_6al_4v.tif",
    "asadullahsajid_SEM-Soil-Morphology-Analyzer/soil_2_before_washing.tif",
    "ks00x_zeiss_tiff_meta/test.tif",
    "jni_skan/rbc1.tif",
    "jni_skan/inf1.tif",
    "kit-data-manager_tomo_mapper/SEM_Image-SliceImage-001.tif",
    "asadullahsajid_SEM-Soil-Morphology-Analyzer/soil_1_after_oxalic.tif",
    "vyastreb_sem2surface/P33_scale2s3_detectorB.tif",
    "nasa_pretrained-microscopy-models/EBC_010417-4_S2480023.tif",
]


def corpus_image(rel: str, shape: tuple[int, int] = (600, 800)) -> np.ndarray:
    folder = os.environ.get("SEM_CORPUS_DATA")
    if not folder or not (Path(folder) / rel).is_file():
        pytest.skip(f"SEM_CORPUS_DATA not set or without {rel}")
    img = read_image(Path(folder) / rel)
    return crop_info_bar(img.data, img.info_bar_rows)[: shape[0], : shape[1]]


def elongated(rng: np.random.Generator) -> DegradationParams:
    """A setting of the paper's ranges with an elongated PSF: axis ratio 3-10, radii 2-30 px."""
    base = RANGES.sample(rng)
    major = rng.uniform(9.0, 30.0)
    minor = max(major / rng.uniform(3.0, 10.0), 2.0)
    return base.model_copy(update={"rx_px": major, "ry_px": minor})


def summarise(images: list[np.ndarray], seed: int, every_elongated: int = 0) -> dict[str, float]:
    """Degrade each image with a seeded setting (every ``every_elongated``-th one elongated),
    estimate, and summarise the errors."""
    rng = np.random.default_rng(seed)
    radius, elong, theta, sigma, dose = [], [], [], [], []
    for i, img in enumerate(images):
        stretch = every_elongated and i % every_elongated == 0
        params = elongated(rng) if stretch else RANGES.sample(rng)
        est = estimate_degradation(degrade(img, params, rng=np.random.default_rng([seed, i])))
        err = estimate_errors(est, params)
        assert err["rx_px"] is not None, f"image {i}: {est.quality.reasons}"
        pair = [abs(err["rx_px"]), abs(err["ry_px"])]
        radius += pair
        if max(params.rx_px, params.ry_px) / min(params.rx_px, params.ry_px) >= 3:
            elong += pair
        if err["theta_deg"] is not None:
            theta.append(err["theta_deg"])
        sigma.append(abs(err["sigma"]))
        dose.append(abs(err["dose"]))
    return {
        "radius_median": float(np.median(radius)),
        "radius_p90": float(np.percentile(radius, 90)),
        "n_elongated": len(elong) // 2,
        "elongated_p90": float(np.percentile(elong, 90)) if elong else 0.0,
        "theta_median_deg": float(np.median(theta)) if theta else 0.0,
        "n_theta": len(theta),
        "sigma_median": float(np.median(sigma)),
        "dose_median": float(np.median(dose)),
    }


def check_targets(s: dict[str, float]) -> None:
    assert s["radius_median"] <= 0.10, s
    assert s["radius_p90"] <= 0.25, s
    assert s["theta_median_deg"] <= 10.0, s
    assert s["sigma_median"] <= 0.20, s
    assert s["dose_median"] <= 0.30, s


def test_targets_on_sample_images() -> None:
    images = [make_sample(k, (480, 640), seed=10 + i) for i in range(3) for k in SAMPLE_KINDS]
    s = summarise(images, seed=1)
    assert s["n_theta"] >= 3
    check_targets(s)


def test_targets_over_36_real_degradations_with_elongated_psfs() -> None:
    references = [corpus_image(rel) for rel in REAL]
    for rel, ref in zip(REAL, references, strict=True):  # the precondition: sharp references
        own = estimate_degradation(ref).rx_px
        assert own is not None and own < 2.0, (rel, own)
    s = summarise([references[i % len(REAL)] for i in range(36)], seed=2, every_elongated=3)
    assert s["n_elongated"] >= 12 and s["n_theta"] >= 15, s
    check_targets(s)
    # The elongated PSFs alone (axis ratio 3-10; their short axis has its cut-off at high
    # frequencies, often under the noise floor): a regression guard, as measured over seeds 2-6
    # of this set their 90th percentile is 17-36 % (without the blurred white term 18-45 %).
    assert s["elongated_p90"] <= 0.40, s


def test_tukey_taper_equals_scipy() -> None:
    from scipy.signal.windows import tukey
    from sem_physics.estimate import _tukey

    for n, alpha in [(7, 0.3), (480, 0.3), (641, 0.2), (640, 0.5)]:
        np.testing.assert_allclose(_tukey(n, alpha), tukey(n, alpha), atol=1e-12)


def _blur_extent_px(rx: float, ry: float, theta: float, phi: float) -> float:
    """1 / OTF cut-off along the direction ``phi`` (rad from x) of the ellipse (Rx, Ry, theta)."""
    return math.hypot(rx * math.cos(phi - theta), ry * math.sin(phi - theta))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_line_pattern_past_its_second_harmonic_is_flagged(seed: int) -> None:
    # Vertical lines (pitch ~38 px, a non-integer number of periods in the frame), the long
    # axis of the PSF 23 degrees off the across-line direction: only the fundamental passes
    # (extent ~26 px across the lines, cut-off below the second harmonic), so the spectrum
    # cannot place the cut-off between the two harmonics. The untapered fit reads the leakage
    # around the harmonics as signal and lands 36-50 % short across the lines on these cases,
    # the reported midpoint of the two fits 26-34 % short.
    # (Not caught: at the next noise level, sigma 7.5 and dose 17, both fits land 23 % short.)
    params = DegradationParams(
        rx_px=28.3, ry_px=10.2, beta=1.97, theta_rad=0.394, gain=1.04, offset=16.5,
        sigma=1.5 + 2 * seed, dose=41.0 - 8 * seed,
    )  # fmt: skip
    y = degrade(make_sample("lines", (480, 640), seed=seed), params, rng=seed)
    est = estimate_degradation(y)
    truth = _blur_extent_px(params.rx_px, params.ry_px, params.theta_rad, 0.0)
    across = _blur_extent_px(est.rx_px, est.ry_px, est.theta_rad, 0.0)
    assert across < 0.8 * truth  # the ambiguity this test is about
    assert est.quality.unreliable and not est.quality.ok
    assert any("does not fix the blur" in r for r in est.quality.reasons), est.quality.reasons
    # ... and the reported uncertainty says so: the true major radius within two sigma.
    trx, _, _ = canonical_ellipse(params.rx_px, params.ry_px, params.theta_rad)
    assert abs(est.rx_px - trx) <= 2 * est.rx_px_err, (est.rx_px, est.rx_px_err, trx)


@pytest.mark.parametrize(("seed", "noise"), [(0, 0), (2, 1), (5, 0)])
def test_flagged_line_pattern_reports_the_midpoint_of_the_two_fits(
    seed: int, noise: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The demo's setting (seed 0: `sem demo`'s lines@random) and two more line images of the
    # same family: the first fit lands 37-51 % short of the true major radius, the tapered one
    # within 12 %; the midpoint of the two ellipses (LEAKAGE_MIDPOINT) is within 35 %.
    from collections import OrderedDict

    import sem_physics.estimate as module

    params = DegradationParams(
        rx_px=28.3, ry_px=10.2, beta=1.97, theta_rad=0.394, gain=1.04, offset=16.5,
        sigma=1.5 + 2 * noise, dose=41.0 - 8 * noise,
    )  # fmt: skip
    y = degrade(make_sample("lines", (480, 640), seed=seed), params, rng=seed)
    trx, try_, _ = canonical_ellipse(params.rx_px, params.ry_px, params.theta_rad)
    monkeypatch.setattr(module, "_RECENT", OrderedDict())  # no cached estimate of these pixels
    est = estimate_degradation(y)
    monkeypatch.setattr(module, "_RECENT", OrderedDict())
    monkeypatch.setattr(module, "LEAKAGE_MIDPOINT", False)
    first = estimate_degradation(y)  # the first (untapered) fit alone, as before
    assert abs(first.rx_px / trx - 1) > 0.35, first.rx_px
    assert abs(est.rx_px / trx - 1) < 0.35, (est.rx_px, trx)
    assert abs(est.ry_px / try_ - 1) < 0.25, (est.ry_px, try_)
    # still flagged, with both fits named, and the uncertainty spans the disagreement
    assert est.quality.unreliable and not est.quality.ok
    (reason,) = [r for r in est.quality.reasons if "does not fix the blur" in r]
    assert f"{first.rx_px:.1f} x {first.ry_px:.1f} px, but" in reason and "midpoint" in reason
    assert est.rx_px_err == pytest.approx(first.rx_px_err)
    assert abs(est.rx_px - trx) <= 2 * est.rx_px_err, (est.rx_px, est.rx_px_err, trx)
    assert (est.sigma, est.dose) == (first.sigma, first.dose)  # the noise fit is unchanged


@pytest.mark.parametrize("kind", ["texture", "lines"])
def test_leakage_check_quiet_where_the_spectrum_fixes_the_blur(kind: str) -> None:
    # A round PSF of 6 px: the cut-off (0.17 cycles/px) lies past many harmonics of the lines
    # and inside the texture's continuous spectrum; tapering moves nothing that matters.
    params = DegradationParams(
        rx_px=6.0, ry_px=6.0, beta=1.95, theta_rad=0.0, gain=1.0, offset=10, sigma=3, dose=30
    )
    est = estimate_degradation(degrade(make_sample(kind, (480, 640), seed=7), params, rng=7))
    assert not any("does not fix the blur" in r for r in est.quality.reasons), est.quality.reasons
    assert est.rx_px_err < 0.15 * est.rx_px and est.ry_px_err < 0.15 * est.ry_px
    assert abs(est.ry_px / 6.0 - 1) < 0.15  # across the lines (along them: the own-blur limit)


def _fft_pair_s(y: np.ndarray) -> float:
    """Seconds of one forward and inverse real FFT of ``y``, best of 3 x 10: the unit the
    estimate's time is measured in, so that a loaded machine slows both alike."""
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(10):
            np.fft.irfft2(np.fft.rfft2(y), s=y.shape)
        best = min(best, (time.perf_counter() - t0) / 10)
    return best


def test_1280x960_image_within_the_time_budget() -> None:
    """The estimate of a 1280x960 frame costs at most 80 FFT pairs of it, measured in the same
    test (about 20 on an idle machine, 0.25-0.3 s: benchmarks/bench_estimate.py). A ratio, not
    seconds: a loaded test machine slows both sides alike."""
    params = DegradationParams(
        rx_px=12, ry_px=7, beta=1.95, theta_rad=1.0, gain=1.0, offset=10, sigma=5, dose=20
    )
    x = make_sample("contacts", (960, 1280), seed=0)
    ratios = []
    for seed in range(2):  # two noise draws: the same pixels again would be a cache hit
        y = degrade(x, params, rng=seed)
        unit = _fft_pair_s(y)
        t0 = time.perf_counter()
        est = estimate_degradation(y)
        ratios.append((time.perf_counter() - t0) / unit)
    assert min(ratios) < 80, ratios
    assert est.seconds > 0


def test_estimate_feeds_airy_psf_and_reports_uncertainties() -> None:
    params = DegradationParams(
        rx_px=6, ry_px=14, beta=1.95, theta_rad=0.4, gain=1.05, offset=12, sigma=3, dose=30
    )
    est = estimate_degradation(degrade(make_sample("texture", (384, 512), seed=3), params, rng=1))
    assert est.quality.ok, est.quality.reasons
    # canonical form: rx >= ry, theta in [0, pi); the truth (6, 14, 0.4) is (14, 6, 0.4 + pi/2)
    assert est.rx_px >= est.ry_px and 0 <= est.theta_rad < math.pi
    trx, try_, tth = canonical_ellipse(6, 14, 0.4)
    assert (trx, try_) == (14, 6) and tth == pytest.approx(0.4 + math.pi / 2)
    kernel = airy_psf(est.psf_params())
    assert kernel.sum() == pytest.approx(1.0) and kernel.shape[0] % 2 == 1
    for name in ("rx_px", "ry_px", "theta_rad", "beta", "sigma", "dose"):
        err = getattr(est, f"{name}_err")
        assert err is not None and 0 < err < abs(getattr(est, name)) + 1, name
    # the error bars are of the size of the actual errors (not 100x too small or too large)
    for name, truth in (("rx_px", trx), ("ry_px", try_), ("theta_rad", tth), ("sigma", 3.0)):
        value, err = getattr(est, name), getattr(est, f"{name}_err")
        assert abs(value - truth) < 5 * err, (name, value, err, truth)
    # the JSON form round-trips
    assert type(est).model_validate_json(est.model_dump_json()) == est


def test_noise_only_image_is_flagged_flat_and_sigma_is_measured() -> None:
    rng = np.random.default_rng(0)
    flat = 100.0 + rng.normal(0.0, 6.0, (256, 256))
    est = estimate_degradation(flat)
    assert est.quality.flat and not est.quality.ok
    assert est.rx_px is None and any("flat" in r for r in est.quality.reasons)
    assert est.sigma == pytest.approx(6.0, rel=0.1)
    with pytest.raises(ValueError, match="no PSF estimate: flat"):
        est.psf_params()


def test_poisson_dose_from_variance_versus_mean() -> None:
    # Poisson only (sigma = 0) on a smooth ramp: variance = mean / dose with dose 4.
    params = DegradationParams(
        rx_px=5, ry_px=5, beta=2.0, theta_rad=0, gain=1, offset=0, sigma=0.0, dose=4.0
    )
    ramp = np.tile(np.linspace(20, 220, 512), (384, 1)) + make_sample("texture", (384, 512), 4)
    est = estimate_degradation(degrade(ramp / 2, params, rng=2))
    assert est.dose == pytest.approx(4.0, rel=0.1)
    assert est.sigma < 1.0


def test_small_and_saturated_images_are_flagged() -> None:
    """Flagged in the estimate's reasons, and nothing else printed: the nearly singular fit of
    the small image's spectrum once overflowed in numpy (a RuntimeWarning on the user's
    terminal, and a step clipped to the bounds); such steps are now damped instead."""
    params = RANGES.midpoint()
    small = degrade(make_sample("lines", (96, 96), seed=1), params, rng=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        est = estimate_degradation(small)
    assert est.quality.too_small and "96" in est.quality.reasons[0]
    clipped = np.clip(degrade(make_sample("contacts", (256, 256), seed=1), params, rng=0), 0, 90)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        est = estimate_degradation(clipped)
    assert est.quality.saturated
    assert any("maximum 90" in r for r in est.quality.reasons)


def _low_dose(kind: str, dose: float, offset: float, seed: int, shape=(320, 400)) -> tuple:
    params = DegradationParams(
        rx_px=6, ry_px=6, beta=1.95, theta_rad=0, gain=1, offset=offset, sigma=2.0, dose=dose
    )
    image = degrade(make_sample(kind, shape, seed=seed), params, rng=seed)
    return params, np.clip(image, 0.0, 255.0)


def test_low_dose_noise_errors_cover_the_truth_on_real_micrographs() -> None:
    """Below about 1 electron per grey level the shot noise dwarfs sigma^2 (sigma 0.5-5 against
    a variance of hundreds): sigma is barely measurable, and its error must say so. On real
    micrographs (their own structure reaches the noise band) each intensity bin's variance
    carries a model error of its own (NOISE_BIN_ERR); without it sigma lay beyond 3 of its
    errors in 5 of these 18 cases and the dose in 3."""
    z_sigma, z_dose = [], []
    for i, rel in enumerate(REAL):
        for j, dose in enumerate((0.15, 0.4)):
            rng = np.random.default_rng([i, j])
            params = DegradationParams(
                rx_px=6, ry_px=4, beta=1.95, theta_rad=0.3, gain=1, offset=20,
                sigma=float(rng.uniform(0.5, 5.0)), dose=dose,
            )  # fmt: skip
            image = np.clip(degrade(corpus_image(rel), params, rng=rng), 0.0, 255.0)
            est = estimate_degradation(image)
            z_sigma.append(abs(est.sigma - params.sigma) / est.sigma_err)
            z_dose.append(abs(est.dose - params.dose) / est.dose_err)
    assert sum(z < 3 for z in z_sigma) >= 17 and max(z_dose) < 3, (z_sigma, z_dose)


def test_clipped_bright_low_dose_image_does_not_claim_a_noise_it_cannot_see() -> None:
    """A bright fast scan clipped at 255: near the clip the variance is cut, the variance-
    versus-mean line bends, and the fit read "no shot noise" (dose 1e9) with sigma 32 (the
    truth: dose 0.15, sigma 2). The bins whose noise reaches the clipped level now leave the
    fit; where too few remain, sigma and dose are flagged as not measured and their errors
    span the whole noise."""
    params, image = _low_dose("texture", 0.15, 100.0, 1, shape=(480, 640))
    assert np.mean(image >= 255) > 0.02  # clipped
    est = estimate_degradation(image)
    assert est.quality.unreliable
    assert any("sigma and dose not measured" in r for r in est.quality.reasons)
    assert abs(est.dose - params.dose) < 2 * est.dose_err and est.dose < 10 * params.dose
    assert abs(est.sigma - params.sigma) < est.sigma_err
    params, image = _low_dose("texture", 0.15, 150.0, 1, shape=(480, 640))  # 26 % clipped
    est = estimate_degradation(image)
    assert abs(est.sigma - params.sigma) < est.sigma_err and est.sigma_err >= est.sigma
    params, image = _low_dose("lines", 0.15, 60.0, 1, shape=(480, 640))
    est = estimate_degradation(image)  # some bins clear of the clip: measured from those
    assert any("left out too" in r for r in est.quality.reasons if r.startswith("saturated"))
    assert not any("not measured" in r for r in est.quality.reasons)
    assert abs(est.dose - params.dose) < 2 * est.dose_err < params.dose


def test_a_few_clipped_pixels_that_change_the_noise_fit_are_noted() -> None:
    """Below the saturation flag's 1 % of the pixels, bins whose noise reaches the clipped
    level still leave the noise fit; the estimate says so in a note (not a flag)."""
    params, image = _low_dose("texture", 0.15, -20.0, 1, shape=(480, 640))
    assert 0.001 < np.mean(image <= 0) < 0.01
    est = estimate_degradation(image)
    assert not est.quality.saturated
    assert any(n.startswith("noise: the noise reaches a clipped level") for n in est.quality.notes)
    assert abs(est.sigma - params.sigma) < 3 * est.sigma_err


@pytest.mark.parametrize(("side", "seed"), [(32, 0), (32, 1), (36, 2), (39, 4)])
def test_frames_of_32_to_39_px_are_estimated_noise_included(side: int, seed: int) -> None:
    """32 px a side is the documented minimum, but the noise fit asked for 20 intensity bins
    of 51 pixels inside its 4-px border, 1020 pixels that a frame below 40 px lacks: it was a
    ValueError about "pixels away from the saturated levels" on an unsaturated frame. Fewer
    bins now; the noise is measured within its errors (flagged too small, as below 128 px).
    Over 40 such frames per side (texture, contacts, lines; seeds 0-39) sigma fell within
    1 / 2 / 3 of its errors in 95 / 100 / 100 % at 32 and 36 px, the dose in 72-80 / 80-92 /
    90-95 %, as on 40 px frames with all 20 bins (82 / 100 / 100 %, 70 / 82 / 95 %)."""
    params = DegradationParams(
        rx_px=3, ry_px=3, beta=1.95, theta_rad=0, gain=1, offset=10, sigma=4, dose=20
    )
    kind = ("texture", "contacts")[seed % 2]
    frame = degrade(make_sample(kind, (128, 128), seed=seed), params, rng=seed)[:side, :side]
    est = estimate_degradation(frame)
    assert est.quality.too_small
    assert abs(est.sigma - params.sigma) < 3 * est.sigma_err
    assert abs(est.dose - params.dose) < 3 * est.dose_err


def test_too_few_unsaturated_pixels_for_the_noise_fit_say_so() -> None:
    frame = degrade(make_sample("texture", (48, 48), seed=0), RANGES.midpoint(), rng=0)
    frame[:, 6:] = 255.0  # saturated but for 6 columns, 4 of them the border
    with pytest.raises(ValueError, match=r"pixels away from the saturated levels and the border"):
        estimate_degradation(frame)


@pytest.mark.parametrize(
    ("image", "match"),
    [
        (np.zeros((20, 300)), r"too small: both sides must be >= 32 px"),
        (np.full((64, 64), np.nan), "NaN"),
        (np.zeros((4, 64, 64)), "2-D"),
    ],
)
def test_bad_input_is_a_clear_error(image: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        estimate_degradation(image)


def test_psf_params_is_the_physics_type() -> None:
    est = estimate_degradation(
        degrade(make_sample("texture", (256, 256), seed=5), RANGES.midpoint(), rng=3)
    )
    assert isinstance(est.psf_params(), PSFParams)


def test_the_same_pixels_again_return_the_same_estimate_without_a_fit(monkeypatch) -> None:
    import sem_physics.estimate as module

    params = DegradationParams(
        rx_px=5, ry_px=5, beta=1.95, theta_rad=0, gain=1, offset=10, sigma=3, dose=20
    )
    y = degrade(make_sample("texture", (128, 128), seed=4), params, rng=4)
    first = estimate_degradation(y)
    fits = []
    monkeypatch.setattr(module, "_estimate", lambda *a: fits.append(a) or first)
    assert estimate_degradation(y.astype(np.float32).astype(np.float64)) is first
    assert estimate_degradation(y.copy()) is first and fits == []
    other = y.copy()
    other[0, 0] += 1.0  # one pixel differs: estimated again
    assert estimate_degradation(other) is first and len(fits) == 1
    assert estimate_degradation(y, beta=1.9) is first and len(fits) == 2  # beta is in the key
    with warnings.catch_warnings(record=True) as caught:  # the checks run on every call
        warnings.simplefilter("always")
        for _ in range(2):
            estimate_degradation(np.clip(y, 0, 255) / 255.0)
    assert ["0..255" in str(w.message) for w in caught] == [True, True]
    for i in range(2 * module._RECENT_SIZE):  # the memory is bounded
        estimate_degradation(y + i)
    assert len(module._RECENT) == module._RECENT_SIZE
