"""Acquisition conditions from an SEM file's vendor tags: beam energy, magnification, working
distance, dwell time, detector, frame integration/averaging, instrument and date.

Read from the same tags as the pixel size (:mod:`sem_physics.pixel_size`), in the same order:

* Hitachi TIFF tag 40092 (``key=value`` lines, UTF-16 or ASCII): ``Condition=`` (``Vland=``,
  ``Vacc=``, ``Mag=x120k``, ``WD=1.8mm``), ``AcceleratingVoltage``/``DecelerationVoltage``
  (V), ``Magnification``, ``WorkingDistance`` (µm unless a unit is given), ``SignalName``,
  ``InstructName`` (else tag 40093), ``ScanSpeed``, ``Date`` (MM/DD/YYYY) and ``Time``.
  Hitachi files do not state the dwell time.
* Zeiss ``CZ_SEM`` tag 34118: ``ap_actualkv`` (EHT, else ``ap_manualkv``, EHT Target),
  ``ap_mag`` (``'400.00 K X'``), ``ap_wd``, ``dp_dwell_time``, ``dp_detector_channel``
  (Signal A), ``dp_sem``, ``dp_noise_reduction`` with the frame/line counts, ``ap_date``
  and ``ap_time``; each with its unit.
* FEI/Thermo tags 34680/34682 (ini sections): ``[Beam] HV`` (V; ``[EBeamDeceleration]
  LandingEnergy`` when ``ModeOn``), ``[Image] MagCanvasRealWidth / [Scan] HorFieldsize``
  (FEI states no magnification: this is the one its software shows), ``[Stage]
  WorkingDistance`` (m, else ``[EBeam] WD``), ``[Scan] Dwelltime`` (s, else ``[EScan]
  Dwell``), ``[Detectors] Name`` and ``Mode``, ``[System] SystemType``, ``[Scan] Integrate``
  and ``Average``, ``[User] Date`` and ``Time``.

Units are converted (V to kV, m or µm to mm, s or ns to µs; ``K X`` to a factor). A field
that is missing, not a number, in an unknown unit or out of range is None, never an error;
a field that was present but unusable is named in ``notes``. ``acquired`` is the instrument's
local time as ISO 8601 (no time zone: the files state none).
"""

from __future__ import annotations

import datetime as _dt
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

from .pixel_size import _NUMBER, _number, _tag_text

__all__ = ["Acquisition", "from_cz_sem", "from_fei", "from_hitachi", "tiff_acquisition"]

#: Plausible ranges; a value outside is a garbled field, left None with a note.
_RANGES = {
    "beam_kv": (1e-3, 1000.0),
    "magnification": (1e-3, 1e9),
    "working_distance_mm": (1e-4, 1e4),
    "dwell_time_us": (1e-6, 1e9),
}
_TO_KV = {"kv": 1.0, "v": 1e-3, "volt": 1e-3, "volts": 1e-3, "mv": 1e3}
_TO_MM = {"m": 1e3, "cm": 10.0, "mm": 1.0, "um": 1e-3, "µm": 1e-3, "μm": 1e-3, "nm": 1e-6}
_TO_US = {"s": 1e6, "secs": 1e6, "ms": 1e3, "us": 1.0, "µs": 1.0, "μs": 1.0, "ns": 1e-3}
_MAG_FACTOR = {"": 1.0, "k": 1e3, "m": 1e6}


