"""Validity guards of line measurements: no line orientation, smoothed edges, interpolated
edges, and the messages (CLI text, SMILE's small-region refusal, pixel-size mismatch)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sem_metrology import fit_palasantzas, make_line_image, measure_lines, palasantzas_psd
from sem_metrology._line_metrics import high_frequency_slope, smoothed_edge_flag
from sem_metrology.cli import main
from sem_metrology.lines import _smile_level_reason
from sem_metrology.preprocess import detect_orientation
from sem_physics import DegradationParams, ParameterRanges, degrade
from sem_physics.io import write_image
from sem_physics.psf import airy_psf
from sem_physics.samples import make_sample

LINE_PIXEL_NM = 0.827009


def _blur(image: np.ndarray, radius_px: float, seed: int = 0) -> np.ndarray:
    """The paper's midpoint setting (noise included) at another blur radius."""
    params = (
        ParameterRanges().midpoint().model_copy(update={"rx_px": radius_px, "ry_px": radius_px})
    )
    return np.asarray(degrade(image, params, seed), dtype=np.float64)


def _wiener(y: np.ndarray, params: DegradationParams, k: float) -> np.ndarray:
    """Wiener deconvolution with the true PSF: a restored image (smoothed, noise removed)."""
    psf = airy_psf(params.psf)
    n = psf.shape[0]
    pad = np.zeros(y.shape)
    pad[:n, :n] = psf
    otf = np.fft.rfft2(np.roll(pad, (-(n // 2), -(n // 2)), axis=(0, 1)))
    spec = np.fft.rfft2(y - y.mean()) * np.conj(otf) / (np.abs(otf) ** 2 + k)
    return np.fft.irfft2(spec, s=y.shape) + y.mean()


def _smoothed(m) -> bool:
    return any("smoothed edges" in f for f in m.fit_flags)


# --- no line orientation -------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["contacts", "texture"])
@pytest.mark.parametrize("convention", ["smile", "truth"])
def test_contact_arrays_and_textures_are_not_measured_as_lines(kind, convention) -> None:
    image = make_sample(kind, (480, 640), seed=0)  # smile read the contacts as 22 lines
    assert detect_orientation(image)[1] < 1.5 and detect_orientation(image, 8)[1] < 1.5
    m = measure_lines(image, 1.0, convention=convention)
    assert not m.valid and m.reason.startswith("no measurable lines: no line orientation")
    assert "sem-measure contacts" in m.reason and "--orientation" in m.reason
    assert m.orientation is None
    given = measure_lines(image, 1.0, convention=convention, orientation="vertical")
    assert "no line orientation" not in (given.reason or "")  # the user's choice


@pytest.mark.parametrize(("kind", "seed", "radius"), [("lines", 0, 30.0), ("resist", 2, 20.0)])
def test_strongly_blurred_lines_are_still_measured(kind, seed, radius) -> None:
    """Pixel noise hides the orientation on 2x2 bins; 8x8 blocks still show the lines, and
    the lines of the focused image are found (one may reach the border after blurring)."""
    focused = make_sample(kind, (480, 640), seed=seed)
    blurred = _blur(focused, radius, seed)
    assert detect_orientation(blurred)[1] < 1.5 < detect_orientation(blurred, 8)[1]
    m = measure_lines(blurred, 1.0, convention="truth")
    n_focused = measure_lines(focused, 1.0, convention="truth").n_lines
    assert m.valid and n_focused - 1 <= m.n_lines <= n_focused
    assert any(w.startswith("weak line orientation") for w in m.warnings)


def test_real_contact_image_is_refused_and_blurred_real_lines_measured(
    sem_real_dir, real_line_image
) -> None:
    from sem_physics.io import read_image

    holes = read_image(sem_real_dir / "contacts_0p901nm.tif")
    for convention in ("smile", "truth"):  # truth read it as one 188-nm line before
        m = measure_lines(holes, convention=convention)
        assert not m.valid and m.reason.startswith("no measurable lines: no line orientation")
    blurred = _blur(real_line_image.astype(np.float64), 20.0)
    assert detect_orientation(blurred)[1] < 1.5
    m = measure_lines(blurred, LINE_PIXEL_NM, convention="truth")
    assert m.valid and m.n_lines == 40


# --- smoothed edges ------------------------------------------------------------------------


def test_high_frequency_slope_closed_forms() -> None:
    f = np.arange(257) / (512 * 0.8)
    power = np.r_[0.0, 3.0 * f[1:] ** -3.0]
    assert high_frequency_slope(f, power) == pytest.approx(-3.0, abs=1e-9)
    assert high_frequency_slope(f, np.full(f.size, 2.0)) == pytest.approx(0.0, abs=1e-12)
    assert high_frequency_slope(f[:5], power[:5]) is None  # too few bins


@pytest.mark.parametrize(
    ("exponent", "floor_nm3", "flagged"),
    [(1.7, 0.0, True), (1.7, 1e-3, False), (0.6, 0.0, False)],
)
def test_smoothed_edge_flag_on_model_psds(exponent, floor_nm3, flagged) -> None:
    """Only a PSD steeper than a rough edge's (H >= 1.25) that keeps falling at the highest
    frequencies (no white floor) is flagged."""
    f = np.arange(1, 449) / (896 * 0.827)
    psd = palasantzas_psd(f, 1.0, 10.0, exponent, floor_nm3)
    fit = fit_palasantzas(f, psd)
    assert fit.roughness_exponent == pytest.approx(exponent, abs=0.05)
    assert (smoothed_edge_flag("LER", fit, f, psd) is not None) is flagged


def test_deconvolved_lines_are_flagged_focused_and_defocused_are_not() -> None:
    deg = DegradationParams(
        rx_px=5.0, ry_px=5.0, beta=2.0, theta_rad=0.0, gain=1.0, offset=0.0, sigma=5.0, dose=20
    )
    noisy = make_line_image(n_lines=12, shape=(384, 512), sigma_nm=1.2, seed=3, degradation=deg)
    clean = make_line_image(n_lines=12, shape=(384, 512), sigma_nm=1.2, seed=3)
    px = noisy.pixel_size_nm
    restored = measure_lines(_wiener(noisy.image, deg, 0.05), px, convention="truth")
    assert restored.valid and _smoothed(restored)
    assert any("underestimate" in w and "restored" in w for w in restored.warnings)
    assert restored.roughness_exponent > 1.25
    for image in (noisy.image, clean.image, make_sample("lines", (480, 640), seed=3)):
        for convention in ("smile", "truth"):
            m = measure_lines(image, px, convention=convention)
            assert not m.valid or not _smoothed(m)


def test_real_image_flags_only_its_restoration(real_line_image) -> None:
    focused = real_line_image.astype(np.float64)
    for convention in ("smile", "truth"):
        assert not _smoothed(measure_lines(focused, LINE_PIXEL_NM, convention=convention))
    params = ParameterRanges().midpoint().model_copy(update={"rx_px": 10.0, "ry_px": 10.0})
    blurred = np.asarray(degrade(focused, params, 0), dtype=np.float64)
    assert not _smoothed(measure_lines(blurred, LINE_PIXEL_NM, convention="truth"))
    restored = measure_lines(_wiener(blurred, params, 0.02), LINE_PIXEL_NM, convention="truth")
    reference = measure_lines(focused, LINE_PIXEL_NM, convention="truth")
    assert restored.valid and _smoothed(restored)
    # No noise floor left to remove: "unbiased" equals biased, unlike on the focused image.
    assert restored.lwr_unbiased_nm == pytest.approx(restored.lwr_nm, rel=0.01)
    assert reference.lwr_unbiased_nm < 0.85 * reference.lwr_nm


# --- interpolated edges --------------------------------------------------------------------


def _with_flat_rows(fraction: float) -> tuple[np.ndarray, float, int]:
    """A line image whose rows 100.. (``fraction`` of them) are flat at the space level."""
    s = make_line_image(n_lines=10, shape=(256, 320), sigma_nm=1.0, seed=11)
    image = s.image.copy()
    k = int(fraction * image.shape[0])
    image[100 : 100 + k] = 50.0
    return image, s.pixel_size_nm, k


def test_interpolated_edges_are_counted_and_limited() -> None:
    image, px, k = _with_flat_rows(0.1)
    m = measure_lines(image, px, convention="truth", tone="bright")
    assert m.valid and m.n_lines == 10 and m.n_gaps == 2 * 10 * k  # every edge, every flat row
    share = 100 * m.n_gaps / (2 * m.n_lines * m.n_rows)
    assert f"{m.n_gaps} edge gap(s) filled by interpolation ({share:.2g} %" in " ".join(m.warnings)
    assert "a large share" not in " ".join(m.warnings)
    image, px, k = _with_flat_rows(0.2)
    m = measure_lines(image, px, convention="truth", tone="bright")
    assert m.valid and m.n_gaps == 2 * 10 * k
    assert "a large share, the results rest on interpolated edges" in " ".join(m.warnings)
    image, px, k = _with_flat_rows(0.3)
    m = measure_lines(image, px, convention="truth", tone="bright")
    assert not m.valid and m.reason.startswith("no measurable edges")
    assert f"{2 * 10 * k} of {2 * 10 * 256} edge points (30 %)" in m.reason
    assert "max_interpolated_fraction=0.25" in m.reason and "--roi" in m.reason
    m = measure_lines(image, px, convention="truth", tone="bright", max_interpolated_fraction=0.5)
    assert m.valid and m.n_gaps == 2 * 10 * k


def test_real_image_with_its_info_bar_blurred_in(sem_real_dir) -> None:
    """The blurred bar's white text sets SMILE's top level and its black background the space
    plateau of the check: the threshold sits below the spaces in every row (42 % of the edge
    points interpolated). Without the bar rows the image is refused for its levels."""
    from sem_physics.io import read_image

    sem = read_image(sem_real_dir / "lines_euv_resist_0p827nm.tif")
    frame = np.asarray(degrade(np.asarray(sem.data), ParameterRanges().midpoint(), 0), np.float64)
    m = measure_lines(frame, LINE_PIXEL_NM)
    assert not m.valid and m.reason.startswith("no measurable edges")
    gaps, points = (int(v) for v in m.reason.split(": ")[1].split(" edge points")[0].split(" of "))
    assert gaps / points > 0.3
    no_bar = frame[: frame.shape[0] - sem.info_bar_rows]
    assert "outside the image's space..line range" in measure_lines(no_bar, LINE_PIXEL_NM).reason
    assert measure_lines(no_bar, LINE_PIXEL_NM, convention="truth").n_lines == 40


# --- messages ------------------------------------------------------------------------------


def test_cli_text_prints_reason_only_when_there_is_one(tmp_path, capsys) -> None:
    s = make_line_image(n_lines=10, shape=(192, 320), sigma_nm=1.0, seed=11)
    path = tmp_path / "lines.tif"
    write_image(path, s.image, "uint8", pixel_size_nm=s.pixel_size_nm)
    assert main(["lines", str(path), "--convention", "truth"]) == 0
    out = dict(ln.split(": ", 1) for ln in capsys.readouterr().out.splitlines())
    assert "reason" not in out
    lo, hi = out["levels"].removesuffix(" (grey levels)").split("/")
    assert 0 <= float(lo) < float(hi) <= 255
    flat = tmp_path / "flat.tif"
    write_image(flat, np.full((64, 64), 90.0), "uint8", pixel_size_nm=1.0)
    assert main(["lines", str(flat)]) == 1
    assert "reason: constant image" in capsys.readouterr().out


def test_smile_level_refusal_names_the_truth_convention() -> None:
    large = _smile_level_reason(52.0, (0.0, 104.0), (71.0, 88.0))
    assert "cannot measure this image" in large and "too small" not in large
    assert "the truth convention (convention='truth', --convention truth)" in large


def test_smile_refuses_a_region_trimmed_below_64_px_by_its_turn() -> None:
    """70 rows tilted by 3°: SMILE's turn trims the region to 48 rows, under its 64."""
    s = make_line_image(n_lines=8, shape=(70, 300), sigma_nm=0.5, tilt_deg=3.0, seed=2)
    m = measure_lines(s.image, 0.827, convention="smile")
    assert not m.valid and m.reason.startswith("region too small: 48x292 px"), m.reason


def test_smile_refusal_on_a_small_real_crop(real_line_image) -> None:
    m = measure_lines(real_line_image[:40, :40], LINE_PIXEL_NM)  # refused before for the level
    assert not m.valid and m.reason.startswith("region too small")


def test_pixel_size_differing_from_metadata_is_used_and_warned(tmp_path, capsys) -> None:
    s = make_line_image(n_lines=10, shape=(192, 320), sigma_nm=1.0, seed=11)

    class Image:
        data = s.image
        pixel_size_nm = 0.8
        pixel_size_source = "tiff tag"

    m = measure_lines(Image(), 0.9)
    assert m.pixel_size_nm == 0.9
    assert any("0.9 nm" in w and "0.8 nm" in w and "+12.5 %" in w for w in m.warnings)
    for size in (None, 0.805):  # metadata, and within 1 % of it
        assert not any("pixel size" in w for w in measure_lines(Image(), size).warnings)
    path = tmp_path / "lines.tif"
    write_image(path, s.image, "uint8", pixel_size_nm=0.8)
    assert main(["lines", str(path), "--pixel-size-nm", "0.9", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["pixel_size_nm"] == 0.9 and data["pixel_size_source"] == "command line"
    assert any("0.9 nm" in w and "0.8 nm" in w for w in data["warnings"])


def test_weakly_oriented_lines_are_measured_along_the_block_orientation() -> None:
    """Where pixel noise drowns the 2-px look (anisotropy < 1.5), the 8-px blocks that accept
    the image also give its orientation: strongly blurred horizontal lines whose 2-px look
    says vertical are measured across the right axis (they were refused: no profile across
    the wrong one), and no such image is measured along the wrong axis."""
    p = DegradationParams(
        rx_px=30, ry_px=30, beta=1.95, theta_rad=0, gain=1, offset=0, sigma=4, dose=5
    )
    for seed in (8, 9, 10, 12, 13, 34):
        y = degrade(make_sample("lines", (256, 256), seed=seed).T.copy(), p, rng=seed)
        fine, anisotropy = detect_orientation(y)
        m = measure_lines(y, 1.0, convention="truth")
        assert not m.valid or m.orientation == "horizontal", (seed, fine, anisotropy)
        if seed in (12, 34):  # the 2-px look says vertical
            assert fine == "vertical" and anisotropy < 1.5
            assert m.valid and m.orientation == "horizontal" and 15 < m.cd_nm < 30, m.reason
