"""Hostile and careless inputs for the command-line fuzz tests: bad image files, bad configs.

Every writer takes a folder and returns the path it wrote, so a case builds its inputs in the
test's own temporary folder. The good images are small SEM-like samples (lines, contacts)
that every command can process in a fraction of a second.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image
from sem_physics.samples import make_sample

GOOD_SHAPE = (96, 128)  # rows, columns: small enough that every command runs in well under 1 s


def good_array(kind: str = "lines", seed: int = 0) -> np.ndarray:
    """A uint8 SEM-like sample image (lines or contacts) on the 0..255 scale."""
    return np.clip(make_sample(kind, GOOD_SHAPE, seed=seed), 0, 255).astype(np.uint8)


def write_good_tif(
    folder: Path, name: str = "good.tif", kind: str = "lines", seed: int = 0
) -> Path:
    path = folder / name
    tifffile.imwrite(path, good_array(kind, seed))
    return path


def _png_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _tif_bytes(arr: np.ndarray, **kwargs) -> bytes:
    buf = io.BytesIO()
    tifffile.imwrite(buf, arr, **kwargs)
    return buf.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def huge_png_bytes(side: int = 12000) -> bytes:
    """A valid-looking PNG declaring side x side 8-bit grey pixels with a tiny compressed body."""
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    body = zlib.compress(b"\0" * 4096)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", body)
        + _png_chunk(b"IEND", b"")
    )


def huge_tif_bytes(side: int = 30000) -> bytes:
    """A 1 KB baseline TIFF whose one strip declares side x side uncompressed 8-bit pixels."""
    entries = [  # (tag, type, count, value); type 3 SHORT, 4 LONG
        (256, 4, 1, side),
        (257, 4, 1, side),
        (258, 3, 1, 8),
        (259, 3, 1, 1),
        (262, 3, 1, 1),
        (273, 4, 1, 0),  # strip offset, patched below
        (277, 3, 1, 1),
        (278, 4, 1, side),
        (279, 4, 1, side * side),
    ]
    ifd_size = 2 + 12 * len(entries) + 4
    data_offset = 8 + ifd_size
    out = bytearray(b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", len(entries)))
    for tag, typ, count, value in entries:
        value = data_offset if tag == 273 else value
        packed = struct.pack("<H", value) + b"\0\0" if typ == 3 else struct.pack("<I", value)
        out += struct.pack("<HHI", tag, typ, count) + packed
    out += struct.pack("<I", 0) + b"\0" * 1024
    return bytes(out)


def _float_with(values: str) -> np.ndarray:
    arr = good_array().astype(np.float32)
    if values == "nan":
        arr[10:20, 10:20] = np.nan
    elif values == "inf":
        arr[10:20, 10:20] = np.inf
    elif values == "allnan":
        arr[:] = np.nan
    return arr


def _corrupt(data: bytes, start: int) -> bytes:
    rng = np.random.default_rng(0)
    junk = rng.integers(0, 256, len(data) - start, dtype=np.uint8).tobytes()
    return data[:start] + junk


#: name -> bytes of a file no command should process as a valid SEM image
BAD_FILES: dict[str, Callable[[], bytes]] = {
    "zero-byte.tif": lambda: b"",
    "zero-byte.png": lambda: b"",
    "text-renamed.tif": lambda: b"not an image, just a note someone renamed\n" * 4,
    "text-renamed.png": lambda: b"not an image, just a note someone renamed\n" * 4,
    "truncated.tif": lambda: _tif_bytes(good_array())[:300],
    "truncated.png": lambda: _png_bytes(good_array())[:120],
    "corrupt.tif": lambda: _corrupt(_tif_bytes(good_array()), 8),
    "corrupt.png": lambda: _corrupt(_png_bytes(good_array()), 33),
    "one-pixel.tif": lambda: _tif_bytes(np.full((1, 1), 128, np.uint8)),
    "two-by-two.png": lambda: _png_bytes(np.array([[0, 255], [255, 0]], np.uint8)),
    "all-nan.tif": lambda: _tif_bytes(_float_with("allnan")),
    "nan-patch.tif": lambda: _tif_bytes(_float_with("nan")),
    "inf-patch.tif": lambda: _tif_bytes(_float_with("inf")),
    "huge-declared.tif": huge_tif_bytes,
    "huge-declared.png": huge_png_bytes,
}


def write_bad(folder: Path, name: str) -> Path:
    path = folder / name
    path.write_bytes(BAD_FILES[name]())
    return path


def write_tiff_with_pixel_size(folder: Path, name: str, pixel_size_nm: object) -> Path:
    """A good line image whose metadata (sem_physics JSON description) states ``pixel_size_nm``."""
    import json

    path = folder / name
    desc = json.dumps({"sem_physics": {"pixel_size_nm": pixel_size_nm}})
    tifffile.imwrite(path, good_array(), description=desc, metadata=None)
    return path


#: name -> text of a training/benchmark config that must be refused with a one-line error
BAD_YAML: dict[str, str] = {
    "malformed": "run: [\n  epochs: 3\n",
    "tabs": "run:\n\tepochs: 3\n",
    "control-chars": "run:\n  output_dir: \x07\x1b[31mred\n",
    "alias": "base: &b {epochs: 1}\nrun: *b\n",
    "alias-bomb": "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a]\n"
    "c: &c [*b, *b, *b, *b, *b, *b, *b, *b]\nd: [*c, *c, *c, *c, *c, *c, *c, *c]\n",
    "python-tag": "run: !!python/object/apply:os.system ['echo pwned']\n",
    "python-name": "run: !!python/name:os.system\n",
    "unknown-top-key": "preset: cpu-small\nrunn: {epochs: 1}\n",
    "top-level-list": "- run\n- data\n",
    "top-level-scalar": "42\n",
    "empty": "",
    "binary": "\x00\x01\x02\x03garbage\xff",
}
