"""The image files below a folder: the one walk of every command that takes a folder
(``sem-psf``, ``sem-measure``, ``sem restore``, ``sem train --data``, a benchmark's image
folders), so that each reads the same files.

A linked folder is read like any other (a corpus gathered from folders on other disks; a
recursive glob skips it without a word), except a link that leads to the folder walked or to a
folder holding the link (a loop), into the folder walked (those files are read where they
are), or to a folder another link already led to; those are not followed, and
:meth:`FolderFiles.not_followed_text` names each with the reason. Hidden files and folders
(``.name``) are left out. Standard library only: a console script lists its inputs before it
imports numpy.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["IMAGE_EXTENSIONS", "FolderFiles", "image_files", "report_not_followed"]

#: The image file extensions every command reads (lower case; names are matched case-blind).
IMAGE_EXTENSIONS = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp")


@dataclass(frozen=True)
class FolderFiles:
    """The files below ``root`` with one of the extensions asked for (``files``: relative POSIX
    paths through the links followed, sorted) and the linked folders not followed
    (``not_followed``: ``{relative path: reason}``, in walk order)."""

    root: Path
    files: list[str]
    not_followed: dict[str, str] = field(default_factory=dict)

    def paths(self) -> list[Path]:
        """``root / file`` for every file, in ``files`` order."""
        return [self.root / rel for rel in self.files]

    def not_followed_text(self) -> str:
        """``2 linked folder(s) under ROOT not followed: a (why); b (why)``, or ``""``."""
        if not self.not_followed:
            return ""
        from .cli_support import plain_text

        listed = "; ".join(f"{rel} ({why})" for rel, why in self.not_followed.items())
        return plain_text(
            f"{len(self.not_followed)} linked folder(s) under {self.root} not followed: {listed}"
        )


def _within(path: str, folder: str) -> bool:
    """Whether real path ``path`` is ``folder`` or lies below it (``/`` holds every path)."""
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def image_files(
    root: str | os.PathLike[str], extensions: Iterable[str] = IMAGE_EXTENSIONS
) -> FolderFiles:
    """Every non-hidden file below folder ``root`` whose extension (case-blind) is one of
    ``extensions``, linked folders followed once (module doc).

    Each entry that is no folder is listed by its name: a dangling link or a special file with
    an image's name too (a caller that reads only regular files checks ``is_file()``). A
    subfolder that cannot be read is passed over, as ``os.walk`` does. The walk ends: a loop is
    never entered and every real folder is read at most once.
    """
    root = Path(root)
    wanted = tuple(e.lower() for e in extensions)
    found: list[str] = []
    not_followed: dict[str, str] = {}
    top = os.path.realpath(root)
    followed: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        here = os.path.realpath(dirpath)
        rel = Path(dirpath).relative_to(root)
        keep = []
        for name in sorted(d for d in dirnames if not d.startswith(".")):
            link = os.path.join(dirpath, name)
            if not os.path.islink(link):
                keep.append(name)
                continue
            real, where = os.path.realpath(link), (rel / name).as_posix()
            if _within(here, real) or _within(top, real):
                not_followed[where] = f"a link loop: it leads to {real}, which holds it"
            elif _within(real, top):
                not_followed[where] = (
                    f"leads to {Path(real).relative_to(top).as_posix()}, read there"
                )
            elif real in followed:
                not_followed[where] = f"leads to {real}, read through {followed[real]}"
            else:
                followed[real] = where
                keep.append(name)
        dirnames[:] = keep
        for name in filenames:
            if not name.startswith(".") and os.path.splitext(name)[1].lower() in wanted:
                found.append((rel / name).as_posix())
    return FolderFiles(root, sorted(found), not_followed)


#: The linked folders last reported as not followed, per folder walked.
_REPORTED: dict[str, dict[str, str]] = {}


def report_not_followed(listing: FolderFiles, log: logging.Logger) -> None:
    """Log :meth:`FolderFiles.not_followed_text` as one warning on ``log``, once per folder and
    process while what is not followed stays the same (a run that lists a folder again in each
    of its steps says it once)."""
    if not listing.not_followed:
        return
    key = os.path.realpath(listing.root)
    if _REPORTED.get(key) == listing.not_followed:
        return
    _REPORTED[key] = dict(listing.not_followed)
    log.warning("%s", listing.not_followed_text())
