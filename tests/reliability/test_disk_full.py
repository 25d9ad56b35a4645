"""A full disk or a read-only folder: one clear error, nothing half-written, earlier versions intact."""

from __future__ import annotations

import errno
import os
import pwd
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_volume

import napari_ssl_seg.io.atomic as atomic
import napari_ssl_seg.io.write as write
import napari_ssl_seg.networks.checkpoint as checkpoint
from napari_ssl_seg.cli import main
from napari_ssl_seg.errors import InputError
from napari_ssl_seg.io import write_volume
from napari_ssl_seg.io.atomic import TEMP_PREFIX, sha256_file
from napari_ssl_seg.networks import load_checkpoint
from napari_ssl_seg.store import Project
from reliability.tally import TALLY

SHAPE = (6, 8, 10)
TESTS_DIR = Path(__file__).resolve().parents[1]


def _project(root: Path, versions: int = 2) -> None:
    with Project.create(root) as project:
        project.add_case("case1", make_volume(SHAPE, dtype="float32"))
        for version in range(versions):
            project.save_label("case1", np.full(SHAPE, version + 1, np.uint8))


def _snapshot(root: Path) -> dict[str, str]:
    """Every file under the project (but the database files) with its checksum."""
    return {
        str(p.relative_to(root)): sha256_file(p)
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.name.startswith("project.sqlite")
    }


def _assert_untouched(root: Path, before: dict[str, str], versions: int = 2) -> None:
    assert _snapshot(root) == before, "a file was added, left half-written or changed"
    assert not [p for p in root.rglob(f"{TEMP_PREFIX}*")], "a temporary file was left behind"
    with Project.open(root) as project:
        assert project.integrity_check() == "ok"
        assert [v.version for v in project.label_versions("case1")] == list(range(1, versions + 1))
        for version in range(1, versions + 1):
            assert np.all(project.read_label("case1", version).array == version)
        # Space is back: saving works again and takes the next number.
        assert project.save_label("case1", np.zeros(SHAPE, np.uint8)).version == versions + 1
    TALLY["faults"] += 1


