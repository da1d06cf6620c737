"""The report section on how CD reads under residual blur (``evaluation.cd_blur``)."""

from __future__ import annotations

import re

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter
from sem_metrology import LineOptions
from sem_physics import make_sample
from sem_train.evaluation.cd_blur import BLUR_SIGMAS_PX, cd_blur_markdown, cd_blur_rows
from sem_train.evaluation.metrology import measure_line_image
from sem_train.evaluation.protocols import Case

TRUTH = LineOptions(convention="truth")


def _cases(image: np.ndarray, name: str, pixel_size_nm: float) -> list[Case]:
    return [
        Case(f"{name}@{s}", name, "lines", s, image, image, pixel_size_nm)
        for s in ("random", "midpoint")
    ]


def _binary_lines(width_px: int = 20, pitch_px: int = 50, shape=(256, 400)) -> np.ndarray:
    """Bright lines of ``width_px`` on a dark background, sharp edges, a little noise."""
    x = np.arange(shape[1])
    row = np.where((x % pitch_px) < width_px, 180.0, 60.0)
    rng = np.random.default_rng(0)
    return (np.tile(row, (shape[0], 1)) + rng.normal(0, 1.0, shape)).astype(np.float32)


def test_symmetric_edges_keep_their_cd_under_blur() -> None:
    """A Gaussian blur does not move the half-level crossing of an isolated symmetric step:
    lines of 20 px (1 nm/px) read 20 nm at every σ small beside the 20 px line and 30 px
    space, with no bloom correction anywhere; one row per image, not per setting."""
    image = _binary_lines()
    cases = _cases(image, "binary", 1.0)
    ref = measure_line_image(image, 1.0, TRUTH)
    assert ref.cd_nm == pytest.approx(20.0, abs=0.1)
    (row,) = cd_blur_rows(cases, {c.case_id: ref for c in cases}, TRUTH)
    assert row["image"] == "binary" and not row["bloom"] and not any(row["blurred_bloom"])
    for sigma, cd in zip(BLUR_SIGMAS_PX, row["blurred_cd_nm"], strict=True):
        if sigma <= 4:
            assert cd == pytest.approx(20.0, abs=0.15), (sigma, cd)
    text = cd_blur_markdown([row])
    assert "No bloom correction to lose" in text and "ᵇ" not in text.split("|---")[-1]


def test_bloom_lines_lose_their_correction_and_the_note_says_where() -> None:
    """The sample generator's lines carry a bloom ridge: the focused reference and the least
    blurred copies are read with the correction, and from some σ on without it; the note
    names that σ and the error range the rows hold."""
    image = make_sample("lines", seed=0)
    cases = _cases(image, "lines_00", 0.827)
    ref = measure_line_image(image, 0.827, TRUTH)
    assert ref.edge_offset_nm  # bloom corrected
    (row,) = cd_blur_rows(cases, {c.case_id: ref for c in cases}, TRUTH)
    flags = row["blurred_bloom"]
    stop = flags.index(False)
    assert stop > 0 and all(flags[:stop]) and not any(flags[stop:])
    errors = [abs(cd - ref.cd_nm) for cd in row["blurred_cd_nm"][stop:]]
    # without the correction the reading is the uncorrected one: the same image measured
    # with correct_bloom=False gives the same CD
    plain = LineOptions(convention="truth", correct_bloom=False)
    pinned = plain.model_copy(update={"tone": ref.tone, "orientation": ref.orientation})
    blurred = gaussian_filter(image.astype(np.float64), BLUR_SIGMAS_PX[stop])
    blurred = measure_line_image(blurred, 0.827, pinned)
    assert row["blurred_cd_nm"][stop] == pytest.approx(blurred.cd_nm, abs=1e-9)
    text = cd_blur_markdown([row])
    note = re.search(r"from σ = ([\d.]+) px .* reads ([\d.]+)-([\d.]+) nm off", text)
    assert note is not None, text
    assert float(note.group(1)) == BLUR_SIGMAS_PX[stop]
    assert float(note.group(2)) == pytest.approx(min(errors), abs=0.005)
    assert float(note.group(3)) == pytest.approx(max(errors), abs=0.005)
    assert f"| lines_00 | {ref.cd_nm:.2f} ᵇ |" in text
    assert cd_blur_markdown([]) == ""
