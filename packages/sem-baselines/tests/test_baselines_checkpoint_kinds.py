"""The checkpoint kinds the MAE restorers take: judged from ``config.json`` without torch, by
the rules the restorers themselves apply before loading a checkpoint."""

from __future__ import annotations

import json

import pytest
import torch
from baselines_testkit import MAE_ARCH, MAE_WINDOW
from sem_baselines import RestorerConfigError, get_restorer
from sem_baselines.checkpoint_kinds import export_kind_problem, shipped_default
from sem_models import MoEConfig, RestorationModel, build_mae, save_model
from sem_physics.testing import python_output

# (method, saved model, fine-tuned here, refused): MoE unless it says "dense"
KINDS = [
    ("sem-foundation", "mae", False, True),
    ("sem-foundation", "mae", True, False),
    ("sem-foundation", "residual", False, False),
    ("sem-foundation-zero-shot", "residual", False, True),
    ("sem-foundation-zero-shot", "plain", False, False),
    ("sem-foundation-zero-shot", "mae", False, False),
    ("mae-sem", "mae", False, True),
    ("mae-sem", "residual", False, True),
    ("mae-sem", "dense", False, False),
]


def _save(folder, kind: str):
    torch.manual_seed(0)
    extra = {} if kind == "dense" else {"moe": MoEConfig(num_experts=2)}
    mae = build_mae("tiny", in_chans=1, **extra, **MAE_ARCH)
    model = {"residual": RestorationModel(mae, residual=True), "plain": RestorationModel(mae)}
    save_model(model.get(kind, mae), folder)
    return folder


@pytest.mark.parametrize(("name", "kind", "here", "refused"), KINDS)
def test_the_rule_is_the_restorers_verdict(tmp_path, name, kind, here, refused):
    folder = _save(tmp_path / "export", kind)
    problem = export_kind_problem(name, folder, fine_tunes=here)
    assert (problem is not None) is refused, problem
    settings = {"finetune_here": True, "head": "paper"} if here else {}
    if refused:
        assert problem.startswith(f"{folder} ")
        with pytest.raises(RestorerConfigError) as err:
            get_restorer(name, checkpoint_dir=str(folder), **settings, **MAE_WINDOW)
        assert str(err.value).startswith(f"{name}: {problem}; ")  # the rule's words, a hint
    else:
        get_restorer(name, checkpoint_dir=str(folder), **settings, **MAE_WINDOW)


def test_a_run_folder_is_judged_by_its_best_export_without_torch(tmp_path):
    run = tmp_path / "run"
    _save(run / "checkpoints" / "best-00000003", "mae")
    (run / "checkpoints" / "best.json").write_text(json.dumps({"dir": "best-00000003"}))
    (run / "config.json").write_text(json.dumps({"run": {"epochs": 1}}))  # the run's own
    code = (
        "import sys\nfrom sem_baselines.checkpoint_kinds import export_kind_problem\n"
        f"print(export_kind_problem('sem-foundation', {str(run)!r}))\n"
        f"print(export_kind_problem('mae-sem', {str(run)!r}))\n"
        f"print(export_kind_problem('wiener', {str(run)!r}))\n"
        "print('torch' in sys.modules)\n"
    )
    foundation, mae_sem, wiener, torch_loaded = python_output(code).splitlines()
    assert foundation == f"{run} holds a pretrained MAE, not a fine-tuned restoration model"
    assert mae_sem.startswith(f"{run} has Mixture-of-Experts layers")
    assert (wiener, torch_loaded) == ("None", "False")


def test_the_shipped_default_of_each_method():
    assert shipped_default("sem-foundation") == "sem-foundation"
    assert shipped_default("sem-foundation", fine_tunes=True) == "sem-foundation-zero-shot"
    assert shipped_default("sem-foundation-zero-shot") == "sem-foundation-zero-shot"
    assert shipped_default("mae-sem") is None and shipped_default("wiener") is None
