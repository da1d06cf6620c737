"""Data: the SEM image folder index, augmentations, defocus pairs and the batch order."""

from .augment import augment, center_resize, random_resized_crop, resize, rotate
from .dataset import (
    ImageIndex,
    SEMImageDataset,
    build_index,
    indexed_paths,
    load_image_tensor,
    split_index,
)
from .io import IMAGE_EXTENSIONS, check_header, crop_bottom, read_gray
from .pairs import DefocusPairDataset
from .sampler import EpochBatchSampler, sample_seed, validation_batches

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
