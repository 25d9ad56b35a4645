"""The project store: versions, checksums, names that cannot escape, splits, migrations."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import SAMPLE_DIR, make_volume

from napari_ssl_seg.errors import InputError, ProjectError
from napari_ssl_seg.store import Project, safe_case_name
from napari_ssl_seg.store.importer import assign_splits, import_into_new_project
from napari_ssl_seg.store.names import inside
from napari_ssl_seg.store.schema import SCHEMA_VERSION


@pytest.fixture
def project(tmp_path: Path) -> Project:
    project = Project.create(tmp_path / "project", seed=3)
    project.add_case("case_a", make_volume((6, 8, 10), dtype="float32"))
    yield project
    project.close()


def test_label_versions_accumulate_and_never_overwrite(project: Project) -> None:
    first = np.zeros((6, 8, 10), np.uint8)
    second = first.copy()
    second[1:3, 2:4, 5:9] = 2
    v1 = project.save_label("case_a", first, author="alice", edit_seconds=12.5)
    v2 = project.save_label("case_a", second, author="bob")
    assert (v1.version, v2.version) == (1, 2)
    assert v2.parent_id == v1.id
    assert v2.changed_voxels == 2 * 2 * 4
    assert v1.path != v2.path
    np.testing.assert_array_equal(project.read_label("case_a", 1).array, first)
    np.testing.assert_array_equal(project.read_label("case_a").array, second)
    record = project.case("case_a")
    assert record.latest_label_version == 2 and record.latest_label_author == "bob"


def test_saved_label_has_the_case_geometry(project: Project) -> None:
    image = project.read_image("case_a")
    label = project.read_label("case_a") if project.case("case_a").is_labeled else None
    assert label is None
    project.save_label("case_a", np.ones(image.shape, np.uint8))
    label = project.read_label("case_a")
    np.testing.assert_allclose(label.spacing, image.spacing)
    np.testing.assert_allclose(label.origin, image.origin, atol=1e-5)
    np.testing.assert_allclose(label.direction_matrix, image.direction_matrix, atol=1e-6)


def test_label_with_wrong_shape_or_values_is_refused(project: Project) -> None:
    with pytest.raises(InputError, match="shape"):
        project.save_label("case_a", np.zeros((6, 8, 9), np.uint8))
    with pytest.raises(InputError, match="negative"):
        project.save_label("case_a", -np.ones((6, 8, 10), np.int16))
    with pytest.raises(InputError, match="non-integer"):
        project.save_label("case_a", np.full((6, 8, 10), 0.5, np.float32))
    assert project.label_versions("case_a") == []


def test_tampered_label_file_is_detected(project: Project) -> None:
    version = project.save_label("case_a", np.zeros((6, 8, 10), np.uint8))
    path = project.root / version.path
    path.write_bytes(path.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(ProjectError, match="checksum"):
        project.read_label("case_a")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("../../etc/passwd", "etc_passwd"),
        ("/abs/path", "abs_path"),
        ("..", None),
        ("a b/c", "a_b_c"),
        ("ok-1.2", "ok-1.2"),
    ],
)
def test_case_names_cannot_escape(raw: str, expected: str | None) -> None:
    if expected is None:
        with pytest.raises(ProjectError):
            safe_case_name(raw)
    else:
        assert safe_case_name(raw) == expected


def test_paths_outside_the_project_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ProjectError):
        inside(tmp_path, "../outside.nii.gz")
    with pytest.raises(ProjectError):
        inside(tmp_path, "/etc/passwd")
    assert inside(tmp_path, "labels/a.nii.gz") == (tmp_path / "labels" / "a.nii.gz").resolve()


def test_database_is_wal_with_schema_version(project: Project) -> None:
    connection = sqlite3.connect(project.root / "project.sqlite")
    assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert connection.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    connection.close()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    Project.create(tmp_path / "p").close()
    connection = sqlite3.connect(tmp_path / "p" / "project.sqlite")
    connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    connection.close()
    with pytest.raises(ProjectError, match="newer"):
        Project.open(tmp_path / "p")


def test_splits_are_seeded_and_stable() -> None:
    names = [f"case_{i:02d}" for i in range(20)]
    first = assign_splits(names, seed=7)
    assert first == assign_splits(list(reversed(names)), seed=7)
    assert first != assign_splits(names, seed=8)
    counts = {split: list(first.values()).count(split) for split in ("train", "validation", "test")}
    assert counts == {"train": 12, "validation": 4, "test": 4}
    assert set(assign_splits(["a", "b"], seed=0).values()) == {"train"}


def test_import_folder_pair_copies_images_and_labels(tmp_path: Path) -> None:
    project = import_into_new_project(tmp_path / "p", SAMPLE_DIR, SAMPLE_DIR, seed=0)
    with project:
        names = [case.name for case in project.cases()]
        assert names == ["CTChest4", "brain1", "brain2", "breast1"]
        assert not project.case("CTChest4").is_labeled
        brain = project.read_label("brain1")
        assert int(brain.array.max()) == 1
        image_copy = project.root / project.case("brain1").image_path
        assert image_copy.read_bytes() == (SAMPLE_DIR / "brain1_image.nrrd").read_bytes()


def test_import_decathlon_layout(tmp_path: Path) -> None:
    from napari_ssl_seg.io import write_volume

    root = tmp_path / "Task02_Heart"
    for folder in ("imagesTr", "labelsTr", "imagesTs"):
        (root / folder).mkdir(parents=True)
    training = []
    for index in range(3):
        image = make_volume((5, 6, 7), dtype="float32", seed=index)
        write_volume(image, root / "imagesTr" / f"la_{index:03d}.nii.gz")
        write_volume(image.with_array((image.array > 0).astype(np.uint8)), root / "labelsTr" / f"la_{index:03d}.nii.gz")
        training.append({"image": f"./imagesTr/la_{index:03d}.nii.gz", "label": f"./labelsTr/la_{index:03d}.nii.gz"})
    write_volume(make_volume((5, 6, 7), dtype="float32", seed=9), root / "imagesTs" / "la_100.nii.gz")
    import json

    (root / "dataset.json").write_text(
        json.dumps(
            {
                "labels": {"0": "background", "1": "left atrium"},
                "training": training,
                "test": ["./imagesTs/la_100.nii.gz"],
            }
        )
    )
    with import_into_new_project(tmp_path / "p", root, seed=1) as project:
        summary = project.summary()
        assert summary["cases"] == 4 and summary["labeled"] == 3
        assert project.label_names() == {0: "background", 1: "left atrium"}
        assert not project.case("la_100").is_labeled


SAVER = """
import sys, numpy as np
from napari_ssl_seg.store import Project
project = Project.open(sys.argv[1])
for i in range(int(sys.argv[2])):
    project.save_label("case_a", np.full((6, 8, 10), int(sys.argv[3]), np.uint8), author=sys.argv[3])
"""


def test_two_processes_saving_to_one_case_get_distinct_versions(project: Project) -> None:
    processes = [
        subprocess.Popen([sys.executable, "-c", SAVER, str(project.root), "6", str(value)]) for value in (1, 2)
    ]
    assert [process.wait(timeout=240) for process in processes] == [0, 0]
    versions = project.label_versions("case_a")
    assert [v.version for v in versions] == list(range(1, 13))
    assert sorted(v.author for v in versions) == ["1"] * 6 + ["2"] * 6
    for version in versions:
        assert int(project.read_label("case_a", version.version).array.max()) == int(version.author)
    assert project.integrity_check() == "ok"
