"""How the test run spreads over processes (the root conftest's ``-n auto``)."""

from __future__ import annotations

import ast
import os
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _auto_workers(*args: str) -> int:
    """The root conftest's hook, taken alone (running the whole conftest again would reset
    this process's test settings)."""
    tree = ast.parse((ROOT / "conftest.py").read_text(encoding="utf-8"))
    hook = next(
        node
        for node in tree.body
        if isinstance(node, ast.FunctionDef) and node.name == "pytest_xdist_auto_num_workers"
    )
    namespace: dict = {"os": os, "pytest": pytest}
    exec(compile(ast.Module(body=[hook], type_ignores=[]), "conftest.py", "exec"), namespace)
    return namespace[hook.name](SimpleNamespace(args=list(args)))


def test_folders_run_in_one_process_per_core_and_named_files_in_this_one() -> None:
    """Named test files run in the pytest process (starting workers costs more than it saves
    there); folders, the default, in one process per core."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    per_core = min(8, cores or 1)
    assert _auto_workers("packages/sem-physics/tests", "tests") == per_core
    assert _auto_workers("tests/test_fuzz_cli.py", "tests/test_text_encoding.py::test_x") == 0
    assert _auto_workers("tests/test_fuzz_cli.py", "packages/sem-models/tests") == per_core


def test_the_tests_run_without_pytest_xdist() -> None:
    """The worker-count hook is optional: without the plugin (``-p no:xdist``, the ``-n``
    option left out) the conftest still loads and the tests are collected."""
    import subprocess
    import sys

    argv = [sys.executable, "-m", "pytest", "-p", "no:xdist", "-p", "no:cacheprovider"]
    argv += ["-o", "addopts=", "--collect-only", "-q", "tests/test_test_run.py"]
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, encoding="utf-8", timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "2 tests collected" in proc.stdout
