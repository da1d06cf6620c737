"""Fuzz every command line with hostile files, bad flags, bad configs and bad output paths.

Each case builds its inputs in a temporary folder, runs the command in-process through its
``main(argv)`` (a few through the installed console scripts) and checks the same contract:

* every input file is byte-identical afterwards (hashed before and after);
* nothing prints a Python traceback;
* a refused command exits non-zero with a one-line ``PROG: error: ...`` naming the file or
  field at fault;
* a command that succeeds was given valid input (no exit 0 on an invalid parameter), and a
  batch with one bad file processes the rest and names the bad one.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import pickle
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the helper module beside this one
from fuzz_cases import (
    BAD_FILES,
    BAD_YAML,
    write_bad,
    write_good_tif,
    write_tiff_with_pixel_size,
)

READ_ONLY = Path("/sys/sem-fuzz-out")  # a read-only file system even for root


def _main(prog: str) -> Callable[[list[str]], int]:
    if prog == "sem-degrade":
        from sem_physics.cli import main
    elif prog == "sem-measure":
        from sem_metrology.cli import main
    else:
        from sem_train.cli import main
    return main


@dataclass
class Setup:
    """What a case runs and what it must show."""

    argv: list[str]
    protect: list[Path]  # files or folders whose files must stay byte-identical
    needle: str | None = None  # text the error line (refusal) or the output (success) names
    refuse: bool | None = True  # must refuse (exit non-zero), succeed, or None: either (check)
    check: Callable[[int, str, str], None] | None = None  # further assertions


@dataclass
class Case:
    prog: str
    name: str
    build: Callable[[Path], Setup]
    xfail: str | None = None
    marks: list = field(default_factory=list)

    def param(self):
        marks = list(self.marks)
        if self.xfail:
            marks.append(pytest.mark.xfail(strict=True, reason=self.xfail))
        return pytest.param(self, id=f"{self.prog}:{self.name}", marks=marks)


def _snapshot(paths: list[Path]) -> dict[Path, str]:
    files: dict[Path, str] = {}
    for p in paths:
        for f in [p] if p.is_file() else sorted(q for q in p.rglob("*") if q.is_file()):
            files[f] = hashlib.sha256(f.read_bytes()).hexdigest()
    return files


def _run(prog: str, argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        code = _main(prog)(argv)
    except SystemExit as exc:  # argparse usage errors
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException as exc:  # escaping main means a traceback for the user
        out, err = capsys.readouterr()
        pytest.fail(f"{prog} {argv} raised {type(exc).__name__}: {exc}\n{err[-2000:]}")
    out, err = capsys.readouterr()
    return int(code), out, err


def _error_lines(prog: str, err: str) -> list[str]:
    head = prog.split()[0]
    pattern = re.compile(rf"^{re.escape(head)}( [\w-]+)*: error: ")
    return [line for line in err.splitlines() if pattern.match(line)]


def check_case(case: Case, tmp_path: Path, capsys) -> None:
    setup = case.build(tmp_path)
    before = _snapshot(setup.protect)
    assert before, "a case must protect at least one input file"
    code, out, err = _run(case.prog, setup.argv, capsys)
    after = {f: hashlib.sha256(f.read_bytes()).hexdigest() for f in before if f.is_file()}
    assert after == before, f"inputs changed or deleted: {set(before) - set(after) or 'content'}"
    assert "Traceback" not in out + err, err[-2000:]
    if setup.refuse is None:
        pass
    elif setup.refuse:
        assert code != 0, f"exit 0 on invalid input; stdout: {out[-500:]} stderr: {err[-500:]}"
        lines = _error_lines(case.prog, err)
        assert lines, f"no one-line '{case.prog}: error:' message; stderr: {err[-1000:]}"
        if setup.needle is not None:
            assert any(setup.needle in line for line in lines), (setup.needle, lines)
    else:
        assert code == 0, f"exit {code}; stderr: {err[-1500:]}"
        if setup.needle is not None:
            assert setup.needle in out + err, (setup.needle, err[-1000:])
    if setup.check is not None:
        setup.check(code, out, err)


def _dir(tmp: Path, name: str) -> Path:
    d = tmp / name
    d.mkdir(parents=True, exist_ok=True)
    return d


def _good_folder(tmp: Path, n: int = 2, name: str = "images", kind: str = "lines") -> Path:
    d = _dir(tmp, name)
    for i in range(n):
        write_good_tif(d, f"good{i}.tif", kind=kind, seed=i)
    return d


# ---------------------------------------------------------------------------------------------
# sem-degrade

#: flag -> (low, low included, high, high included): the accepted range of each parameter
DEGRADE_RANGES = {
    "rx-px": (0.0, False, 1000.0, True),
    "ry-px": (0.0, False, 1000.0, True),
    "beta": (0.0, False, 10.0, True),
    "theta-rad": (-2 * math.pi, True, 2 * math.pi, True),
    "gain": (0.01, True, 100.0, True),
    "offset": (-255.0, True, 255.0, True),
    "sigma": (0.0, True, 255.0, True),
    "dose": (0.01, True, 1e9, True),
}
NUMBERS = ["-1", "0", "nan", "inf", "-inf", "1e-30", "1e300", "abc", "0.5"]


def _in_range(flag: str, text: str) -> bool:
    try:
        v = float(text)
    except ValueError:
        return False
    lo, lo_in, hi, hi_in = DEGRADE_RANGES[flag]
    return math.isfinite(v) and (v >= lo if lo_in else v > lo) and (v <= hi if hi_in else v < hi)


def _degrade_param(flag: str, value: str) -> Callable[[Path], Setup]:
    def build(tmp: Path) -> Setup:
        img = write_good_tif(_dir(tmp, "in"))
        out = tmp / "out"
        ok = _in_range(flag, value)

        def check(code: int, _out: str, _err: str) -> None:
            assert (out / "manifest.json").is_file() == ok

        return Setup(
            ["--seed", "1", f"--{flag}", value, str(img), "-o", str(out)],
            [img],
            needle=None if ok else f"--{flag}",
            refuse=not ok,
            check=check,
        )

    return build


def _degrade_single_bad(name: str) -> Callable[[Path], Setup]:
    def build(tmp: Path) -> Setup:
        bad = write_bad(_dir(tmp, "in"), name)
        return Setup([str(bad), "-o", str(tmp / "out")], [bad], needle=name)

    return build


def _degrade_batch(name: str, strict: bool) -> Callable[[Path], Setup]:
    def build(tmp: Path) -> Setup:
        folder = _good_folder(tmp, 2, "in")
        write_bad(folder, name)
        out = tmp / "out"

        def check(code: int, _out: str, err: str) -> None:
            manifest = json.loads((out / "manifest.json").read_text())
            assert len(manifest["entries"]) == 2, "the good images are processed"
            assert name in json.dumps(manifest.get("failed")), "the bad one is in the manifest"
            assert name in err, "and named on stderr"
            assert code == (1 if strict else 0)

        argv = [str(folder), "-o", str(out)] + (["--strict"] if strict else [])
        return Setup(argv, [folder], needle=None, refuse=strict, check=check)

    return build


def _degrade_flag(argv_tail: list[str], needle: str) -> Callable[[Path], Setup]:
    def build(tmp: Path) -> Setup:
        img = write_good_tif(_dir(tmp, "in"))
        return Setup([str(img), "-o", str(tmp / "out"), *argv_tail], [img], needle=needle)

    return build


def _degrade_out_is_input_file(tmp: Path) -> Setup:
    img = write_good_tif(_dir(tmp, "in"))
    return Setup([str(img), "-o", str(img)], [img], needle=img.name)


def _degrade_out_is_existing_file(tmp: Path) -> Setup:
    img = write_good_tif(_dir(tmp, "in"))
    other = tmp / "notes.txt"
    other.write_text("keep me")
    return Setup([str(img), "-o", str(other)], [img, other], needle=other.name)


def _degrade_out_read_only(tmp: Path) -> Setup:
    img = write_good_tif(_dir(tmp, "in"))
    return Setup([str(img), "-o", str(READ_ONLY)], [img], needle=str(READ_ONLY))


def _degrade_out_is_input_folder(tmp: Path) -> Setup:
    folder = _good_folder(tmp, 2, "in")
    write_good_tif(folder, "0000_good0.tif", seed=7)  # the name an output would take
    return Setup([str(folder), "-o", str(folder)], [folder], needle="input folder")


def _degrade_rerun_inside(tmp: Path) -> Setup:
    """``DIR -o DIR/out`` twice: inputs untouched, earlier outputs never degraded again."""
    folder = _good_folder(tmp, 2, "in")
    write_good_tif(folder, "0000_good0.tif", seed=7)  # the name an output would take
    out = folder / "out"
    from sem_physics.cli import main

    assert main([str(folder), "-o", str(out)]) == 0
    inputs = sorted(folder.glob("*.tif"))

    def check(code: int, _out: str, _err: str) -> None:
        manifest = json.loads((out / "manifest.json").read_text())
        sources = [Path(e["source"]).name for e in manifest["entries"]]
        assert len(sources) == 3, f"earlier outputs were degraded again: {sources}"

    return Setup([str(folder), "-o", str(out)], inputs, refuse=False, check=check)


def _degrade_replay_traversal(tmp: Path) -> Setup:
    img = write_good_tif(_dir(tmp, "in"))
    out = tmp / "out"
    from sem_physics.cli import main

    assert main([str(img), "-o", str(out)]) == 0
    manifest = out / "manifest.json"
    data = json.loads(manifest.read_text())
    data["entries"][0]["output"] = "../../escaped.tif"
    manifest.write_text(json.dumps(data))

    def check(code: int, _out: str, _err: str) -> None:
        assert not (tmp / "escaped.tif").exists() and not (tmp.parent / "escaped.tif").exists()

    return Setup(["--replay", str(manifest)], [img, manifest], needle="output", check=check)


def _degrade_replay_bad_manifest(text: str) -> Callable[[Path], Setup]:
    def build(tmp: Path) -> Setup:
        manifest = _dir(tmp, "out") / "manifest.json"
        manifest.write_text(text)
        return Setup(["--replay", str(manifest)], [manifest], needle="manifest.json")

    return build


DEGRADE_CASES = [
    *(
        Case("sem-degrade", f"--{flag}={value}", _degrade_param(flag, value))
        for flag in DEGRADE_RANGES
        for value in NUMBERS
    ),
    *(Case("sem-degrade", f"single:{name}", _degrade_single_bad(name)) for name in BAD_FILES),
    *(
        Case("sem-degrade", f"batch{'-strict' if s else ''}:{name}", _degrade_batch(name, s))
        for name in BAD_FILES
        for s in (False, True)
    ),
    Case("sem-degrade", "--seed=-1", _degrade_flag(["--seed", "-1"], "--seed")),
    Case("sem-degrade", "--n-samples=0", _degrade_flag(["--n-samples", "0"], "--n-samples")),
    Case("sem-degrade", "--crop-fraction=nan", _degrade_flag(["--crop-fraction", "nan"], "--crop")),
    Case("sem-degrade", "--crop-fraction=1", _degrade_flag(["--crop-fraction", "1"], "--crop")),
    Case(
        "sem-degrade", "--crop-fraction=-0.1", _degrade_flag(["--crop-fraction", "-.1"], "--crop")
    ),
    Case("sem-degrade", "--max-pixels=0", _degrade_flag(["--max-pixels", "0"], "--max-pixels")),
    Case("sem-degrade", "--max-pixels=10", _degrade_flag(["--max-pixels", "10"], "pixels")),
    Case("sem-degrade", "--crop=sideways", _degrade_flag(["--crop", "sideways"], "--crop")),
    Case("sem-degrade", "--format=jpeg", _degrade_flag(["--format", "jpeg"], "--format")),
    Case(
        "sem-degrade", "--sample+--rx-px", _degrade_flag(["--sample", "--rx-px", "3"], "--sample")
    ),
    Case("sem-degrade", "out=input-file", _degrade_out_is_input_file),
    Case("sem-degrade", "out=existing-file", _degrade_out_is_existing_file),
    Case("sem-degrade", "out=read-only", _degrade_out_read_only),
    Case("sem-degrade", "out=input-folder", _degrade_out_is_input_folder),
    Case("sem-degrade", "rerun:out-inside-input", _degrade_rerun_inside),
    Case("sem-degrade", "replay:path-traversal", _degrade_replay_traversal),
    Case("sem-degrade", "replay:truncated", _degrade_replay_bad_manifest('{"entries": [{"out')),
    Case("sem-degrade", "replay:not-json", _degrade_replay_bad_manifest("\x00\x01garbage")),
    Case("sem-degrade", "replay:wrong-shape", _degrade_replay_bad_manifest("[1, 2, 3]")),
]


# ---------------------------------------------------------------------------------------------
# sem-measure lines|contacts

MEASURE_BAD_SIZES = ["-1", "0", "nan", "inf", "-inf", "abc", "1e-30", "1e300", "1e-4", "2e6"]


def _measure(cmd: str, tail: list[str], needle: str | None, **kw) -> Callable[[Path], Setup]:
    def build(tmp: Path) -> Setup:
        kind = "lines" if cmd == "lines" else "contacts"
        img = write_good_tif(_dir(tmp, "in"), kind=kind)
        argv = [cmd, str(img), "--pixel-size-nm", "1", *tail]
        return Setup(argv, [img], needle=needle, **kw)

    return build


def _measure_size(cmd: str, value: str) -> Callable[[Path], Setup]:
    def build(tmp: Path) -> Setup:
        img = write_good_tif(_dir(tmp, "in"), kind="lines" if cmd == "lines" else "contacts")
        return Setup([cmd, str(img), f"--pixel-size-nm={value}"], [img], needle="--pixel-size-nm")

    return build


def _measure_metadata_size(cmd: str, value: object) -> Callable[[Path], Setup]:
    def build(tmp: Path) -> Setup:
        img = write_tiff_with_pixel_size(_dir(tmp, "in"), "meta.tif", value)
        return Setup([cmd, str(img), "--json"], [img], needle="meta.tif")

    return build


def _measure_bad(cmd: str, name: str) -> Callable[[Path], Setup]:
    def build(tmp: Path) -> Setup:
        bad = write_bad(_dir(tmp, "in"), name)
        return Setup([cmd, str(bad), "--pixel-size-nm", "1"], [bad], needle=name)

    return build


def _measure_report_is_input(cmd: str) -> Callable[[Path], Setup]:
    def build(tmp: Path) -> Setup:
        img = write_good_tif(_dir(tmp, "in"), kind="lines" if cmd == "lines" else "contacts")
        argv = [cmd, str(img), "--pixel-size-nm", "1", "--report", str(img)]
        return Setup(argv, [img], needle=img.name)

    return build


def _measure_report_into_folder(cmd: str) -> Callable[[Path], Setup]:
    def build(tmp: Path) -> Setup:
        img = write_good_tif(_dir(tmp, "in"), kind="lines" if cmd == "lines" else "contacts")
        reports = _dir(tmp, "reports")

        def check(code: int, _out: str, _err: str) -> None:
            assert not (tmp / "reports.png").exists(), "report written beside the folder"
            assert [p.suffix for p in reports.iterdir()] == [".png"]

        argv = [cmd, str(img), "--pixel-size-nm", "1", "--report", str(reports)]
        return Setup(argv, [img], refuse=False, check=check)

    return build


def _measure_report_path(cmd: str, where: str) -> Callable[[Path], Setup]:
    def build(tmp: Path) -> Setup:
        img = write_good_tif(_dir(tmp, "in"), kind="lines" if cmd == "lines" else "contacts")
        if where == "read-only":
            report = READ_ONLY / "r.png"
        else:  # below an existing file
            blocker = tmp / "blocker"
            blocker.write_text("a file, not a folder")
            report = blocker / "r.png"
        argv = [cmd, str(img), "--pixel-size-nm", "1", "--report", str(report)]
        return Setup(argv, [img], needle="r.png")

    return build


def _measure_folder(cmd: str, strict: bool) -> Callable[[Path], Setup]:
    def build(tmp: Path) -> Setup:
        folder = _good_folder(tmp, 2, "in", kind="lines" if cmd == "lines" else "contacts")
        write_bad(folder, "truncated.tif")

        def check(code: int, out: str, err: str) -> None:
            assert "good0.tif" in out and "good1.tif" in out and "truncated.tif" in out + err
            assert code == (1 if strict else 0)

        argv = [cmd, str(folder), "--pixel-size-nm", "1", "--csv"] + (
            ["--strict"] if strict else []
        )
        return Setup(argv, [folder], refuse=strict, check=check, needle=None)

    return build


def _measure_missing(cmd: str) -> Callable[[Path], Setup]:
    def build(tmp: Path) -> Setup:
        keep = write_good_tif(_dir(tmp, "in"))
        return Setup([cmd, str(tmp / "in" / "nope.tif")], [keep], needle="nope.tif")

    return build


MEASURE_CASES = [
    *(
        Case(
            "sem-measure",
            f"{cmd}:--pixel-size-nm={v}",
            _measure_size(cmd, v),
        )
        for cmd in ("lines", "contacts")
        for v in MEASURE_BAD_SIZES
    ),
    *(
        Case("sem-measure", f"{cmd}:metadata-size={v!r}", _measure_metadata_size(cmd, v))
        for cmd in ("lines", "contacts")
        for v in (1e-30, -5.0, 0.0, 1e300, "12 nm")
    ),
    *(
        Case(
            "sem-measure",
            f"{cmd}:single:{name}",
            _measure_bad(cmd, name),
        )
        for cmd in ("lines", "contacts")
        for name in BAD_FILES
    ),
    *(
        Case("sem-measure", f"{cmd}:{flag}={value}", _measure(cmd, [flag, value], needle))
        for cmd in ("lines", "contacts")
        for flag, value, needle in (
            ("--info-bar", "-1", "--info-bar"),
            ("--info-bar", "abc", "--info-bar"),
            ("--info-bar", "100000", "--info-bar"),
            ("--threshold", "nan", "threshold"),
            ("--threshold", "-1", "threshold"),
            ("--threshold", "2", "threshold"),
            ("--threshold", "inf", "threshold"),
            ("--tone", "purple", "--tone"),
        )
    ),
    *(
        Case("sem-measure", f"lines:{flag}={value}", _measure("lines", [flag, value], flag))
        for flag, value in (("--method", "spline"), ("--orientation", "diagonal"))
    ),
    *(
        Case(
            "sem-measure",
            f"{cmd}:report=input",
            _measure_report_is_input(cmd),
        )
        for cmd in ("lines", "contacts")
    ),
    *(
        Case(
            "sem-measure",
            f"{cmd}:report=folder",
            _measure_report_into_folder(cmd),
        )
        for cmd in ("lines", "contacts")
    ),
    *(
        Case("sem-measure", f"{cmd}:report={where}", _measure_report_path(cmd, where))
        for cmd in ("lines", "contacts")
        for where in ("read-only", "below-a-file")
    ),
    *(
        Case(
            "sem-measure",
            f"{cmd}:folder{'-strict' if s else ''}",
            _measure_folder(cmd, s),
        )
        for cmd in ("lines", "contacts")
        for s in (False, True)
    ),
    *(
        Case("sem-measure", f"{cmd}:missing-file", _measure_missing(cmd))
        for cmd in ("lines", "contacts")
    ),
]


# ---------------------------------------------------------------------------------------------
# sem train pretrain|finetune|baseline

TRAIN_KINDS = {
    "pretrain": ["train", "pretrain", "--stage", "1"],
    "stage2": ["train", "pretrain", "--stage", "2"],
    "finetune": ["train", "finetune"],
    "baseline": ["train", "baseline", "n2v"],
}


class _Pickled:
    """Unpickling this would create the file ``marker``: proof that a pickle was executed."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "pickle executed"))


