"""Restorer plugins: installed distributions declaring ``sem_baselines.restorers`` entry points.

Each test installs its plugins as real distributions (a module plus ``NAME-0.1.dist-info`` with
``METADATA`` and ``entry_points.txt``) in a folder put on ``sys.path``, where
``importlib.metadata`` finds them, and starts from a registry that has not looked for plugins.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
from baselines_testkit import lines_image
from sem_baselines import restorer
from sem_baselines.restorer import (
    BUILTIN_MODULES,
    TABLE_ORDER,
    get_restorer,
    list_restorers,
    register,
    registry_entry,
    unknown_restorers,
)

README = Path(__file__).resolve().parent.parent / "README.md"

#: A plugin module registering one pass-through method NAME as class CLS.
PASS_THROUGH = """
from pydantic import BaseModel, ConfigDict
from sem_baselines.restorer import check_image, register


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid")


@register({name!r}, Config)
class {cls}:
    def __init__(self, config=None):
        self.config = config or Config()

    def restore(self, image):
        return check_image(image).copy()
"""


def install(site: Path, dist: str, entry_points: dict[str, str], files: dict[str, str]) -> None:
    """Distribution ``dist`` 0.1 in ``site``: its ``files`` and a dist-info declaring
    ``entry_points`` in the ``sem_baselines.restorers`` group."""
    for rel, text in files.items():
        (site / rel).parent.mkdir(parents=True, exist_ok=True)
        (site / rel).write_text(text, encoding="utf-8")
    info = site / f"{dist.replace('-', '_')}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n", encoding="utf-8"
    )
    lines = "".join(f"{name} = {value}\n" for name, value in entry_points.items())
    (info / "entry_points.txt").write_text(f"[sem_baselines.restorers]\n{lines}", encoding="utf-8")


def pass_through(site: Path, dist: str, entry: str, module: str, name: str) -> None:
    """A plugin ``dist`` whose module ``module`` registers the pass-through method ``name``."""
    source = PASS_THROUGH.format(name=name, cls=name.title().replace("-", ""))
    install(site, dist, {entry: module}, {f"{module}.py": source})


@pytest.fixture
def site(tmp_path, monkeypatch):
    """A folder on ``sys.path`` for plugin distributions, and a registry that has not looked
    for plugins; afterwards the registry and ``sys.modules`` hold no trace of them."""
    root = tmp_path / "site"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.setattr(restorer, "_plugins_loaded", False, raising=False)
    before, modules = dict(restorer._REGISTRY), set(sys.modules)
    yield root
    for name in set(sys.modules) - modules:
        if str(root) in str(getattr(sys.modules[name], "__file__", None)):
            del sys.modules[name]
    for name, entry in list(restorer._REGISTRY.items()):  # keep built-ins imported meanwhile
        if name not in before and entry.cls.__module__ != BUILTIN_MODULES.get(name):
            del restorer._REGISTRY[name]
    restorer._REGISTRY.update(before)


def readme_plugin(site: Path) -> None:
    """The README's plugin ``sem-double``, installed from its two files as written there."""
    text = README.read_text(encoding="utf-8")
    files = dict(re.findall(r"`sem-double/([^`]+)`\n\n```\w+\n(.*?)```", text, flags=re.S))
    project = tomllib.loads(files["pyproject.toml"])["project"]
    entry_points = project["entry-points"]["sem_baselines.restorers"]
    module = files["src/sem_double/__init__.py"]
    install(site, project["name"], entry_points, {"sem_double/__init__.py": module})


def test_the_readme_plugin_is_listed_after_the_builtins_and_restores(site):
    readme_plugin(site)
    # built-in names never look for plugins (no start-up cost for them)
    assert registry_entry("wiener").cls.__module__ == BUILTIN_MODULES["wiener"]
    assert unknown_restorers(["input", "wiener"]) is None
    assert "sem_double" not in sys.modules
    names = list_restorers()
    assert names[: len(TABLE_ORDER)] == list(TABLE_ORDER)
    assert "double" in names[len(TABLE_ORDER) :]
    image = lines_image((48, 40))
    out = get_restorer("double").restore(image)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, np.clip(2 * image, 0, 255))
    np.testing.assert_array_equal(get_restorer("double", gain=0.5).restore(image), image / 2)
    assert registry_entry("double").fitting == "none"
    assert "; available: input, richardson-lucy, " in unknown_restorers(["nope"])
    assert "wiener-true-psf, double" in unknown_restorers(["nope"])


