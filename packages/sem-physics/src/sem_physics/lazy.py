"""Lazy package exports (PEP 562) with the names written once, as ordinary imports.

A package ``__init__`` lists its public names in ``__all__`` and imports them under
``if TYPE_CHECKING:`` (what type checkers and IDEs read). :func:`lazy_exports` reads that
import block from the ``__init__`` source and returns the module's ``__getattr__`` and
``__dir__``: a name's submodule is imported on first use, so ``import package`` loads none of
its dependencies and a command line built on it starts at once. Used by ``sem_physics``,
``sem_metrology`` and ``sem_train``::

    # package/__init__.py
    __all__ = ["read_image"]
    __getattr__, __dir__, _EXPORTS = lazy_exports(__name__, __file__, __all__)
    if TYPE_CHECKING:
        from .io import read_image

A package exporting a function named like its own submodule (``sem_train.data.augment``)
calls :func:`keep_exported_names` after :func:`lazy_exports`, so that importing the submodule
does not rebind the name to it.
"""

from __future__ import annotations

import ast
import importlib
import sys
import types
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

__all__ = ["keep_exported_names", "lazy_exports", "type_checking_imports"]


def type_checking_imports(init_file: str | Path) -> dict[str, str]:
    """``{name: submodule}`` of the relative imports under ``if TYPE_CHECKING:`` in a file."""
    tree = ast.parse(Path(init_file).read_text(encoding="utf-8"), filename=str(init_file))
    table: dict[str, str] = {}
    for node in tree.body:
        if not (isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING"):
            continue
        for stmt in node.body:
            if isinstance(stmt, ast.ImportFrom) and stmt.level == 1 and stmt.module:
                for alias in stmt.names:
                    table[alias.asname or alias.name] = stmt.module
    return table


def lazy_exports(
    package: str, init_file: str, names: Iterable[str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]], dict[str, str]]:
    """``(__getattr__, __dir__, table)`` for ``package`` whose public ``names`` (its
    ``__all__``) are imported under ``if TYPE_CHECKING:`` in ``init_file``.

    Raises ImportError when ``names`` and that import block disagree, so that a name added to
    one and not the other fails on the first import instead of at its first use.
    """
    table = type_checking_imports(init_file)
    listed = set(names)
    if listed != set(table):
        raise ImportError(
            f"{package}: __all__ and the TYPE_CHECKING imports of {init_file} differ: "
            f"only in __all__ {sorted(listed - set(table))}, "
            f"only imported {sorted(set(table) - listed)}"
        )

    def __getattr__(name: str) -> Any:
        module = table.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f".{module}", package), name)
        vars(sys.modules[package])[name] = value  # later look-ups skip this function
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(table))

    return __getattr__, __dir__, table


class _KeepsExports(types.ModuleType):
    """A package whose exported names stay what they name when a submodule of the same name
    is imported (Python binds a submodule to its package's attribute of that name)."""

    _shadowed: frozenset[str] = frozenset()

    def __setattr__(self, name: str, value: Any) -> None:
        if not (isinstance(value, types.ModuleType) and name in self._shadowed):
            super().__setattr__(name, value)


def keep_exported_names(package: str, table: dict[str, str]) -> None:
    """Keep each exported name of ``package`` (``table`` from :func:`lazy_exports`) that its
    own submodule shares (``augment`` from ``.augment``) bound to the export: without this,
    the first import of that submodule, lazy or not, rebinds the name to the module."""
    module = sys.modules[package]
    shadowed = frozenset(name for name, sub in table.items() if name == sub)
    module.__class__ = type("_KeepsExports", (_KeepsExports,), {"_shadowed": shadowed})
