"""Restoration of users' own micrographs: ``sem_train.restore(...)`` and ``sem restore``.

* :func:`restore` / :func:`prepare` (:mod:`.api`): any registered method on an array, with the
  given or blind-estimated PSF (:mod:`.psf`) or a checkpoint (:mod:`.methods`);
* :func:`restore_files` (:mod:`.batch`): files and folders in, files and ``restore.json`` out,
  info bar, sample type and vendor metadata kept (:mod:`.files`).
"""

from .api import (
    DEFAULT_METHOD,
    MIN_SIDE_PX,
    PreparedMethod,
    RestoredImage,
    RestoreTimings,
    RestoreWarning,
    prepare,
    restore,
)
from .batch import MANIFEST_NAME, FailedInput, RestoredFile, RestoreManifest, restore_files
from .methods import CheckpointMismatchError, MethodNeeds, method_needs
from .psf import PSF_AUTO, parse_psf

__all__ = [
    "DEFAULT_METHOD",
    "MANIFEST_NAME",
    "MIN_SIDE_PX",
    "PSF_AUTO",
    "CheckpointMismatchError",
    "FailedInput",
    "MethodNeeds",
    "PreparedMethod",
    "RestoreManifest",
    "RestoreTimings",
    "RestoreWarning",
    "RestoredFile",
    "RestoredImage",
    "method_needs",
    "parse_psf",
    "prepare",
    "restore",
    "restore_files",
]
