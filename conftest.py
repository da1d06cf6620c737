"""Session-wide test settings: offline hubs, a throw-away TORCH_HOME, real-data folders."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

# Nothing in the test run may download: hubs offline, torch's cache in a fresh temporary folder.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["TORCH_HOME"] = tempfile.mkdtemp(prefix="sem-test-torch-home-")
os.environ.setdefault("MPLBACKEND", "Agg")

# Real SEM images are never committed; CI points at the shared folder beside the clone.
_shared = Path(__file__).resolve().parent.parent / "shared" / "data"
for _var, _sub in (("SEM_REAL_DATA", "sem"), ("SEM_CORPUS_DATA", "sem_corpus")):
    if not os.environ.get(_var) and (_shared / _sub).is_dir():
        os.environ[_var] = str(_shared / _sub)