@dataclass(frozen=True)
class Acquisition:
    """How an image was acquired, as its vendor tags state it; every field optional.

    ``vendor`` and ``source`` name where the fields came from (``None``: nothing known).
    """

    vendor: str | None = None
    source: str | None = None
    beam_kv: float | None = None  # landing energy when the beam is decelerated
    magnification: float | None = None
    working_distance_mm: float | None = None
    dwell_time_us: float | None = None
    detector: str | None = None
    instrument: str | None = None
    frame_averaging: str | None = None  # the vendor's words: mode and frame/line counts
    acquired: str | None = None  # ISO 8601, the instrument's local time
    notes: tuple[str, ...] = ()

    @property
    def known(self) -> bool:
        """Whether any acquisition field is known."""
        return any(v is not None for k, v in asdict(self).items() if k not in _ORIGIN)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values, units in the key names; every key present (None: unknown)."""
        return {
            "vendor": self.vendor,
            "source": self.source,
            "beam_kv": self.beam_kv,
            "magnification": self.magnification,
            "working_distance_mm": self.working_distance_mm,
            "dwell_time_us": self.dwell_time_us,
            "detector": self.detector,
            "instrument": self.instrument,
            "frame_averaging": self.frame_averaging,
            "acquired": self.acquired,
            "notes": list(self.notes),
        }


_ORIGIN = ("vendor", "source", "notes")


# ----------------------------------------------------------------------------------------------
# Helpers: every one returns None (and may add a note) instead of raising.


def _clean(x: float) -> float:
    """``x`` to 12 significant digits (``38.59 * 1000`` is 38590, not 38590.000000000004)."""
    return float(f"{x:.12g}")


def _checked(name: str, value: float | None, notes: list[str], what: str) -> float | None:
    """``value`` if finite and within :data:`_RANGES`, else None with a note naming ``what``."""
    if value is None:
        return None
    lo, hi = _RANGES[name]
    if not (math.isfinite(value) and lo <= value <= hi):
        notes.append(f"{what} = {value:g} is not a plausible {name}; ignored")
        return None
    return _clean(value)


def _text(value: Any) -> str | None:
    """Non-empty text of a metadata value (NULs and surrounding blanks removed)."""
    if value is None or isinstance(value, bool):
        return None
    text = _tag_text(value) if isinstance(value, bytes) else str(value)
    text = text.replace("\x00", "").strip()
    return text or None


def _with_unit(value: Any, unit: Any, table: Mapping[str, float]) -> float | None:
    """``value`` (a number, or text with an optional unit) times ``table[unit]``."""
    number = _number(value)
    if number is None:
        m = re.fullmatch(rf"\s*({_NUMBER})\s*([^\d\s]*)\s*", str(value))
        if not m:
            return None
        number, unit = _number(m.group(1)), m.group(2) or unit
    factor = table.get(str(unit or "").strip().lower())
    return None if number is None or factor is None else number * factor


def _guard(notes: list[str], what: str, get: Callable[[], Any]) -> Any:
    """``get()``, or None with a note when it raises (a field never breaks the record)."""
    try:
        return get()
    except Exception as err:  # garbled metadata comes in every shape
        notes.append(f"{what} unreadable ({type(err).__name__}); ignored")
        return None


def _date(text: str | None, formats: tuple[str, ...], what: str, notes: list[str]) -> str | None:
    """ISO 8601 of ``text`` read with the first fitting ``formats``; None with a note."""
    if not text:
        return None
    squeezed = " ".join(text.split())
    for fmt in formats:
        try:
            return _dt.datetime.strptime(squeezed, fmt).isoformat()
        except ValueError:
            continue
    notes.append(f"{what} {text!r} not understood as a date; ignored")
    return None


def _magnification_text(text: str) -> float | None:
    """``'400.00 K X'``, ``'x120k'``, ``'5000'`` or ``'1.2 M X'`` as a factor."""
    m = re.fullmatch(rf"\s*[xX]?\s*({_NUMBER})\s*([kKmM]?)\s*[xX]?\s*", text)
    if not m:
        return None
    number = _number(m.group(1))
    return None if number is None else number * _MAG_FACTOR[m.group(2).lower()]


# ----------------------------------------------------------------------------------------------
# Hitachi


def _hitachi_fields(text: str) -> dict[str, str]:
    """The ``key=value`` lines of a Hitachi tag (the first of a repeated key)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() and key.strip() not in fields:
            fields[key.strip()] = value.strip()
    return fields


def _condition(condition: str, key: str) -> str | None:
    """The value of ``key=`` in Hitachi's ``Condition=`` summary line, e.g. ``Vland``."""
    m = re.search(rf"(?:^|[\s(]){key}\s*=\s*([^\s()]+)", condition)
    return m.group(1) if m else None


