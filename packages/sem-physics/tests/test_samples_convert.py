"""Sample images (deterministic, SEM-like structure) and numpy <-> torch conversion."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi
from sem_physics import SAMPLE_KINDS, image_to_tensor, make_sample, read_image, tensor_to_image
from sem_physics.samples import ALL_SAMPLE_KINDS, sample_seed, write_samples


@pytest.mark.parametrize("kind", ALL_SAMPLE_KINDS)
def test_samples_are_deterministic_bounded_and_fast(kind: str) -> None:
    make_sample(kind, seed=0)  # warm-up
    # CPU time of this process (all its threads): other work on the machine does not count
    t0 = time.process_time()
    a = make_sample(kind, seed=4)
    elapsed = time.process_time() - t0
    b = make_sample(kind, seed=4)
    c = make_sample(kind, seed=5)
    assert a.shape == (480, 640) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert 0 <= a.min() and a.max() <= 255 and a.std() > 10
    assert elapsed < 1.0  # typically ~0.05 s; generous for a loaded CI machine


def test_lines_have_the_drawn_pitch_and_bright_edges() -> None:
    img = make_sample("lines", (256, 512), seed=2).astype(np.float64)
    profile = img.mean(axis=0) - img.mean()
    spec = np.abs(np.fft.rfft(profile))
    freq = np.fft.rfftfreq(profile.size)
    band = (freq > 1 / 50) & (freq < 1 / 20)
    pitch = 1 / freq[band][np.argmax(spec[band])]
    assert 28 * 0.93 <= pitch <= 44 * 1.07  # drawn pitch range, one FFT bin of slack
    # SE edge bloom: the brightest columns sit next to the steepest intensity change.
    grad = np.abs(np.gradient(ndi.uniform_filter1d(profile, 3)))
    bright = profile > np.percentile(profile, 95)
    near_edge = ndi.binary_dilation(grad > np.percentile(grad, 70), iterations=3)
    assert np.mean(near_edge[bright]) > 0.8


def _pitch_and_high_harmonics(img: np.ndarray) -> tuple[float, float]:
    """Pitch (px) of the mean profile across the lines, and its strongest component at 2.5
    times the fundamental's frequency or above, relative to the fundamental (Hann-windowed)."""
    profile = img.astype(np.float64).mean(axis=0)
    spec = np.abs(np.fft.rfft((profile - profile.mean()) * np.hanning(profile.size)))
    freq = np.fft.rfftfreq(profile.size)
    band = (freq > 1 / 50) & (freq < 1 / 20)
    i = int(np.argmax(np.where(band, spec, 0.0)))
    return 1 / freq[i], float(spec[freq > 2.5 * freq[i]].max() / spec[i])


def test_resist_lines_are_rounded_where_lines_have_sharp_blooming_edges() -> None:
    resist = [
        _pitch_and_high_harmonics(make_sample("resist", (256, 512), seed=s)) for s in range(6)
    ]
    lines = [_pitch_and_high_harmonics(make_sample("lines", (256, 512), seed=s)) for s in range(6)]
    assert all(22 * 0.9 <= p <= 44 * 1.1 for p, _ in resist)  # drawn pitch, FFT-bin slack
    # Rounding and weak bloom leave little past the second harmonic (measured 0.006-0.18);
    # sharp sidewalls with strong bloom keep a lot (0.24-0.57).
    assert max(r for _, r in resist) < 0.2 < min(r for _, r in lines)


def test_extra_kinds_leave_the_default_sets_unchanged(tmp_path: Path) -> None:
    assert set(SAMPLE_KINDS) | {"resist"} == set(ALL_SAMPLE_KINDS)
    names = sorted(p.name for p in write_samples(tmp_path, n_per_kind=1))
    assert names == sorted(f"{k}_000.png" for k in SAMPLE_KINDS)
    # A default kind's seeds keep its place among the default kinds.
    for k, kind in enumerate(SAMPLE_KINDS):
        expected = np.random.SeedSequence([7, k, 3]).generate_state(1, dtype=np.uint32)[0]
        assert sample_seed(7, kind, 3) == int(expected)
    with pytest.raises(ValueError, match="resist"):
        make_sample("wires")


def test_contacts_count_matches_hexagonal_density() -> None:
    img = make_sample("contacts", (480, 640), seed=1)
    smooth = ndi.gaussian_filter(img, 2)
    holes, _ = ndi.label(smooth < np.percentile(smooth, 20))
    sizes = np.bincount(holes.ravel())[1:]
    n_holes = int(np.sum(sizes > 30))
    # Hexagonal pitch 36..56 px -> 480*640 / (p^2 sqrt(3)/2) between ~113 and ~274 holes.
    assert 90 <= n_holes <= 300


@pytest.mark.parametrize("seed", [3, 4, 5])
def test_texture_has_bright_particles(seed: int) -> None:
    """Particles (rimmed blobs of 3-16 px radius) stand out of the grain: at least 10 bright
    regions of >= 20 px, 4 robust sigmas above the median (the grain alone gives 0-2)."""
    img = make_sample("texture", (480, 640), seed=seed)
    sigma = 1.4826 * np.median(np.abs(img - np.median(img)))
    labels, _ = ndi.label(img > np.median(img) + 4 * sigma)
    areas = np.bincount(labels.ravel())[1:]
    assert int((areas >= 20).sum()) >= 10


def test_write_samples_png_and_tiff(tmp_path: Path) -> None:
    paths = write_samples(tmp_path / "s", n_per_kind=2, shape=(64, 96), seed=9)
    assert [p.name for p in paths] == [f"{k}_{i:03d}.png" for k in SAMPLE_KINDS for i in range(2)]
    back = read_image(paths[3])  # contacts_001
    expected = make_sample("contacts", (64, 96), seed=sample_seed(9, "contacts", 1))
    np.testing.assert_allclose(back.data, expected, atol=0.5 * 255 / 65535 + 1e-4)
    tifs = write_samples(tmp_path / "t", n_per_kind=1, shape=(64, 96), seed=9, pixel_size_nm=1.5)
    img = read_image(tifs[0])
    assert tifs[0].suffix == ".tif" and img.pixel_size_nm == pytest.approx(1.5)
    again = write_samples(tmp_path / "s2", n_per_kind=2, shape=(64, 96), seed=9)
    assert [p.read_bytes() for p in again] == [p.read_bytes() for p in paths]


def test_image_tensor_round_trip() -> None:
    x = np.random.default_rng(0).uniform(0, 255, (5, 7))
    t = image_to_tensor(x)
    assert t.shape == (1, 1, 5, 7) and t.dtype == torch.float32
    np.testing.assert_array_equal(tensor_to_image(t), x.astype(np.float32))
    np.testing.assert_array_equal(tensor_to_image(t[0]), x.astype(np.float32))
    batch = image_to_tensor([x, 2 * x, 3 * x])
    assert batch.shape == (3, 1, 5, 7)
    np.testing.assert_array_equal(batch[2, 0].numpy(), (3 * x).astype(np.float32))
    np.testing.assert_array_equal(
        image_to_tensor(np.stack([x, x])).numpy()[:, 0], np.stack([x, x]).astype(np.float32)
    )
    out = tensor_to_image(torch.ones(4, 4, dtype=torch.float64, requires_grad=True) * 3)
    assert out.dtype == np.float32 and out[0, 0] == 3
