"""Command-line parsing of ``sem demo`` options: one-line errors, typed method settings."""

from __future__ import annotations

import pytest
from sem_train.cli import main
from sem_train.evaluation.commands import _method_options
from sem_train.evaluation.methods import list_methods, select_methods


def test_method_options_are_parsed_as_yaml_scalars():
    got = _method_options(
        ["mae-imagenet.weights_path=/w/mae.pth", "bm3d.sigma=0.05", "x.flag=true"]
    )
    assert got == {
        "mae-imagenet": {"weights_path": "/w/mae.pth"},
        "bm3d": {"sigma": 0.05},
        "x": {"flag": True},
    }
    with pytest.raises(ValueError, match=r"METHOD\.FIELD=VALUE"):
        _method_options(["weights_path=/w"])


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--metrics", "psnr,fid"], "fid"),
        (["--settings", "sideways"], "settings"),
        (["--set", "nonsense"], "METHOD.FIELD=VALUE"),
        (["--methods", "wiener,weiner"], "'weiner'"),
        (["--exclude", "bm3dd"], "'bm3dd'"),
    ],
)
def test_bad_demo_options_give_one_line(tmp_path, capsys, extra, needle):
    status = main(["demo", "--quick", "--out", str(tmp_path / "r"), "--methods", "input", *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1 and err[0].startswith("sem: error:") and needle in err[0]


def test_selected_methods_keep_the_input_row_and_the_order():
    registered = list_methods()
    assert select_methods(None) == registered
    assert select_methods(["wiener", "bm3d", "wiener"]) == ["input", "wiener", "bm3d"]
    assert select_methods(["wiener", "input"]) == ["wiener", "input"]
    assert select_methods(["wiener"], exclude=["input"]) == ["wiener"]
    assert select_methods(None, exclude=["bm3d"]) == [n for n in registered if n != "bm3d"]
    with pytest.raises(ValueError, match="registered: input"):
        select_methods(["nope"])
