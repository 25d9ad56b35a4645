"""Storage order never changes an answer: one volume stored in several voxel orders is one anatomy.

SimpleITK's ``DICOMOrient`` (an implementation independent of this package's) writes the same
image in other voxel orders; the files go through the package's own reader, as a user's would.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from conftest import rotation_matrix

from napari_ssl_seg.errors import InputError
from napari_ssl_seg.inference.predictor import VOXEL_ORDER_NOTE, Predictor
from napari_ssl_seg.io import Volume, read_volume
from napari_ssl_seg.io.orientation import CANONICAL, axis_codes, check_orientation, reorientation
from napari_ssl_seg.networks import ModelCard, VNet

SHAPE = (6, 10, 12)  # z, y, x
STORAGE_ORDERS = ("LPS", "RAS", "RSA", "ASL")  # DICOM export, NIfTI tools, a sagittal and a permuted order


def reference_image() -> sitk.Image:
    """An axis-aligned LPS image whose every voxel holds its own index (so any misplacement shows)."""
    image = sitk.GetImageFromArray(np.arange(np.prod(SHAPE), dtype=np.float32).reshape(SHAPE))
    image.SetSpacing((0.7, 0.8, 2.5))
    image.SetOrigin((10.0, 20.0, 30.0))
    return image


def stored(folder: Path, code: str, *, oblique: bool = False) -> Volume:
    """The reference image written in voxel order ``code`` (tilted a few degrees if ``oblique``), read back."""
    image = sitk.DICOMOrient(reference_image(), code)
    if oblique:
        direction = rotation_matrix(0.08, -0.05, 0.1) @ np.asarray(image.GetDirection()).reshape(3, 3)
        image.SetDirection(tuple(direction.flatten()))
    path = folder / f"{code}{'_oblique' if oblique else ''}.nrrd"
    sitk.WriteImage(image, str(path))
    return read_volume(path)


def world_of_values(volume: Volume) -> dict[int, np.ndarray]:
    """LPS position of each voxel, keyed by the voxel's value (its index in the reference image)."""
    z, y, x = np.meshgrid(*(np.arange(n) for n in volume.shape), indexing="ij")
    index = np.stack([x.ravel(), y.ravel(), z.ravel(), np.ones(x.size)])
    world = (volume.index_to_lps() @ index)[:3].T
    return dict(zip(volume.array.ravel().astype(int).tolist(), world, strict=True))


@pytest.mark.parametrize("code", STORAGE_ORDERS)
def test_every_storage_order_reorients_to_the_reference_voxels_and_geometry(tmp_path: Path, code: str) -> None:
    volume = stored(tmp_path, code)
    assert axis_codes(volume.direction) == code
    turn = reorientation(volume.direction, volume.shape)
    canonical = turn.volume_to_target(volume)
    reference = sitk.GetArrayFromImage(reference_image())
    assert np.array_equal(canonical.array, reference)
    assert np.allclose(canonical.spacing, (2.5, 0.8, 0.7)) and np.allclose(canonical.origin, (10.0, 20.0, 30.0))
    assert np.allclose(canonical.direction_matrix, np.eye(3))
    assert turn.target_spacing(volume.spacing) == pytest.approx(canonical.spacing)
    assert np.array_equal(turn.to_source(canonical.array), volume.array)  # exact, voxel for voxel


def test_an_oblique_scan_takes_its_closest_axes_and_keeps_every_voxel_in_place(tmp_path: Path) -> None:
    volume = stored(tmp_path, "RAS", oblique=True)
    assert axis_codes(volume.direction) == "RAS"
    canonical = reorientation(volume.direction, volume.shape).volume_to_target(volume)
    assert np.array_equal(canonical.array, sitk.GetArrayFromImage(reference_image()))
    before, after = world_of_values(volume), world_of_values(canonical)
    assert all(np.allclose(before[value], after[value], atol=1e-6) for value in before)


def test_voxel_order_is_the_identity_and_bad_codes_are_refused() -> None:
    turn = reorientation(np.diag([-1.0, -1.0, 1.0]), SHAPE, None)
    array = np.random.default_rng(0).normal(size=SHAPE)
    assert turn.is_identity and turn.to_target(array) is array
    assert check_orientation("ras") == "RAS"
    for bad in ("LPL", "XYZ", "LP", None):
        with pytest.raises(InputError):
            check_orientation(bad)