def _train_yaml(kind: str, name: str) -> Callable[[Path], Setup]:
    def build(tmp: Path) -> Setup:
        cfg = _dir(tmp, "cfg") / f"{name}.yaml"
        cfg.write_bytes(BAD_YAML[name].encode("utf-8", "surrogateescape"))
        argv = [*TRAIN_KINDS[kind], "--config", str(cfg), "--output-dir", str(tmp / "run")]

        def check(code: int, out: str, err: str) -> None:
            assert not (tmp / "run").exists(), "a refused config left a run folder"
            assert "pwned" not in out + err

        # an empty file is a valid (all-defaults) config: refused for the missing field instead
        return Setup(argv, [cfg], needle=None if name == "empty" else cfg.name, check=check)

    return build


#: (section, key, YAML value): values every training config must refuse before any work
TRAIN_BAD_VALUES = [
    ("optim", "lr", ".inf"),
    ("optim", "lr", "-.inf"),
    ("optim", "lr", ".nan"),
    ("optim", "lr", "1e30"),
    ("optim", "lr", "0"),
    ("optim", "lr", "-1"),
    ("optim", "lr", "'fast'"),
    ("optim", "weight_decay", "-1"),
    ("optim", "betas", "[1.0, 0.9]"),
    ("optim", "warmup_steps", "-5"),
    ("optim", "grad_clip_norm", "0"),
    ("optim", "schedule", "cosyne"),
    ("optim", "lrr", "0.001"),
    ("run", "epochs", "0"),
    ("run", "epochs", "-1"),
    ("run", "batch_size_per_process", "0"),
    ("run", "max_steps", "0"),
    ("run", "device", "tpu"),
    ("run", "keep_last", "0"),
    ("data", "val_fraction", "1.5"),
    ("data", "image_size_px", "2"),
    ("data", "verify", "maybe"),
    ("data", "info_bar_fraction", ".nan"),
]


