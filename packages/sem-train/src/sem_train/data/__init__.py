"""Data: the SEM image folder index, augmentations, defocus pairs and the batch order.

Names are imported on first use (PEP 562): :mod:`sem_train.data.index` (which images a run
reads, the split) loads no torch, so a command checks its data before seconds of imports.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sem_physics.lazy import keep_exported_names, lazy_exports

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
keep_exported_names(__name__, _EXPORTS)  # the function augment, not its submodule

if TYPE_CHECKING:  # static analysers see the eager imports
    from .augment import augment, center_resize, random_resized_crop, resize, rotate
    from .dataset import SEMImageDataset, load_image_tensor
    from .index import ImageIndex, build_index, indexed_paths, split_index
    from .io import IMAGE_EXTENSIONS, check_header, crop_bottom, read_gray
    from .pairs import DefocusPairDataset
    from .sampler import EpochBatchSampler, sample_seed, validation_batches
