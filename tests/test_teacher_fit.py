"""A teacher that does not fit the image or the project says so before it is trusted."""

from __future__ import annotations

from napari_ssl_seg.inference.fit import fit_warnings
from napari_ssl_seg.networks.checkpoint import ModelCard

CHEST = {0: "background", 1: "ribs", 2: "right lung", 3: "left lung"}


def chest_ct_card() -> ModelCard:
    network = {"name": "vnet", "in_channels": 1, "num_classes": 4, "base_width": 4, "depth": 3}
    return ModelCard(
        method="supervised",
        network=network,
        patch_size=(8, 16, 16),
        intensity={"kind": "ct_window", "window": [-1000.0, 1000.0]},
        classes=CHEST,
        spacing=(10.0, 3.0, 3.0),
    )


def test_a_fitting_image_and_project_give_no_warning() -> None:
    card = chest_ct_card()
    assert fit_warnings(card, project_classes=CHEST, modality="CT", minimum=-1024.0, spacing=(8.0, 2.5, 2.5)) == []
    # Another voxel order of the same spacing is not a misfit.
    assert fit_warnings(card, project_classes=CHEST, minimum=-1024.0, spacing=(3.0, 3.0, 10.0)) == []


def test_brain_mri_for_a_chest_ct_teacher_warns_about_classes_and_intensity() -> None:
    brain = {0: "background", 1: "white matter", 2: "grey matter", 3: "csf"}
    warnings = fit_warnings(chest_ct_card(), project_classes=brain, modality=None, minimum=0.0, spacing=(6, 1, 1))
    assert len(warnings) == 2  # a finer scan is resampled without loss: no spacing warning
    classes, intensity = warnings
    assert "3 classes (ribs, right lung, left lung)" in classes and "white matter" in classes
    assert "CT" in intensity and "not CT" in intensity
    assert all("\n" not in line for line in warnings)


def test_a_scan_much_coarser_than_the_teacher_warns() -> None:
    (only,) = fit_warnings(chest_ct_card(), modality="CT", spacing=(10.0, 7.0, 7.0))
    assert "coarser" in only and "7 x 7 x 10" in only
    assert fit_warnings(chest_ct_card(), modality="CT", spacing=(5.0, 0.6, 0.6)) == []


def test_the_modality_tag_wins_over_the_values_and_mri_teachers_warn_on_ct() -> None:
    mri = chest_ct_card()
    mri.intensity = {"kind": "zscore"}
    (only,) = fit_warnings(mri, modality="CT", minimum=0.0)
    assert "MRI-like" in only and only.endswith("CT")
    assert fit_warnings(chest_ct_card(), modality="MR", minimum=-1024.0) != []
    assert fit_warnings(chest_ct_card()) == []  # nothing known: nothing claimed