def _enospc(*args: object, **kwargs: object) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_disk_full_halfway_through_a_label_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "project"
    _project(root)
    before = _snapshot(root)
    original = write._write_nifti

    def half_then_full(volume, array, path):  # the library got half the file out, then ENOSPC
        original(volume, array, path)
        with open(path, "r+b") as handle:
            handle.truncate(path.stat().st_size // 2)
        _enospc()

    monkeypatch.setattr(write, "_write_nifti", half_then_full)
    with Project.open(root) as project, pytest.raises(InputError, match="disk full"):
        project.save_label("case1", np.full(SHAPE, 9, np.uint8))
    monkeypatch.undo()
    _assert_untouched(root, before)


def test_disk_full_reported_at_fsync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Delayed allocation (and NFS) report a full disk only when the data is flushed."""
    root = tmp_path / "project"
    _project(root)
    before = _snapshot(root)
    monkeypatch.setattr(atomic, "fsync_path", _enospc)
    with Project.open(root) as project, pytest.raises(InputError, match="disk full"):
        project.save_label("case1", np.full(SHAPE, 9, np.uint8))
    monkeypatch.undo()
    _assert_untouched(root, before)


def test_database_full_removes_the_published_label_file(tmp_path: Path) -> None:
    """SQLite runs out of room after the label file is out: the file must not stay as an orphan."""
    root = tmp_path / "project"
    _project(root)
    before = _snapshot(root)
    with Project.open(root) as project:
        pages = project.read("PRAGMA page_count")[0][0]
        project.read(f"PRAGMA max_page_count = {pages}")  # a full disk, as SQLite sees it
        with pytest.raises(InputError, match="cannot be written"):
            project.save_label("case1", np.full(SHAPE, 9, np.uint8), author="x" * 200_000)
        assert len(project.label_versions("case1")) == 2  # and the connection is usable again
    _assert_untouched(root, before)


def test_disk_full_while_saving_a_checkpoint_keeps_the_previous_one(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    networks, card = load_checkpoint(tiny_model)
    target = tmp_path / "model"
    weights, _ = checkpoint.save_checkpoint(target, networks, card)
    before = {p.name: sha256_file(p) for p in tmp_path.iterdir()}
    original = checkpoint.save_file

    def partial_then_full(tensors, filename, metadata=None):
        original(tensors, filename, metadata=metadata)
        Path(filename).write_bytes(Path(filename).read_bytes()[:100])
        _enospc()

    monkeypatch.setattr(checkpoint, "save_file", partial_then_full)
    with torch.no_grad():
        for parameter in networks["model"].parameters():
            parameter.add_(1.0)
    with pytest.raises(InputError, match="disk full"):
        checkpoint.save_checkpoint(target, networks, card, overwrite=True)
    assert {p.name: sha256_file(p) for p in tmp_path.iterdir()} == before
    load_checkpoint(weights)  # the previous pair still loads and matches its card
    TALLY["faults"] += 1


def test_disk_full_during_init_leaves_no_half_project(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir(), labels.mkdir()
    for index in range(3):
        write_volume(make_volume(SHAPE, dtype="float32", seed=index), images / f"case{index}.nii.gz")
        write_volume(make_volume(SHAPE, seed=index), labels / f"case{index}.nii.gz")
    calls = {"count": 0}
    original = atomic.fsync_path

    def full_on_the_fourth(path: Path) -> None:
        calls["count"] += 1
        if calls["count"] == 4:
            _enospc()
        original(path)

    monkeypatch.setattr(atomic, "fsync_path", full_on_the_fourth)
    capfd.readouterr()
    status = main(["init", str(tmp_path / "project"), "--images", str(images), "--labels", str(labels), "--json"])
    err = capfd.readouterr().err
    # Besides init's progress bar (redrawn with carriage returns), exactly one error line.
    errors = [part for part in re.split(r"[\r\n]", err) if "error" in part]
    assert status == 2 and len(errors) == 1 and "disk full" in errors[0] and "Traceback" not in err, err
    assert errors[0].endswith("nothing was changed") and "error: disk full" in errors[0]
    assert not (tmp_path / "project").exists()
    TALLY["faults"] += 1


def test_permission_denied_while_saving_is_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What a read-only share gives, simulated so that it also runs as root (chmod binds no root)."""
    root = tmp_path / "project"
    _project(root)
    before = _snapshot(root)

    def denied(volume, array, path):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))

    monkeypatch.setattr(write, "_write_nifti", denied)
    with Project.open(root) as project, pytest.raises(InputError, match="cannot write"):
        project.save_label("case1", np.full(SHAPE, 9, np.uint8))
    monkeypatch.undo()
    _assert_untouched(root, before)


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions; see the unprivileged-child variant")
def test_read_only_labels_folder(tmp_path: Path) -> None:
    root = tmp_path / "project"
    _project(root)
    before = _snapshot(root)
    folder = root / "labels" / "case1"
    folder.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        with Project.open(root) as project, pytest.raises(InputError, match="cannot write"):
            project.save_label("case1", np.full(SHAPE, 9, np.uint8))
    finally:
        folder.chmod(stat.S_IRWXU)
    _assert_untouched(root, before)


READ_ONLY_CHILD = """
import sys
import numpy as np
from napari_ssl_seg.errors import InputError
from napari_ssl_seg.store import Project
try:
    with Project.open(sys.argv[1]) as project:
        project.save_label("case1", np.full((6, 8, 10), 9, np.uint8))
except InputError as exc:
    print("refused:", exc)
else:
    print("saved")
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to an unprivileged user")
def test_read_only_project_for_an_unprivileged_user() -> None:
    """As root, a project owned by root is read-only for 'nobody': run the save as that user."""
    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no 'nobody' user")
    base = Path(tempfile.mkdtemp(prefix="napari-ssl-seg-readonly-"))
    try:
        base.chmod(0o755)
        root = base / "project"
        _project(root)
        for path in [root, *root.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        before = _snapshot(root)

        def drop() -> None:
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)

        env = {**os.environ, "PYTHONPATH": str(TESTS_DIR.parent), "HOME": str(base), "OMP_NUM_THREADS": "1"}
        try:
            result = subprocess.run(
                [sys.executable, "-c", READ_ONLY_CHILD, str(root)],
                capture_output=True,
                text=True,
                timeout=120,
                env=env,
                preexec_fn=drop,
                cwd=base,
            )
        except PermissionError:
            pytest.skip("this Python installation is not readable by an unprivileged user")
        assert result.returncode == 0 and result.stdout.startswith("refused:"), result.stdout + result.stderr
        assert "Traceback" not in result.stderr
        _assert_untouched(root, before)
    finally:
        shutil.rmtree(base, ignore_errors=True)
