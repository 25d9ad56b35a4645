"""napari sample data contributions: the bundled real volumes and their labels."""

from __future__ import annotations

from napari_ssl_seg.io import read_volume
from napari_ssl_seg.io.read import case_stem
from napari_ssl_seg.layers import LayerData, volume_to_layer_data
from napari_ssl_seg.sample_data import SAMPLES, sample_path


def _load(key: str) -> list[LayerData]:
    image_file, label_file, _ = SAMPLES[key]
    image = read_volume(sample_path(image_file))
    label = read_volume(sample_path(label_file))
    return [
        volume_to_layer_data(image, name=case_stem(image_file), as_labels=False),
        volume_to_layer_data(label, name=case_stem(label_file), as_labels=True),
    ]


def chest_ct() -> list[LayerData]:
    return _load("chest_ct")


def brain_mri_1() -> list[LayerData]:
    return _load("brain_mri_1")


def brain_mri_2() -> list[LayerData]:
    return _load("brain_mri_2")


def breast_mri() -> list[LayerData]:
    return _load("breast_mri")
