"""A new project appears at its path complete, or not at all.

Importing a folder of scans or generating a cohort writes many cases; stopped half-way (Ctrl-C, a kill, disk full,
a corrupt file at case 30) the project would look usable with part of its cases, and a second try would find the
folder taken. So a project is filled in a hidden sibling folder and renamed into place once every case is in: a
rename within one folder is atomic, the same rule the label saves follow. A failure that Python sees removes the
sibling; a kill leaves it, under a name (``.partial-<random>-<name>``, as :mod:`napari_ssl_seg.io.atomic` names
its temporary files) that says what it is.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

from napari_ssl_seg.errors import ProjectError
from napari_ssl_seg.io.atomic import TEMP_PREFIX, fsync_path
from napari_ssl_seg.store.project import Project

__all__ = ["build_project"]


def build_project(
    root: Path | str, fill: Callable[[Project], None], *, seed: int = 0, name: str | None = None
) -> Project:
    """Create a project at ``root`` filled by ``fill``, atomically; returns it open.

    ``root`` must be missing or an empty folder (checked before ``fill`` runs, so a taken path costs no work).
    """
    root = Path(root)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise ProjectError(f"{root}: already exists and is not an empty folder")
    aside = root.parent / f"{TEMP_PREFIX}{uuid.uuid4().hex[:12]}-{root.name}"
    project = Project.create(aside, seed=seed, name=name or root.resolve().name)
    try:
        fill(project)
    except BaseException:
        project.close()
        shutil.rmtree(aside, ignore_errors=True)
        raise
    project.close()
    try:
        if root.is_dir():
            # The empty folder checked above (a folder the user picked): rmdir refuses it if anything has appeared
            # in it since, and Windows cannot rename onto a folder at all.
            root.rmdir()
        os.replace(aside, root)
        fsync_path(root.parent)
    except OSError as exc:
        message = f"{root}: the new project could not be moved there ({exc}); it is complete at {aside}"
        raise ProjectError(message) from exc
    return Project.open(root)
