"""Where the bundled sample volumes live (core: no napari)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from napari_ssl_seg.errors import InputError

SAMPLES = {
    "chest_ct": ("CTChest4.nrrd", "Segmentation.seg.nrrd", "Chest CT with 7-class segmentation (3D Slicer)"),
    "brain_mri_1": ("brain1_image.nrrd", "brain1_label.nrrd", "Brain MRI with lesion mask (pyradiomics brain1)"),
    "brain_mri_2": ("brain2_image.nrrd", "brain2_label.nrrd", "Brain MRI with lesion mask (pyradiomics brain2)"),
    "breast_mri": ("breast1_image.nrrd", "breast1_label.nrrd", "Breast MRI with lesion mask (pyradiomics breast1)"),
}


def sample_data_dir() -> Path:
    """The sample folder: ``$NAPARI_SSL_SEG_SAMPLE_DATA``, a source checkout, or the installed copy."""
    candidates = [
        os.environ.get("NAPARI_SSL_SEG_SAMPLE_DATA"),
        Path(__file__).resolve().parents[1] / "sample_data",
        Path(sys.prefix) / "share" / "napari-ssl-seg" / "sample_data",
    ]
    for candidate in candidates:
        if candidate and (Path(candidate) / "CTChest4.nrrd").is_file():
            return Path(candidate)
    raise InputError("bundled sample data not found; set NAPARI_SSL_SEG_SAMPLE_DATA to the sample_data folder")


def sample_path(file_name: str) -> Path:
    return sample_data_dir() / file_name
