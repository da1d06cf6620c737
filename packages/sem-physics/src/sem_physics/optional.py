"""Optional dependencies: a missing one is named with the extra that installs it.

``sem-physics`` works with numpy and scipy alone; its torch functions (``degrade_torch``,
``image_to_tensor``, :mod:`sem_physics.batched`, ...) need the ``torch`` extra. Without it
they raise ``ModuleNotFoundError: torch is needed for ...: pip install 'sem-physics[torch]'``
instead of a bare "No module named 'torch'".
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["require"]


def require(module: str, extra: str, what: str = "this") -> ModuleType:
    """Import ``module``; if it (not one of its own imports) is missing, say which ``extra``
    installs it and for ``what``."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        if err.name != module.split(".")[0]:
            raise  # the package is there; something it imports is not
        raise ModuleNotFoundError(
            f"{module} is needed for {what}: pip install '{extra}'", name=err.name
        ) from None
