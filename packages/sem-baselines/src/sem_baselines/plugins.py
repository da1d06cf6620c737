"""Restorers from other installed packages: the ``sem_baselines.restorers`` entry points.

A package adds methods to the registry by naming, in its ``pyproject.toml``, what registers
them::

    [project.entry-points."sem_baselines.restorers"]
    double = "sem_double"           # a module whose import calls register(...)
    # double = "sem_double:setup"   # or a function calling it, called with no arguments

(A class the module registers, ``"sem_double:DoubleRestorer"``, reads as its module.)

The registry (:mod:`sem_baselines.restorer`) calls :func:`load_plugins` once, the first time
it is asked for a name it does not know or for the full list, so a command that uses built-in
methods only never scans the installed packages. A plugin that fails to import or to register
is skipped with one :class:`PluginWarning` line naming the entry point, its distribution and
the error; the names it registered before failing are removed, and every other method works.
"""

from __future__ import annotations

import types
import warnings
from collections.abc import MutableMapping
from importlib.metadata import EntryPoint, entry_points
from typing import Any

__all__ = ["GROUP", "PluginWarning", "describe", "load_plugins"]

#: The entry-point group that plugins declare.
GROUP = "sem_baselines.restorers"


class PluginWarning(UserWarning):
    """A restorer plugin that could not be loaded; the other methods are unaffected."""


def describe(ep: EntryPoint) -> str:
    """``"'double' (sem-double 0.1)"``: the entry point and the distribution declaring it."""
    dist = getattr(ep, "dist", None)
    where = f"{dist.name} {dist.version}" if dist is not None else "unknown distribution"
    return f"{ep.name!r} ({where})"


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__


def _run(ep: EntryPoint) -> None:
    """Import what ``ep`` names (registering at import); call it when it is a function."""
    target = ep.load()
    if isinstance(target, types.ModuleType | type):  # a module, or a class it registered
        return
    if not callable(target):
        raise TypeError(f"{ep.value} is neither a module, a class nor a function")
    target()


def load_plugins(registry: MutableMapping[str, Any]) -> list[str]:
    """Load every entry point of :data:`GROUP` (sorted by name) and return the names they
    added to ``registry`` (the dict that ``register`` fills). A plugin that raises loses the
    names it added and is reported as a :class:`PluginWarning`."""
    added: list[str] = []
    for ep in sorted(entry_points(group=GROUP), key=lambda e: (e.name, e.value)):
        before = set(registry)
        try:
            _run(ep)
        except Exception as err:  # a plugin's bug must not take the built-in methods down
            for name in set(registry) - before:
                del registry[name]
            # placed at the entry-point group, not at a line of this file: one line on stderr
            warnings.warn_explicit(
                f"restorer plugin {describe(ep)} skipped: {_first_line(err)}",
                PluginWarning,
                filename=GROUP,
                lineno=0,
            )
            continue
        added += [name for name in registry if name not in before]
    return added