def _tiny_predictor(orientation: str | None) -> Predictor:
    torch.manual_seed(0)
    network = VNet(base_width=4, depth=3, num_classes=3, dropout=0.0)
    card = ModelCard(
        method="supervised",
        network=network.config,
        patch_size=(4, 8, 8),
        intensity={"kind": "zscore"},
        classes={0: "background", 1: "a", 2: "b"},
        orientation=orientation,
    )
    return Predictor({"model": network}, card, device="cpu")


def in_reference_order(volume: Volume, array: np.ndarray) -> np.ndarray:
    """``array`` on ``volume``'s grid, put in the reference's (LPS) voxel order by SimpleITK."""
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(volume.spacing[::-1])
    image.SetOrigin(volume.origin)
    image.SetDirection(tuple(volume.direction_matrix.flatten()))
    return sitk.GetArrayFromImage(sitk.DICOMOrient(image, "LPS"))


def texture_in_every_order(folder: Path) -> list[Volume]:
    """One random-texture scan (seed 3) on the reference grid, stored in each of :data:`STORAGE_ORDERS`."""
    texture = sitk.GetImageFromArray(np.random.default_rng(3).normal(size=SHAPE).astype(np.float32))
    texture.CopyInformation(reference_image())
    volumes = []
    for code in STORAGE_ORDERS:
        path = folder / f"texture_{code}.nii.gz"
        sitk.WriteImage(sitk.DICOMOrient(texture, code), str(path))
        volumes.append(read_volume(path))
    return volumes


def test_one_segmentation_in_world_space_whatever_the_storage_order(tmp_path: Path) -> None:
    predictor = _tiny_predictor(CANONICAL)
    labels, entropies = [], []
    for volume in texture_in_every_order(tmp_path):
        prediction = predictor.predict(volume, uncertainty="mc_dropout", samples=2)
        assert prediction.label.shape == volume.shape and prediction.label.origin == volume.origin
        labels.append(in_reference_order(volume, prediction.label.array))
        entropies.append(in_reference_order(volume, prediction.uncertainty.array.astype(np.float32)))
    assert len(np.unique(labels[0])) > 1  # a segmentation with structure, not one constant class
    for label, entropy in zip(labels[1:], entropies[1:], strict=True):
        assert np.array_equal(label, labels[0])
        assert np.allclose(entropy, entropies[0], atol=1e-3)


def test_islands_are_removed_alike_whatever_the_storage_order(tmp_path: Path) -> None:
    """The card's clean-up runs in the card's orientation, so every storage order keeps the same piece."""
    predictor = _tiny_predictor(CANONICAL)
    predictor.card.postprocessing = {"largest_component": [1, 2]}
    cleaned, raw = [], []
    for volume in texture_in_every_order(tmp_path):
        cleaned.append(in_reference_order(volume, predictor.predict(volume, uncertainty="none").label.array))
        plain = predictor.predict(volume, uncertainty="none", postprocess=False)
        raw.append(in_reference_order(volume, plain.label.array))
    assert not np.array_equal(cleaned[0], raw[0])  # the scattered classes did lose islands
    for label in cleaned[1:]:
        assert np.array_equal(label, cleaned[0])


def test_a_card_without_orientation_predicts_in_voxel_order_and_says_so() -> None:
    predictor = _tiny_predictor(None)
    volume = Volume(
        array=np.random.default_rng(1).normal(size=SHAPE).astype(np.float32),
        spacing=(2.5, 0.8, 0.7),
        direction=np.diag([-1.0, -1.0, 1.0]),
    )
    prediction = predictor.predict(volume, uncertainty="none")
    assert VOXEL_ORDER_NOTE in prediction.notes
    # In voxel order: the same voxels in, the same voxels out, whatever the direction says.
    flipped = predictor.predict(replace(volume, direction=np.eye(3)), uncertainty="none")
    assert np.array_equal(prediction.label.array, flipped.label.array)
    assert VOXEL_ORDER_NOTE not in _tiny_predictor(CANONICAL).predict(volume, uncertainty="none").notes
    card = ModelCard.from_json(predictor.card.to_json())
    assert card.orientation is None


