"""Data: the SEM image folder index, augmentations, defocus pairs and the batch order.

Names are imported on first use (PEP 562): :mod:`sem_train.data.index` (which images a run
reads, the split) loads no torch, so a command checks its data before seconds of imports.
"""

from __future__ import annotations

import sys
import types
from typing import TYPE_CHECKING, Any

from sem_physics.lazy import lazy_exports

__all__ = [
    "IMAGE_EXTENSIONS",
    "DefocusPairDataset",
    "EpochBatchSampler",
    "ImageIndex",
    "SEMImageDataset",
    "augment",
    "build_index",
    "center_resize",
    "check_header",
    "crop_bottom",
    "indexed_paths",
    "load_image_tensor",
    "random_resized_crop",
    "read_gray",
    "resize",
    "rotate",
    "sample_seed",
    "split_index",
    "validation_batches",
]

# Each name's submodule comes from the TYPE_CHECKING imports below (one list, read once).
__getattr__, __dir__, _EXPORTS = lazy_exports(__name__, __file__, __all__)


class _Package(types.ModuleType):
    """This package's module type: importing the submodule ``augment`` would rebind the
    package's attribute of that name, the exported function, to the submodule (Python binds a
    submodule to its package); that binding is skipped, the function stays what it names
    (as in ``sem_models``)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if not (isinstance(value, types.ModuleType) and _EXPORTS.get(name) == name):
            super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

if TYPE_CHECKING:  # static analysers see the eager imports
    from .augment import augment, center_resize, random_resized_crop, resize, rotate
    from .dataset import SEMImageDataset, load_image_tensor
    from .index import ImageIndex, build_index, indexed_paths, split_index
    from .io import IMAGE_EXTENSIONS, check_header, crop_bottom, read_gray
    from .pairs import DefocusPairDataset
    from .sampler import EpochBatchSampler, sample_seed, validation_batches
