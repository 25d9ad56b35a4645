"""Hostile input: pickles are refused unexecuted, paths cannot leave the project, PHI never leaks."""

from __future__ import annotations

import json
import pickle
import re
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_volume

from napari_ssl_seg.cli import main
from napari_ssl_seg.errors import InputError, ProjectError
from napari_ssl_seg.io import write_volume
from napari_ssl_seg.networks import load_checkpoint
from napari_ssl_seg.store import Project
from napari_ssl_seg.store.models import model_versions, register_model
from napari_ssl_seg.store.names import inside, safe_case_name
from reliability.bad_models import pickle_checkpoints, rehash
from reliability.dicom_corpus import PHI_STRINGS, ramp, write_series
from reliability.tally import TALLY

SHAPE = (6, 8, 10)


@pytest.fixture
def forbid_unpickling(monkeypatch: pytest.MonkeyPatch) -> None:
    """Belt and braces beside the marker file: any unpickling entry point fails the test at once."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("something tried to unpickle a checkpoint")

    for owner, name in ((torch, "load"), (pickle, "load"), (pickle, "loads"), (pickle, "Unpickler")):
        monkeypatch.setattr(owner, name, refuse)


def test_the_payload_is_live(tmp_path: Path) -> None:
    """Control: unpickling the hostile file does create the marker, so its absence below means something."""
    marker = tmp_path / "control-marker"
    checkpoints = pickle_checkpoints(tmp_path / "ckpt", marker)
    pickle.loads(checkpoints["pickle model.pt"].read_bytes())
    assert marker.exists()


def test_pickle_checkpoints_are_refused_without_running_them(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], forbid_unpickling: None
) -> None:
    marker = tmp_path / "pwned"
    checkpoints = pickle_checkpoints(tmp_path / "ckpt", marker)
    image = write_volume(make_volume(SHAPE, dtype="float32"), tmp_path / "image.nii.gz")
    with Project.create(tmp_path / "project") as project:
        project.add_case("case1", make_volume(SHAPE, dtype="float32"))
    for name, path in checkpoints.items():
        with pytest.raises(InputError, match=r"pickle|not a safetensors"):
            load_checkpoint(path)
        status = main(["predict", str(image), "--model", str(path), "--out", str(tmp_path / "out")])
        err = capfd.readouterr().err
        assert status == 2 and err.startswith("error: ") and err.count("\n") == 1, f"{name}: {err!r}"
        with Project.open(tmp_path / "project") as project, pytest.raises(InputError):
            register_model(project, path)
        status = main(["rank", str(tmp_path / "project"), "--model", str(path), "--strategy", "top1_entropy"])
        assert status == 2, f"{name}: {capfd.readouterr().err!r}"
        capfd.readouterr()
        assert not marker.exists(), f"{name}: the pickle ran"
        TALLY["pickles"] += 1
    with Project.open(tmp_path / "project") as project:
        assert model_versions(project) == []
    assert not any((tmp_path / "project" / "models").iterdir()), "a refused model was copied into the project"
    assert not (tmp_path / "out").exists()


HOSTILE_NAMES = (
    "../../escape",
    "/etc/passwd",
    "..",
    ".",
    "a/../../b",
    "..\\..\\windows",
    "labels/../../x",
    "~root",
    "name\x00.nii",
    "-rf",
)


@pytest.mark.parametrize("raw", HOSTILE_NAMES)
def test_case_names_cannot_point_outside_their_folder(raw: str, tmp_path: Path) -> None:
    try:
        name = safe_case_name(raw)
    except ProjectError:
        return  # refused outright is fine
    assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name) and ".." not in name.split("/")
    assert (tmp_path / "labels" / name).resolve().parent == (tmp_path / "labels").resolve()


@pytest.mark.parametrize("relative", ["../outside", "/etc/passwd", "labels/../../outside", "labels/../..", "~/x"])
def test_inside_refuses_every_escape(relative: str, tmp_path: Path) -> None:
    root = tmp_path / "project"
    root.mkdir()
    if relative.startswith("~"):
        assert inside(root, relative).is_relative_to(root.resolve())  # "~" is just a name here
        return
    with pytest.raises(ProjectError):
        inside(root, relative)


def _outside_listing(tmp_path: Path) -> list[str]:
    return sorted(p.name for p in tmp_path.iterdir())


def test_hostile_case_names_write_only_inside_the_project(tmp_path: Path) -> None:
    root = tmp_path / "project"
    before = None
    with Project.create(root) as project:
        before = _outside_listing(tmp_path)
        name = project.add_case("../../escape", make_volume(SHAPE, dtype="float32"))
        project.save_label(name, np.ones(SHAPE, np.uint8))
        for hostile in ("../../escape", "/tmp/escape", "../project/case"):
            with pytest.raises(ProjectError):
                project.save_label(hostile, np.ones(SHAPE, np.uint8))
    assert _outside_listing(tmp_path) == before
    for path in root.rglob("*"):
        assert path.resolve().is_relative_to(root.resolve())


def test_a_symlink_inside_the_project_cannot_redirect_writes(tmp_path: Path) -> None:
    root, outside = tmp_path / "project", tmp_path / "outside"
    outside.mkdir()
    with Project.create(root) as project:
        project.add_case("case1", make_volume(SHAPE, dtype="float32"))
        (root / "labels" / "case1").symlink_to(outside, target_is_directory=True)
        with pytest.raises(ProjectError, match="escapes"):
            project.save_label("case1", np.ones(SHAPE, np.uint8))
        assert project.label_versions() == []
    assert list(outside.iterdir()) == []


def test_tampered_database_paths_are_never_followed(tmp_path: Path, tiny_model: Path) -> None:
    root = tmp_path / "project"
    secret = tmp_path / "secret.nii.gz"
    write_volume(make_volume(SHAPE), secret)
    with Project.create(root) as project:
        project.add_case("case1", make_volume(SHAPE, dtype="float32"))
        project.save_label("case1", np.ones(SHAPE, np.uint8))
        register_model(project, tiny_model, name="tiny")
    database = sqlite3.connect(root / "project.sqlite")
    with database:
        database.execute("UPDATE label_versions SET path = ?", ("../secret.nii.gz",))
        database.execute("UPDATE cases SET image_path = ?", (str(secret),))
        database.execute("UPDATE model_versions SET card_path = ?, weights_path = ?", ("../../x.json", "/etc/x"))
    database.close()
    with Project.open(root) as project:
        with pytest.raises(ProjectError, match="escapes"):
            project.read_label("case1")
        with pytest.raises(ProjectError, match="absolute"):
            project.read_image("case1")
        with pytest.raises(ProjectError):
            model_versions(project)[0].checkpoint(project)
        with pytest.raises(ProjectError):
            register_model(project, tiny_model)  # compares against the stored card: must not open ../../x.json


def test_model_card_fields_cannot_name_a_folder_outside_the_project(tmp_path: Path, tiny_model: Path) -> None:
    folder = tmp_path / "shared"
    folder.mkdir()
    for suffix in (".safetensors", ".json"):
        (folder / f"m{suffix}").write_bytes(tiny_model.with_suffix(suffix).read_bytes())
    card = json.loads((folder / "m.json").read_text())
    card["created_at"] = "../../../../escape/../x"
    (folder / "m.json").write_text(json.dumps(card))
    rehash(folder / "m.json")
    root = tmp_path / "project"
    before = _outside_listing(tmp_path)
    with Project.create(root) as project:
        version = register_model(project, folder / "m.safetensors")
        assert version.checkpoint(project).resolve().is_relative_to((root / "models").resolve())
    assert _outside_listing(tmp_path) == sorted([*before, "project"])


def _assert_no_phi(where: str, data: bytes | str) -> None:
    blob = data if isinstance(data, bytes) else data.encode()
    for value in PHI_STRINGS:
        assert value.encode() not in blob, f"patient identifier {value!r} found in {where}"


def test_dicom_patient_identifiers_never_leave_the_dicom_files(
    tmp_path: Path, tiny_model: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    series = tmp_path / "inputs" / "study"
    write_series(series, ramp((5, 16, 16)))
    raw = b"".join(path.read_bytes() for path in series.iterdir())
    assert all(value.encode() in raw for value in PHI_STRINGS[:1]), "the fixture must carry the identifiers"
    root, out = tmp_path / "project", tmp_path / "out"
    runs = [
        ["info", str(series)],
        ["info", "--json", str(series)],
        ["init", str(root), "--images", str(tmp_path / "inputs")],
        ["status", "--json", str(root)],
        ["predict", str(series), "--model", str(tiny_model), "--out", str(out), "--samples", "2"],
        ["predict", str(series), "--model", str(tiny_model), "--out", str(out), "--json", "--uncertainty", "none"],
    ]
    for argv in runs:
        capfd.readouterr()
        assert main(argv) == 0, capfd.readouterr().err
        out_text, err_text = capfd.readouterr()
        _assert_no_phi(f"output of {argv[0]}", out_text + err_text)
    with Project.open(root) as project:
        name = project.cases()[0].name
        project.save_label(name, np.ones((5, 16, 16), np.uint8))
        register_model(project, tiny_model)
    written = [p for p in [*root.rglob("*"), *out.rglob("*")] if p.is_file()]
    assert any(p.suffix == ".sqlite" for p in written) and any(p.name.endswith(".json") for p in written)
    for path in written:
        _assert_no_phi(str(path.relative_to(tmp_path)), path.read_bytes())
        if path.name.endswith(".gz"):
            import gzip

            _assert_no_phi(str(path.relative_to(tmp_path)), gzip.decompress(path.read_bytes()))
