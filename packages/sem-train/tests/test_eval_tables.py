"""Quality and metrology tables: hand computations, the paper's ✗ rule, the control, NIQE."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sem_metrology import LineOptions, make_line_image, measure_lines
from sem_physics import DegradationParams, degrade
from sem_train.evaluation import (
    CONTROL_NAME,
    FAILED,
    REFERENCE_NAME,
    Case,
    MethodRun,
    MetrologyRow,
    QualityRow,
    Scorer,
    affine_match,
    control_run,
    metrology_summary,
    quality_summary,
    score_image,
)
from sem_train.evaluation import quality as quality_mod
from sem_train.evaluation.metrology import lwr_from_psd, measure_like_reference, metrology_row
from sem_train.evaluation.quality import PSNR_CAP_DB
from sem_train.evaluation.results import MetricSummary
from sem_train.evaluation.tables import (
    NIQE_CAVEAT,
    QualitySummary,
    control_verdict,
    metrology_markdown,
    metrology_per_image_markdown,
    quality_markdown,
)


def _mrow(method, case, cd, cd_std=0.5, lwr=3.0, ler=2.0, psd=3.1, ref=None, failed=None):
    """A metrology row with errors computed against ``ref`` (a row) by hand."""
    vals = {"cd_nm": cd, "cd_std_nm": cd_std, "lwr_nm": lwr, "ler_nm": ler, "lwr_psd_nm": psd}
    if failed:
        return MetrologyRow(method=method, case_id=case, image=case, setting="s", failed=failed)
    errs = None if ref is None else [abs(v - ref.value(k)) for k, v in vals.items()]
    return MetrologyRow(
        method=method,
        case_id=case,
        image=case,
        setting="s",
        **vals,
        cd_abs_error_nm=0.0 if errs is None else errs[0],
        avg_abs_error_nm=0.0 if errs is None else float(np.mean(errs)),
    )


def test_one_unmeasurable_image_makes_both_summary_columns_failed():
    ref_a = _mrow(REFERENCE_NAME, "a", 20.0)
    ref_b = _mrow(REFERENCE_NAME, "b", 30.0, cd_std=1.0, lwr=4.0, ler=3.0, psd=4.2)
    rows = [
        ref_a,
        ref_b,
        _mrow("good", "a", 20.5, ref=ref_a),
        _mrow("good", "b", 29.0, cd_std=1.2, lwr=4.4, ler=2.7, psd=4.3, ref=ref_b),
        # "half" is closer on the one image it could be measured on: it must not win.
        _mrow("half", "a", 20.1, ref=ref_a),
        _mrow("half", "b", 0, failed="no edges found"),
    ]
    good, half = metrology_summary(rows, "good"), metrology_summary(rows, "half")
    assert good.cd_mae_nm == pytest.approx((0.5 + 1.0) / 2)
    # Avg(MAE): the mean over all 5 columns x 2 images of the absolute errors (Table 4).
    errors = [0.5, 0, 0, 0, 0, 1.0, 0.2, 0.4, 0.3, 0.1]
    assert good.avg_mae_nm == pytest.approx(np.mean(errors))
    assert half.n_measured == 1 and half.cd_mae_nm is None and half.avg_mae_nm is None
    md = metrology_markdown([metrology_summary(rows, m) for m in (REFERENCE_NAME, "good", "half")])
    half_line = next(line for line in md.splitlines() if line.startswith("| half"))
    cells = [c.strip() for c in half_line.strip("|").split("|")]
    assert cells[-2:] == [FAILED, FAILED] and "no edges found" in md
    assert "**0.75**" in md  # the only complete method is the best one
    assert "**0.10**" not in md  # half's partial 0.1 is not ranked


def test_a_summary_of_several_failures_names_each_distinct_reason_with_its_count():
    ref = [_mrow(REFERENCE_NAME, c, 20.0) for c in "abcd"]
    reasons = ["no edges found", "output not finite", "no edges found", "too dark"]
    rows = [*ref, *(_mrow("m", c, 0, failed=w) for c, w in zip("abcd", reasons, strict=True))]
    s = metrology_summary(rows, "m")
    assert s.reason == "no edges found (2) / output not finite (1) / too dark (1)"
    assert s.reason in metrology_markdown([metrology_summary(rows, REFERENCE_NAME), s])
    same = [*ref[:2], *(_mrow("m", c, 0, failed="no edges found") for c in "ab")]
    assert metrology_summary(same, "m").reason == "no edges found"  # one reason: no count
    q = [
        QualityRow(method="m", case_id=c, image=c, kind="k", setting="s", failed=w)
        for c, w in zip("abcde", ["a", "b", "c", "d", "a"], strict=True)
    ]
    assert quality_summary(q, "m", ["psnr"]).reason == "a (2) / b (1) / c (1) / 1 other reason"
    assert metrology_summary(ref, REFERENCE_NAME).reason is None


def test_per_image_columns_follow_the_paper_layout():
    ref = _mrow(REFERENCE_NAME, "x@r", 16.3)
    rows = [ref, _mrow("m", "x@r", 16.9, ref=ref)]
    ref2 = _mrow(REFERENCE_NAME, "y@r", 9.7)
    rows += [ref2, _mrow("m", "y@r", 0, failed="blurred")]
    md = metrology_per_image_markdown(rows, [REFERENCE_NAME, "m"], ["x@r", "y@r"])
    header = next(line for line in md.splitlines() if line.startswith("| method"))
    assert "CD (nm) I1 | CD (nm) I2" in header and "PSD (nm) I2" in header
    m_line = next(line for line in md.splitlines() if line.startswith("| m |"))
    assert m_line.split("|")[1:4] == [" m ", " 16.90 ", f" {FAILED} "]
    assert "I1 = `x@r`; I2 = `y@r`; ΔCD = absolute CD error" in md


def test_psd_column_is_the_roughness_integrated_from_the_psd():
    truth = make_line_image(6, (200, 240), sigma_nm=1.2, seed=4)
    noisy = truth.clean + np.random.default_rng(0).normal(0, 8, truth.clean.shape)
    m = measure_lines(noisy.astype(np.float32), truth.pixel_size_nm)
    assert m.valid
    f, p = np.asarray(m.psd_frequency_per_nm), np.asarray(m.psd_lwr_nm3)
    expected = 3.0 * math.sqrt(float(np.sum(p) * (f[1] - f[0])))
    assert lwr_from_psd(m) == pytest.approx(expected, rel=1e-9)
    assert m.lwr_psd_nm == pytest.approx(expected, rel=1e-9)  # sem-metrology's own field
    row = metrology_row("x", "c", "c", "s", m, None)
    assert row.lwr_psd_nm == pytest.approx(expected, rel=1e-9)
    # With image noise the integrated PSD keeps the noise; the unbiased value removes it.
    assert row.lwr_unbiased_nm is not None and row.lwr_psd_nm > row.lwr_unbiased_nm
    md = metrology_markdown([metrology_summary([row.model_copy(update={"method": "x"})], "x")])
    assert "PSD: LWR from PSD, noise incl. (nm)" in md and "LWR unbiased (nm)" in md


def test_metrology_rows_match_measure_lines_and_keep_failures():
    truth = make_line_image(6, (160, 240), sigma_nm=1.0, seed=3)
    ref_img = truth.clean.astype(np.float32)
    shifted = np.roll(ref_img, 1, axis=1)
    flat = np.full_like(ref_img, 100.0)
    case = Case("l@mid", "l", "lines", "midpoint", ref_img, ref_img, truth.pixel_size_nm)
    scorer = Scorer([case], ("psnr",))
    m_ref = measure_lines(ref_img, truth.pixel_size_nm)
    m_shift = measure_lines(shifted, truth.pixel_size_nm)
    shift = scorer.score(MethodRun("shift", outputs={"l@mid": shifted}))
    assert shift.metrology[0].cd_abs_error_nm == pytest.approx(abs(m_shift.cd_nm - m_ref.cd_nm))
    assert scorer.reference.metrology[0].cd_nm == pytest.approx(m_ref.cd_nm)
    flat_r = scorer.score(MethodRun("flat", outputs={"l@mid": flat}))
    crashed = scorer.score(MethodRun("crashed", failed="training failed: boom"))
    assert flat_r.metrology[0].failed and "boom" in crashed.metrology[0].failed


def test_outputs_are_measured_with_the_reference_tone():
    # Bright 14-px lines at a 40-px pitch. The reference carries shot noise (bright phase
    # noisier: detected as recorded); the "restoration" is noisier in the dark phase, as
    # denoised or deconvolved outputs can be, so on its own it is detected as inverted and
    # its spaces (pitch - CD) are measured instead of its lines.
    truth = make_line_image(6, (160, 280), pitch_nm=33.08, cd_nm=11.578, sigma_nm=1.0, seed=3)
    rng = np.random.default_rng(0)
    ref = (rng.poisson(truth.clean * 2) / 2).astype(np.float32)
    noise = rng.normal(0, 1, ref.shape) + rng.normal(0, 6, ref.shape) * (truth.clean < 100)
    out = (truth.clean + noise).astype(np.float32)
    px = truth.pixel_size_nm
    alone = measure_lines(out, px, LineOptions(convention="truth"))
    assert alone.tone == "dark" and alone.cd_nm - truth.truth.cd_nm > 8.0
    case = Case("l@mid", "l", "lines", "midpoint", out, ref, px)
    for convention in ("truth", "smile"):
        scorer = Scorer([case], ("psnr",), line_options=LineOptions(convention=convention))
        assert scorer.reference.measurements["l@mid"].tone == "bright"
        result = scorer.score(MethodRun("m", outputs={"l@mid": out}))
        m = result.measurements["l@mid"]
        assert m.tone == "bright" and m.tone_source == "option"
        if convention == "truth":
            assert abs(m.cd_nm - truth.truth.cd_nm) < 0.3
            assert result.metrology[0].cd_abs_error_nm < 0.3
    # A tone given in the options is kept.
    dark = measure_like_reference(out, px, alone, LineOptions(convention="truth", tone="bright"))
    assert dark.tone == "bright"


def _frame(path) -> np.ndarray:
    from sem_physics import read_image

    return np.asarray(read_image(path).without_info_bar().data, np.float32)


def test_images_of_unknown_kind_are_measured_only_when_oriented_like_lines(real_image):
    """A user's focused image (kind "image") enters the line table when it looks like lines; the
    real contact-hole array, which the truth convention reads as one 190-nm line, does not."""
    lines = _frame(real_image("lines_euv_resist_0p827nm.tif"))[:400, :600]
    holes = _frame(real_image("contacts_0p901nm.tif"))
    cases = [
        Case("l@mid", "l", "image", "midpoint", lines, lines, 0.827),
        Case("h@mid", "h", "image", "midpoint", holes, holes, 0.901),
    ]
    truth = LineOptions(convention="truth")
    # sem-metrology itself refuses the holes as lines now; the scorer's own rule is tested here
    assert not measure_lines(holes, 0.901, truth).valid
    scorer = Scorer(cases, ("psnr",), line_options=truth)
    assert set(scorer.references) == {"l@mid"}
    assert scorer.not_measured["h@mid"].startswith("not a line/space pattern")
    result = scorer.score(MethodRun("m", outputs={"l@mid": lines, "h@mid": holes}))
    assert [r.case_id for r in result.metrology] == ["l@mid"]
    assert result.metrology[0].cd_abs_error_nm == pytest.approx(0.0, abs=1e-9)


def _case(offset: float, cid: str = "c@x", shape=(64, 64)) -> Case:
    ref = np.random.default_rng(0).uniform(60, 180, shape).astype(np.float32)
    return Case(cid, cid.split("@")[0], "texture", "midpoint", ref + offset, ref, None)


def test_quality_rows_match_closed_form_and_count_infinite_psnr():
    cases = [_case(10.0), _case(10.0, "d@x")]
    scorer = Scorer(cases, ("psnr", "ssim"))
    plus10 = scorer.score(MethodRun("plus10", outputs={c.case_id: c.input for c in cases}))
    expected = 20 * math.log10(255.0 / 10.0)  # MSE = 100
    assert all(r.psnr == pytest.approx(expected, rel=1e-5) for r in plus10.quality)
    # Affine matching removes a pure offset: only float32 rounding is left.
    assert all(r.psnr_affine > 80.0 for r in plus10.quality)
    exact = scorer.score(
        MethodRun("exact", outputs={"c@x": cases[0].reference}, case_errors={"d@x": "too small"})
    )
    assert exact.quality[0].psnr == PSNR_CAP_DB and exact.quality[0].psnr_infinite
    assert exact.quality[1].failed == "too small"
    s = quality_summary(exact.quality, "exact", scorer.metrics)
    assert s.n_infinite_psnr == 1 and s.metrics["psnr"].mean == PSNR_CAP_DB and s.n_failed == 1
    md = quality_markdown(
        [quality_summary(plus10.quality, "plus10", scorer.metrics), s], scorer.metrics
    )
    assert "failed on 1 of 2 cases" in md and "counted as 100 dB" in md
    # An exact gain/offset copy: affine matching leaves only rounding (about 160 dB unless
    # capped), which would lift a method's mean by tens of dB per case.
    copy = scorer.score(
        MethodRun("copy", outputs={c.case_id: 0.5 * c.reference + 10 for c in cases})
    )
    assert all(r.psnr_affine == PSNR_CAP_DB and r.psnr_infinite for r in copy.quality)
    assert all(r.psnr < 30 for r in copy.quality)
    # "exact" has the higher PSNR but failed on a case: only the complete row is ranked.
    assert f"**{expected:.2f} ± 0.00**" in md


def _line(md: str, method: str) -> list[str]:
    row = next(line for line in md.splitlines() if line.startswith(f"| {method} |"))
    return [c.strip() for c in row.strip("|").split("|")][1:]


def test_the_best_row_is_the_higher_score_and_the_lower_error():
    """Two complete rows: the closer output is bold in every quality column (higher is better)
    and in the metrology error columns (lower is better); the other in none."""
    cases = [_case(10.0), _case(10.0, "d@x")]
    scorer = Scorer(cases, ("psnr", "ssim"))
    rng = np.random.default_rng(5)
    runs = {
        "close": {c.case_id: c.reference + rng.normal(0, 4, c.reference.shape) for c in cases},
        "far": {c.case_id: c.reference + rng.normal(0, 12, c.reference.shape) for c in cases},
    }
    summaries = [
        quality_summary(scorer.score(MethodRun(m, outputs=o)).quality, m, scorer.metrics)
        for m, o in runs.items()
    ]
    md = quality_markdown(summaries, scorer.metrics)
    close, far = _line(md, "close"), _line(md, "far")
    assert close and all(cell.startswith("**") for cell in close), close
    assert not any("**" in cell for cell in far), far

    ref = _mrow(REFERENCE_NAME, "a", 20.0)
    rows = [ref, _mrow("near", "a", 20.4, ref=ref), _mrow("off", "a", 22.0, lwr=5.0, ref=ref)]
    md = metrology_markdown([metrology_summary(rows, m) for m in (REFERENCE_NAME, "near", "off")])
    assert "**0.40**" in _line(md, "near") and not any("**" in c for c in _line(md, "off"))


def test_a_metric_failure_stays_in_its_cell(monkeypatch):
    calls = {"n": 0}

    def flaky(out, ref):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("backbone weights missing")
        return 0.25

    monkeypatch.setitem(quality_mod._FULL_REFERENCE, "lpips", flaky)
    cases = [_case(5.0), _case(5.0, "d@x")]
    rows = [
        score_image(
            QualityRow(method="m", case_id=c.case_id, image="i", kind="k", setting="s"),
            c.input,
            c.reference,
            ("psnr", "lpips"),
        )
        for c in cases
    ]
    assert rows[0].lpips is None and "backbone weights missing" in rows[0].errors["lpips"]
    assert rows[1].lpips == 0.25 and rows[0].psnr is not None
    s = quality_summary(rows, "m", ("psnr", "lpips"))
    assert s.metrics["lpips"].n == 1
    md = quality_markdown([s], ("psnr", "lpips"))
    assert "LPIPS n/a for m (1 of 2) case(s): RuntimeError: backbone weights missing" in md


def test_affine_match_is_the_least_squares_fit():
    rng = np.random.default_rng(1)
    ref = rng.uniform(0, 255, (32, 32))
    out = rng.uniform(0, 255, (32, 32))
    matched = affine_match(out, ref)
    a = np.stack([out.ravel(), np.ones(out.size)], axis=1)
    coef, *_ = np.linalg.lstsq(a, ref.ravel(), rcond=None)
    np.testing.assert_allclose(matched, (a @ coef).reshape(out.shape), rtol=1e-4, atol=1e-3)


def test_control_inverts_gain_and_offset_and_the_report_names_who_does_not_beat_it():
    ref = np.random.default_rng(2).uniform(40, 200, (48, 48)).astype(np.float32)
    params = DegradationParams(
        rx_px=1, ry_px=1, beta=2, theta_rad=0, gain=1.1, offset=20, sigma=1, dose=10
    )
    # blurred and noisy, so the true gain and offset differ from those of a fit to the reference
    y = np.asarray(degrade(ref, params.model_copy(update={"rx_px": 3, "ry_px": 3, "sigma": 4}), 0))
    case = Case("t@m", "t", "texture", "midpoint", y, ref, None, params)
    run = control_run([case])
    np.testing.assert_allclose(run.outputs["t@m"], (y - 20.0) / 1.1, rtol=1e-5, atol=1e-3)
    real = control_run([Case("r@real", "r", "real", "real", y, ref, None)])
    assert real.failed and "unknown" in real.failed
    summaries = [
        QualitySummary(
            method=CONTROL_NAME,
            n_cases=1,
            n_failed=0,
            metrics={
                "psnr": MetricSummary(mean=21.0, n=1),
                "psnr_affine": MetricSummary(mean=22.0, n=1),
            },
        ),
        QualitySummary(
            method="blurry",
            n_cases=1,
            n_failed=0,
            metrics={
                "psnr": MetricSummary(mean=20.0, n=1),
                "psnr_affine": MetricSummary(mean=23.0, n=1),
            },
        ),
    ]
    verdict = control_verdict(summaries)
    assert "Not better than the control on PSNR" in verdict[0] and "blurry (20.00" in verdict[0]
    assert verdict[1] == "Every method beats the control on PSNR affine-matched."
    # Better only by float rounding (the input equals the control after affine matching):
    # equal as printed, so not better.
    summaries[1].metrics["psnr_affine"] = MetricSummary(mean=22.0 + 1e-7, n=1)
    verdict = control_verdict(summaries)
    assert "blurry (22.00 vs 22.00 dB)" in verdict[1]


def test_noise_ceiling_is_the_score_of_the_noise_free_image_and_the_report_states_it():
    from scipy import ndimage

    rng = np.random.default_rng(4)
    clean = ndimage.gaussian_filter(rng.uniform(40, 200, (160, 160)), 4).astype(np.float32)
    cases = []
    for i, sigma in enumerate((3.0, 9.0)):  # two references, two noise levels
        ref = (clean + rng.normal(0, sigma, clean.shape)).astype(np.float32)
        cases.append(Case(f"t{i}@m", f"t{i}", "texture", "midpoint", ref, ref, None))
    scorer = Scorer(cases, ("psnr",))
    ceilings = [r.noise_ceiling_db for r in scorer.reference.quality]
    perfect = scorer.score(MethodRun("perfect", outputs={c.case_id: clean for c in cases}))
    # The noise-free image scores at the ceiling (both PSNRs), within the estimator's error.
    for c, r in zip(ceilings, perfect.quality, strict=True):
        assert c == pytest.approx(r.psnr, abs=0.8) and c == pytest.approx(r.psnr_affine, abs=0.8)
    assert ceilings[0] - ceilings[1] == pytest.approx(20 * math.log10(3.0), abs=0.8)
    assert all(r.noise_ceiling_db is None for r in perfect.quality)  # reference rows only
    summaries = [
        quality_summary([*perfect.quality, *scorer.reference.quality], m, scorer.metrics)
        for m in ("perfect", REFERENCE_NAME)
    ]
    md = quality_markdown(summaries, scorer.metrics)
    mean = float(np.mean(ceilings))
    best = summaries[0].metrics["psnr_affine"].mean
    assert f"would score only {mean:.2f} dB PSNR" in md
    assert f"{best:.2f} dB, is {mean - best:.2f} dB below it" in md
    assert "σ ≈ 2.9" in md or "σ ≈ 3.0" in md or "σ ≈ 3.1" in md
    # Without PSNR among the metrics there is no ceiling to state.
    assert Scorer(cases, ("ssim",)).reference.quality[0].noise_ceiling_db is None


def test_niqe_column_is_not_bolded_when_the_reference_ranks_last():
    def s(name, niqe):
        return QualitySummary(
            method=name,
            n_cases=2,
            n_failed=0,
            metrics={"niqe": MetricSummary(mean=niqe, std=0.1, n=2)},
        )

    md = quality_markdown([s("a", 10.0), s("b", 12.0), s(REFERENCE_NAME, 20.0)], ("niqe",))
    assert "**" not in md and "no NIQE value is marked best" in md
    md = quality_markdown([s("a", 10.0), s("b", 12.0), s(REFERENCE_NAME, 5.0)], ("niqe",))
    assert "**10.00 ± 0.10**" in md
    assert "natural" in NIQE_CAVEAT


@pytest.mark.parametrize("method", ["richardson-lucy", "wiener"])
def test_true_psf_rows_restore_each_input_with_its_own_psf(method):
    """`<method>-true-psf` gives every case the PSF it was degraded with (the reference for the
    blind estimate); a real input, whose PSF nobody knows, fails with that reason."""
    from sem_baselines import get_restorer
    from sem_physics import degrade, make_sample
    from sem_train.evaluation.methods import run_method

    ref = make_sample("lines", (64, 64), seed=3)
    cases = []
    for i, r in enumerate((2.0, 4.0)):
        p = DegradationParams(
            rx_px=r, ry_px=r, beta=1.95, theta_rad=0, gain=1, offset=5, sigma=2, dose=30
        )
        y = degrade(ref, p, rng=i).astype(np.float32)
        cases.append(Case(f"c{i}@m", f"c{i}", "lines", "midpoint", y, ref, None, p))
    cases.append(Case("r@real", "r", "real", "real", cases[0].input, ref, None))
    run = run_method(f"{method}-true-psf", cases, [])
    for c in cases[:2]:
        expect = get_restorer(method, psf=c.params.psf).restore(c.input)
        np.testing.assert_allclose(run.outputs[c.case_id], expect, rtol=1e-5, atol=1e-4)
    assert not np.allclose(run.outputs["c0@m"], run.outputs["c1@m"])
    assert "true PSF is unknown" in run.case_errors["r@real"]


def test_avg_mae_of_the_tables_equals_sem_metrology_compare_measurements():
    """One Avg(MAE): the benchmark row and the library's comparison average the same five
    columns (a noisy, blurred copy against its clean reference, both conventions)."""
    from scipy.ndimage import gaussian_filter
    from sem_metrology import LineOptions, compare_measurements

    truth = make_line_image(6, (200, 240), sigma_nm=1.2, seed=4)
    rng = np.random.default_rng(1)
    degraded = gaussian_filter(truth.clean, 1.5) + rng.normal(0, 10, truth.clean.shape)
    for convention in ("smile", "truth"):
        opts = LineOptions(convention=convention)
        ref = measure_lines(truth.clean.astype(np.float32), truth.pixel_size_nm, opts)
        out = measure_lines(degraded.astype(np.float32), truth.pixel_size_nm, opts)
        row = metrology_row("x", "c", "c", "s", out, ref)
        lib = compare_measurements(out, ref)
        assert lib["avg_abs_error"] is not None and lib["avg_abs_error"] > 0
        assert row.avg_abs_error_nm == pytest.approx(lib["avg_abs_error"], rel=1e-12)
        assert row.cd_abs_error_nm == pytest.approx(lib["cd_abs_error_nm"], rel=1e-12)


def test_a_case_image_is_measured_whole_even_where_its_bottom_looks_like_a_bar():
    """A case's images had their bar cut when read: an output whose bottom rows are a flat
    black band (as a restoration's may be) keeps them, like its reference, with no bar note."""
    from sem_train.evaluation.metrology import measure_line_image

    s = make_line_image(n_lines=20, shape=(512, 640), seed=0)
    rng = np.random.default_rng(0)
    picture = np.clip(s.image + rng.normal(0.0, 5.0, s.image.shape), 0, 255)
    band = np.zeros((64, 640))
    band[0] = 255.0
    framed = np.vstack([picture, band])
    assert measure_lines(framed, s.pixel_size_nm).crop is not None  # the library's default
    m = measure_line_image(framed, s.pixel_size_nm)
    assert m.crop is None and m.n_rows == 576
    assert not any(w.startswith("info bar") for w in m.warnings)