def from_hitachi(raw: Any, author: Any = None) -> Acquisition:
    """The acquisition of a Hitachi tag 40092 (``raw``: bytes or text); ``author``: tag 40093
    (the instrument model on Hitachi SU-series files), used when ``InstructName`` is absent."""
    notes: list[str] = []
    f = _guard(notes, "tag 40092", lambda: _hitachi_fields(_tag_text(raw))) or {}
    cond = f.get("Condition", "")

    def beam() -> float | None:
        land = _condition(cond, "Vland")
        if land is not None:
            vacc = _condition(cond, "Vacc")
            if vacc is not None and vacc != land:
                notes.append(f"beam deceleration: landing {land}, accelerating {vacc}")
            return _with_unit(land, "kV", _TO_KV)
        acc = (
            _with_unit(f["AcceleratingVoltage"], "V", _TO_KV)
            if "AcceleratingVoltage" in f
            else None
        )
        dec = _with_unit(f.get("DecelerationVoltage", ""), "V", _TO_KV)
        if acc is not None and dec:
            notes.append(f"beam deceleration: landing = {acc:g} kV - {dec:g} kV")
            return acc - dec
        if acc is None and _condition(cond, "Vacc") is not None:
            return _with_unit(_condition(cond, "Vacc"), "kV", _TO_KV)
        return acc

    def magnification() -> float | None:
        if "Magnification" in f:
            return _magnification_text(f["Magnification"])
        mag = _condition(cond, "Mag")
        return _magnification_text(mag) if mag else None

    def working_distance() -> float | None:
        if "WorkingDistance" in f:
            return _with_unit(f["WorkingDistance"], "um", _TO_MM)
        wd = _condition(cond, "WD")
        return _with_unit(wd, "mm", _TO_MM) if wd else None

    def given(key: str, get: Callable[[], float | None], name: str, present: bool) -> Any:
        value = _guard(notes, f"Hitachi {key}", get)
        if value is None and present:
            notes.append(f"Hitachi {key} not understood; ignored")
        return _checked(name, value, notes, f"Hitachi {key}")

    has_beam = bool(re.search(r"V(?:land|acc)\s*=", cond)) or "AcceleratingVoltage" in f
    instrument = _text(f.get("InstructName")) or _text(author)
    speed = _text(f.get("ScanSpeed"))
    record = Acquisition(
        vendor="Hitachi",
        source="TIFF tag 40092 (Hitachi)",
        beam_kv=given("accelerating/landing voltage", beam, "beam_kv", has_beam),
        magnification=given(
            "Magnification", magnification, "magnification", "Magnification" in f or "Mag=" in cond
        ),
        working_distance_mm=given(
            "WorkingDistance",
            working_distance,
            "working_distance_mm",
            "WorkingDistance" in f or "WD=" in cond,
        ),
        detector=_text(f.get("SignalName")),
        instrument=instrument,
        frame_averaging=f"ScanSpeed={speed}" if speed else None,
        acquired=_date(
            " ".join(filter(None, (_text(f.get("Date")), _text(f.get("Time"))))) or None,
            ("%m/%d/%Y %H:%M:%S", "%Y/%m/%d %H:%M:%S", "%Y-%m-%d %H:%M:%S", "%m/%d/%Y", "%Y/%m/%d"),
            "Hitachi Date/Time",
            notes,
        ),
    )
    if instrument and not _text(f.get("InstructName")):
        notes.append("instrument from TIFF tag 40093")
    return _with_notes(record, notes)


def _with_notes(record: Acquisition, notes: list[str]) -> Acquisition:
    """``record`` with ``notes`` (each once, in order)."""
    return replace(record, notes=tuple(dict.fromkeys(notes)))


# ----------------------------------------------------------------------------------------------
# Zeiss CZ_SEM


def _cz_entry(md: Mapping[str, Any], key: str) -> tuple[Any, str] | None:
    """(value, unit) of a ``CZ_SEM`` entry ``(label, value[, unit])``; None when absent."""
    entry = md.get(key)
    if not isinstance(entry, tuple | list) or len(entry) < 2:
        return None
    unit = str(entry[2]).strip() if len(entry) >= 3 else ""
    return entry[1], unit


