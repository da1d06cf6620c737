"""Command-line parsing of ``sem demo`` / ``benchmark`` / ``cluster`` options: one-line errors
before any work, typed method settings, unique run ids."""

from __future__ import annotations

import pytest
from sem_train.cli import main
from sem_train.commands.cluster import run_ids
from sem_train.evaluation.config import parse_method_settings
from sem_train.evaluation.methods import list_methods, select_methods


def test_method_options_are_parsed_as_yaml_scalars():
    got = parse_method_settings(
        ["mae-imagenet.weights_path=/w/mae.pth", "bm3d.sigma=0.05", "x.flag=true"]
    )
    assert got == {
        "mae-imagenet": {"weights_path": "/w/mae.pth"},
        "bm3d": {"sigma": 0.05},
        "x": {"flag": True},
    }
    with pytest.raises(ValueError, match=r"METHOD\.FIELD=VALUE"):
        parse_method_settings(["weights_path=/w"])


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--metrics", "psnr,fid"], "fid"),
        (["--settings", "sideways"], "settings"),
        (["--set", "nonsense"], "METHOD.FIELD=VALUE"),
        (["--methods", "wiener,weiner"], "'weiner'"),
        (["--exclude", "bm3dd"], "'bm3dd'"),
        (["--set", "mae-imagnet.weights_path=w.pth"], "'mae-imagnet'"),
        (["--set", "wiener.balanse=0.1"], "balanse"),
        (["--images", "{images}", "--out", "{images}/report"], "inside the input folder"),
    ],
)
def test_bad_demo_options_give_one_line(tmp_path, capsys, extra, needle):
    images = tmp_path / "images"
    images.mkdir()
    extra = [e.format(images=images) for e in extra]
    status = main(["demo", "--quick", "--out", str(tmp_path / "r"), "--methods", "input", *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1 and err[0].startswith("sem: error:") and needle in err[0]
    assert not (tmp_path / "r").exists() and list(images.iterdir()) == []  # no work was done


def test_cluster_run_ids_are_unique():
    assert run_ids(["a/run", "b/run", "a/run"]) == ["a/run", "b/run", "a/run#2"]


def test_selected_methods_keep_the_input_row_and_the_order():
    registered = list_methods()
    assert select_methods(None) == registered
    assert select_methods(["wiener", "bm3d", "wiener"]) == ["input", "wiener", "bm3d"]
    assert select_methods(["wiener", "input"]) == ["wiener", "input"]
    assert select_methods(["wiener"], exclude=["input"]) == ["wiener"]
    assert select_methods(None, exclude=["bm3d"]) == [n for n in registered if n != "bm3d"]
    with pytest.raises(ValueError, match="available: input"):
        select_methods(["nope"])


def test_benchmark_set_is_merged_and_checked_before_any_work(tmp_path, capsys):
    import yaml

    images = tmp_path / "images"
    images.mkdir()
    cfg = tmp_path / "bench.yaml"
    out = tmp_path / "out"
    body = {"images": str(images), "out": str(out), "method_config": {"wiener": {"balance": 0.1}}}
    cfg.write_text(yaml.safe_dump(body))
    status = main(["benchmark", "--config", str(cfg), "--set", "wiener.balanse=0.2"])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1 and "wiener.balanse" in err[0] and not out.exists()
    status = main(["benchmark", "--config", str(cfg), "--set", "wiener.balance=0.2"])
    err = capsys.readouterr().err.strip().splitlines()  # valid settings: the empty folder is next
    assert status == 2 and "no images" in err[0] and not out.exists()


def test_benchmark_and_demo_into_a_busy_folder_stop_and_keep_its_staging(
    tmp_path, capsys, hold_folder
):
    import yaml
    from sem_physics.locking import OutputFolderBusyError
    from sem_train.evaluation.report import write_report

    out = tmp_path / "report"
    child = hold_folder(out, "sem demo --out report")
    live = out / f".report-staging-{child.pid}"  # the live run's report, being written
    live.mkdir()
    (live / "report.md").write_text("half written")
    cfg = tmp_path / "bench.yaml"
    (tmp_path / "images").mkdir()
    cfg.write_text(yaml.safe_dump({"images": str(tmp_path / "images"), "out": str(out)}))
    for argv in (
        ["demo", "--quick", "--methods", "input", "--out", str(out)],
        ["benchmark", "--config", str(cfg)],
    ):
        assert main(argv) == 1, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1
        assert err[0].startswith(f"sem: error: {out}: another run (pid {child.pid}, sem demo")
    with pytest.raises(OutputFolderBusyError):  # the report writer of the Python API too
        write_report(out, None)  # type: ignore[arg-type]  (refused before it is read)
    assert (live / "report.md").read_text() == "half written"
    assert sorted(p.name for p in out.iterdir()) == [
        ".report-staging-" + str(child.pid),
        ".sem-lock",
    ]


def test_a_demo_into_a_busy_folder_stops_before_it_starts_anything(
    tmp_path, capsys, hold_folder, monkeypatch
):
    """The demo takes its folder first: no fork server started, no image made."""
    from sem_train import worker_server

    out = tmp_path / "report"
    child = hold_folder(out, "sem demo --out report")
    monkeypatch.setattr(worker_server, "start_worker_server", lambda: 1 / 0)
    assert main(["demo", "--out", str(out), "--workers", "2"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"another run (pid {child.pid}" in err[0]


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("sem: error: "), err
    return err[0]


def test_a_folder_given_as_the_benchmark_config_is_named_with_the_configs_in_it(tmp_path, capsys):
    folder = tmp_path / "configs"
    folder.mkdir()
    for name in ("s2s.yaml", "real.json", "notes.txt"):
        (folder / name).write_text("{}")
    assert main(["benchmark", "--config", str(folder)]) == 2
    line = _one_error_line(capsys)
    assert "is not a file but a folder; give a YAML/JSON file" in line and "exist" not in line
    assert "real.json, s2s.yaml" in line and "notes.txt" not in line


def _bench_config(tmp_path, **extra):
    import yaml

    (tmp_path / "images").mkdir(exist_ok=True)
    body = {"images": str(tmp_path / "images"), "out": str(tmp_path / "out"), **extra}
    cfg = tmp_path / "bench.yaml"
    cfg.write_text(yaml.safe_dump(body))
    return cfg


def test_benchmark_set_paths_are_checked_before_any_work(tmp_path, capsys):
    """A checkpoint or weights file given with --set (or in the config) that is not there stops
    the run at once, naming the method, the setting and the path; an unset one trains here."""
    cfg = _bench_config(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [
        ("mae-sem.checkpoint_dir", tmp_path / "no-such-run", "does not exist"),
        ("sem-foundation.checkpoint_dir", empty, "no exported model found"),
        ("mae-imagenet.weights_path", empty, "mae-imagenet needs a weights file"),
        ("mae-imagenet.weights_path", tmp_path / "mae.pth", "does not exist"),
    ]
    for setting, path, why in cases:
        assert main(["benchmark", "--config", str(cfg), "--set", f"{setting}={path}"]) == 2
        line = _one_error_line(capsys)
        assert f"--set {setting}={path}" in line and why in line, line
        assert not (tmp_path / "out").exists()
    # unset (or set to nothing): trained here; the checks pass and the empty folder is next
    for given in ([], ["--set", "mae-sem.checkpoint_dir="]):
        assert main(["benchmark", "--config", str(cfg), "--methods", "mae-sem", *given]) == 2
        assert "no images" in _one_error_line(capsys)
    # the config's own settings are checked for the methods it runs (not for excluded ones)
    bad = {"mae-sem": {"checkpoint_dir": str(tmp_path / "gone")}}
    assert main(["benchmark", "--config", str(_bench_config(tmp_path, method_config=bad))]) == 2
    line = _one_error_line(capsys)
    assert f"method_config.mae-sem.checkpoint_dir={tmp_path / 'gone'} does not exist" in line
    cfg = _bench_config(tmp_path, method_config=bad, exclude=["mae-sem"])
    assert main(["benchmark", "--config", str(cfg)]) == 2
    assert "no images" in _one_error_line(capsys)


def test_benchmark_set_accepts_an_existing_checkpoint(tmp_path):
    from sem_models import build_mae, save_model
    from sem_train.evaluation import load_benchmark_config

    save_model(build_mae("tiny", img_size=32, patch_size=8, in_chans=1), tmp_path / "mae")
    cfg = load_benchmark_config(
        _bench_config(tmp_path, method_config={"wiener": {"balance": 0.1}}),
        {"mae-sem": {"checkpoint_dir": str(tmp_path / "mae")}, "wiener": {"clip": False}},
    )
    assert cfg.method_config["mae-sem"] == {"checkpoint_dir": str(tmp_path / "mae")}
    assert cfg.method_config["wiener"] == {"balance": 0.1, "clip": False}  # merged


def test_benchmark_checkpoint_dir_is_a_folder_not_its_weights_file(tmp_path):
    """The weights file would pass as a path, then fail when the restorer is built: refused
    before any work, naming the folder to give; that folder, and a run folder whose
    checkpoints/best.json names it, are accepted."""
    import json

    from sem_models import build_mae, save_model
    from sem_train.evaluation import load_benchmark_config

    export = tmp_path / "run" / "checkpoints" / "best-00000010"
    save_model(build_mae("tiny", img_size=32, patch_size=8, in_chans=1), export)
    (export.parent / "best.json").write_text(json.dumps({"dir": export.name}))
    weights = export / "model.safetensors"
    with pytest.raises(ValueError, match="is a file; give its folder") as err:
        load_benchmark_config(
            _bench_config(tmp_path), {"mae-sem": {"checkpoint_dir": str(weights)}}
        )
    assert f"mae-sem.checkpoint_dir={weights}" in str(err.value) and str(export) in str(err.value)
    for folder in (export, tmp_path / "run"):
        cfg = load_benchmark_config(
            _bench_config(tmp_path), {"mae-sem": {"checkpoint_dir": str(folder)}}
        )
        assert cfg.method_config["mae-sem"] == {"checkpoint_dir": str(folder)}


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--methods", "input,wienr"], "--methods: unknown method 'wienr'; available: input, "),
        (["--exclude", "bm3dd,nn"], "--exclude: unknown methods 'bm3dd', 'nn'; available: "),
        (
            ["--set", "wiener.balanc=0.1"],
            "--set wiener.balanc: unknown setting of wiener; its settings: ",
        ),
        (["--set", "wienr.balance=0.1"], "--set wienr.balance: unknown method 'wienr'; "),
        (["--set", "wiener.balance=-1"], "--set wiener.balance"),
        (["--set", "mae-sem.checkpoint_dir=no/such/run"], "--set mae-sem.checkpoint_dir="),
    ],
)
def test_demo_option_errors_name_the_option_plainly(tmp_path, capsys, extra, expected):
    out = tmp_path / "r"
    assert main(["demo", "--quick", "--out", str(out), *extra]) == 2
    line = _one_error_line(capsys)
    assert line.startswith(f"sem: error: {expected}"), line
    assert "Value error" not in line and "value:" not in line and not out.exists()
    if "balanc=" in " ".join(extra):
        assert "balance" in line  # the settings of the method are listed


def test_benchmark_methods_option_is_named_in_its_error(tmp_path, capsys):
    assert main(["benchmark", "--config", str(_bench_config(tmp_path)), "--methods", "wienr"]) == 2
    assert _one_error_line(capsys).startswith("sem: error: --methods: unknown method 'wienr'")


def test_demo_runs_mae_sem_when_named_or_given_a_checkpoint_as_its_help_says(
    tmp_path, capsys, monkeypatch
):
    import sem_train.evaluation.runner as runner
    from sem_models import build_mae, save_model

    ran = []

    def fake_run(cfg, **_):
        ran.append(cfg.method_names())
        return tmp_path / "report.md"

    monkeypatch.setattr(runner, "run_benchmark", fake_run)
    save_model(build_mae("tiny", img_size=32, patch_size=8, in_chans=1), tmp_path / "mae")
    base = ["demo", "--quick", "--out", str(tmp_path / "r")]
    for extra, runs_mae_sem in [
        ([], False),  # it would be pretrained here: left out by default
        (["--methods", "input,mae-sem"], True),  # named: pretrained here, no --train-here
        (["--train-here"], True),
        (["--set", f"mae-sem.checkpoint_dir={tmp_path / 'mae'}"], True),  # nothing to train
        (["--exclude", "mae-sem", "--train-here"], False),
    ]:
        assert main([*base, *extra]) == 0, capsys.readouterr().err
        assert ("mae-sem" in ran[-1]) is runs_mae_sem, extra
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "needs --train-here" not in text
    assert "mae-sem only with --train-here or --set mae-sem.checkpoint_dir=DIR" in text
    assert "named here, it always runs" in text


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (["--metrics", "psnrx"], "sem: error: --metrics: unknown quality metric(s) 'psnrx'"),
        (["--settings", "foo"], "sem: error: --settings: Input should be 'random' or 'midpoint'"),
        (["--epochs", "0"], "sem: error: --epochs must be in [1, 100000], got 0"),
    ],
)
def test_demo_errors_name_the_option_not_the_config_key(tmp_path, capsys, argv, line):
    assert main(["demo", "--quick", "--out", str(tmp_path / "r"), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(line) and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "r").exists()


def test_benchmark_seed_overrides_the_configs_and_is_checked(tmp_path, capsys, monkeypatch):
    """``--seed 8`` reruns a config's protocol with other degradations and splits (the README's
    second seed of the real-image table) without a copy of the config; a negative seed is one
    line, exit 2."""
    import yaml
    from sem_train.evaluation import runner

    cfg = tmp_path / "bench.yaml"
    (tmp_path / "images").mkdir()
    body = {"images": str(tmp_path / "images"), "out": str(tmp_path / "o"), "seed": 7}
    cfg.write_text(yaml.safe_dump(body))
    with pytest.raises(SystemExit) as stop:
        main(["benchmark", "--config", str(cfg), "--seed", "-1"])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--seed" in err[0]
    seen = []
    monkeypatch.setattr(runner, "run_benchmark", lambda c, **_: seen.append(c.seed) or tmp_path)
    monkeypatch.setattr("sem_train.commands.benchmark.check_input_folders", lambda c: None)
    assert main(["benchmark", "--config", str(cfg), "--seed", "8"]) == 0
    assert main(["benchmark", "--config", str(cfg)]) == 0
    assert seen == [8, 7]


@pytest.mark.parametrize(
    ("line", "needle"),
    [
        ("seed: true", "seed must be an integer in [0, 4294967295], got True"),
        ("workers: true", "workers must be an integer in [1, 64], got True"),
        ("crop_fraction: false", "crop_fraction must be a number in [0, 1), got False"),
        ("pixel_size_nm: true", "pixel_size_nm must be a number in [0.001, 1e6], got True"),
        ("foundation: {batch_size: true}", "foundation.batch_size must be an integer in [1, 4096]"),
    ],
)
def test_a_benchmark_number_given_as_true_or_false_is_refused(tmp_path, capsys, line, needle):
    """YAML ``true``/``false`` for a number was taken as 1/0: ``seed: true`` ran seed 1 and
    ``crop_fraction: false`` cropped nothing, without a word. Now one line names the field and
    its range, exit 2, before any work; a switch (``strict: true``) is still a switch."""
    from sem_train.evaluation.config import load_benchmark_config

    (tmp_path / "images").mkdir()
    cfg = tmp_path / "bench.yaml"
    head = f"images: {tmp_path / 'images'}\nout: {tmp_path / 'o'}\nmethods: [input]\n"
    cfg.write_text(head + line + "\n")
    assert main(["benchmark", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err
    assert not (tmp_path / "o").exists()
    cfg.write_text(head + "strict: true\nseed: 1\n")
    loaded = load_benchmark_config(cfg)
    assert loaded.strict is True and loaded.seed == 1
