"""The one folder walk of every command (``sem_physics.folders``): linked folders read once,
loops and links back in named, never followed."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from sem_physics.folders import image_files, report_not_followed
from sem_physics.testing import symlink_or_skip


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


@pytest.mark.timeout(60)
def test_linked_folders_are_read_once_and_loops_are_named(tmp_path: Path) -> None:
    root, outside = tmp_path / "corpus", tmp_path / "other_disk"
    _touch(root / "own" / "a.tif")
    _touch(root / "own" / "notes.txt")
    _touch(root / ".hidden" / "h.tif")
    _touch(root / "own" / ".h.png")
    _touch(outside / "lab B" / "b.PNG")
    _touch(outside / "lab C" / "c.jpg")
    symlink_or_skip(root / "lab B", outside / "lab B", target_is_directory=True)
    symlink_or_skip(root / "same again", outside / "lab B", target_is_directory=True)
    symlink_or_skip(root / "loop", tmp_path, target_is_directory=True)
    symlink_or_skip(root / "own link", root / "own", target_is_directory=True)
    # lab B -> lab C -> lab B: a cycle outside the folder, entered once each way
    symlink_or_skip(outside / "lab B" / "to C", outside / "lab C", target_is_directory=True)
    symlink_or_skip(outside / "lab C" / "to B", outside / "lab B", target_is_directory=True)
    symlink_or_skip(root / "gone.tif", tmp_path / "nowhere.tif")  # dangling: listed by name

    listing = image_files(root)
    assert listing.files == ["gone.tif", "lab B/b.PNG", "lab B/to C/c.jpg", "own/a.tif"]
    assert listing.paths() == [root / f for f in listing.files]
    real = os.path.realpath
    assert listing.not_followed == {
        "lab B/to C/to B": f"leads to {real(outside / 'lab B')}, read through lab B",
        "loop": f"a link loop: it leads to {real(tmp_path)}, which holds it",
        "own link": "leads to own, read there",
        "same again": f"leads to {real(outside / 'lab B')}, read through lab B",
    }
    text = listing.not_followed_text()
    assert text.startswith(f"4 linked folder(s) under {root} not followed: ")
    assert text.count(" (") == 4 and "loop (a link loop" in text
    assert image_files(root, (".jpg",)).files == ["lab B/to C/c.jpg"]


@pytest.mark.timeout(60)
def test_a_folder_that_links_to_itself_ends_with_nothing_to_read(tmp_path: Path) -> None:
    """Two self-links: a walk that followed them would list ``a/b/a/b/...`` until the path is
    too long (2**depth folders); this one reads each real folder once."""
    root = tmp_path / "only links"
    root.mkdir()
    symlink_or_skip(root / "a", root, target_is_directory=True)
    symlink_or_skip(root / "b", root / ".", target_is_directory=True)
    listing = image_files(root)
    assert listing.files == [] and set(listing.not_followed) == {"a", "b"}
    assert listing.not_followed_text().startswith("2 linked folder(s) under ")


def test_the_warning_is_logged_once_per_folder_until_it_changes(tmp_path: Path, caplog) -> None:
    root = tmp_path / "corpus"
    root.mkdir()
    symlink_or_skip(root / "loop", root, target_is_directory=True)
    log = logging.getLogger("sem_physics.tests.folders")
    with caplog.at_level("WARNING", logger=log.name):
        report_not_followed(image_files(root), log)
        report_not_followed(image_files(root), log)  # a run listing its folder again
        assert len(caplog.records) == 1
        symlink_or_skip(root / "again", root, target_is_directory=True)
        report_not_followed(image_files(root), log)
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 2 and said[1].startswith(f"2 linked folder(s) under {root} not followed")
