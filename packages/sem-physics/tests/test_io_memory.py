"""Peak memory of image writing and reading on a 2048 x 2048 frame, and the banded
quantisation equal bit for bit to the whole-array formula."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from sem_physics import io
from sem_physics.io import quantize, read_image, write_image
from sem_physics.testing import traced_peak_bytes

SHAPE = (2048, 2048)
# tracemalloc peaks (numpy's allocations) per pixel. Writing uint16: the whole-frame float64
# quantisation reached 24, the banded one 4 (the 2-byte result and an 8 MiB band). Reading:
# the decoded pixels kept through the info bar search reached 10.9 (uint16) and 12.9 (float32
# TIFF); freed before it, 9.0 (the float32 frame and the search's integer copy of its bottom
# rows, or a float file's pixels and their conversion); with the search row by row, 6.0 for
# uint16 (the decoded pixels and the float32 frame) and 9.0 for float32 files.
WRITE_MAX_BYTES_PER_PX = 8.0
READ_MAX_BYTES_PER_PX = {"uint16": 7.0, "float32": 10.0}
# The info bar search on a float32 frame: 4.9 B/px when it copied the bottom 30 % of the rows
# (rounded, then as int64) and a finiteness mask of the frame; 0.01 row by row.
INFO_BAR_MAX_BYTES_PER_PX = 0.5


def _peak_bytes_per_px(run: Callable[[], object]) -> float:
    """tracemalloc peak of ``run()`` per pixel of :data:`SHAPE`."""
    return traced_peak_bytes(run) / (SHAPE[0] * SHAPE[1])


def _frame() -> np.ndarray:
    """A float32 frame on 0..255 with values past both ends, as a simulation returns."""
    return np.random.default_rng(0).random(SHAPE, dtype=np.float32) * np.float32(300) - 20


@pytest.mark.parametrize("ext", [".png", ".tif"])
def test_write_uint16_peak_memory_stays_near_the_output(tmp_path: Path, ext: str) -> None:
    x = _frame()
    write_image(tmp_path / f"warm{ext}", x[:64, :64], "uint16", warn_clipped=False)
    per_px = _peak_bytes_per_px(
        lambda: write_image(tmp_path / f"out{ext}", x, "uint16", warn_clipped=False)
    )
    assert per_px < WRITE_MAX_BYTES_PER_PX, f"write_image(uint16) peaked at {per_px:.1f} B/px"


@pytest.mark.parametrize(
    ("dtype", "ext"), [("uint16", ".png"), ("uint16", ".tif"), ("float32", ".tif")]
)
def test_read_peak_memory_frees_the_decoded_pixels(tmp_path: Path, dtype: str, ext: str) -> None:
    path = write_image(tmp_path / f"frame{ext}", _frame(), dtype, warn_clipped=False)
    read_image(write_image(tmp_path / f"warm{ext}", _frame()[:64, :64], dtype, warn_clipped=False))
    per_px = _peak_bytes_per_px(lambda: read_image(path))
    limit = READ_MAX_BYTES_PER_PX[dtype]
    assert per_px < limit, f"read_image of a {dtype} {ext} peaked at {per_px:.1f} B/px"


def test_info_bar_search_copies_no_band_of_the_frame() -> None:
    from sem_physics.info_bar import detect_info_bar, frame_line_rows

    x = _frame()
    x[-150:] = 0.0  # a black bar
    x[-150:, :300] = 255.0  # its text
    assert detect_info_bar(x) == 150
    for run in (lambda: detect_info_bar(x), lambda: frame_line_rows(x)):
        per_px = _peak_bytes_per_px(run)
        assert per_px < INFO_BAR_MAX_BYTES_PER_PX, (
            f"the info bar search peaked at {per_px:.2f} B/px"
        )


@pytest.mark.parametrize("dtype", ["uint16", "uint8", "uint32"])
@pytest.mark.parametrize("shape", [(1, 1), (7, 5), (61, 33), (5, 40, 3)])
def test_banded_quantize_equals_whole_array_formula(
    monkeypatch: pytest.MonkeyPatch, dtype: str, shape: tuple[int, ...]
) -> None:
    monkeypatch.setattr(io, "_QUANTIZE_BAND_PX", 7)  # bands of a row or less, unaligned
    rng = np.random.default_rng(1)
    k = rng.integers(-3, 65539, shape)  # exact halves of the uint16 steps round to even
    edges = np.where(rng.random(shape) < 0.5, (k + 0.5) * (255.0 / 65535.0), k % 260 + 0.5)
    for x in (
        edges,
        edges.astype(np.float32),
        rng.normal(128, 150, shape),
        np.asfortranarray(edges),
    ):
        data = np.clip(np.asarray(x, dtype=np.float64), 0, 255)
        top = {"uint8": 255.0, "uint16": 65535.0, "uint32": 4294967295.0}[dtype]
        want = np.rint(data * (top / 255.0)).astype(dtype)
        got = quantize(x, dtype)
        assert got.dtype == want.dtype and got.strides == want.strides
        assert got.tobytes() == want.tobytes()


def test_read_of_a_unit_scale_float_file_scales_in_place(tmp_path: Path) -> None:
    """A float32 file on 0..1 is read to 0..255 by one float32 product per pixel, in place on
    its converted copy: the peak stays that of a 0..255 file (a second frame for the product
    reached 12.9 B/px), and the values are those products."""
    import tifffile

    unit = np.random.default_rng(1).random(SHAPE, dtype=np.float32)
    path = tmp_path / "unit.tif"
    tifffile.imwrite(path, unit)
    tifffile.imwrite(tmp_path / "warm.tif", unit[:64, :64])
    read_image(tmp_path / "warm.tif")
    per_px = _peak_bytes_per_px(lambda: read_image(path))
    assert per_px < READ_MAX_BYTES_PER_PX["float32"], f"peaked at {per_px:.1f} B/px"
    img = read_image(path)
    assert img.data.dtype == np.float32
    assert img.data.tobytes() == (unit * np.float32(255.0)).tobytes()
