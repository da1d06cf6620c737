"""Each built wheel declares every licence text its package ships.

A package whose source holds a second licence (sem-metrology ships basicsr's NIQE parameters
with their Apache-2.0 text in ``data/``) must list it in ``license-files``: otherwise the
wheel's metadata names only ``LICENSE`` although its licence expression names both. The wheel
is built as a user's ``uv build`` builds it (sdist, then the wheel from it) and its
``License-File`` fields and ``dist-info/licenses`` folder are compared with the licence texts
found in the package's tree.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import zipfile
from email.parser import HeaderParser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = sorted(p for p in (ROOT / "packages").iterdir() if (p / "pyproject.toml").is_file())


def _licence_texts(package: Path) -> set[str]:
    """Paths (relative to the package, posix) of the licence texts in its tree, outside tests."""
    found = set()
    for path in package.rglob("*"):
        rel = path.relative_to(package)
        if path.is_file() and rel.parts[0] != "tests" and path.name.upper().startswith("LICEN"):
            found.add(rel.as_posix())
    return found


#: the packages shipping more than one licence text (the others' single LICENSE is hatchling's default)
SEVERAL = [p for p in PACKAGES if len(_licence_texts(p)) > 1]


def test_sem_metrology_ships_a_second_licence_text() -> None:
    """What the check below covers (it would pass vacuously if the text moved away)."""
    assert [p.name for p in SEVERAL] == ["sem-metrology"]
    assert _licence_texts(ROOT / "packages" / "sem-metrology") == {
        "LICENSE",
        "src/sem_metrology/data/LICENSE-basicsr.txt",
    }


@pytest.mark.parametrize("package", SEVERAL, ids=lambda p: p.name)
def test_the_wheel_declares_and_carries_every_licence_text(package: Path, tmp_path: Path) -> None:
    uv = os.environ.get("UV") or shutil.which("uv")
    if uv is None:
        pytest.fail("uv is not on PATH: this check builds the wheel with `uv build`")
    proc = subprocess.run(
        [uv, "build", "--package", package.name, "-o", str(tmp_path), "--no-progress"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (wheel,) = tmp_path.glob("*.whl")
    expected = _licence_texts(package)
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        (meta,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        info = meta.rpartition("/")[0]
        headers = HeaderParser().parsestr(zf.read(meta).decode("utf-8"))
        assert set(headers.get_all("License-File") or []) == expected
        carried = {
            n.removeprefix(f"{info}/licenses/") for n in names if n.startswith(f"{info}/licenses/")
        }
        assert carried == expected
        for rel in expected:  # the texts themselves, not empty placeholders
            assert zf.read(f"{info}/licenses/{rel}") == (package / rel).read_bytes()
