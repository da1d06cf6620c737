"""Test helpers importable under importlib mode; one torch thread for these tiny tensors.

On a shared 2-core machine torch's intra-op threads spin against other processes and tiny
training steps become ~30x slower; the tensors here are far too small to gain from threads.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from sem_models.testing import one_torch_thread

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    with one_torch_thread():
        yield
