"""Geometry survives read -> write -> reopen in nibabel and SimpleITK, for every format."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from conftest import SAMPLE_DIR, make_volume, rotation_matrix
from helpers import write_dicom_series
from hypothesis import given, settings
from hypothesis import strategies as st

from napari_ssl_seg.cli import main
from napari_ssl_seg.io import Volume, read_volume, write_volume

WRITE_FORMATS = [".nii.gz", ".nii", ".nrrd", ".seg.nrrd", ".mha"]
SAMPLE_FILES = sorted(p.name for p in SAMPLE_DIR.glob("*.nrrd"))


def assert_sitk_geometry(path: Path, volume: Volume) -> None:
    image = sitk.ReadImage(str(path))
    assert image.GetSize() == volume.shape[::-1]
    np.testing.assert_allclose(image.GetSpacing(), volume.spacing[::-1], rtol=1e-6)
    np.testing.assert_allclose(image.GetOrigin(), volume.origin, atol=1e-5)
    np.testing.assert_allclose(image.GetDirection(), np.ravel(volume.direction), atol=1e-6)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), volume.array)


def assert_nibabel_geometry(path: Path, volume: Volume) -> None:
    image = nib.load(str(path))
    np.testing.assert_allclose(image.affine, volume.index_to_ras(), atol=1e-5)
    np.testing.assert_array_equal(np.asarray(image.dataobj).transpose(2, 1, 0), volume.array)


@pytest.mark.parametrize("suffix", WRITE_FORMATS)
@pytest.mark.parametrize("reflected", [False, True], ids=["rotation", "rotation+flip"])
def test_label_round_trip_keeps_oblique_geometry(tmp_path: Path, suffix: str, reflected: bool) -> None:
    direction = rotation_matrix(0.4, 0.25, -0.3)
    if reflected:
        direction = direction @ np.diag([-1.0, -1.0, 1.0])  # Slicer-style LPS/RAS flip on top of a rotation
    label = make_volume(direction=direction)
    path = write_volume(label, tmp_path / f"label{suffix}")
    reread = read_volume(path)
    assert reread.shape == label.shape
    np.testing.assert_allclose(reread.spacing, label.spacing, rtol=1e-6)
    np.testing.assert_allclose(reread.origin, label.origin, atol=1e-5)
    np.testing.assert_allclose(reread.direction_matrix, label.direction_matrix, atol=1e-6)
    np.testing.assert_array_equal(reread.array, label.array)
    assert_sitk_geometry(path, label)
    if suffix.startswith(".nii"):
        # nibabel reads NIfTI only; ITK and nibabel must agree on the same file.
        assert_nibabel_geometry(path, label)


@pytest.mark.parametrize("name", SAMPLE_FILES)
def test_info_json_matches_simpleitk(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "--json", str(SAMPLE_DIR / name)]) == 0
    info = json.loads(capsys.readouterr().out)
    image = sitk.ReadImage(str(SAMPLE_DIR / name))
    array = sitk.GetArrayFromImage(image)
    assert info["shape"] == list(image.GetSize()[::-1])
    assert info["spacing"] == list(image.GetSpacing()[::-1])
    assert info["origin"] == list(image.GetOrigin())
    assert info["direction"] == list(image.GetDirection())
    assert info["dtype"] == str(array.dtype)
    assert (info["min"], info["max"]) == (float(array.min()), float(array.max()))


def test_sample_label_written_as_nifti_reopens_on_the_image_grid(tmp_path: Path) -> None:
    image = read_volume(SAMPLE_DIR / "CTChest4.nrrd")
    label = read_volume(SAMPLE_DIR / "Segmentation.seg.nrrd")
    assert label.label_names[5] == "right lung"
    path = write_volume(label, tmp_path / "chest_label.nii.gz")
    assert_sitk_geometry(path, image.with_array(label.array))
    assert_nibabel_geometry(path, image.with_array(label.array))


def test_seg_nrrd_keeps_segment_names(tmp_path: Path) -> None:
    label = read_volume(SAMPLE_DIR / "Segmentation.seg.nrrd")
    reread = read_volume(write_volume(label, tmp_path / "copy.seg.nrrd"))
    assert reread.label_names == label.label_names


def test_dicom_series_oblique_round_trip(tmp_path: Path) -> None:
    """A DICOM series written by SimpleITK reads back with its geometry; its label reopens alike."""
    direction = rotation_matrix(0.2, -0.15, 0.1)
    source = make_volume((5, 12, 10), spacing=(3.0, 0.9, 0.9), direction=direction, dtype="int16")
    folder = tmp_path / "dicom"
    folder.mkdir()
    write_dicom_series(source, folder, modality="CT")
    volume = read_volume(folder)
    assert volume.source_format == "dicom"
    assert volume.modality == "CT"
    assert volume.shape == source.shape
    np.testing.assert_allclose(volume.spacing, source.spacing, rtol=1e-4)
    np.testing.assert_allclose(volume.origin, source.origin, atol=1e-3)
    np.testing.assert_allclose(volume.direction_matrix, direction, atol=1e-5)
    np.testing.assert_array_equal(volume.array, source.array)
    label = volume.with_array((volume.array > 1).astype(np.uint8))
    path = write_volume(label, tmp_path / "dicom_label.nii.gz")
    assert_sitk_geometry(path, label)
    assert_nibabel_geometry(path, label)


def test_ct_series_stored_as_scanners_do_reads_back_in_hounsfield_units(tmp_path: Path) -> None:
    """Scanners store CT as unsigned values plus a rescale intercept; the reader must apply it."""
    hounsfield = np.array([[-1000, -500], [0, 1200]], dtype=np.int16)
    source = Volume(array=np.stack([hounsfield, hounsfield + 10, hounsfield - 10]), spacing=(5.0, 0.6, 0.6))
    files = write_dicom_series(source, tmp_path / "ct", modality="CT")
    header = sitk.ImageFileReader()
    header.SetFileName(str(files[0]))
    header.ReadImageInformation()
    assert float(header.GetMetaData("0028|1052")) == -1024  # stored = HU + 1024, as on the scanner
    volume = read_volume(tmp_path / "ct")
    np.testing.assert_array_equal(volume.array, source.array)
    np.testing.assert_allclose(volume.spacing, source.spacing, rtol=1e-5)


def test_dicom_folder_with_two_series_picks_the_larger_and_says_so(tmp_path: Path) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    write_dicom_series(make_volume((6, 8, 8), dtype="int16"), folder, modality="MR", series="1.2.826.0.1.1")
    write_dicom_series(make_volume((3, 8, 8), dtype="int16", seed=1), folder, modality="MR", series="1.2.826.0.1.2")
    volume = read_volume(folder)
    assert volume.shape == (6, 8, 8)
    assert len(volume.notes) == 1 and "2 DICOM series" in volume.notes[0]


angles = st.floats(-np.pi, np.pi, allow_nan=False)


@settings(max_examples=25, deadline=None)
@given(
    spacing=st.tuples(*[st.floats(0.05, 20.0) for _ in range(3)]),
    origin=st.tuples(*[st.floats(-1000.0, 1000.0) for _ in range(3)]),
    rotation=st.tuples(angles, angles, angles),
    flip=st.booleans(),
    suffix=st.sampled_from([".nii.gz", ".nrrd", ".mha"]),
)
def test_geometry_round_trip_property(tmp_path_factory, spacing, origin, rotation, flip, suffix) -> None:
    direction = rotation_matrix(*rotation) @ np.diag([1.0, 1.0, -1.0 if flip else 1.0])
    volume = make_volume((3, 4, 5), spacing=spacing, origin=origin, direction=direction)
    path = write_volume(volume, tmp_path_factory.mktemp("prop") / f"v{suffix}")
    reread = read_volume(path)
    np.testing.assert_allclose(reread.spacing, volume.spacing, rtol=1e-5)
    np.testing.assert_allclose(reread.origin, volume.origin, atol=1e-3)
    np.testing.assert_allclose(reread.direction_matrix, volume.direction_matrix, atol=1e-5)


def test_bundled_samples_match_their_recorded_checksums() -> None:
    import hashlib

    recorded = dict(line.split()[::-1] for line in (SAMPLE_DIR / "SHA256SUMS").read_text().splitlines())
    assert set(recorded) == set(SAMPLE_FILES)
    for name, digest in recorded.items():
        assert hashlib.sha256((SAMPLE_DIR / name).read_bytes()).hexdigest() == digest
