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
    with pytest.raises(ValueError, match="registered: input"):
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
