"""The conventions every console script of the toolkit shares, as ``sem`` keeps them: progress
bars only on a terminal, ``--debug`` not changing the exit status, exit 1 for a partial failure
with ``--strict``, ``-o/--out``, ``--version``, help for every option and bad values refused
before any work."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sem_train.cli import main


def _fake_runner(monkeypatch, tmp_path):
    """``run_benchmark`` replaced by one recording its config and ``progress``."""
    from sem_train.evaluation import runner

    calls = []

    def fake(cfg, **kwargs):
        calls.append((cfg, kwargs.get("progress", "unset")))
        return tmp_path / "report.md"

    monkeypatch.setattr(runner, "run_benchmark", fake)
    monkeypatch.setattr("sem_train.commands.benchmark.check_input_folders", lambda c: None)
    return calls


def _bench_config(tmp_path: Path) -> Path:
    (tmp_path / "images").mkdir(exist_ok=True)
    cfg = tmp_path / "bench.json"
    cfg.write_text(json.dumps({"images": str(tmp_path / "images"), "out": str(tmp_path / "o")}))
    return cfg


def test_demo_and_benchmark_leave_bars_to_the_terminal_test_and_no_progress_hides_them(
    tmp_path, monkeypatch
):
    calls = _fake_runner(monkeypatch, tmp_path)
    demo = ["demo", "--quick", "--methods", "input", "-o", str(tmp_path / "d")]
    bench = ["benchmark", "--config", str(_bench_config(tmp_path)), "-o", str(tmp_path / "b")]
    for argv in (demo, bench):
        assert main(argv) == 0
        assert main([*argv, "--no-progress"]) == 0
    # None: bars when stderr is a terminal (the runner decides); --no-progress: never
    assert [p for _, p in calls] == [None, False, None, False]
    # -o is --out
    assert [Path(c.out).name for c, _ in calls] == ["d", "d", "b", "b"]


@pytest.mark.parametrize("terminal", [False, True])
def test_run_benchmark_draws_bars_only_when_stderr_is_a_terminal(monkeypatch, tmp_path, terminal):
    from sem_train.evaluation import runner
    from sem_train.evaluation.config import demo_config

    seen = []
    monkeypatch.setattr(runner, "stderr_is_terminal", lambda: terminal)
    monkeypatch.setattr(
        runner, "_run_benchmark", lambda cfg, **kw: seen.append(kw["progress"]) or tmp_path
    )
    cfg = demo_config(quick=True, out=str(tmp_path / "r"), methods=["input"])
    runner.run_benchmark(cfg)
    runner.run_benchmark(cfg, progress=False)
    assert seen == [terminal, False]


def _tiny_images(folder: Path, n: int = 6) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (48, 48), dtype=np.uint8)).save(folder / f"{i}.png")
    (folder / "bad.tif").write_bytes(b"not an image")


def test_demo_strict_with_an_unusable_image_exits_1_not_2(tmp_path, capsys):
    _tiny_images(tmp_path / "mix")
    out = tmp_path / "r"
    base = ["demo", "--quick", "--methods", "input", "--images", str(tmp_path / "mix")]
    assert main([*base, "-o", str(out), "--strict", "--no-progress"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("sem: error: --strict: 1 input file(s) could not be used"), err


def _fake_embeddings(monkeypatch):
    import sem_train.evaluation as evaluation
    from sem_train.commands import cluster
    from sem_train.evaluation.sources import SkippedFile

    def fake_embed(ckpt, images, *, skipped, **_):
        skipped.append(SkippedFile(path=f"{images}/bad.tif", reason="not an image"))
        rng = np.random.default_rng(0)
        x = np.concatenate([rng.normal(0, 0.1, (5, 4)), rng.normal(5, 0.1, (5, 4))])
        return x.astype(np.float32), [f"{i}.png" for i in range(10)]

    monkeypatch.setattr(evaluation, "embed_folder", fake_embed)
    monkeypatch.setattr(cluster, "encoder_dir", Path)  # "ck" stands for a checkpoint
    monkeypatch.setattr(cluster, "input_size", lambda folder: 32)  # its input side, px
    monkeypatch.setattr(cluster, "_controls", lambda *a: ({}, {}))  # they need a real encoder


def test_cluster_strict_partial_failure_exits_1_and_o_is_out(tmp_path, capsys, monkeypatch):
    _fake_embeddings(monkeypatch)
    base = ["cluster", "--checkpoint", "ck", "--images", "imgs", "--k", "2"]
    assert main([*base, "--strict"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("sem: error: --strict: 1 image(s) unusable"), err
    assert main([*base, "-o", str(tmp_path / "cl")]) == 0
    assert (tmp_path / "cl" / "clustering.json").is_file()


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--seed", "-1"], "argument --seed: must be in [0, 4294967295], got -1"),
        (["--seed", "x"], "argument --seed: expected an integer, got 'x'"),
        (["--k", "1"], "argument --k: must be >= 2, got 1"),
    ],
)
def test_cluster_bad_values_are_refused_before_any_image_is_read(
    tmp_path, capsys, monkeypatch, extra, needle
):
    import sem_train.evaluation as evaluation

    monkeypatch.setattr(evaluation, "embed_folder", lambda *a, **k: pytest.fail("embedded"))
    with pytest.raises(SystemExit) as stop:
        main(["cluster", "--checkpoint", "ck", "--images", str(tmp_path), *extra])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_prints_the_traceback_and_keeps_the_exit_status(tmp_path, capsys, where):
    argv = ["restore", str(tmp_path / "nope.tif"), "-o", str(tmp_path / "r")]
    assert main(argv) == 2
    plain = capsys.readouterr().err
    assert main(["--debug", *argv] if where == "before" else [*argv, "--debug"]) == 2
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err
    assert err.strip().splitlines()[-1] == plain.strip()


_LOGGING_COMMAND = """
import logging, sys
from sem_train.commands import restore

