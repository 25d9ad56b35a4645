"""Read any supported file or DICOM folder into a :class:`Volume`."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from napari_ssl_seg.errors import InputError
from napari_ssl_seg.io.dicom import read_dicom_series
from napari_ssl_seg.io.sitk_files import read_itk_file
from napari_ssl_seg.io.volume import Volume, check_declared_size, squeeze_to_3d, validate_volume

NIFTI_SUFFIXES = (".nii.gz", ".nii")
ITK_SUFFIXES = (".seg.nrrd", ".nrrd", ".nhdr", ".mha", ".mhd")
SUPPORTED_SUFFIXES = NIFTI_SUFFIXES + ITK_SUFFIXES


def file_suffix(path: Path | str) -> str:
    """The format-defining suffix, including double ones like ``.nii.gz``."""
    name = Path(path).name.lower()
    for suffix in SUPPORTED_SUFFIXES:
        if name.endswith(suffix):
            return suffix
    return Path(name).suffix


def case_stem(path: Path | str) -> str:
    """File name without its format suffix: ``brain1_image.nrrd`` -> ``brain1_image``."""
    path = Path(path)
    suffix = file_suffix(path)
    return path.name[: -len(suffix)] if suffix and path.name.lower().endswith(suffix) else path.name


def is_supported_path(path: Path | str) -> bool:
    path = Path(path)
    return path.is_dir() or file_suffix(path) in SUPPORTED_SUFFIXES


def read_volume(path: Path | str) -> Volume:
    """Read a NIfTI, NRRD/.seg.nrrd, MHA/MHD file or a DICOM series folder.

    Raises :class:`InputError` with a one-line reason for anything unusable.
    """
    path = Path(path)
    try:
        exists = path.exists()
        is_dir = path.is_dir()
    except OSError as exc:  # symlink loops, permission errors on the path itself
        raise InputError(f"{path}: {exc.strerror or exc}") from None
    if not exists:
        if path.is_symlink():
            raise InputError(f"{path}: symbolic link is broken or loops back on itself")
        raise InputError(f"{path}: no such file or folder")
    if is_dir:
        volume = read_dicom_series(path)
    else:
        suffix = file_suffix(path)
        if not path.is_file():
            raise InputError(f"{path.name}: not a regular file")  # a FIFO or device would block or never end
        if os.path.getsize(path) == 0:
            raise InputError(f"{path.name}: file is empty")
        if suffix in NIFTI_SUFFIXES:
            volume = _read_nifti(path)
        elif suffix in ITK_SUFFIXES:
            volume = read_itk_file(path, suffix)
        else:
            known = ", ".join(SUPPORTED_SUFFIXES)
            raise InputError(
                f"{path.name}: unknown file type {suffix or '(none)'}; supported: {known} or a DICOM folder"
            )
    return validate_volume(volume, name=path.name)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


@contextlib.contextmanager
def _nibabel_reports() -> Iterator[list[str]]:
    """Collect nibabel's header fix-up reports (it prints them on stderr) to show as notes instead."""
    from nibabel.imageglobals import logger

    reports: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            reports.append(record.getMessage().strip())

    collector = Collect()
    saved = logger.handlers[:], logger.propagate
    for handler in saved[0]:
        logger.removeHandler(handler)
    logger.addHandler(collector)
    logger.propagate = False
    try:
        yield reports
    finally:
        logger.removeHandler(collector)
        for handler in saved[0]:
            logger.addHandler(handler)
        logger.propagate = saved[1]


def _read_nifti(path: Path) -> Volume:
    import nibabel as nib

    try:
        with _nibabel_reports() as reports:
            image: Any = nib.load(str(path))  # a Nifti1Image or Nifti2Image (nibabel types the base class)
            check_declared_size(image.header.get_data_shape(), path.name)
            data = squeeze_to_3d(np.asanyarray(image.dataobj), path.name)
            affine_ras = np.asarray(image.affine, dtype=float)
    except InputError:
        raise
    except Exception as exc:  # nibabel raises many types for corrupt files; all mean "unreadable"
        raise InputError(f"{path.name}: not a readable NIfTI file ({_first_line(exc)})") from None
    affine_lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine_ras
    linear = affine_lps[:3, :3]
    spacing_xyz = np.linalg.norm(linear, axis=0)
    if np.any(spacing_xyz == 0) or not np.all(np.isfinite(linear)):
        raise InputError(f"{path.name}: NIfTI affine is degenerate")
    direction = linear / spacing_xyz
    return Volume(
        array=np.ascontiguousarray(np.transpose(data, (2, 1, 0))),
        spacing=tuple(spacing_xyz[::-1]),
        origin=tuple(affine_lps[:3, 3]),
        direction=direction,
        source_format="nifti",
        notes=tuple(f"{path.name}: header repaired on reading ({report})" for report in reports),
    )