#: A plugin whose entry point is a function registering two methods, counting its calls.
SETUP = """
from pydantic import BaseModel
from sem_baselines.restorer import check_image, register

CALLS = 0


class Config(BaseModel):
    pass


def make(name):
    class Triple:
        def __init__(self, config=None):
            self.config = config

        def restore(self, image):
            return check_image(image).copy()

    register(name, Config)(Triple)


def setup():
    global CALLS
    CALLS += 1
    make("triple-a")
    make("triple-b")
"""


def test_plugins_load_once_and_a_function_entry_point_registers_several(site):
    install(site, "sem-triple", {"triple": "plugin_triple:setup"}, {"plugin_triple.py": SETUP})
    names = list_restorers()
    first = names.index("triple-a")
    assert first >= len(TABLE_ORDER) and names[first + 1] == "triple-b"
    assert list_restorers() == names
    assert unknown_restorers(["no-such-method"]) is not None
    image = lines_image((32, 32))
    np.testing.assert_array_equal(get_restorer("triple-b").restore(image), image)
    assert sys.modules["plugin_triple"].CALLS == 1


def test_a_broken_plugin_warns_in_one_line_and_the_other_methods_work(site):
    install(
        site, "sem-broken", {"broken": "plugin_broken"}, {"plugin_broken.py": "import nowhere_"}
    )
    half = PASS_THROUGH.format(name="half-done", cls="Half") + "\nraise ValueError('bad config')\n"
    install(site, "sem-half", {"half": "plugin_half"}, {"plugin_half.py": half})
    pass_through(site, "sem-fine", "fine", "plugin_fine", "fine")
    with pytest.warns(UserWarning) as record:
        names = list_restorers()
    assert [str(w.message) for w in record] == [
        "restorer plugin 'broken' (sem-broken 0.1) skipped: ModuleNotFoundError: No module "
        "named 'nowhere_'",
        "restorer plugin 'half' (sem-half 0.1) skipped: ValueError: bad config",
    ]
    assert {w.category.__name__ for w in record} == {"PluginWarning"}
    assert "fine" in names and "half-done" not in names  # a failed plugin leaves no method
    image = lines_image((32, 32))
    for name in ("fine", "input", "wiener"):
        assert get_restorer(name).restore(image).shape == (32, 32)
    with pytest.raises(ValueError, match=r"unknown restorer 'half-done'; available: .*fine"):
        get_restorer("half-done")


def test_a_builtin_name_is_refused_to_others_naming_both(site, monkeypatch):
    monkeypatch.delitem(restorer._REGISTRY, "wiener", raising=False)  # before its first use

    class Fake:
        def restore(self, image):
            return image

    config = registry_entry("input").config_cls
    with pytest.raises(
        RuntimeError,
        match=r"^restorer 'wiener' of \S*test_baselines_plugins\..*Fake refused: the name is taken "
        r"by the built-in method of sem_baselines\.classical\.wiener; register it under",
    ):
        register("wiener", config)(Fake)


def test_a_plugin_taking_a_registered_name_is_refused_naming_both(site):
    pass_through(site, "sem-twin-a", "twin-a", "plugin_twin_a", "twin")
    pass_through(site, "sem-twin-b", "twin-b", "plugin_twin_b", "twin")
    pass_through(site, "sem-wiener", "wiener-too", "plugin_wiener", "wiener")
    with pytest.warns(UserWarning) as record:
        list_restorers()
    twin, wiener = (str(w.message) for w in record)
    assert twin == (
        "restorer plugin 'twin-b' (sem-twin-b 0.1) skipped: RuntimeError: restorer 'twin' of "
        "plugin_twin_b.Twin refused: the name is taken by plugin_twin_a.Twin; register it "
        "under another name"
    )
    assert wiener.startswith("restorer plugin 'wiener-too' (sem-wiener 0.1) skipped: ")
    assert re.search(r"'wiener' of plugin_wiener\.Wiener refused: .* sem_baselines\.class", wiener)
    assert registry_entry("twin").cls.__module__ == "plugin_twin_a"  # the first keeps it
    assert registry_entry("wiener").cls.__module__ == BUILTIN_MODULES["wiener"]
