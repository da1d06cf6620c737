"""The report's blind PSF section: the estimate each blind-PSF row deconvolves with."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sem_physics import DegradationParams, degrade, estimate_degradation, make_sample
from sem_train.evaluation.estimates import estimate_markdown, estimate_rows
from sem_train.evaluation.protocols import Case


def _case(case_id: str, kind: str, params: DegradationParams, seed: int) -> Case:
    ref = make_sample(kind, (480, 640), seed=seed)
    y = degrade(ref, params, rng=seed).astype(np.float32)
    return Case(case_id, kind, kind, "s", y, ref, 0.827, params)


# Lines blurred past their second harmonic (the demo's lines_00@random setting): flagged.
LINES = DegradationParams(
    rx_px=28.3, ry_px=10.2, beta=1.97, theta_rad=0.394, gain=1.04, offset=16.5, sigma=1.5,
    dose=41.0,
)  # fmt: skip
TEXTURE = DegradationParams(
    rx_px=6.0, ry_px=9.0, beta=1.95, theta_rad=0.3, gain=1.0, offset=10, sigma=3, dose=30
)


@pytest.fixture(scope="module")
def rows():
    cases = [_case("lines@x", "lines", LINES, 0), _case("texture@y", "texture", TEXTURE, 1)]
    return cases, estimate_rows(cases)


def test_rows_hold_the_estimate_and_the_truth_in_canonical_form(rows) -> None:
    cases, out = rows
    assert [r["case_id"] for r in out] == ["lines@x", "texture@y"]
    tex = out[1]
    # the truth, canonical: Rx >= Ry, theta of the Rx axis (9 px at 0.3 + 90 degrees)
    assert (tex["true_rx_px"], tex["true_ry_px"]) == (9.0, 6.0)
    assert tex["true_theta_deg"] == pytest.approx(math.degrees(0.3) + 90.0)
    # the estimate is the one a blind-PSF restorer computes on the same input
    est = estimate_degradation(np.asarray(cases[1].input, np.float64))
    assert tex["rx_px"] == est.rx_px and tex["ry_px_err"] == est.ry_px_err
    assert abs(tex["rx_px"] / 9.0 - 1) < 0.15 and abs(tex["ry_px"] / 6.0 - 1) < 0.15
    assert tex["flags"] == ""
    assert "does not fix the blur" in out[0]["flags"]


def test_markdown_names_the_flagged_cases(rows) -> None:
    _, out = rows
    md = estimate_markdown(out)
    lines = md.splitlines()
    assert lines[0].startswith("| case | true Rx × Ry (px), θ |")
    assert lines[2].startswith("| lines@x | 28.3 × 10.2, 23° |") and "does not fix" in lines[2]
    assert lines[3].endswith("| ok |")
    assert "Flagged: `lines@x`." in md
    assert estimate_markdown(out[1:]).rstrip().endswith("No estimate is flagged.")
    round_row = {"case_id": "r", "true_rx_px": 15.5, "true_ry_px": 15.5, "true_theta_deg": 90.0}
    assert "| r | 15.5 × 15.5, round | — | ok |" in estimate_markdown([round_row])


def test_an_input_too_small_to_estimate_is_a_row_with_the_reason() -> None:
    small = Case("tiny", "t", "texture", "s", np.full((16, 16), 9.0, np.float32),
                 np.zeros((16, 16), np.float32), None, None)  # fmt: skip
    (row,) = estimate_rows([small])
    assert "too small" in row["flags"] and "rx_px" not in row and "true_rx_px" not in row


def _line_case(case_id: str, rx: float, ry: float, theta: float = 0.0) -> Case:
    p = DegradationParams(
        rx_px=rx, ry_px=ry, beta=2.0, theta_rad=theta, gain=1, offset=0, sigma=1, dose=10
    )
    z = np.zeros((8, 8), np.float32)
    return Case(case_id, "lines", "lines", "x", z, z, 0.827, p)


def test_the_harmonics_a_blur_passes_across_the_lines() -> None:
    """Real resist lines (pitch 25.5 nm at 0.827 nm/px: 30.8 px) at the midpoint (R = 15.5 px)
    keep their fundamental only; at R = 8 px three harmonics; across horizontal lines the
    elliptical PSF's y extent counts; lines finer than the blur are not resolved."""
    from sem_metrology import LineMeasurement
    from sem_train.evaluation.harmonics import harmonics_markdown, harmonics_rows

    def ref(orientation: str = "vertical", pitch_nm: float = 25.5) -> LineMeasurement:
        return LineMeasurement(valid=True, pixel_size_nm=0.827, pixel_size_source="test",
                               pitch_nm=pitch_nm, orientation=orientation)  # fmt: skip

    cases = [
        _line_case("mid", 15.5, 15.5),
        _line_case("mild", 8.0, 8.0),
        _line_case("flat", 4.0, 20.0),  # long along y: horizontal lines lose more
        _line_case("fine", 15.5, 15.5),
        _line_case("real", 15.5, 15.5),
    ]
    refs = {"mid": ref(), "mild": ref(), "flat": ref("horizontal"), "fine": ref(pitch_nm=10.0)}
    rows = {r["case_id"]: r for r in harmonics_rows(cases, refs)}
    assert set(rows) == {"mid", "mild", "flat", "fine"}  # no reference measured: no row
    assert rows["mid"]["pitch_px"] == pytest.approx(25.5 / 0.827)
    assert rows["mid"]["period_px"] == pytest.approx(15.5)
    assert [rows[c]["harmonics"] for c in ("mid", "mild", "flat", "fine")] == [1, 3, 1, 0]
    text = harmonics_markdown(list(rows.values()))
    assert "| mid | 15.5 | 30.8 | fundamental only |" in text
    assert "| fine | 15.5 | 12.1 | none: lines not resolved |" in text
    assert "`mid`, `flat`, `fine`" in text and "not from the data" in text
    assert harmonics_markdown([]) == ""
