"""Micrograph files in, restored files out, as a microscopist expects.

* The info bar (``SEMImage.info_bar_rows``, detected by :func:`sem_physics.io.read_image`) is
  cut before restoring and put back unchanged below the result; an image without a detected
  bar is restored whole.
* The output keeps the input's sample type (8-bit in, 8-bit out; 16-bit in, 16-bit out; float
  in, float32 out) unless float32 is asked for. TIFF and PNG keep their format; JPEG and BMP
  become TIFF (no second lossy encoding). A float output of a float input is written on the
  input's own scale (0..1 in, 0..1 out; :func:`output_value_scale`), its info bar copied from
  the file; ``float32`` of an integer input is on the 0..255 scale.
* A TIFF output carries the input's vendor tags byte for byte (Hitachi 40092, Zeiss CZ_SEM
  34118, FEI 34680/34682, the description, resolution, ...), so the pixel size and the
  acquisition conditions (``SEMImage.acquisition``) read back from the same tags; otherwise the pixel size is stored the way :func:`sem_physics.write_image`
  stores it. Tags that point to a sub-directory of tags (the EXIF IFD 34665, GPS 34853,
  SubIFDs 330, ...) cannot be copied by the writer: they are left out, and
  :func:`uncopied_tags` says which and what they held. A frame read as stored (an info bar
  under an Orientation tag other than 1) keeps that tag, so a viewer turns both alike.
* The output is one grey page, so an ImageDescription that states the input's array layout is
  rewritten (:func:`output_description`): tifffile's JSON loses its ``shape`` and ``axes``,
  an ImageJ description its stack entries (``images=``, ``channels=``, ``slices=``,
  ``frames=``, ``hyperstack=``, ...), keeping its calibration (``unit=``, ``spacing=``, ...);
  OME-XML is left out (and named as :func:`uncopied_tags`); any other description (a
  vendor's text) is copied byte for byte.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
from sem_physics import SEMImage, write_image
from sem_physics.atomic import atomic_write
from sem_physics.io import held_tiff_log, quantize, read_image, tiff_samples

__all__ = [
    "Micrograph",
    "assemble",
    "output_description",
    "output_dtype",
    "output_notes",
    "output_suffix",
    "output_value_scale",
    "read_input",
    "split_info_bar",
    "uncopied_tags",
    "write_restored",
]

_TIFF = (".tif", ".tiff")
# Tags that describe the pixel layout of the file itself: the writer makes its own.
_LAYOUT_TAGS = frozenset(
    {254, 255, 256, 257, 258, 259, 262, 266, 273, 274, 277, 278, 279, 280, 281, 284, 317, 320,
     322, 323, 324, 325, 338, 339, 340, 341, 347, 530, 531, 532, 32997, 32998}
)  # fmt: skip
# Tags whose value is the offset of a sub-directory of tags (an IFD) in the source file: the
# writer (tifffile) cannot write them, so they are not copied (and the outputs say so).
_IFD_TAGS = {
    330: "SubIFDs",
    400: "GlobalParametersIFD",
    34665: "EXIF IFD",
    34853: "GPS IFD",
    40965: "Interoperability IFD",
}
_RESOLUTION_TAGS = (282, 283, 296)
_SOFTWARE_TAG = 305
_ORIENTATION_TAG = 274
_DESCRIPTION_TAG = 270
# tifffile's JSON entries and ImageJ's lines that state the array layout (pages, channels,
# stack order, their display): the output, one grey page, has none of them.
_SHAPED_KEYS = ("shape", "axes")
_IMAGEJ_STACK_KEYS = frozenset(
    {b"images", b"channels", b"slices", b"frames", b"hyperstack", b"mode", b"loop"}
)


@dataclass(frozen=True)
class Micrograph:
    """The part of a read frame to restore and the info bar kept aside (float32, 0..255)."""

    image: np.ndarray
    bar: np.ndarray
    bar_rows: int


def split_info_bar(img: SEMImage, bar_rows: int | None = None) -> Micrograph:
    """Cut ``bar_rows`` bottom rows (default: the detected info bar, else none)."""
    data = img.data
    rows = img.info_bar_rows if bar_rows is None else bar_rows
    rows = int(rows or 0)
    if not 0 <= rows < data.shape[0]:
        raise ValueError(
            f"{img.path}: info bar of {rows} rows does not fit an image {data.shape[0]} px high"
        )
    cut = data.shape[0] - rows
    return Micrograph(image=data[:cut], bar=data[cut:], bar_rows=rows)


def assemble(restored: np.ndarray, part: Micrograph) -> np.ndarray:
    """The full frame: the restored micrograph above the untouched info bar."""
    return np.concatenate([np.asarray(restored, np.float32), part.bar], axis=0)


def output_dtype(source_dtype: str, float32: bool = False) -> str:
    """The output sample type for an input read as ``source_dtype``: its own bit depth (a
    palette or colour file of 16-bit samples, or any other integer type, gives ``uint16``)."""
    if float32 or source_dtype.startswith("float"):
        return "float32"
    if source_dtype in ("uint8", "bool"):
        return "uint8"
    return "uint32" if source_dtype == "uint32" else "uint16"


def output_value_scale(source: SEMImage, dtype: str) -> float:
    """Grey levels of the 0..255 scale per unit of the output file's values: a float output of
    a float input keeps the input's scale (255 for 0..1 data), float32 of an integer input is
    on 0..255 (1), integer outputs scale as :func:`sem_physics.io.quantize` does."""
    if dtype == "float32":
        return source.value_scale if source.source_dtype.startswith("float") else 1.0
    return {"uint8": 1.0, "uint16": 255.0 / 65535.0, "uint32": 255.0 / 4294967295.0}[dtype]


def output_suffix(source: Path, float32: bool = False) -> str:
    """TIFF stays TIFF, PNG stays PNG (unless float32), everything else becomes ``.tif``."""
    ext = source.suffix.lower()
    if ext in _TIFF:
        return source.suffix
    if ext == ".png" and not float32:
        return source.suffix
    return ".tif"


def _vendor_tags(
    source: Path, as_stored: bool = False
) -> tuple[list[tuple[Any, ...]], dict[str, Any]]:
    """(extratags for tifffile, writer keywords) copying the metadata tags of ``source``;
    ``as_stored``: the pixels are in the stored frame, so its Orientation tag is copied too
    (else the output, turned when read, is written without it)."""
    import tifffile

    extratags: list[tuple[Any, ...]] = []
    kwargs: dict[str, Any] = {"software": False, "resolution": None}
    # tifffile's complaints about the file were noted when it was read: not said again here
    with held_tiff_log(), tifffile.TiffFile(source) as tif:
        page: Any = tif.pages[0]
        kwargs["byteorder"] = tif.byteorder
        fh = tif.filehandle
        for tag in page.tags.values():
            code = tag.code
            if code == _ORIENTATION_TAG and as_stored:
                extratags.append((code, tag.dtype, tag.count, tag.value, True))
                continue
            if code in _LAYOUT_TAGS or code in _RESOLUTION_TAGS or code in _IFD_TAGS:
                continue
            fh.seek(tag.valueoffset)
            raw = fh.read(tag.valuebytecount)
            if code == _SOFTWARE_TAG:
                kwargs["software"] = raw.rstrip(b"\0").decode("ascii", "replace")
            elif code == _DESCRIPTION_TAG:
                description = output_description(raw)
                # the first kept (tifffile stores its shape in a second one, after the user's)
                if description is not None and "description" not in kwargs:
                    kwargs["description"] = description
            else:
                extratags.append((code, tag.dtype, tag.count, raw, True))
        tags = page.tags
        if 282 in tags and 283 in tags:
            kwargs["resolution"] = (tags[282].value, tags[283].value)
            if 296 in tags:
                kwargs["resolutionunit"] = int(tags[296].value)
    return extratags, kwargs


def _is_ome(text: bytes) -> bool:
    """Whether an ImageDescription is OME-XML (as tifffile tells it)."""
    return text[-10:].strip().endswith(b"OME>")


def output_description(raw: bytes) -> bytes | None:
    """The input's ImageDescription ``raw`` for the output, one grey page (None: nothing
    left to keep). tifffile's shaped JSON (``{"shape": ...}``) keeps its entries but ``shape``
    and ``axes``; an ImageJ description drops its stack lines (``images=``, ``slices=``,
    ``hyperstack=``, ...) and keeps the rest, the calibration ``unit=`` the pixel size is read
    with included; OME-XML, which describes every plane, is left out. Any other description
    is returned unchanged."""
    import json

    text = raw.rstrip(b"\0")
    if _is_ome(text):  # the OME-XML of the input's planes: left out (see uncopied_tags)
        return None
    if text.startswith(b"ImageJ="):
        lines = text.split(b"\n")
        kept = [ln for ln in lines if ln.partition(b"=")[0].strip() not in _IMAGEJ_STACK_KEYS]
        return raw if len(kept) == len(lines) else b"\n".join(kept)
    if text.startswith(b"shape="):  # tifffile's old form: nothing but the shape
        return None
    if text.startswith(b"{") and b'"shape":' in text and b'"mibi.' not in text:
        try:
            meta = json.loads(text.decode("utf-8"))
        except ValueError:
            return None  # a broken shaped description: its shape cannot be left out alone
        if not isinstance(meta, dict):
            return None
        rest = {k: v for k, v in meta.items() if k not in _SHAPED_KEYS}
        return json.dumps(rest).encode("utf-8") if rest else None
    return raw


def uncopied_tags(source: SEMImage) -> list[str]:
    """One note per tag of a TIFF ``source`` that the output leaves out (sub-directories, an
    OME-XML description)."""
    if source.path.suffix.lower() not in _TIFF:
        return []
    import tifffile

    notes = []
    with held_tiff_log(), tifffile.TiffFile(source.path) as tif:  # noted when read
        page = cast("tifffile.TiffPage", tif.pages[0])  # page 0 is never a TiffFrame
        for tag in page.tags.values():
            value = tag.value
            if tag.code == _DESCRIPTION_TAG:
                text = value if isinstance(value, bytes) else str(value).encode("utf-8", "replace")
                if _is_ome(text):
                    notes.append(
                        "TIFF tag 270 (ImageDescription: OME-XML) not copied to the output: it "
                        "describes the input's planes, not the one grey page written"
                    )
            if tag.code in _IFD_TAGS:
                held = ", ".join(map(str, value)) if isinstance(value, dict) else ""
                notes.append(
                    f"TIFF tag {tag.code} ({_IFD_TAGS[tag.code]}"
                    + (f": {held[:120]}" if held else "")
                    + ") not copied to the output: the writer cannot copy a sub-directory of tags"
                )
    return notes


def _raw_rows(path: Path, rows: int) -> np.ndarray | None:
    """The bottom ``rows`` of a grey TIFF's first page as stored (None if not 2-D)."""
    raw = tiff_samples(path)  # decoded as when read (an LZW file too)
    return raw[raw.shape[0] - rows :] if raw.ndim == 2 else None


