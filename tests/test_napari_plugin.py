"""The napari contributions: reader, writer and sample data, through napari itself."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import SAMPLE_DIR, make_volume

from napari_ssl_seg._reader import napari_get_reader
from napari_ssl_seg.io import read_volume, write_volume

pytestmark = pytest.mark.gui
PLUGIN = "napari-ssl-seg"


def test_reader_declines_unsupported_paths(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("x")
    assert napari_get_reader(str(tmp_path / "notes.txt")) is None
    assert napari_get_reader(str(SAMPLE_DIR / "brain1_image.nrrd")) is not None


def test_viewer_opens_sample_with_scale_and_translate(make_napari_viewer) -> None:
    viewer = make_napari_viewer()
    layers = viewer.open(str(SAMPLE_DIR / "brain1_image.nrrd"), plugin=PLUGIN)
    image = sitk.ReadImage(str(SAMPLE_DIR / "brain1_image.nrrd"))
    assert len(layers) == 1 and layers[0]._type_string == "image"
    np.testing.assert_allclose(layers[0].scale, image.GetSpacing()[::-1])
    # brain1's direction flips y, so its placement is carried by the affine.
    world_of_first_voxel = layers[0].data_to_world((0, 0, 0))
    np.testing.assert_allclose(world_of_first_voxel, image.GetOrigin()[::-1], atol=1e-4)
    far = (3, 10, 20)
    expected = image.TransformIndexToPhysicalPoint(far[::-1])
    np.testing.assert_allclose(layers[0].data_to_world(far), expected[::-1], atol=1e-4)


def test_label_files_open_as_labels(make_napari_viewer) -> None:
    viewer = make_napari_viewer()
    segmentation = viewer.open(str(SAMPLE_DIR / "Segmentation.seg.nrrd"), plugin=PLUGIN)[0]
    lesion = viewer.open(str(SAMPLE_DIR / "breast1_label.nrrd"), plugin=PLUGIN)[0]
    assert segmentation._type_string == "labels" and lesion._type_string == "labels"
    np.testing.assert_allclose(lesion.translate, read_volume(SAMPLE_DIR / "breast1_label.nrrd").origin[::-1])


def test_labels_layer_saves_with_its_geometry(make_napari_viewer, tmp_path: Path) -> None:
    source = make_volume((5, 7, 9))
    write_volume(source, tmp_path / "oblique_label.nii.gz")
    viewer = make_napari_viewer()
    layer = viewer.open(str(tmp_path / "oblique_label.nii.gz"), plugin=PLUGIN)[0]
    layer.data[0, 0, 0] = 3
    for suffix in (".nii.gz", ".nrrd"):
        out = tmp_path / f"saved{suffix}"
        layer.save(str(out), plugin=PLUGIN)
        saved = read_volume(out)
        np.testing.assert_allclose(saved.direction_matrix, source.direction_matrix, atol=1e-6)
        np.testing.assert_allclose(saved.origin, source.origin, atol=1e-5)
        assert saved.array[0, 0, 0] == 3


def test_sample_data_opens_image_and_labels(make_napari_viewer) -> None:
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "chest_ct")
    kinds = sorted(layer._type_string for layer in viewer.layers)
    assert kinds == ["image", "labels"]
    np.testing.assert_allclose(viewer.layers[0].scale, read_volume(SAMPLE_DIR / "CTChest4.nrrd").spacing)


def test_corrupt_file_reports_our_one_line_reason(make_napari_viewer, tmp_path: Path) -> None:
    broken = tmp_path / "broken.nrrd"
    broken.write_bytes(b"NRRD0004\ntype: float\ndimension: 3\nsizes: 4 4\n")
    viewer = make_napari_viewer()
    from napari.utils.notifications import notification_manager

    shown = len(notification_manager.records)
    # No exception reaches napari (no traceback dialog): one error notification, no layer.
    assert viewer.open(str(broken), plugin=PLUGIN) == []
    assert len(viewer.layers) == 0
    (record,) = notification_manager.records[shown:]
    assert record.severity == "error" and "not a readable NRRD file" in str(record.message)
    assert "\n" not in str(record.message)
