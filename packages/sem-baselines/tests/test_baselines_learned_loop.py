"""The learned baselines' standalone loop depends on no restorer class (no import cycle)."""

from __future__ import annotations

import ast
from pathlib import Path

import sem_baselines.learned.base as base
import sem_baselines.learned.training as training


def _relative_imports(module) -> set[str]:
    tree = ast.parse(Path(module.__file__).read_text(encoding="utf-8"))
    return {
        node.module or ""
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.level == 1
    }


def test_training_does_not_import_base_and_base_uses_the_loop():
    assert "base" not in _relative_imports(training)
    assert "training" in _relative_imports(base)
    # One device helper, defined by the loop and re-exported where restorers use it.
    assert base.resolve_device is training.resolve_device
    assert {"make_batch", "training_loss"} <= set(vars(training.TrainablePieces))
