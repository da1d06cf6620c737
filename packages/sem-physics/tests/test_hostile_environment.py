"""Where things go wrong: file names that are not UTF-8, a full disk without errno,
SIGTERM, stdout that cannot be written, 16-bit colour PNGs, an invalid OMP_NUM_THREADS."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import textwrap
import time
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from sem_physics import atomic
from sem_physics.atomic import OutputWriteError, atomic_write
from sem_physics.image_errors import ImageReadError
from sem_physics.io import read_image, write_image
from sem_physics.pipes import console_main
from sem_physics.protocol import Manifest, degrade_files, replay_manifest

posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX file names, signals, /dev/full")
BAD = os.fsdecode(b"bad\xffname")  # a file name that is not valid UTF-8, as Python holds it


def _run(args: Sequence[str], **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # type: ignore[call-overload, no-any-return]
        [sys.executable, *args], capture_output=True, text=True, encoding="utf-8", timeout=120, **kw
    )


# --- 1. file names that are not valid UTF-8 -------------------------------------------------


def test_path_text_escapes_only_what_utf8_cannot_encode() -> None:
    from sem_physics.cli_support import path_text, text_path

    assert path_text(Path("/a/ok é.tif")) == "/a/ok é.tif"
    assert path_text(f"/a/{BAD}.tif") == "/a/bad\\xffname.tif"
    assert text_path(path_text(f"/a/{BAD}.tif")) == f"/a/{BAD}.tif"
    assert text_path("/a/plain.tif") == "/a/plain.tif"


@posix_only
def test_degrade_and_replay_a_file_whose_name_is_not_utf8(tmp_path: Path) -> None:
    src = tmp_path / "in" / f"{BAD}.tif"
    rng = np.random.default_rng(0)
    write_image(src, rng.uniform(20, 230, (96, 96)).astype(np.float32), "uint8")
    junk = tmp_path / "in" / f"{BAD}2.png"
    junk.write_bytes(b"not a png")
    out = tmp_path / "out"
    manifest = degrade_files([src, junk], out, mode="explicit", params=_small_params())
    text = (out / "manifest.json").read_text(encoding="utf-8")  # valid UTF-8 JSON
    doc = json.loads(text)
    assert doc["entries"][0]["source"] == "../in/bad\\xffname.tif"
    assert doc["failed"][0]["source"].endswith("bad\\xffname2.png")
    assert (out / manifest.entries[0].output).is_file()
    assert replay_manifest(out / "manifest.json", tmp_path / "again").ok


def _small_params():  # type: ignore[no-untyped-def]
    from sem_physics.params import DegradationParams, ParameterRanges

    return DegradationParams(
        **(ParameterRanges().midpoint().model_dump() | {"rx_px": 2, "ry_px": 2})
    )


def test_model_json_writes_surrogates_escaped_and_else_as_pydantic() -> None:
    from pydantic import BaseModel
    from sem_physics.cli_support import model_json

    class Rec(BaseModel):
        path: str
        values: list[float]

    plain = Rec(path="a.tif", values=[1.5, 1e-7, 3.0])
    assert model_json(plain, indent=2) == plain.model_dump_json(indent=2)
    bad = Rec(path=f"{BAD}.tif", values=[1.5, 1e-7, 3.0])
    assert model_json(bad, indent=2) == plain.model_dump_json(indent=2).replace(
        '"a.tif"', '"bad\\\\xffname.tif"'
    )
    assert Manifest.model_fields  # the manifest saves through model_json


# --- 2. a full disk reported without errno ----------------------------------------------------


def test_write_error_without_errno_on_a_full_disk_says_no_space(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def writer(tmp: Path) -> None:
        tmp.write_bytes(b"x" * 100)
        raise OSError("65536 requested and 24336 written")  # numpy's tofile, tifffile

    full = shutil._ntuple_diskusage(10**9, 10**9, 0)  # type: ignore[attr-defined]
    monkeypatch.setattr(atomic.shutil, "disk_usage", lambda _path: full)
    with pytest.raises(
        OutputWriteError, match=r"^no space left on the device while writing .*a\.tif$"
    ):
        atomic_write(tmp_path / "a.tif", writer)
    assert list(tmp_path.iterdir()) == []


def test_write_error_without_errno_with_free_space_stays_as_it_is(tmp_path: Path) -> None:
    def writer(tmp: Path) -> None:
        raise OSError("65536 requested and 24336 written")

    with pytest.raises(OutputWriteError, match=r"cannot write .*a\.tif: 65536 requested"):
        atomic_write(tmp_path / "a.tif", writer)


@posix_only
def test_file_size_limit_reads_as_no_space(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import resource, signal, sys
        import numpy as np
        from sem_physics.atomic import atomic_write, OutputWriteError
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, resource.RLIM_INFINITY))
        data = np.zeros(1_000_000, np.uint8)
        try:
            atomic_write(sys.argv[1], lambda tmp: data.tofile(tmp))
        except OutputWriteError as err:
            print(err)
        """
    )
    done = _run(["-c", script, str(tmp_path / "big.raw")])
    assert done.returncode == 0, done.stderr
    assert (
        done.stdout.strip() == f"no space left on the device while writing {tmp_path / 'big.raw'}"
    )
    assert list(tmp_path.iterdir()) == []


