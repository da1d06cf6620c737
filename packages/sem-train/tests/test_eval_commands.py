"""Command-line parsing of ``sem demo`` options: one-line errors, typed method settings."""

from __future__ import annotations

import pytest
from sem_train.cli import main
from sem_train.evaluation.commands import _method_options


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
    ],
)
def test_bad_demo_options_give_one_line(tmp_path, capsys, extra, needle):
    status = main(["demo", "--quick", "--out", str(tmp_path / "r"), "--methods", "input", *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1 and err[0].startswith("sem: error:") and needle in err[0]