def command(args):
    logging.getLogger("sem_train.engine").info("epoch 1/2, step 4/8: train loss 0.5")
    logging.getLogger("sem_physics.io").warning("a.jpg: JPEG input: lossy")
    logging.getLogger("sem_train.engine").debug("shown with --debug")
    return 0

restore._restore = command
from sem_train.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("debug", [False, True])
def test_log_records_are_sem_kind_lines_as_every_script_prints_them(tmp_path, debug):
    """A run's progress and a library's warning, as a real ``sem`` process prints them:
    ``sem: note: ...`` and ``sem: warning: ...`` (they were ``INFO sem_train.engine: ...``,
    ``WARNING sem_physics.io: ...``); ``--debug`` adds ``sem: debug: LOGGER: ...`` lines."""
    import subprocess
    import sys

    argv = ["restore", str(tmp_path / "x.tif"), "-o", str(tmp_path / "o")]
    done = subprocess.run(
        [sys.executable, "-c", _LOGGING_COMMAND, *argv, *(["--debug"] if debug else [])],
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    words = ("epoch 1/2", "a.jpg", "shown with")
    ours = [line for line in done.stderr.splitlines() if any(w in line for w in words)]
    assert ours == [
        "sem: note: epoch 1/2, step 4/8: train loss 0.5",
        "sem: warning: a.jpg: JPEG input: lossy",
        *(["sem: debug: sem_train.engine: shown with --debug"] if debug else []),
    ]


def test_version_names_the_program_and_its_package(capsys):
    from importlib.metadata import version

    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.strip() == f"sem {version('sem-train')} (sem-train)"


@pytest.mark.parametrize(
    ("argv", "options"),
    [
        (["cluster"], ["--pool", "--seed", "--k", "--crop-fraction", "--out"]),
        (["train", "pretrain"], ["--stage"]),
        (["demo"], ["--out", "--strict", "--no-progress"]),
        (["benchmark"], ["--out", "--strict"]),
    ],
)
def test_every_option_has_a_help_text(argv, options):
    from sem_train.cli import build_parser

    parser = build_parser(argv[0])
    sub = parser._subparsers._group_actions[0].choices[argv[0]]
    for word in argv[1:]:
        sub = sub._subparsers._group_actions[0].choices[word]
    helps = {o: a.help for a in sub._actions for o in a.option_strings}
    for option in options:
        assert helps.get(option), (argv, option)
    if argv[0] in ("demo", "benchmark", "cluster"):
        assert "-o" in helps  # -o/--out, as on sem restore and sem-degrade


def test_strict_help_says_exit_1(capsys):
    for command in ("demo", "benchmark", "cluster"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert "exit 1 if any" in text, command
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    assert "is replaced" in " ".join(capsys.readouterr().out.split())


def test_demo_json_prints_results_json_to_stdout_and_the_path_to_stderr(tmp_path, capsys):
    """As sem restore --json: stdout is one JSON document (the report's results.json), so a
    script can read the tables; the 'report:' line goes to stderr, as a note."""
    import json

    from sem_train.cli import main

    out = tmp_path / "r"
    argv = ["demo", "--quick", "--methods", "input", "--metrics", "psnr", "--settings"]
    argv += ["midpoint", "--no-progress", "-o", str(out), "--json"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    data = json.loads(captured.out)
    assert data == json.loads((out / "results.json").read_text())
    assert [r["method"] for r in data["quality_summary"]][:1] == ["defocused input"]
    report = (out / "report.md").resolve()
    assert captured.err.strip().splitlines()[-1] == f"sem: note: report: {report}"
