"""A new project (an import, a generated cohort) appears at its path complete or not at all."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import SAMPLE_DIR, make_volume

from napari_ssl_seg.cohort.cohort_project import build_cohort_project
from napari_ssl_seg.errors import ProjectError
from napari_ssl_seg.store import Project
from napari_ssl_seg.store.importer import import_into_new_project
from napari_ssl_seg.store.new_project import build_project


def _stop_at_case(stop_at: int):
    def progress(index: int, total: int, name: str) -> None:
        if index == stop_at:
            raise KeyboardInterrupt

    return progress


def _leftovers(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir() if ".partial-" in path.name)


def test_an_interrupted_import_leaves_no_project_and_a_second_try_succeeds(tmp_path: Path) -> None:
    root = tmp_path / "lab"
    with pytest.raises(KeyboardInterrupt):
        import_into_new_project(root, SAMPLE_DIR, SAMPLE_DIR, progress=_stop_at_case(2))
    assert not root.exists()
    assert _leftovers(tmp_path) == []
    with import_into_new_project(root, SAMPLE_DIR, SAMPLE_DIR) as project:
        assert len(project.cases()) == 4
        assert project.root == root
        assert project.setting("name") == "lab"
        assert project.read_label("brain1").array.max() == 1  # the files are where the database says
    assert _leftovers(tmp_path) == []


def test_an_empty_folder_the_user_made_stays_after_a_failure_and_takes_the_project(tmp_path: Path) -> None:
    root = tmp_path / "made_by_hand"
    root.mkdir()
    with pytest.raises(KeyboardInterrupt):
        import_into_new_project(root, SAMPLE_DIR, SAMPLE_DIR, progress=_stop_at_case(1))
    assert root.is_dir() and not any(root.iterdir())
    with import_into_new_project(root, SAMPLE_DIR, SAMPLE_DIR) as project:
        assert [case.name for case in project.cases()] == ["CTChest4", "brain1", "brain2", "breast1"]


def test_a_taken_folder_is_refused_before_any_work(tmp_path: Path) -> None:
    root = tmp_path / "taken"
    root.mkdir()
    (root / "notes.txt").write_text("the lab's own file")
    called = []
    with pytest.raises(ProjectError, match="already exists"):
        build_project(root, called.append)
    assert called == []
    assert [path.name for path in root.iterdir()] == ["notes.txt"]
    assert _leftovers(tmp_path) == []


def test_an_interrupted_cohort_leaves_no_project(tmp_path: Path) -> None:
    base, label = SAMPLE_DIR / "brain1_image.nrrd", SAMPLE_DIR / "brain1_label.nrrd"
    out = tmp_path / "cohort"
    with pytest.raises(KeyboardInterrupt):
        build_cohort_project(out, base, label, cases=3, seed=0, progress=_stop_at_case(1))
    assert not out.exists()
    assert _leftovers(tmp_path) == []


KILLED_CHILD = """
import sys, time
from pathlib import Path
import numpy as np
from napari_ssl_seg.io import Volume
from napari_ssl_seg.store.new_project import build_project

def fill(project):
    project.add_case("first", Volume(array=np.zeros((4, 5, 6), np.float32), spacing=(1.0, 1.0, 1.0)))
    print("filled", flush=True)
    time.sleep(60)

build_project(Path(sys.argv[1]), fill)
"""


def test_a_killed_import_leaves_no_project_at_its_path(tmp_path: Path) -> None:
    """A kill runs no cleanup: the half-made project must never have been at the path at all."""
    root = tmp_path / "killed"
    child = subprocess.Popen([sys.executable, "-c", KILLED_CHILD, str(root)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "filled"
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    assert not root.exists()
    (partial,) = _leftovers(tmp_path)
    assert partial.endswith("-killed")
    with Project.open(tmp_path / partial) as half:  # what was written is there to inspect, under a name that says so
        assert [case.name for case in half.cases()] == ["first"]
    # The path is free for a second try.
    with build_project(root, lambda project: project.add_case("again", make_volume((4, 5, 6)))) as project:
        assert [case.name for case in project.cases()] == ["again"]


def test_a_folder_taken_while_filling_is_left_alone_and_the_project_kept_aside(tmp_path: Path) -> None:
    root = tmp_path / "picked"
    root.mkdir()

    def fill(project: Project) -> None:
        project.add_case("first", make_volume((4, 5, 6)))
        (root / "someone_elses.txt").write_text("written meanwhile")

    with pytest.raises(ProjectError, match="complete at"):
        build_project(root, fill)
    assert [path.name for path in root.iterdir()] == ["someone_elses.txt"]
    (partial,) = _leftovers(tmp_path)
    with Project.open(tmp_path / partial) as kept:
        assert [case.name for case in kept.cases()] == ["first"]