def from_cz_sem(md: Mapping[str, Any]) -> Acquisition:
    """The acquisition of Zeiss ``CZ_SEM`` metadata (tifffile's ``TiffFile.sem_metadata``)."""
    notes: list[str] = []
    if not isinstance(md, Mapping):
        return Acquisition(notes=("CZ_SEM metadata is not a table; ignored",))

    def quantity(key: str, name: str, table: Mapping[str, float]) -> float | None:
        entry = _cz_entry(md, key)
        if entry is None:
            return None
        value = _guard(notes, f"CZ_SEM {key}", lambda: _with_unit(entry[0], entry[1], table))
        if value is None:
            stated = f"{entry[0]!r} {entry[1]}".strip()
            notes.append(f"CZ_SEM {key} = {stated} not understood; ignored")
        return _checked(name, value, notes, f"CZ_SEM {key}")

    def text(key: str) -> str | None:
        entry = _cz_entry(md, key)
        return _text(entry[0]) if entry else None

    actual = quantity("ap_actualkv", "beam_kv", _TO_KV)
    beam = actual if actual else quantity("ap_manualkv", "beam_kv", _TO_KV)
    mag = None
    entry = _cz_entry(md, "ap_mag")
    if entry is not None:
        mag = _guard(
            notes, "CZ_SEM ap_mag", lambda: _magnification_text(f"{entry[0]} {entry[1]}".strip())
        )
        if mag is None:
            notes.append(f"CZ_SEM ap_mag = {entry[0]!r} not understood; ignored")
        mag = _checked("magnification", mag, notes, "CZ_SEM ap_mag")
    averaging = None
    mode = text("dp_noise_reduction")
    counts = []
    for key in ("ap_frame_int_count", "ap_frame_average_count", "ap_line_int_count",
                "ap_line_average_count"):  # fmt: skip
        raw = md.get(key)
        if isinstance(raw, tuple | list) and len(raw) >= 2 and _number(raw[1]) is not None:
            counts.append(f"{_text(raw[0]) or key} {raw[1]}")
    if mode or counts:
        averaging = (mode or "") + (f" ({', '.join(counts)})" if counts else "")
    date, time = text("ap_date"), text("ap_time")
    record = Acquisition(
        vendor="Zeiss",
        source="TIFF tag 34118 (Zeiss CZ_SEM)",
        beam_kv=beam,
        magnification=mag,
        working_distance_mm=quantity("ap_wd", "working_distance_mm", _TO_MM),
        dwell_time_us=quantity("dp_dwell_time", "dwell_time_us", _TO_US),
        detector=text("dp_detector_channel"),
        instrument=text("dp_sem"),
        frame_averaging=averaging.strip() if averaging else None,
        acquired=_date(
            " ".join(filter(None, (date, time))) or None,
            ("%d %b %Y %H:%M:%S", "%d %B %Y %H:%M:%S", "%d %b %Y", "%d %B %Y"),
            "CZ_SEM ap_date/ap_time",
            notes,
        ),
    )
    return _with_notes(record, notes)


# ----------------------------------------------------------------------------------------------
# FEI / Thermo Fisher


