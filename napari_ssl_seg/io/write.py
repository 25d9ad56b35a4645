"""Write volumes (label maps above all) so that they reopen with identical geometry.

NIfTI is written with nibabel, with qform and sform both set to the same
scanner affine so that nibabel, ITK (ITK-SNAP, 3D Slicer) and FSL agree.
NRRD and MHA are written with SimpleITK. Every write is atomic.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from napari_ssl_seg.errors import InputError
from napari_ssl_seg.io.atomic import atomic_output
from napari_ssl_seg.io.read import file_suffix
from napari_ssl_seg.io.sitk_files import sitk_image
from napari_ssl_seg.io.volume import Volume

# .mhd is read but not written: it is two files (header + raw), which cannot
# be published together atomically.
LABEL_WRITE_SUFFIXES = (".nii.gz", ".nii", ".seg.nrrd", ".nrrd", ".mha")


def write_volume(volume: Volume, path: Path | str, *, overwrite: bool = True) -> Path:
    """Write ``volume`` to ``path`` atomically; the format follows the extension."""
    path = Path(path)
    suffix = file_suffix(path)
    if suffix not in LABEL_WRITE_SUFFIXES:
        allowed = ", ".join(LABEL_WRITE_SUFFIXES)
        raise InputError(f"{path.name}: cannot write {suffix or 'files without extension'}; use one of {allowed}")
    if not path.parent.is_dir():
        raise InputError(f"{path.parent}: folder does not exist")
    array = _writable_array(volume.array)
    with atomic_output(path, overwrite=overwrite) as temporary:
        if suffix in (".nii.gz", ".nii"):
            _write_nifti(volume, array, temporary)
        else:
            _write_with_simpleitk(volume, array, temporary)
    return path


def _writable_array(array: np.ndarray) -> np.ndarray:
    if array.dtype == np.bool_:
        return array.astype(np.uint8)
    if array.dtype == np.float16:
        # NIfTI, NRRD and MHA have no half-precision type; float32 holds every float16 exactly.
        return array.astype(np.float32)
    if array.dtype == np.int64 and array.size and array.min() >= 0 and array.max() < 2**16:
        # napari Labels layers hold int64/int32; label maps travel better as uint8/uint16.
        return array.astype(np.uint8 if array.max() < 256 else np.uint16)
    return array


def _write_nifti(volume: Volume, array: np.ndarray, path: Path) -> None:
    import nibabel as nib

    affine = volume.index_to_ras()
    image = nib.Nifti1Image(np.transpose(array, (2, 1, 0)), affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    image.header.set_xyzt_units(xyz="mm")
    nib.save(image, str(path))


def _write_with_simpleitk(volume: Volume, array: np.ndarray, path: Path) -> None:
    import SimpleITK as sitk

    image = sitk_image(volume, array)
    if volume.label_names and file_suffix(path).endswith("nrrd"):
        for index, (value, name) in enumerate(sorted(volume.label_names.items())):
            image.SetMetaData(f"Segment{index}_Name", name)
            image.SetMetaData(f"Segment{index}_LabelValue", str(value))
            image.SetMetaData(f"Segment{index}_Layer", "0")
    sitk.WriteImage(image, str(path), useCompression=True)
