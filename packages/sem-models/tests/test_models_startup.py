"""Light imports: the model settings load neither torch nor timm; every name still resolves."""

from __future__ import annotations

import subprocess
import sys

import sem_models


def _output(code: str) -> str:
    """Standard output of ``code`` in a fresh interpreter (its stderr when it fails)."""
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_the_model_settings_import_without_torch_or_timm() -> None:
    # Imports of torch and timm are recorded and refused (an import finder ahead of the others)
    # rather than loaded: the settings must not ask for them, not even inside a try, and the
    # lazy name must (the probe's proof that it sees an import). Loading them took ~10 s
    # (timm pulls torchvision and torch._dynamo); every name resolving for real is
    # test_every_exported_name_resolves_to_its_submodule.
    code = (
        "import sys\nasked = set()\n"
        "class Refuse:\n    @staticmethod\n    def find_spec(name, path=None, target=None):\n"
        "        if name.partition('.')[0] in ('torch', 'timm'):\n"
        "            asked.add(name.partition('.')[0])\n"
        "            raise ModuleNotFoundError(f'refused: {name}', name=name)\n"
        "sys.meta_path.insert(0, Refuse)\n"
        "def seen():\n"
        "    return sorted(asked | {m for m in ('torch', 'timm') if m in sys.modules})\n"
        "from sem_models.config import MAEConfig, mae_config\n"
        "mae_config('tiny')\nprint(seen())\n"
        "import sem_models\n"
        "try:\n    sem_models.build_mae\nexcept ModuleNotFoundError as err:\n"
        "    print(seen(), err.name)\n"
    )
    assert _output(code).splitlines() == ["[]", "['torch'] torch"]


def test_every_exported_name_resolves_to_its_submodule() -> None:
    assert sorted(sem_models._EXPORTS) == sorted(sem_models.__all__)
    for name, module in sem_models._EXPORTS.items():
        value = getattr(sem_models, name)
        assert getattr(sys.modules[f"sem_models.{module}"], name) is value
    assert set(sem_models.__all__) <= set(dir(sem_models))
    try:
        sem_models.no_such_name  # noqa: B018
    except AttributeError as err:
        assert "no_such_name" in str(err)
    else:
        raise AssertionError("an unknown name did not raise")


def test_a_function_named_like_its_submodule_stays_the_function() -> None:
    """``sliding_window`` is both a submodule and the function it exports: importing the
    submodule first (as ``from sem_models.sliding_window import ...`` does) leaves
    ``from sem_models import sliding_window`` the function."""
    code = (
        "from sem_models.sliding_window import hann_weights\n"
        "from sem_models import sliding_window\n"
        "import sem_models.sliding_window as by_path\n"
        "print(callable(sliding_window), sliding_window is by_path, type(sliding_window).__name__)\n"
    )
    assert _output(code) == "True True function"


def test_finding_the_export_of_a_run_folder_loads_no_torch(tmp_path) -> None:
    """``best_export`` (what a command checks a model path with) reads paths and a JSON
    pointer only; torch comes with saving or loading a model."""
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "best.json").write_text('{"dir": "best-00000007"}')
    code = (
        "import sys\nfrom sem_models.checkpoint import best_export\n"
        f"print(best_export({str(run)!r}).name, best_export({str(tmp_path)!r}) == "
        f"__import__('pathlib').Path({str(tmp_path)!r}))\n"
        "print(sorted(m for m in ('torch', 'timm') if m in sys.modules))\n"
    )
    assert _output(code).splitlines() == ["best-00000007 True", "[]"]