# -- a left/right phantom through training and prediction ------------------------------------------
PHANTOM = (8, 16, 16)
SIDES = {1: "right lung", 2: "left lung"}


def phantom(rng: np.random.Generator) -> tuple[sitk.Image, sitk.Image]:
    """Two identical balls, one each side of an LPS reference image: only their side tells them apart."""
    z, y, x = np.meshgrid(*(np.arange(n) for n in PHANTOM), indexing="ij")
    label = np.zeros(PHANTOM, dtype=np.uint8)
    for value, centre_x in ((1, 4.0), (2, 11.0)):  # LPS: x grows toward the patient's left
        centre = (3.5 + rng.uniform(-0.5, 0.5), 7.5 + rng.uniform(-1, 1), centre_x + rng.uniform(-0.5, 0.5))
        label[((z - centre[0]) / 2.5) ** 2 + ((y - centre[1]) / 3.5) ** 2 + ((x - centre[2]) / 2.5) ** 2 < 1] = value
    image = rng.normal(0, 0.2, size=PHANTOM).astype(np.float32) + 2.0 * (label > 0)
    images = [sitk.GetImageFromArray(array) for array in (image, label)]
    for item in images:
        item.SetSpacing((1.0, 1.0, 2.0))
    return images[0], images[1]


def test_a_left_right_phantom_keeps_its_sides_through_training_and_prediction(tmp_path: Path) -> None:
    import json

    from napari_ssl_seg.store import Project
    from napari_ssl_seg.training import TrainConfig
    from napari_ssl_seg.training.loop import train

    rng = np.random.default_rng(0)
    root = tmp_path / "project"
    project = Project.create(root, seed=1, name="sides")
    project.set_setting("label_names", json.dumps({str(k): v for k, v in SIDES.items()}))
    # The training cases come stored in three voxel orders, as files from several scanners and tools do.
    for index, (code, split) in enumerate(
        (("LPS", "train"), ("RAS", "train"), ("RSA", "train"), ("RAS", "validation"))
    ):
        image, label = (sitk.DICOMOrient(item, code) for item in phantom(rng))
        for item, kind in ((image, "image"), (label, "label")):
            sitk.WriteImage(item, str(tmp_path / f"case{index}_{kind}.nrrd"))
        name = f"case_{index}"
        project.add_case(name, read_volume(tmp_path / f"case{index}_image.nrrd"), split=split)
        project.save_label(name, read_volume(tmp_path / f"case{index}_label.nrrd").array, author="test")
    project.close()
    config = TrainConfig(
        method="supervised",
        iterations=60,
        batch_labeled=2,
        batch_unlabeled=0,
        patch_size=PHANTOM,  # the whole phantom: its side is visible to the network
        base_width=8,
        depth=3,
        dropout=0.0,
        lr_step=1000,
        checkpoint_every=1000,
        validate_every=1000,
        log_every=1000,
    )
    result = train(root, config, tmp_path / "run", device="cpu")
    card = ModelCard.from_json((tmp_path / "run" / "model.json").read_text(encoding="utf-8"))
    assert card.orientation == CANONICAL
    predictor = Predictor.from_checkpoint(result.model_path, device="cpu")
    image, _ = phantom(np.random.default_rng(7))
    for code in ("ASL", "RAS", "LPS"):  # ASL: an order no training case had
        path = tmp_path / f"unseen_{code}.nii.gz"
        sitk.WriteImage(sitk.DICOMOrient(image, code), str(path))
        volume = read_volume(path)
        label = predictor.predict(volume, uncertainty="none").label
        centres = {}
        for value in SIDES:
            z, y, x = np.nonzero(label.array == value)
            assert z.size > 20, f"{code}: {SIDES[value]} not found"
            index = np.stack([x, y, z, np.ones_like(x)]).astype(float)
            centres[value] = (label.index_to_lps() @ index)[:3].mean(axis=1)
        # LPS x grows toward the patient's left: the left lung lies left of the right one, in every order.
        assert centres[2][0] > centres[1][0] + 5, f"{code}: sides swapped ({centres})"