def _pixel_size_description(pixel_size_nm: float | None) -> str | None:
    """The ImageDescription :func:`sem_physics.read_image` reads a pixel size from."""
    import json

    if pixel_size_nm is None:
        return None
    return json.dumps({"sem_physics": {"pixel_size_nm": pixel_size_nm}})


def _stored_orientation(source: SEMImage) -> int:
    """The Orientation tag of a PNG, JPEG or BMP source read as stored (an info bar under a
    tag other than 1: :func:`sem_physics.read_image` then keeps the stored frame), else 1 (a
    TIFF source's tag is copied with its other tags)."""
    if source.info_bar_rows is None or source.path.suffix.lower() in _TIFF:
        return 1
    from sem_physics.io import open_pil_checked
    from sem_physics.orientation import orientation_tag

    # its header only, the size it was read with accepted (no decompression-bomb warning)
    with open_pil_checked(source.path, max(int(source.data.size), 1)) as im:
        return orientation_tag(im.getexif().get(_ORIENTATION_TAG, 1))


def write_restored(
    path: Path, frame: np.ndarray, dtype: str, source: SEMImage, bar_rows: int = 0
) -> Path:
    """Write ``frame`` (0..255) atomically as ``dtype`` with the metadata of ``source``.

    A float output is written on :func:`output_value_scale`; when that is not the 0..255
    scale, the bottom ``bar_rows`` (the info bar) are copied from the file as stored.
    """
    path = Path(path)
    turned = _stored_orientation(source)
    if path.suffix.lower() not in _TIFF:
        return atomic_write(
            path,
            lambda tmp: write_image(
                tmp, frame, dtype, pixel_size_nm=source.pixel_size_nm, orientation=turned
            ),
        )
    import tifffile

    extratags: list[tuple[Any, ...]] = []
    kwargs: dict[str, Any] = {"software": False, "resolution": None}
    if source.path.suffix.lower() in _TIFF:
        # a frame with an info bar is read as stored, Orientation tag not applied: the output
        # keeps the tag, so that a viewer shows it turned as it shows the input
        extratags, kwargs = _vendor_tags(source.path, as_stored=source.info_bar_rows is not None)
    elif turned != 1:  # a JPEG or BMP source read as stored: the TIFF output keeps its tag
        extratags = [(_ORIENTATION_TAG, "H", 1, turned, True)]
    if "description" not in kwargs:
        kwargs["description"] = _pixel_size_description(source.pixel_size_nm)
    data = quantize(frame, dtype)
    scale = output_value_scale(source, dtype) if dtype == "float32" else 1.0
    if scale != 1.0:
        data = (data.astype(np.float64) / scale).astype(np.float32)
        bar = _raw_rows(source.path, bar_rows) if bar_rows else None
        if bar is not None and bar.shape[1] == data.shape[1]:
            data[data.shape[0] - bar_rows :] = bar  # bit-identical, not divided back

    def writer(tmp: Path) -> None:
        tifffile.imwrite(
            tmp, data, photometric="minisblack", metadata=None, extratags=extratags, **kwargs
        )

    return atomic_write(path, writer)


def output_notes(img: SEMImage, dtype: str, out_scale: float) -> list[str]:
    """What writing the output changed: its value scale, values clipped, the tags it could
    not copy."""
    notes = []
    if dtype == "float32" and img.source_dtype.startswith("float") and out_scale != 1.0:
        notes.append(
            f"float input on 0..{255 / out_scale:g}: restored on the 0..255 scale and written "
            f"back on 0..{255 / out_scale:g}"
        )
    if img.source_dtype.startswith("float"):
        lo, hi = float(np.min(img.data)), float(np.max(img.data))
        if lo < 0.0 or hi > 255.0:
            notes.append(
                f"float input runs past 0..255 ({lo:.4g}..{hi:.4g}): restored on the 0..255 "
                "scale, values beyond it come back clipped"
            )
    return notes + uncopied_tags(img)


def read_input(path: Path, max_pixels: int | None = None) -> SEMImage:
    """:func:`sem_physics.read_image` without logging the JPEG note: ``sem restore`` records
    it (``input_notes``) and says it once, with the file's other notes."""
    return read_image(path, max_pixels=max_pixels, log_notes=False)