# --- 3. SIGTERM ends a command as Ctrl-C does -------------------------------------------------


@posix_only
def test_sigterm_ends_sem_degrade_as_ctrl_c_does(tmp_path: Path, real_dir: Path) -> None:
    images = tmp_path / "in"
    images.mkdir()
    for i in range(8):  # slow enough to be stopped half-way
        shutil.copy(real_dir / "lines_euv_resist_0p827nm.tif", images / f"l{i}.tif")
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "sem_physics.cli", str(images), "-o", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        encoding="utf-8",
    )
    deadline = time.monotonic() + 90
    while not (out / "INCOMPLETE").exists() and time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the run ended before it could be stopped"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert err.strip().splitlines() == ["sem-degrade: terminated"]
    assert not out.exists()  # a fresh folder is emptied as after Ctrl-C (lock, marker, outputs)


def test_sigterm_handler_only_over_the_default_action() -> None:
    from sem_physics.pipes import sigterm_is_default

    seen: list[object] = []

    @console_main("demo")
    def main(argv: Sequence[str] | None = None) -> int:
        seen.append(signal.getsignal(signal.SIGTERM))
        seen.append(sigterm_is_default())
        return 0

    before = signal.getsignal(signal.SIGTERM)
    assert main([]) == 0
    assert seen[0] not in (signal.SIG_DFL, signal.SIG_IGN) and seen[1] is True
    assert signal.getsignal(signal.SIGTERM) == before

    def own(signum: int, frame: object) -> None:  # a program's own handler stays
        pass

    signal.signal(signal.SIGTERM, own)
    try:
        seen.clear()
        assert main([]) == 0
        assert seen == [own, False]
    finally:
        signal.signal(signal.SIGTERM, before)


# --- 4. stdout that cannot be written -------------------------------------------------------


@posix_only
@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full")
@pytest.mark.parametrize("module", ["sem_physics.cli", "sem_physics.psf_cli"])
def test_full_stdout_is_one_line_and_exit_1(module: str) -> None:
    with open("/dev/full", "w") as full:
        done = subprocess.run(
            [sys.executable, "-m", module, "--version"],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            timeout=60,
        )
    prog = "sem-degrade" if module.endswith(".cli") else "sem-psf"
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"{prog}: error: cannot write to stdout: No space left on device"
    ]


@posix_only
def test_closed_stdout_is_one_line_and_exit_1() -> None:
    done = subprocess.run(
        [
            "sh",
            "-c",
            'exec "$@" >&-',
            "sh",
            sys.executable,
            "-m",
            "sem_physics.psf_cli",
            "--version",
        ],
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stderr.splitlines() == ["sem-psf: error: cannot write to stdout: it is closed"]


# --- 5. 16-bit colour PNGs --------------------------------------------------------------------


def _png(path: Path, depth: int, colour: int, samples: int, h: int = 8, w: int = 8) -> Path:
    """A minimal PNG (filter 0 rows) with ``samples`` per pixel of ``depth`` bits."""
    dtype = ">u2" if depth == 16 else "u1"
    pixels = np.full((h, w * samples), 1000 if depth == 16 else 100, dtype=dtype)
    raw = b"".join(b"\x00" + row.tobytes() for row in pixels)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", w, h, depth, colour, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )
    return path


@pytest.mark.parametrize(
    ("colour", "samples", "kind"), [(2, 3, "RGB"), (6, 4, "RGBA"), (4, 2, "grey + alpha")]
)
def test_16bit_colour_png_is_refused_not_truncated(
    tmp_path: Path, colour: int, samples: int, kind: str
) -> None:
    path = _png(tmp_path / "c.png", 16, colour, samples)
    with pytest.raises(
        ImageReadError, match=rf"c\.png: 16-bit {re.escape(kind)} PNG: .*16-bit TIFF"
    ):
        read_image(path)


def test_16bit_grey_and_8bit_colour_png_still_read(tmp_path: Path) -> None:
    grey = read_image(_png(tmp_path / "g.png", 16, 0, 1))
    assert grey.source_dtype == "uint16"
    colour = read_image(_png(tmp_path / "c.png", 8, 2, 3))
    assert colour.source_dtype == "uint8"


# --- 7. OMP_NUM_THREADS -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "kept"), [("0", False), ("abc", False), ("", False), ("4", True), ("4,2", True)]
)
def test_invalid_omp_num_threads_is_dropped_with_a_note(
    value: str, kept: bool, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", value)

    @console_main("demo")
    def main(argv: Sequence[str] | None = None) -> int:
        return 0 if os.environ.get("OMP_NUM_THREADS") == (value if kept else None) else 1

    assert main([]) == 0
    err = capsys.readouterr().err
    assert (
        (err == "")
        if kept
        else (
            err.splitlines()
            == [
                f"demo: note: OMP_NUM_THREADS={value!r} is not a positive number of threads; ignored"
            ]
        )
    )
