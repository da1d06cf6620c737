"""Each package declares every third-party distribution its code imports.

Inside the workspace every package sees every other package's dependencies, so an undeclared
import works here and fails for a user who installs that one package from its wheel. The
source of each package is parsed (imports inside functions included, where the optional
libraries are) and each imported top-level module is mapped to the distribution that provides
it in this environment (``importlib.metadata.packages_distributions``).

An extra's distributions count as declared, so the scan cannot see code that a base install
reaches and that needs an extra (a module-level ``import torch`` in sem-metrology, whose torch
comes with ``[quality]``). The second check installs nothing: it hides from a fresh
interpreter every distribution that only an extra brings (this package's and its workspace
siblings', with their own requirements, minus what the base install pulls in anyway) and
imports every module, runs each console script's ``--help`` and the README's first example
there, as a user of the base install (``pip install sem-metrology``) would.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import tomllib
from importlib.metadata import PackageNotFoundError, distribution, packages_distributions
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = sorted(p for p in (ROOT / "packages").iterdir() if (p / "pyproject.toml").is_file())


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared(pyproject: Path) -> set[str]:
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    specs = list(project.get("dependencies", []))
    for extra in project.get("optional-dependencies", {}).values():
        specs += extra
    return {_canonical(re.split(r"[\s\[<>=!~;]", s, maxsplit=1)[0]) for s in specs}


def _guarded(tree: ast.AST) -> set[int]:
    """ids of the import nodes in a ``try`` whose handler catches ImportError: optional ones
    (the code goes on without them, e.g. no progress bar without tqdm)."""
    names = {"ImportError", "ModuleNotFoundError"}
    guarded: set[int] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Try):
            continue
        caught = {
            n.id
            for h in node.handlers
            if h.type is not None
            for n in ast.walk(h.type)
            if isinstance(n, ast.Name)
        }
        if caught & names:
            guarded.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return guarded


def _imported_modules(src: Path) -> set[str]:
    found: set[str] = set()
    for path in src.rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        optional = _guarded(tree)
        for node in ast.walk(tree):
            if id(node) in optional:
                continue
            if isinstance(node, ast.Import):
                found.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("package", PACKAGES, ids=lambda p: p.name)
def test_every_imported_distribution_is_declared(package):
    own = _canonical(package.name).replace("-", "_")
    # the workspace's own packages are installed editable, which packages_distributions misses
    dists = {
        **packages_distributions(),
        **{_canonical(p.name).replace("-", "_"): [p.name] for p in PACKAGES},
    }
    missing = {}
    for module in sorted(_imported_modules(package / "src") - {own}):
        if module in sys.stdlib_module_names or module == "__future__":
            continue
        providers = {_canonical(d) for d in dists.get(module, [])}
        assert providers, f"{package.name} imports {module!r}, which no installed package provides"
        if not providers & _declared(package / "pyproject.toml"):
            missing[module] = sorted(providers)
    assert not missing, f"{package.name}/pyproject.toml does not declare: {missing}"


def test_the_scan_sees_imports_inside_functions_and_skips_optional_ones(tmp_path):
    (tmp_path / "m.py").write_text(
        "def f():\n    from skimage.registration import x\n"
        "try:\n    import tqdm\nexcept ImportError:\n    tqdm = None\n"
    )
    assert _imported_modules(tmp_path) == {"skimage"}


def _project(name: str) -> dict | None:
    """The ``[project]`` table of workspace package ``name`` (None for a third-party one)."""
    for package in PACKAGES:
        if _canonical(package.name) == name:
            return tomllib.loads((package / "pyproject.toml").read_text(encoding="utf-8"))[
                "project"
            ]
    return None


def _requires(name: str, extras: frozenset[str]) -> list[Requirement]:
    """What ``name[extras]`` requires: a workspace package's pyproject (the source of truth),
    else the installed metadata; markers evaluated here."""
    project = _project(name)
    if project is not None:
        optional = project.get("optional-dependencies", {})
        specs = [*project.get("dependencies", []), *(s for e in extras for s in optional[e])]
    else:
        try:
            specs = distribution(name).requires or []
        except PackageNotFoundError:  # not installed here: not pulled in on this platform
            return []
    reqs = [Requirement(spec) for spec in specs]
    return [
        r
        for r in reqs
        if r.marker is None or any(r.marker.evaluate({"extra": e}) for e in ("", *extras))
    ]


def _closure(roots: list[Requirement]) -> set[str]:
    """Every distribution that installing ``roots`` brings in (canonical names)."""
    seen: dict[str, set[str]] = {}
    todo = list(roots)
    while todo:
        req = todo.pop()
        name = _canonical(req.name)
        if name in seen and set(req.extras) <= seen[name]:
            continue
        seen.setdefault(name, set()).update(req.extras)
        todo += _requires(name, frozenset(seen[name]))
    return set(seen)


def _extra_only(package: Path) -> set[str]:
    """The distributions a base install of ``package`` lacks that one of its extras, or an
    extra of a workspace package it installs, would bring."""
    name = _canonical(package.name)
    base = _closure([Requirement(name)])
    every_extra = [
        Requirement(f"{w}[{','.join(project.get('optional-dependencies', {}))}]")
        for w in sorted(base | {name})
        if (project := _project(w)) is not None and project.get("optional-dependencies")
    ]
    return _closure([Requirement(name), *every_extra]) - base


def _hidden_modules(dists: set[str]) -> set[str]:
    """Top-level modules that only the distributions ``dists`` provide here."""
    return {
        module
        for module, providers in packages_distributions().items()
        if providers and {_canonical(d) for d in providers} <= dists
    }


#: Run in a fresh interpreter: hide the modules, import every module of the package, run each
#: console script's ``--help`` and the given example; print the problems as JSON. An import
#: that fails with the toolkit's message naming the extra (``pip install 'sem-physics[torch]'``,
#: ``sem_physics.optional.require``) is the intended behaviour of a module that needs it.
_WITHOUT_EXTRAS = r"""
import contextlib, importlib, io, json, os, pkgutil, re, sys, traceback
spec = json.loads(sys.argv[1])
hidden = frozenset(spec["hidden"])


