"""Each package declares every third-party distribution its code imports.

Inside the workspace every package sees every other package's dependencies, so an undeclared
import works here and fails for a user who installs that one package from its wheel. The
source of each package is parsed (imports inside functions included, where the optional
libraries are) and each imported top-level module is mapped to the distribution that provides
it in this environment (``importlib.metadata.packages_distributions``).
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

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
