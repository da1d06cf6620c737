"""Property-based layer: random bytes, arrays, metadata and parameters fed to ``read_image``
and ``degrade``. Each call returns a valid result or raises the package's own error types
(``ImageReadError``; a ``ValueError`` naming the parameter): never another exception, never
NaN or out-of-range garbage."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import numpy as np
import pytest
import tifffile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from pydantic import ValidationError
from sem_physics import DegradationParams, ImageReadError, ParameterRanges, degrade, read_image
from sem_physics.io import PIXEL_SIZE_RANGE_NM
from sem_physics.validation import MAX_FLOAT_GREY, NEGATIVE_NOISE_REACH, NEGATIVE_SHARE

pytestmark = pytest.mark.filterwarnings("ignore:Corrupt EXIF data:UserWarning")
FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MAGIC = [b"", b"II*\x00", b"MM\x00*", b"II+\x00", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"BM"]
EXTS = [".tif", ".tiff", ".png", ".jpg", ".bmp"]
DTYPES = ["uint8", "uint16", "uint32", "int8", "int16", "float16", "float32", "float64", "bool"]


def _check_valid(img: object, shape: tuple[int, int] | None = None) -> None:
    data = img.data  # type: ignore[attr-defined]
    assert data.ndim == 2 and data.dtype == np.float32 and data.size > 0
    assert np.isfinite(data).all()
    if shape is not None:
        assert data.shape == shape
    size = img.pixel_size_nm  # type: ignore[attr-defined]
    lo, hi = PIXEL_SIZE_RANGE_NM
    assert size is None or lo <= size <= hi
    bar = img.info_bar_rows  # type: ignore[attr-defined]
    assert bar is None or 0 <= bar < data.shape[0]


def _read_or_refuse(path: Path, shape: tuple[int, int] | None = None) -> None:
    try:
        img = read_image(path)
    except ImageReadError as err:
        assert path.name in str(err)
        return
    _check_valid(img, shape)


@FUZZ
@given(magic=st.sampled_from(MAGIC), body=st.binary(max_size=600), ext=st.sampled_from(EXTS))
def test_random_bytes(magic: bytes, body: bytes, ext: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"random{ext}"
        path.write_bytes(magic + body)
        _read_or_refuse(path)


@st.composite
def arrays(draw: st.DrawFn) -> np.ndarray:
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    h, w = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    channels = draw(st.sampled_from([None, 1, 2, 3, 4]))
    shape = (h, w) if channels is None else (h, w, channels)
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    if dtype.kind == "b":
        return rng.random(shape) > 0.5
    if dtype.kind == "f":
        scale = draw(st.sampled_from([1.0, 100.0, 1e30]))
        with np.errstate(over="ignore"):  # 1e30 overflows float16 to inf: one more case
            arr = rng.normal(0, scale, shape).astype(dtype)
        specials = draw(st.lists(st.sampled_from([np.nan, np.inf, -np.inf]), max_size=3))
        for value in specials:
            arr.flat[int(rng.integers(arr.size))] = value
        return arr
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)


@FUZZ
@given(arr=arrays(), cut=st.one_of(st.none(), st.floats(0.0, 1.0)))
def test_tifffile_arrays_and_truncations(arr: np.ndarray, cut: float | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "array.tif"
        photometric = "rgb" if arr.ndim == 3 and arr.shape[-1] in (3, 4) else "minisblack"
        tifffile.imwrite(path, arr, photometric=photometric)
        if cut is not None:
            data = path.read_bytes()
            path.write_bytes(data[: int(cut * len(data))])
        shape = None
        if cut is None:  # the image as stored (tifffile may take a small axis as pages)
            with tifffile.TiffFile(path) as tif:
                shape = (tif.pages[0].imagelength, tif.pages[0].imagewidth)
        _read_or_refuse(path, shape)


@FUZZ
@given(
    mode=st.sampled_from(["L", "RGB", "RGBA", "I;16", "1", "P", "LA", "I", "F"]),
    ext=st.sampled_from([".png", ".bmp", ".jpg", ".tif"]),
    h=st.integers(1, 10),
    w=st.integers(1, 10),
    seed=st.integers(0, 1000),
    cut=st.one_of(st.none(), st.floats(0.0, 1.0)),
)
def test_pil_written_images(
    mode: str, ext: str, h: int, w: int, seed: int, cut: float | None
) -> None:
    rng = np.random.default_rng(seed)
    im = Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8)).convert(mode)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"pil{ext}"
        try:
            im.save(path)
        except (OSError, KeyError, ValueError):
            return  # PIL cannot write this mode in this format: nothing to read
        if cut is not None:
            data = path.read_bytes()
            path.write_bytes(data[: int(cut * len(data))])
        _read_or_refuse(path, (h, w) if cut is None else None)


NUMBER_TEXT = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.floats(1e-3, 1e6).map(lambda v: f"{v:.6g}".replace(".", ",")),
    st.text(alphabet="0123456789.,eE+- ", max_size=12),
)


@FUZZ
@given(
    number=NUMBER_TEXT,
    encoding=st.sampled_from(["ascii", "utf-16-le", "utf-16", "latin-1"]),
    nuls=st.integers(0, 3),
    fei=st.one_of(st.none(), NUMBER_TEXT),
)
def test_odd_metadata_values(number: str, encoding: str, nuls: int, fei: str | None) -> None:
    raw = f"Serial=1\r\nPixelSize={number}\r\n".encode(encoding) + b"\x00" * nuls
    tags = [(40092, "B", len(raw), raw, True)]
    if fei is not None:
        text = f"[Scan]\r\nPixelWidth={fei}\r\n[Image]\r\nResolutionY={fei}\r\n"
        tags.append((34682, "s", 0, text, True))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "meta.tif"
        tifffile.imwrite(path, np.full((20, 30), 100, np.uint8), extratags=tags)
        img = read_image(path)
    _check_valid(img, (20, 30))
    try:
        value = float(number.replace(",", "."))
    except ValueError:
        value = math.nan
    lo, hi = PIXEL_SIZE_RANGE_NM
    if math.isfinite(value) and lo <= value <= hi and number.strip() == number:
        assert img.pixel_size_nm == value
        assert img.pixel_size_source == "TIFF tag 40092 (Hitachi PixelSize)"
    if img.pixel_size_nm is None:
        assert img.pixel_size_source.startswith("none")


BAD = [0.0, -1.0, 1e300, -1e300, math.nan, math.inf, -math.inf, 1e-300]
MID = ParameterRanges().midpoint().model_dump()


def _param(good: st.SearchStrategy[float]) -> st.SearchStrategy[float]:
    return st.one_of(good, st.sampled_from(BAD))


PARAMS = st.fixed_dictionaries(
    {
        "rx_px": _param(st.floats(0.05, 5.0)),
        "ry_px": _param(st.floats(0.05, 5.0)),
        "beta": _param(st.floats(0.01, 10.0)),
        "theta_rad": _param(st.floats(-7.0, 7.0)),
        "gain": _param(st.floats(0.0, 120.0)),
        "offset": _param(st.floats(-300.0, 300.0)),
        "sigma": _param(st.floats(-1.0, 300.0)),
        "dose": _param(st.floats(0.0, 1e9)),
    }
)


@st.composite
def images(draw: st.DrawFn) -> np.ndarray:
    arr = draw(arrays())
    if arr.ndim == 3 and draw(st.booleans()):
        arr = arr[..., :1]  # (H, W, 1) is accepted as (H, W)
    return arr


@FUZZ
@given(image=images(), values=PARAMS, seed=st.integers(0, 2**32 - 1))
def test_degrade_returns_valid_output_or_a_clear_error(
    image: np.ndarray, values: dict[str, float], seed: int
) -> None:
    try:
        params = DegradationParams(**values)
    except ValidationError as err:
        assert isinstance(err, ValueError)
        bad = {str(e["loc"][0]) for e in err.errors()}
        assert bad and bad <= set(values)
        for name in bad:  # each refused field is really outside its documented bounds
            field = DegradationParams.model_fields[name]
            assert not _inside(values[name], field.metadata)
        return
    try:
        out = degrade(image, params, rng=seed)
    except ValueError as err:
        message = str(err)
        assert message.startswith("image")
        arr = np.asarray(image)
        assert _refused_for_values(arr) or arr.dtype == bool or arr.ndim == 3, message
        return
    squeezed = image[..., 0] if image.ndim == 3 else image
    assert out.shape == squeezed.shape and out.dtype == np.float32
    assert np.isfinite(out).all()


def _refused_for_values(arr: np.ndarray) -> bool:
    """Values degrade refuses: non-finite, off the 0..255 scale, or substantially negative."""
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        return True
    if arr.dtype.kind not in "fiu" or arr.size == 0:
        return False
    values = arr.astype(np.float64)
    top = 255 if arr.dtype.kind in "iu" else MAX_FLOAT_GREY
    negative = np.mean(values < -NEGATIVE_NOISE_REACH) > NEGATIVE_SHARE
    return bool(np.abs(values).max() > 1e6 or values.max() > top or negative)


def _inside(value: float, metadata: list[object]) -> bool:
    if not math.isfinite(value):
        return False
    for bound in metadata:
        for attr, ok in (
            ("gt", lambda b: value > b),
            ("ge", lambda b: value >= b),
            ("lt", lambda b: value < b),
            ("le", lambda b: value <= b),
        ):
            b = getattr(bound, attr, None)
            if b is not None and not ok(b):
                return False
    return True


def test_dose_that_would_give_pure_noise_is_refused() -> None:
    for dose in (1e-300, 1e-3, 0.0099):
        try:
            DegradationParams(**{**MID, "dose": dose})
        except ValidationError as err:
            assert "greater than or equal to 0.01" in str(err)
        else:
            raise AssertionError(f"dose={dose} accepted")
    # At the smallest accepted dose a flat mid-grey image still shows its level, not noise only.
    p = DegradationParams(**{**MID, "dose": 0.01, "sigma": 0.0, "offset": 0.0, "gain": 1.0})
    y = degrade(np.full((128, 128), 128.0), p, rng=0, blur=False)
    assert abs(float(y.mean()) - 128.0) < 128.0 * 5 / math.sqrt(128 * 128 * 1.28)


def test_a_radius_far_below_a_pixel_gives_a_finite_kernel() -> None:
    """Found by the property above: ry_px = 1e-300 overflowed the radius grid to inf (NaN
    kernel). Along that axis the PSF is a delta: the kernel equals the 1-D profile in x."""
    from sem_physics import PSFParams, airy_psf

    k = airy_psf(PSFParams(rx_px=1.0, ry_px=1e-300, beta=1.0, theta_rad=0.0))
    assert np.isfinite(k).all() and abs(k.sum() - 1.0) < 1e-12
    mid = k.shape[0] // 2
    assert np.abs(np.delete(k, mid, axis=0)).max() < 1e-9  # (almost) nothing off the x axis
    np.testing.assert_allclose(k[mid], k[mid][::-1])  # symmetric along it
