"""Light imports: a classical method loads neither torch, timm nor bm3d, and the registry's
table of built-in modules says where every built-in method registers."""

from __future__ import annotations

import importlib

import sem_baselines
from sem_baselines.restorer import _REGISTRY, BUILTIN_MODULES, TABLE_ORDER, TRAINABLE_BUILTINS
from sem_physics.testing import python_output

HEAVY = ("torch", "timm", "bm3d", "sem_models", "matplotlib")


def test_wiener_and_richardson_lucy_restore_without_torch_timm_or_bm3d() -> None:
    loaded = f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    code = (
        "import sys\nimport numpy as np\nimport sem_baselines\n"
        + loaded
        + "names = sem_baselines.list_restorers()\n"
        "image = np.random.default_rng(0).uniform(50, 200, (64, 64)).astype(np.float32)\n"
        "for name in ('wiener', 'richardson-lucy', 'input'):\n"
        "    assert sem_baselines.get_restorer(name).restore(image).shape == (64, 64)\n"
        + loaded
        + "sem_baselines.get_restorer('bm3d')\n"
        + loaded
    )
    bare, classical, with_bm3d = python_output(code).splitlines()
    assert bare == "[]" and classical == "[]"
    assert with_bm3d == "['bm3d']"  # each method loads what it needs when it is first used


def test_every_builtin_method_registers_in_the_module_the_table_names() -> None:
    for name, module in BUILTIN_MODULES.items():
        entry = sem_baselines.registry_entry(name)
        assert entry.cls.__module__ == module, name
    for module in sorted(set(BUILTIN_MODULES.values())):  # no module registers a name unlisted
        importlib.import_module(module)
    builtin = {n for n, e in _REGISTRY.items() if e.cls.__module__.startswith("sem_baselines.")}
    assert builtin == set(BUILTIN_MODULES)
    assert sem_baselines.list_restorers()[: len(TABLE_ORDER)] == list(TABLE_ORDER)


def test_lazy_exports_match_all_and_resolve() -> None:
    assert sorted(sem_baselines.__all__) == sorted(sem_baselines._EXPORTS)
    for name in sem_baselines.__all__:
        assert getattr(sem_baselines, name) is not None
    classical = importlib.import_module("sem_baselines.classical")
    assert sorted(classical.__all__) == sorted(classical._EXPORTS)
    for name in classical.__all__:
        assert getattr(classical, name) is not None


def test_the_declared_trainable_methods_are_what_the_registry_trains() -> None:
    """``TRAINABLE_BUILTINS`` (read by ``sem train baseline`` before it imports any method)
    names exactly the built-in methods ``trainable_restorers`` finds by importing them all."""
    assert sem_baselines.declared_trainable() == sem_baselines.trainable_restorers()
    trained = {n for n in sem_baselines.trainable_restorers() if n in BUILTIN_MODULES}
    assert TRAINABLE_BUILTINS == trained and TRAINABLE_BUILTINS <= set(BUILTIN_MODULES)


def test_the_declared_trainable_methods_are_known_without_torch() -> None:
    code = (
        "import sys\nfrom sem_baselines import declared_trainable\n"
        "print(declared_trainable(), sorted(m for m in "
        f"{HEAVY!r} if m in sys.modules))\n"
    )
    assert python_output(code) == "['n2v', 'n2n', 'mrn'] []"
