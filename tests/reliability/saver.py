"""Child process of the kill tests: ``python -m reliability.saver ROOT ROLE CASE [CRASH_POINT]``.

ROLE ``save`` saves label versions of CASE in a loop until it is killed; with a CRASH_POINT it
saves two versions, then SIGKILLs itself at that point of the third save. ROLE ``read`` reads
every label version in a loop (a second annotator's viewer), to be killed mid-read as well.
"""

from __future__ import annotations

import os
import signal
import sys
import zlib
from typing import Any

import numpy as np

from napari_ssl_seg.store import Project

SHAPE = (10, 24, 24)
CRASH_POINTS = ("mid_write", "before_publish", "before_insert", "before_commit", "after_commit")


def expected_label(case: str, version: int) -> np.ndarray:
    """The content saved as ``case``'s ``version``: distinct for every case and version."""
    rng = np.random.default_rng([zlib.crc32(case.encode()), version])
    return rng.integers(0, 6, size=SHAPE).astype(np.uint8)


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class _CommitKiller:
    """Stands in for the project's sqlite connection and dies where COMMIT would run."""

    def __init__(self, connection: Any) -> None:
        self._connection = connection

    def execute(self, sql: str, *args: Any) -> Any:
        if sql.strip().upper() == "COMMIT":
            _die()
        return self._connection.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._connection, name)


def arm(point: str, project: Project) -> None:
    """Make the next label save die at ``point``."""
    import napari_ssl_seg.io.atomic as atomic
    import napari_ssl_seg.io.write as write
    import napari_ssl_seg.store.project as project_module

    if point == "mid_write":
        original = write._write_nifti

        def half_then_die(volume, array, path):  # the temporary file exists, half of it written
            original(volume, array, path)
            with open(path, "r+b") as handle:
                handle.truncate(path.stat().st_size // 2)
            _die()

        write._write_nifti = half_then_die
    elif point == "before_publish":
        atomic.os.link = lambda *args, **kwargs: _die()  # complete temporary file, not yet linked
    elif point == "before_insert":
        project_module.sha256_file = lambda path: _die()  # published file, no row yet
    elif point == "before_commit":
        project._connection = _CommitKiller(project._connection)
    elif point != "after_commit":
        raise SystemExit(f"unknown crash point {point}")


def save_loop(project: Project, case: str, crash: str | None) -> None:
    saved = 0
    while True:
        if crash and saved == 2:
            arm(crash, project)
        version = len(project.label_versions(case)) + 1
        project.save_label(case, expected_label(case, version), author="saver")
        saved += 1
        if crash == "after_commit" and saved == 3:
            _die()


def read_loop(project: Project) -> None:
    while True:
        for record in project.label_versions():
            project.read_label(record.case_name, record.version)


def main(argv: list[str]) -> None:
    root, role, case, *crash = argv
    project = Project.open(root)
    print("ready", flush=True)
    if role == "read":
        read_loop(project)
    else:
        save_loop(project, case, crash[0] if crash else None)


if __name__ == "__main__":
    main(sys.argv[1:])