class Hidden:  # a finder that does not find the hidden modules, as if not installed
    def __init__(self, finder):
        self.finder = finder

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in hidden:
            return None
        return self.finder.find_spec(name, path, target)

    def __getattr__(self, attr):
        return getattr(self.finder, attr)


# nothing to hide is loaded yet (but a startup hook of a .pth file, such as _distutils_hack)
assert not {m for m in hidden & set(sys.modules) if not m.startswith("_")}
sys.meta_path[:] = [Hidden(finder) for finder in sys.meta_path]
problems = []
named = re.compile(r"pip install '[\w.-]+\[[\w,.-]+\]'")
package = importlib.import_module(spec["package"])
for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
    try:
        importlib.import_module(info.name)
    except ImportError as err:
        if not named.search(str(err)):
            problems.append(f"import {info.name}: {type(err).__name__}: {err}")
for script, target in spec["scripts"].items():
    module, _, function = target.partition(":")
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            getattr(importlib.import_module(module), function)(["--help"])
    except SystemExit as stop:
        if stop.code not in (0, None):
            problems.append(f"{script} --help: exit status {stop.code}")
    except Exception as err:
        problems.append(f"{script} --help: {type(err).__name__}: {err}")
if spec["example"] is not None:
    os.chdir(spec["cwd"])
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            exec(compile(spec["example"], "README.md", "exec"), {})
    except Exception:
        problems.append("README example: " + traceback.format_exc().strip().splitlines()[-1])
print(json.dumps(problems))
"""


def _problems_without(
    package: str,
    hidden: set[str],
    cwd: Path,
    scripts: dict[str, str] | None = None,
    example: str | None = None,
    path: Path | None = None,
) -> list[str]:
    spec = {
        "package": package,
        "hidden": sorted(hidden),
        "scripts": scripts or {},
        "example": example,
        "cwd": str(cwd),
    }
    env = dict(os.environ)
    if path is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(path), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, "-c", _WITHOUT_EXTRAS, json.dumps(spec)],
        capture_output=True,
        text=True,
        encoding="utf-8",
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


WITH_EXTRAS = [p for p in PACKAGES if _extra_only(p)]


def test_the_packages_with_extras_are_the_ones_whose_base_install_lacks_torch():
    """What the check below hides: torch for sem-physics' base install, torch, torchvision,
    lpips and pyiqa for sem-metrology's (sem-train's tensorboard comes with pyiqa anyway)."""
    names = {p.name: _extra_only(p) for p in WITH_EXTRAS}
    assert {"sem-physics", "sem-metrology"} <= set(names)
    assert "torch" in names["sem-physics"] and "scipy" not in names["sem-physics"]
    assert {"torch", "torchvision", "lpips", "pyiqa"} <= names["sem-metrology"]
    assert "sem-physics" not in names["sem-metrology"]
    assert "torch" in _hidden_modules(names["sem-physics"])


@pytest.mark.parametrize("package", WITH_EXTRAS, ids=lambda p: p.name)
def test_the_base_install_imports_every_module_and_runs_its_commands_and_example(package, tmp_path):
    project = _project(_canonical(package.name))
    readme = (package / "README.md").read_text(encoding="utf-8")
    first = re.search(r"```python\n(.*?)```", readme, re.S)
    assert first is not None, f"{package.name}/README.md has no Python example"
    problems = _problems_without(
        _canonical(package.name).replace("-", "_"),
        _hidden_modules(_extra_only(package)),
        tmp_path,
        scripts=project.get("scripts", {}),
        example=first.group(1),
    )
    assert problems == [], f"{package.name} without its extras: {problems}"


def test_the_base_install_check_finds_a_module_level_import_of_an_extra(tmp_path):
    """A module importing a hidden one at its top, a command importing it when run and an
    example using it are reported; an import inside a function, or one that fails with the
    message naming the extra, is not; other modules still import."""
    (tmp_path / "extra_dep.py").write_text("")
    pkg = tmp_path / "pkg_x"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "lazy.py").write_text("def f():\n    import extra_dep\n")
    (pkg / "eager.py").write_text("import extra_dep\n")
    (pkg / "named.py").write_text(
        "raise ModuleNotFoundError(\"extra_dep is needed: pip install 'pkg-x[dep]'\")\n"
    )
    (pkg / "cli.py").write_text("def main(argv):\n    import extra_dep.sub\n")
    args = ("pkg_x", {"extra_dep"}, tmp_path, {"x": "pkg_x.cli:main"}, "import pkg_x.eager")
    problems = _problems_without(*args, path=tmp_path)
    assert problems == [
        "import pkg_x.eager: ModuleNotFoundError: No module named 'extra_dep'",
        "x --help: ModuleNotFoundError: No module named 'extra_dep'",
        "README example: ModuleNotFoundError: No module named 'extra_dep'",
    ]
    (pkg / "eager.py").write_text("import json\n")
    assert _problems_without(*args[:4], "import pkg_x.lazy, pkg_x.eager", tmp_path) == [
        "x --help: ModuleNotFoundError: No module named 'extra_dep'"
    ]