def _train_value(kind: str, section: str, key: str, value: str) -> Callable[[Path], Setup]:
    def build(tmp: Path) -> Setup:
        cfg = _dir(tmp, "cfg") / "c.yaml"
        cfg.write_text(f"preset: cpu-small\n{section}:\n  {key}: {value}\n")
        argv = [*TRAIN_KINDS[kind], "--config", str(cfg), "--output-dir", str(tmp / "run")]
        return Setup(argv, [cfg], needle=key)

    return build


def _train_json_inf(tmp: Path) -> Setup:
    cfg = _dir(tmp, "cfg") / "c.json"
    cfg.write_text('{"preset": "cpu-small", "optim": {"lr": Infinity}}')
    argv = [*TRAIN_KINDS["pretrain"], "--config", str(cfg), "--output-dir", str(tmp / "run")]
    return Setup(argv, [cfg], needle="lr")


def _train_flag(kind: str, tail: list[str], needle: str) -> Callable[[Path], Setup]:
    def build(tmp: Path) -> Setup:
        data = _good_folder(tmp, 2, "data")
        argv = [*TRAIN_KINDS[kind], "--config", "cpu-small", "--data", str(data)]
        argv += ["--output-dir", str(tmp / "run"), *tail]
        return Setup(argv, [data], needle=needle.replace("TMP", str(tmp)))

    return build


