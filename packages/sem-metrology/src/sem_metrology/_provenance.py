"""What a measurement record says about its input and the software that measured it.

``LineMeasurement.source`` / ``ContactMeasurement.source`` are a
:class:`sem_physics.protocol.SourceRecord` (the toolkit's one source record: the file's path,
its sha256, the sha256 of the pixels measured and of the whole frame); ``versions`` the
packages' versions (:func:`sem_physics.protocol.package_versions`) with python, numpy and
scipy (:func:`sem_physics.protocol.library_versions`, as a ``sem-degrade`` manifest records
them). ``sem-measure`` fills both; a result of the Python API has neither (``None``). A PNG
report of a result that has them carries them too (:func:`png_metadata`), so a report image
met on its own still names the file it measured, byte for byte.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

#: The distributions whose versions a measurement records (besides python, numpy and scipy).
PACKAGES = ("sem-metrology", "sem-physics")
#: The result fields this module describes: JSON only, not in a CSV summary row.
FIELDS = ("source", "versions")
#: The PNG text keyword under which a report keeps them.
PNG_KEY = "Provenance"


def source_field() -> Any:
    """The ``source`` field of a result model."""
    return Field(
        default=None,
        description="the input file as measured (sem-measure; None from the Python API): path "
        "as given, sha256 of its bytes, sha256 of the pixels measured (after the info-bar "
        "crop, before the roi) and of the whole frame (sem_physics.protocol.SourceRecord)",
    )


def versions_field() -> Any:
    """The ``versions`` field of a result model."""
    return Field(
        default=None,
        description="versions that measured it: sem-metrology, sem-physics, python, numpy, "
        "scipy (sem-measure; None from the Python API)",
    )


def measurement_versions() -> dict[str, str | None]:
    """The versions a measurement records: :data:`PACKAGES` (None: not installed), python,
    numpy and scipy."""
    from sem_physics.protocol import library_versions, package_versions

    return {**package_versions(PACKAGES), **library_versions()}


def png_metadata(measurement: Any) -> dict[str, str]:
    """PNG text chunks of a report of ``measurement``: under :data:`PNG_KEY` the JSON of its
    ``source`` and ``versions`` (what ``--json`` writes of them); nothing when it has neither
    (a result of the Python API)."""
    import json

    record: dict[str, Any] = {}
    if measurement.source is not None:
        record["source"] = measurement.source.model_dump(mode="json")
    if measurement.versions is not None:
        record["versions"] = measurement.versions
    return {PNG_KEY: json.dumps(record, sort_keys=True)} if record else {}
