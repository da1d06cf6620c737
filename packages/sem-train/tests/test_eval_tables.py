"""Quality and metrology tables: hand computations, failures kept and marked ✗."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sem_metrology import LineMeasurement, make_line_image, measure_lines
from sem_train.evaluation import (
    FAILED,
    Case,
    MethodRun,
    QualityScorer,
    measure_runs,
    metrology_markdown,
    metrology_rows,
    metrology_summary,
    quality_markdown,
    quality_rows,
    quality_summary,
)


def _lm(cd, cd_std=0.5, lwr=3.0, ler=2.0, lwr_u=2.5, valid=True, reason=None):
    return LineMeasurement(
        valid=valid,
        reason=reason,
        pixel_size_nm=1.0,
        pixel_size_source="given",
        cd_nm=cd if valid else None,
        cd_std_nm=cd_std if valid else None,
        lwr_nm=lwr if valid else None,
        ler_nm=ler if valid else None,
        lwr_unbiased_nm=lwr_u if valid else None,
    )


def test_cd_mae_and_avg_mae_equal_hand_computation():
    ref = {"a": _lm(20.0), "b": _lm(30.0, cd_std=1.0, lwr=4.0, ler=3.0, lwr_u=3.5)}
    per_method = {
        "good": {"a": _lm(20.5), "b": _lm(29.0, cd_std=1.2, lwr=4.4, ler=2.7, lwr_u=3.6)},
        "half": {"a": _lm(23.0), "b": _lm(0, valid=False, reason="no edges found")},
        "broken": {
            "a": _lm(0, valid=False, reason="blurred away"),
            "b": _lm(0, valid=False, reason="blurred away"),
        },
    }
    rows = metrology_rows(ref, per_method)
    summary = {s["method"]: s for s in metrology_summary(rows)}
    # good: |20.5-20| = 0.5, |29-30| = 1.0 -> CD(MAE) 0.75
    assert summary["good"]["cd_mae_nm"] == pytest.approx(0.75)
    # Avg(MAE): per image mean over CD, CD std, LWR, LER, PSD(unbiased LWR); then over images.
    img_a = np.mean([0.5, 0.0, 0.0, 0.0, 0.0])
    img_b = np.mean([1.0, 0.2, 0.4, 0.3, 0.1])
    assert summary["good"]["avg_mae_nm"] == pytest.approx((img_a + img_b) / 2)
    assert summary["good"]["cd_nm_mean"] == pytest.approx(24.75)
    assert summary["good"]["cd_nm_std"] == pytest.approx(4.25)
    # half: measured on one image of two, never silently dropped.
    assert summary["half"]["n_measured"] == 1 and summary["half"]["cd_mae_nm"] == pytest.approx(3.0)
    assert summary["broken"]["failed"] and summary["broken"]["reason"] == "blurred away"
    md = metrology_markdown(list(summary.values()))
    broken_line = next(line for line in md.splitlines() if line.startswith("| broken"))
    assert broken_line.count(FAILED) == 7
    assert "blurred away" in md and "no edges found" in md
    assert f"half ({FAILED} 1/2)" in md
    assert "**0.75**" in md  # best CD(MAE) in bold


def test_metrology_on_measured_images_matches_measure_lines():
    truth = make_line_image(6, (160, 240), sigma_nm=1.0, seed=3)
    ref_img = truth.clean.astype(np.float32)
    shifted = np.roll(ref_img, 1, axis=1)  # same CD, shifted lines
    flat = np.full_like(ref_img, 100.0)  # nothing to measure
    case = Case("l@mid", "l", "lines", "midpoint", ref_img, ref_img, truth.pixel_size_nm)
    runs = [
        MethodRun("shift", outputs={"l@mid": shifted}),
        MethodRun("flat", outputs={"l@mid": flat}),
        MethodRun("crashed", failed="training failed: boom"),
    ]
    ref, per_method, skipped = measure_runs(runs, [case], progress=False)
    assert not skipped and ref["l@mid"].valid
    summary = {s["method"]: s for s in metrology_summary(metrology_rows(ref, per_method))}
    m_ref = measure_lines(ref_img, truth.pixel_size_nm)
    m_shift = measure_lines(shifted, truth.pixel_size_nm)
    assert summary["shift"]["cd_mae_nm"] == pytest.approx(abs(m_shift.cd_nm - m_ref.cd_nm))
    assert summary["focused"]["cd_nm_mean"] == pytest.approx(m_ref.cd_nm)
    assert summary["flat"]["failed"] and summary["flat"]["reason"]
    assert summary["crashed"]["failed"] and "boom" in summary["crashed"]["reason"]


def _constant_case(value: float, shape=(64, 64)) -> Case:
    ref = np.random.default_rng(0).uniform(60, 180, shape).astype(np.float32)
    return Case("c@x", "c", "texture", "midpoint", ref + value, ref, None)


def test_quality_rows_and_summary_match_closed_form():
    cases = [_constant_case(10.0)]
    cases.append(Case("d@x", "d", "texture", "random", cases[0].input, cases[0].reference, None))
    run_a = MethodRun("plus10", outputs={c.case_id: c.input for c in cases})
    run_b = MethodRun("exact", outputs={"c@x": cases[0].reference})  # fails on d@x
    run_b.case_errors["d@x"] = "ValueError: too small"
    scorer = QualityScorer(("psnr", "ssim"))
    rows = quality_rows([run_a, run_b], cases, scorer, progress=False)
    a_rows = [r for r in rows if r["method"] == "plus10"]
    expected = 20 * math.log10(255.0 / 10.0)  # MSE = 100
    assert all(r["psnr"] == pytest.approx(expected, rel=1e-5) for r in a_rows)
    exact = [r for r in rows if r["method"] == "exact"]
    assert exact[0]["psnr"] is None and exact[0]["ssim"] == pytest.approx(1.0)  # infinite PSNR
    assert exact[1]["status"] == "failed" and exact[1]["reason"] == "ValueError: too small"
    summary = {s["method"]: s for s in quality_summary(rows, scorer.metrics)}
    assert summary["plus10"]["psnr_mean"] == pytest.approx(expected, rel=1e-5)
    assert summary["plus10"]["psnr_std"] == pytest.approx(0.0, abs=1e-9)
    assert summary["exact"]["n_failed"] == 1
    md = quality_markdown(
        list(summary.values()), scorer.metrics, unavailable={"lpips": "no weights"}
    )
    assert "failed on 1 of 2 cases" in md and "too small" in md


def test_quality_scorer_reports_unavailable_metric_instead_of_crashing(monkeypatch):
    scorer = QualityScorer(("psnr", "lpips"))

    def broken(*_a):
        raise FileNotFoundError("alexnet weights missing: put alexnet.pth in $TORCH_HOME")

    scorer._fns["lpips"] = broken
    c = _constant_case(5.0)
    s1 = scorer.score(c.input, c.reference)
    s2 = scorer.score(c.input, c.reference)
    assert s1["lpips"] is None and s2["lpips"] is None and s1["psnr"] is not None
    assert "alexnet weights missing" in scorer.unavailable["lpips"]
    with pytest.raises(ValueError, match="unknown quality metrics"):
        QualityScorer(("psnr", "fid"))