def _train_paths(kind: str, what: str) -> Callable[[Path], Setup]:
    """Bad output folders and non-checkpoints given as checkpoints."""

    def build(tmp: Path) -> Setup:
        data = _good_folder(tmp, 2, "data")
        argv = [*TRAIN_KINDS[kind], "--config", "cpu-small", "--data", str(data)]
        protect = [data]
        out = tmp / "run"
        check = None
        if what == "out=file":
            out = tmp / "notes.txt"
            out.write_text("keep me")
            protect.append(out)
        elif what == "out=read-only":
            out = READ_ONLY
        elif what == "out=data":
            out = data
        elif what == "out=existing-run":
            (out / "checkpoints").mkdir(parents=True)
            (out / "checkpoints" / "latest.json").write_text('{"weights": "step-00000004.st"}')
            protect.append(out)
        needle = out.name
        if what.startswith("init="):
            kind_of = what.split("=", 1)[1]
            if kind_of == "text":
                init = tmp / "notes.safetensors"
                init.write_text("just text")
            elif kind_of == "random":
                init = tmp / "random.pt"
                init.write_bytes(os.urandom(4096))
            elif kind_of == "pickle":
                init = tmp / "evil.pt"
                marker = tmp / "PICKLE_EXECUTED"
                init.write_bytes(pickle.dumps({"model": _Pickled(marker)}))

                def check(code: int, _out: str, _err: str) -> None:
                    assert not marker.exists(), "a checkpoint's pickle was executed"

            elif kind_of == "folder":
                init = _dir(tmp, "export")
                (init / "config.json").write_text("{}")
                (init / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{}")
            elif kind_of == "empty-folder":
                init = _dir(tmp, "empty-run")
            else:  # missing
                init = tmp / "no-such-run"
            if init.is_file():
                protect.append(init)
            elif init.is_dir():
                protect.extend(p for p in init.iterdir())
            argv += ["--init-from", str(init)]
            needle = init.name
        if what == "resume-corrupt":
            ck = _dir(out, "checkpoints")
            (ck / "latest.json").write_text('{"weights": "w.safetensors", "state": "s.pt"}')
            (ck / "w.safetensors").write_bytes(b"\x00" * 64)
            protect.append(out)
            argv.append("--resume")
            needle = "w.safetensors"
        if what == "resume-truncated-latest":
            ck = _dir(out, "checkpoints")
            (ck / "latest.json").write_text('{"weights": "w.safet')
            protect.append(out)
            argv.append("--resume")
            needle = "latest.json"
        argv += ["--output-dir", str(out)]
        return Setup(argv, protect, needle=needle, check=check)

    return build


def _train_config_source(kind: str, what: str) -> Callable[[Path], Setup]:
    def build(tmp: Path) -> Setup:
        keep = _good_folder(tmp, 1, "data")
        source = {
            "missing": str(tmp / "nope.yaml"),
            "folder": str(keep),
            "typo-preset": "cpu-smal",
        }[what]
        argv = [*TRAIN_KINDS[kind], "--config", source, "--output-dir", str(tmp / "run")]
        return Setup(argv, [keep], needle=Path(source).name)

    return build


def _train_then_rerun(tmp: Path) -> Setup:
    """One real step of a learned baseline writes a checkpoint; a fresh run into it is refused."""
    data = _good_folder(tmp, 3, "data")
    out = tmp / "run"
    from sem_train.cli import main

    argv = [*TRAIN_KINDS["baseline"], "--config", "cpu-small", "--data", str(data)]
    argv += ["--output-dir", str(out), "--max-steps", "1", "--device", "cpu"]
    assert main(argv) == 0
    latest = json.loads((out / "checkpoints" / "latest.json").read_text())
    assert (out / "checkpoints" / latest["weights"]).is_file(), "latest.json names a real file"
    return Setup(argv, [data, out], needle="--resume")


TRAIN_CASES = [
    *(
        Case("sem", f"train-{kind}:yaml-{name}", _train_yaml(kind, name))
        for kind in ("pretrain", "finetune", "baseline")
        for name in BAD_YAML
    ),
    *(
        Case("sem", f"train-pretrain:{sec}.{key}={val}", _train_value("pretrain", sec, key, val))
        for sec, key, val in TRAIN_BAD_VALUES
    ),
    *(
        Case("sem", f"train-{kind}:{sec}.{key}={val}", _train_value(kind, sec, key, val))
        for kind in ("finetune", "stage2")
        for sec, key, val in TRAIN_BAD_VALUES[:4]
    ),
    Case("sem", "train-pretrain:json-lr-Infinity", _train_json_inf),
    *(
        Case("sem", f"train-{kind}:{' '.join(tail)}", _train_flag(kind, tail, needle))
        for kind in ("pretrain", "baseline")
        for tail, needle in (
            (["--epochs", "0"], "epochs"),
            (["--epochs", "-1"], "epochs"),
            (["--epochs", "abc"], "--epochs"),
            (["--max-steps", "0"], "max_steps"),
            (["--max-steps", "-3"], "max_steps"),
            (["--max-steps", "1e3"], "--max-steps"),
            (["--device", "tpu"], "--device"),
            (["--data", "TMP/no-such-folder"], "no-such-folder"),
            (["--data", "TMP/data/good0.tif"], "good0.tif"),
        )
    ),
    Case("sem", "train-pretrain:--stage 4", _train_flag("pretrain", ["--stage", "4"], "--stage")),
    *(
        Case("sem", f"train-{kind}:{what}", _train_paths(kind, what))
        for kind in ("pretrain", "baseline")
        for what in (
            "out=file",
            "out=read-only",
            "out=existing-run",
            "resume-corrupt",
            "resume-truncated-latest",
        )
    ),
    *(
        Case("sem", f"train-{kind}:{what}", _train_paths(kind, what))
        for kind in ("stage2", "finetune")
        for what in (
            "init=text",
            "init=random",
            "init=pickle",
            "init=folder",
            "init=empty-folder",
            "init=missing",
        )
    ),
    *(
        Case("sem", f"train-{kind}:config-{what}", _train_config_source(kind, what))
        for kind in ("pretrain", "finetune")
        for what in ("missing", "folder", "typo-preset")
    ),
    Case("sem", "train-baseline:fresh-run-into-finished-run", _train_then_rerun),
]


# ---------------------------------------------------------------------------------------------
# sem restore

PSF = ["--psf", "2,2,0,1"]  # RX,RY px, THETA rad, BETA: a valid explicit PSF


def _restore(tail: list[str], needle: str | None, n_good: int = 1) -> Callable[[Path], Setup]:
    def build(tmp: Path) -> Setup:
        folder = _good_folder(tmp, n_good, "in")
        argv = ["restore", str(folder), "-o", str(tmp / "out"), *PSF, *tail]
        return Setup(argv, [folder], needle=needle)

    return build


def _restore_single_bad(name: str) -> Callable[[Path], Setup]:
    def build(tmp: Path) -> Setup:
        bad = write_bad(_dir(tmp, "in"), name)
        return Setup(["restore", str(bad), "-o", str(tmp / "out"), *PSF], [bad], needle=name)

    return build


def _restore_batch(name: str, strict: bool) -> Callable[[Path], Setup]:
    def build(tmp: Path) -> Setup:
        folder = _good_folder(tmp, 1, "in")
        write_bad(folder, name)
        out = tmp / "out"

        def check(code: int, _out: str, err: str) -> None:
            assert name in err, "the bad file is named"
            manifest = (out / "restore.json").read_text()
            assert "good0" in manifest and name in manifest
            assert code == (1 if strict else 0)

        argv = ["restore", str(folder), "-o", str(out), *PSF] + (["--strict"] if strict else [])
        return Setup(argv, [folder], refuse=strict, check=check)

    return build


def _restore_out(what: str) -> Callable[[Path], Setup]:
    def build(tmp: Path) -> Setup:
        folder = _good_folder(tmp, 1, "in")
        img = folder / "good0.tif"
        protect = [folder]
        if what == "input-file":
            out, needle = img, img.name
        elif what == "existing-file":
            out = tmp / "notes.txt"
            out.write_text("keep me")
            protect.append(out)
            needle = out.name
        elif what == "read-only":
            out, needle = READ_ONLY, str(READ_ONLY)
        else:  # the input folder itself, even with --overwrite
            out, needle = folder, None
        argv = ["restore", str(folder), "-o", str(out), *PSF, "--overwrite"]
        return Setup(argv, protect, needle=needle)

    return build


def _restore_rerun_inside(tmp: Path) -> Setup:
    """``-o`` inside the input folder, run twice: the restored images are not restored again."""
    folder = _good_folder(tmp, 2, "in")
    out = folder / "restored"
    from sem_train.cli import main

    argv = ["restore", str(folder), "-o", str(out), *PSF, "--overwrite"]
    assert main(argv) == 0
    inputs = sorted(folder.glob("*.tif"))

    def check(code: int, _out: str, _err: str) -> None:
        restored = [p for p in out.rglob("*") if p.suffix in (".tif", ".png")]
        assert len(restored) == 2, f"outputs restored again: {restored}"

    return Setup(argv, inputs, refuse=False, check=check)


def _restore_checkpoint(kind: str) -> Callable[[Path], Setup]:
    def build(tmp: Path) -> Setup:
        folder = _good_folder(tmp, 1, "in")
        if kind == "text":
            ckpt = tmp / "weights.safetensors"
            ckpt.write_text("not weights")
        elif kind == "pickle":
            ckpt = tmp / "evil.pt"
            marker = tmp / "PICKLE_EXECUTED"
            ckpt.write_bytes(pickle.dumps(_Pickled(marker)))
        else:
            ckpt = _dir(tmp, "empty-run")
        argv = ["restore", str(folder), "-o", str(tmp / "out"), "--method", "n2v"]
        argv += ["--checkpoint", str(ckpt)]

        def check(code: int, _out: str, _err: str) -> None:
            assert not (tmp / "PICKLE_EXECUTED").exists(), "a checkpoint's pickle was executed"

        protect = [folder, ckpt] if ckpt.is_file() else [folder]
        return Setup(argv, protect, needle=ckpt.name, check=check)

    return build


RESTORE_CASES = [
    *(Case("sem", f"restore:single:{name}", _restore_single_bad(name)) for name in BAD_FILES),
    *(
        Case("sem", f"restore:batch{'-strict' if s else ''}:{name}", _restore_batch(name, s))
        for name in (
            "truncated.tif",
            "zero-byte.png",
            "text-renamed.tif",
            "huge-declared.tif",
            "all-nan.tif",
            "corrupt.png",
        )
        for s in (False, True)
    ),
    *(
        Case("sem", f"restore:{' '.join(tail)}", _restore(tail, needle))
        for tail, needle in (
            (["--method", "richardson-lucyy"], "richardson-lucyy"),
            (["--psf", "-1,2,0,1"], "--psf"),
            (["--psf", "nan,2,0,1"], "--psf"),
            (["--psf", "inf,2,0,1"], "--psf"),
            (["--psf", "1e300,2,0,1"], "--psf"),
            (["--psf", "0,0,0,0"], "--psf"),
            (["--psf", "1,2,0,1,5"], "--psf"),
            (["--psf", "a,b,c,d"], "--psf"),
            (["--set", "iterations=-1"], "iterations"),
            (["--set", "iterations=nan"], "iterations"),
            (["--set", "iterations=1e300"], "iterations"),
            (["--set", "itrations=5"], "itrations"),
            (["--set", "noequals"], "noequals"),
            (["--set", "=5"], "=5"),
            (["--info-bar-rows", "-1"], "--info-bar-rows"),
            (["--info-bar-rows", "abc"], "--info-bar-rows"),
        )
    ),
    *(
        Case("sem", f"restore:out={what}", _restore_out(what))
        for what in ("input-file", "existing-file", "read-only", "input-folder")
    ),
    Case("sem", "restore:rerun-out-inside-input", _restore_rerun_inside),
    *(
        Case("sem", f"restore:checkpoint={k}", _restore_checkpoint(k))
        for k in ("text", "pickle", "empty-folder")
    ),
    Case(
        "sem",
        "restore:missing-input",
        lambda tmp: Setup(
            ["restore", str(tmp / "nope.tif"), "-o", str(tmp / "out"), *PSF],
            [write_good_tif(_dir(tmp, "keep"))],
            needle="nope.tif",
        ),
    ),
]

# ---------------------------------------------------------------------------------------------
# sem demo, sem benchmark, sem cluster

DEMO = ["demo", "--quick", "--methods", "input", "--no-progress"]


def _demo(tail: list[str], needle: str | None, bad: str | None = None, **kw) -> Callable:
    def build(tmp: Path) -> Setup:
        images = _good_folder(tmp, 3, "images")
        if bad is not None:
            write_bad(images, bad)
        argv = [*DEMO, "--images", str(images), "--out", str(tmp / "report"), *tail]
        return Setup(argv, [images], needle=needle, **kw)

    return build


def _demo_out(what: str) -> Callable[[Path], Setup]:
    def build(tmp: Path) -> Setup:
        images = _good_folder(tmp, 3, "images")
        protect = [images]
        if what == "same-as-images":
            out = images
        elif what == "inside-images":
            out = images / "report"
        elif what == "existing-file":
            out = tmp / "notes.txt"
            out.write_text("keep me")
            protect.append(out)
        else:
            out = READ_ONLY
        argv = [*DEMO, "--images", str(images), "--out", str(out)]
        needle = "--out" if what.endswith("images") else out.name
        return Setup(argv, protect, needle=None if what.endswith("images") else needle)

    return build


def _demo_batch(bad: str) -> Callable[[Path], Setup]:
    def check(code: int, out: str, err: str) -> None:
        assert bad in out + err, "the skipped image is named"

    return _demo([], None, bad=bad, refuse=False, check=check)


def _demo_only_bad(tmp: Path) -> Setup:
    images = _dir(tmp, "images")
    write_bad(images, "truncated.tif")
    write_bad(images, "zero-byte.png")
    argv = [*DEMO, "--images", str(images), "--out", str(tmp / "report")]
    return Setup(argv, [images], needle=None)


def _demo_metrics_without_ssim(tmp: Path) -> Setup:
    images = _good_folder(tmp, 3, "images")
    report = tmp / "report"

    def check(code: int, _out: str, _err: str) -> None:
        assert (report / "report.md").is_file()

    argv = [*DEMO, "--images", str(images), "--out", str(report), "--metrics", "psnr"]
    return Setup(argv, [images], refuse=False, check=check)


BENCH_BASE = "n_train: 0\nn_eval: 2\nmethods: [input]\nsettings: [midpoint]\n"


def _bench(
    extra: str, needle: str | None, prepare: Callable | None = None, out_inside: bool = False, **kw
) -> Callable:
    def build(tmp: Path) -> Setup:
        images = _good_folder(tmp, 3, "images")
        out = images / "bench" if out_inside else tmp / "bench"
        cfg = tmp / "bench.yaml"
        cfg.write_text(f"images: {images}\nout: {out}\n{BENCH_BASE}{extra}")
        if prepare is not None:
            prepare(tmp, images, out)
        argv = ["benchmark", "--config", str(cfg), "--no-progress"]
        return Setup(argv, [images, cfg], needle=needle, **kw)

    return build


def _bench_yaml(name: str) -> Callable[[Path], Setup]:
    def build(tmp: Path) -> Setup:
        cfg = tmp / f"{name}.yaml"
        cfg.write_bytes(BAD_YAML[name].encode("utf-8", "surrogateescape"))
        keep = write_good_tif(_dir(tmp, "images"))
        return Setup(["benchmark", "--config", str(cfg)], [cfg, keep], needle=None)

    return build


def _truncated_result(tmp: Path, images: Path, out: Path) -> None:
    folder = out / "methods" / "input"
    folder.mkdir(parents=True)
    (folder / "result.json").write_text('{"method": "input", "rows": [{"psnr": 3')


def _bench_truncated_result(tmp: Path) -> Setup:
    setup = _bench("", None, prepare=_truncated_result)(tmp)

    def check(code: int, out: str, err: str) -> None:
        if code != 0:  # refused: the error names the truncated file
            assert "result.json" in "".join(_error_lines("sem", err)), err[-1000:]
        else:  # or the method was run again and the report written
            assert (tmp / "bench" / "report.md").is_file()

    setup.refuse = None
    setup.check = check
    return setup


def _save_tiny_encoder(folder: Path) -> Path:
    import torch
    from sem_models import build_mae, save_model

    torch.manual_seed(0)
    save_model(build_mae("tiny", img_size=32, patch_size=8, in_chans=1), folder)
    return folder


def _cluster(tail: list[str], needle: str | None, bad: str | None = None, **kw) -> Callable:
    def build(tmp: Path) -> Setup:
        ckpt = _save_tiny_encoder(tmp / "ckpt")
        images = _good_folder(tmp, 4, "images")
        if bad is not None:
            write_bad(images, bad)
        argv = ["cluster", "--checkpoint", str(ckpt), "--images", str(images), "--k", "2"]
        return Setup([*argv, *tail], [images, ckpt], needle=needle, **kw)

    return build


def _cluster_checkpoint(kind: str) -> Callable[[Path], Setup]:
    def build(tmp: Path) -> Setup:
        images = _good_folder(tmp, 4, "images")
        if kind == "text":
            ckpt = tmp / "model.safetensors"
            ckpt.write_text("not weights")
        elif kind == "garbage-export":
            ckpt = _dir(tmp, "export")
            (ckpt / "config.json").write_text("{}")
            (ckpt / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{}")
        elif kind == "empty-folder":
            ckpt = _dir(tmp, "empty-run")
        else:
            ckpt = tmp / "no-such-model"
        argv = ["cluster", "--checkpoint", str(ckpt), "--images", str(images), "--k", "2"]
        return Setup(argv, [images], needle=ckpt.name)

    return build


def _cluster_batch(tmp: Path) -> Setup:
    def check(code: int, out: str, err: str) -> None:
        assert "truncated.tif" in out + err

    return _cluster([], None, bad="truncated.tif", refuse=False, check=check)(tmp)


EVAL_CASES = [
    *(
        Case("sem", f"demo:{' '.join(tail)}", _demo(tail, needle))
        for tail, needle in (
            (["--metrics", "psnr,fid"], "fid"),
            (["--settings", "sideways"], "sideways"),
            (["--set", "nonsense"], "METHOD.FIELD"),
            (["--methods", "wiener,weiner"], "weiner"),
            (["--exclude", "bm3dd"], "bm3dd"),
            (["--pixel-size-nm", "0"], "--pixel-size-nm"),
            (["--pixel-size-nm", "-1"], "--pixel-size-nm"),
            (["--pixel-size-nm", "nan"], "--pixel-size-nm"),
            (["--pixel-size-nm", "abc"], "--pixel-size-nm"),
            (["--epochs", "x"], "--epochs"),
            (["--seed", "1.5"], "--seed"),
        )
    ),
    *(
        Case("sem", f"demo:{' '.join(tail)}", _demo(tail, needle))
        for tail, needle in (
            (["--set", "mae-imagnet.weights_path=/w.pth"], "mae-imagnet"),
            (["--pixel-size-nm", "1e-30"], "--pixel-size-nm must be in [0.001, 1e6]"),
        )
    ),
    *(
        Case("sem", f"demo:{' '.join(tail)}", _demo(tail, needle))
        for tail, needle in (
            (["--epochs", "-1"], "--epochs must be in [1, 100000]"),
            (["--n-train", "-1"], "--n-train must be in [0, 100000]"),
        )
    ),
    *(
        Case(
            "sem",
            f"demo:out={what}",
            _demo_out(what),
        )
        for what in ("same-as-images", "inside-images", "existing-file", "read-only")
    ),
    *(
        Case("sem", f"demo:batch:{bad}", _demo_batch(bad))
        for bad in ("one-pixel.tif", "truncated.tif")
    ),
    Case("sem", "demo:only-bad-images", _demo_only_bad),
    Case("sem", "demo:--metrics psnr", _demo_metrics_without_ssim),
    Case(
        "sem",
        "demo:--images missing",
        lambda tmp: Setup(
            [*DEMO, "--images", str(tmp / "nope"), "--out", str(tmp / "r")],
            [write_good_tif(_dir(tmp, "keep"))],
            needle="nope",
        ),
    ),
    Case(
        "sem",
        "demo:--images file",
        lambda tmp: Setup(
            [*DEMO, "--images", str(write_good_tif(_dir(tmp, "keep"))), "--out", str(tmp / "r")],
            [tmp / "keep"],
            needle="good.tif",
        ),
    ),
    *(Case("sem", f"benchmark:yaml-{name}", _bench_yaml(name)) for name in BAD_YAML),
    *(
        Case("sem", f"benchmark:{extra.strip()}", _bench(extra, needle))
        for extra, needle in (
            ("n_eval: 0\n", "n_eval"),
            ("crop_fraction: 1.5\n", "crop_fraction"),
            ("crop_fraction: .nan\n", "crop_fraction"),
            ("methods: [nope]\n", "nope"),
            ("epocs: 3\n", "epocs"),
            ("protocol: s2x\n", "protocol"),
        )
    ),
    *(
        Case("sem", f"benchmark:{extra.strip()}", _bench(extra, needle))
        for extra, needle in (
            ("pixel_size_nm: 1.0e-30\n", "pixel_size_nm"),
            ("method_config: {mae-imagnet: {weights_path: /w.pth}}\n", "mae-imagnet"),
        )
    ),
    Case("sem", "benchmark:truncated-result.json", _bench_truncated_result),
    Case(
        "sem",
        "benchmark:batch:truncated.tif",
        _bench(
            "",
            None,
            refuse=False,
            prepare=lambda t, i, o: write_bad(i, "truncated.tif"),
            check=lambda code, out, err: None,
        ),
    ),
    Case(
        "sem",
        "benchmark:out-inside-images",
        _bench("", "bench", out_inside=True),
    ),
    *(
        Case("sem", f"cluster:checkpoint={k}", _cluster_checkpoint(k))
        for k in ("text", "garbage-export", "empty-folder", "missing")
    ),
    *(
        Case("sem", f"cluster:{' '.join(tail)}", _cluster(tail, needle))
        for tail, needle in (
            (["--k", "0"], "k"),
            (["--k", "-1"], "k"),
            (["--k", "100"], "k"),
            (["--pool", "max"], "--pool"),
            (["--images", "/no/such/folder"], "/no/such/folder"),
        )
    ),
    Case(
        "sem",
        "cluster:--silhouette-sample-size 0",
        _cluster(["--silhouette-sample-size", "0"], "silhouette"),
    ),
    *(
        Case(
            "sem",
            f"cluster:--crop-fraction {v}",
            _cluster(["--crop-fraction", v], "--crop-fraction"),
        )
        for v in ("nan", "1.5", "-0.1")
    ),
    Case("sem", "cluster:batch:truncated.tif", _cluster_batch),
]


ALL_CASES = [*DEGRADE_CASES, *MEASURE_CASES, *TRAIN_CASES, *RESTORE_CASES, *EVAL_CASES]


@pytest.mark.parametrize("case", [c.param() for c in ALL_CASES])
def test_fuzz_case(case: Case, tmp_path: Path, capsys) -> None:
    check_case(case, tmp_path, capsys)


def test_the_fuzz_covers_every_command_with_hundreds_of_cases():
    """Breadth guard: every command is fuzzed and the total stays near the 300 cases asked for."""
    names = {c.name.split(":")[0] for c in ALL_CASES if c.prog == "sem"}
    assert {"restore", "demo", "benchmark", "cluster"} <= names
    assert any(n.startswith("train-") for n in names)
    assert any(c.name.startswith("contacts:") for c in ALL_CASES if c.prog == "sem-measure")
    assert len({c.param().id for c in ALL_CASES}) == len(ALL_CASES) >= 300


def _script(name: str) -> str:
    path = Path(sys.executable).parent / name
    return str(path) if path.exists() else shutil.which(name) or name


SUBPROCESS_CASES = [
    Case("sem-degrade", "console:single:truncated.tif", _degrade_single_bad("truncated.tif")),
    Case("sem-degrade", "console:--dose=1e-300", _degrade_param("dose", "1e-300")),
    Case("sem-measure", "console:lines:single:corrupt.png", _measure_bad("lines", "corrupt.png")),
    Case("sem-measure", "console:contacts:--pixel-size-nm=nan", _measure_size("contacts", "nan")),
    Case("sem", "console:train-pretrain:yaml-python-tag", _train_yaml("pretrain", "python-tag")),
]


@pytest.mark.parametrize("case", [c.param() for c in SUBPROCESS_CASES])
def test_console_scripts_keep_the_same_contract(case: Case, tmp_path: Path) -> None:
    """The installed commands, in a real process: exit status, one-line error, inputs intact."""
    setup = case.build(tmp_path)
    before = _snapshot(setup.protect)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(
        [_script(case.prog), *setup.argv],
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=300,
        env=env,
    )
    assert _snapshot(setup.protect) == before
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr[-2000:]
    assert proc.returncode != 0
    lines = _error_lines(case.prog, proc.stderr)
    assert lines and any(setup.needle in line for line in lines), proc.stderr[-1000:]