def from_fei(md: Mapping[str, Any]) -> Acquisition:
    """The acquisition of FEI/Thermo metadata (tifffile's ``TiffFile.fei_metadata``)."""
    notes: list[str] = []
    if not isinstance(md, Mapping):
        return Acquisition(notes=("FEI metadata is not a table; ignored",))

    def raw(section: str, key: str) -> Any:
        table = md.get(section)
        value = table.get(key) if isinstance(table, Mapping) else None
        return None if value is None or _text(value) is None else value

    def quantity(
        keys: tuple[tuple[str, str], ...], name: str, scale: float
    ) -> float | None:  # the first of ``keys`` present, times ``scale``
        for section, key in keys:
            value = raw(section, key)
            if value is None:
                continue
            number = _number(value)
            if number is None:
                notes.append(f"FEI [{section}] {key} = {value!r} not a number; ignored")
                return None
            return _checked(name, number * scale, notes, f"FEI [{section}] {key}")
        return None

    beam = None
    decel = _text(raw("EBeamDeceleration", "ModeOn"))
    if decel and decel.lower() in ("on", "yes", "true", "1"):
        beam = quantity((("EBeamDeceleration", "LandingEnergy"),), "beam_kv", 1e-3)
        if beam is not None:
            notes.append("beam deceleration on: beam_kv is [EBeamDeceleration] LandingEnergy")
    if beam is None:
        beam = quantity((("Beam", "HV"), ("EBeam", "HV")), "beam_kv", 1e-3)
    if _text(raw("Beam", "Beam")) == "IBeam":
        notes.append("ion-beam image ([Beam] Beam = IBeam): beam_kv is the ion beam's HV")
    mag = None
    canvas = _number(raw("Image", "MagCanvasRealWidth"))
    hfw = _number(raw("Scan", "HorFieldsize")) or _number(raw("EBeam", "HFW"))
    if canvas and hfw:
        mag = _checked("magnification", canvas / hfw, notes, "FEI MagCanvasRealWidth / HFW")
    detector = _text(raw("Detectors", "Name"))
    mode = _text(raw("Detectors", "Mode"))
    if detector and mode:
        detector = f"{detector} ({mode})"
    counts: list[str] = []
    for section in ("Scan", "Image"):  # [Image] repeats [Scan] in the files seen
        counts = [
            f"{k}={raw(section, k)}"
            for k in ("Integrate", "Average")
            if raw(section, k) is not None
        ]
        if counts:
            break
    record = Acquisition(
        vendor="FEI/Thermo",
        source="TIFF tag 34682 (FEI/Thermo metadata)",
        beam_kv=beam,
        magnification=mag,
        working_distance_mm=quantity(
            (("Stage", "WorkingDistance"), ("EBeam", "WD")), "working_distance_mm", 1e3
        ),
        dwell_time_us=quantity((("Scan", "Dwelltime"), ("EScan", "Dwell")), "dwell_time_us", 1e6),
        detector=detector,
        instrument=_text(raw("System", "SystemType")),
        frame_averaging=", ".join(counts) or None,
        acquired=_date(
            " ".join(filter(None, (_text(raw("User", "Date")), _text(raw("User", "Time")))))
            or None,
            ("%m/%d/%Y %I:%M:%S %p", "%m/%d/%Y %H:%M:%S", "%m/%d/%Y"),
            "FEI [User] Date/Time",
            notes,
        ),
    )
    return _with_notes(record, notes)


# ----------------------------------------------------------------------------------------------
# A TIFF file


def tiff_acquisition(tif: Any) -> Acquisition:
    """The acquisition of an open ``tifffile.TiffFile``: from the first vendor tag that
    states any field (Hitachi 40092, Zeiss 34118, FEI 34680/34682, the order of the pixel
    size); an empty record when none does. Never raises."""
    try:
        tags = tif.pages[0].tags
    except Exception:
        return Acquisition()
    readers: list[tuple[str, Callable[[], Acquisition]]] = []
    if 40092 in tags:
        author = tags.get(40093)
        readers.append(
            ("Hitachi", lambda: from_hitachi(tags[40092].value, author and author.value))
        )
    if 34118 in tags:
        readers.append(("Zeiss", lambda: from_cz_sem(tif.sem_metadata)))
    if 34680 in tags or 34682 in tags:
        readers.append(("FEI/Thermo", lambda: from_fei(tif.fei_metadata)))
    unread: list[str] = []
    for vendor, read in readers:
        try:
            record = read()
        except Exception as err:  # a tag tifffile cannot decode
            unread.append(f"{vendor} metadata unreadable ({type(err).__name__})")
            continue
        if record.known:
            return _with_notes(record, [*unread, *record.notes])
        unread.extend(record.notes)
    return Acquisition(notes=tuple(unread))
