"""Unusable input gives one ``error:`` line and exit 2, and never touches a project."""

from __future__ import annotations

import gzip
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from conftest import SAMPLE_DIR, make_volume

from napari_ssl_seg.cli import main
from napari_ssl_seg.io import write_volume


def _nifti(path: Path, array: np.ndarray) -> Path:
    nib.save(nib.Nifti1Image(array, np.eye(4)), str(path))
    return path


def bad_inputs(folder: Path) -> dict[str, Path]:
    """Each entry is a file (or folder) that `info` must refuse cleanly."""
    good = write_volume(make_volume((8, 8, 8)), folder / "good.nii.gz")
    data = good.read_bytes()
    cases = {}
    cases["truncated .nii.gz"] = folder / "truncated.nii.gz"
    cases["truncated .nii.gz"].write_bytes(data[: len(data) // 2])
    uncompressed = gzip.decompress(data)
    cases["truncated .nii"] = folder / "truncated.nii"
    cases["truncated .nii"].write_bytes(uncompressed[: 352 + 100])
    rng = np.random.default_rng(0)
    for suffix in (".nii.gz", ".nii", ".nrrd", ".mha"):
        path = folder / f"random{suffix}"
        path.write_bytes(rng.bytes(4096))
        cases[f"random bytes {suffix}"] = path
    cases["empty file"] = folder / "empty.nrrd"
    cases["empty file"].write_bytes(b"")
    cases["2D NIfTI"] = _nifti(folder / "flat.nii.gz", np.zeros((16, 16), np.float32))
    cases["4D NIfTI"] = _nifti(folder / "time.nii.gz", np.zeros((8, 8, 8, 3), np.float32))
    nan = np.zeros((8, 8, 8), np.float32)
    nan[2, 3, 4] = np.nan
    cases["NaN image"] = _nifti(folder / "nan.nii.gz", nan)
    inf = np.zeros((8, 8, 8), np.float32)
    inf[1, 1, 1] = np.inf
    cases["Inf image"] = _nifti(folder / "inf.nii.gz", inf)
    cases["zero-size axis"] = _nifti(folder / "zero.nii.gz", np.zeros((8, 0, 8), np.float32))
    absurd = sitk.GetImageFromArray(np.zeros((4, 4, 4), np.int16))
    absurd.SetSpacing((1e6, 1.0, 1.0))  # kilometre voxels: a broken header
    sitk.WriteImage(absurd, str(folder / "absurd_spacing.mha"))
    cases["absurd spacing"] = folder / "absurd_spacing.mha"
    vector = sitk.GetImageFromArray(np.zeros((4, 4, 4, 3), np.float32), isVector=True)
    sitk.WriteImage(vector, str(folder / "vector.nrrd"))
    cases["vector image"] = folder / "vector.nrrd"
    cases["empty folder"] = folder / "empty_dir"
    cases["empty folder"].mkdir()
    cases["unknown extension"] = folder / "notes.txt"
    cases["unknown extension"].write_text("not an image")
    cases["missing file"] = folder / "does_not_exist.nii.gz"
    loop = folder / "loop.nii.gz"
    os.symlink(loop, loop)
    cases["symlink loop"] = loop
    return cases


def test_info_refuses_every_bad_input_with_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cases = bad_inputs(tmp_path)
    assert len(cases) >= 15
    for label, path in cases.items():
        status = main(["info", str(path)])
        captured = capsys.readouterr()
        lines = captured.err.strip().splitlines()
        assert status == 2, f"{label}: exit {status}, stderr {captured.err!r}"
        assert len(lines) == 1 and lines[0].startswith("error: "), f"{label}: {captured.err!r}"
        assert "Traceback" not in captured.err
        assert captured.out == ""


def test_cli_process_exits_2_without_traceback(tmp_path: Path) -> None:
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"\x1f\x8b not really gzip")
    result = subprocess.run(
        [sys.executable, "-m", "napari_ssl_seg.cli", "info", str(broken)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    debug = subprocess.run(
        [sys.executable, "-m", "napari_ssl_seg.cli", "--debug", "info", str(broken)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert debug.returncode == 2 and "Traceback" in debug.stderr


def _tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        digest.update(str(path.relative_to(root)).encode())
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def test_init_with_mismatched_label_geometry_creates_nothing(tmp_path: Path, capsys) -> None:
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir(), labels.mkdir()
    write_volume(make_volume((8, 8, 8), dtype="float32"), images / "a.nii.gz")
    write_volume(make_volume((8, 8, 8), spacing=(1.0, 1.0, 1.0)), labels / "a.nii.gz")
    status = main(["init", str(tmp_path / "project"), "--images", str(images), "--labels", str(labels)])
    err = capsys.readouterr().err
    assert status == 2 and err.startswith("error: ") and "geometry" in err
    assert not (tmp_path / "project").exists()


def test_bad_init_leaves_an_existing_project_untouched(tmp_path: Path, capsys) -> None:
    project = tmp_path / "project"
    assert main(["init", str(project), "--images", str(SAMPLE_DIR), "--labels", str(SAMPLE_DIR)]) == 0
    before = _tree_digest(project)
    bad = tmp_path / "bad"
    bad.mkdir()
    _nifti(bad / "nan.nii.gz", np.full((4, 4, 4), np.nan, np.float32))
    for argv in (
        ["init", str(project), "--images", str(SAMPLE_DIR)],  # project exists
        ["init", str(project), "--images", str(bad)],  # NaN image
        ["init", str(tmp_path / "other"), "--images", str(tmp_path / "empty_missing")],  # no folder
    ):
        capsys.readouterr()
        assert main(argv) == 2
        assert capsys.readouterr().err.startswith("error: ")
    assert _tree_digest(project) == before
