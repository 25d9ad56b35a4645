"""Read any supported file or DICOM folder into a :class:`Volume`."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from napari_ssl_seg.errors import InputError
from napari_ssl_seg.io.volume import Volume, validate_volume

NIFTI_SUFFIXES = (".nii.gz", ".nii")
ITK_SUFFIXES = (".seg.nrrd", ".nrrd", ".nhdr", ".mha", ".mhd")
SUPPORTED_SUFFIXES = NIFTI_SUFFIXES + ITK_SUFFIXES
# A header claiming more voxels than this is broken (or hostile): refuse it before any library
# allocates the buffer. 2**30 voxels is a 1024^3 volume, beyond any routine scanner output, and
# refusing early keeps a corrupt size field from exhausting the memory of a shared machine.
MAX_VOXELS = 2**30


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
        from napari_ssl_seg.io.dicom import read_dicom_series

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
            volume = _read_with_simpleitk(path, suffix)
        else:
            known = ", ".join(SUPPORTED_SUFFIXES)
            raise InputError(
                f"{path.name}: unknown file type {suffix or '(none)'}; supported: {known} or a DICOM folder"
            )
    return validate_volume(volume, name=path.name)


def squeeze_to_3d(array: np.ndarray, name: str) -> np.ndarray:
    """Drop trailing singleton axes (common in NIfTI); refuse real 2D or 4D data."""
    while array.ndim > 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim == 4:
        raise InputError(
            f"{name}: 4D volume with {array.shape[-1]} frames or channels is not supported; extract one 3D volume"
        )
    if array.ndim != 3:
        raise InputError(f"{name}: expected a 3D volume, got {array.ndim}D with shape {tuple(array.shape)}")
    return array


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


def check_declared_size(shape: tuple[int, ...], name: str) -> None:
    """Refuse a header whose sizes are negative or absurd, before anything is allocated."""
    if any(int(n) < 0 for n in shape):
        raise InputError(f"{name}: header declares a negative size {tuple(int(n) for n in shape)}")
    count = int(np.prod([int(n) for n in shape], dtype=object))
    if count > MAX_VOXELS:
        raise InputError(
            f"{name}: header declares {count:.3g} voxels {tuple(int(n) for n in shape)}, more than the "
            f"{MAX_VOXELS:.3g} supported; the header is probably corrupt"
        )


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


_native_stderr_lock = threading.Lock()


@contextlib.contextmanager
def native_stderr_captured() -> Iterator[list[str]]:
    """Collect what C++ readers (ITK, MetaIO, GDCM, teem) print straight to file descriptor 2.

    Those libraries write warnings such as "data not read completely" to the process's stderr,
    which would break the CLI's one-line ``error:`` contract; the lines are returned instead, to
    become part of the error message. The descriptor is process-wide, so one capture at a time:
    a read on another thread meanwhile simply goes uncaptured.
    """
    lines: list[str] = []
    if not _native_stderr_lock.acquire(blocking=False):
        yield lines
        return
    try:
        with tempfile.TemporaryFile() as sink:
            try:
                sys.stderr.flush()
                saved = os.dup(2)
            except (OSError, ValueError):  # no descriptor 2 (some GUI launchers): nothing to capture
                yield lines
                return
            os.dup2(sink.fileno(), 2)
            try:
                yield lines
            finally:
                os.dup2(saved, 2)
                os.close(saved)
                sink.seek(0)
                text = sink.read().decode("utf-8", errors="replace")
                lines.extend(line.strip() for line in text.splitlines() if line.strip())
    finally:
        _native_stderr_lock.release()


def _read_with_simpleitk(path: Path, suffix: str) -> Volume:
    import SimpleITK as sitk

    fmt = {".seg.nrrd": "NRRD", ".nrrd": "NRRD", ".nhdr": "NRRD"}.get(suffix, "MetaImage")
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    image = None
    reason = ""
    with native_stderr_captured() as printed:
        try:
            reader.ReadImageInformation()
            check_declared_size(reader.GetSize(), path.name)
            image = reader.Execute()
        except InputError:
            raise
        except Exception as exc:  # SimpleITK reports every failure as RuntimeError with a long ITK trace
            reason = _itk_reason(exc)
    if image is None:
        if printed and "Reason:" in reason:
            reason = "; ".join(printed)[:200]  # ITK's errno "reason" is stale; MetaIO said what went wrong
        raise InputError(f"{path.name}: not a readable {fmt} file ({reason})")
    if image.GetNumberOfComponentsPerPixel() != 1:
        if suffix == ".seg.nrrd":
            raise InputError(f"{path.name}: segmentation with overlapping segments (several layers) is not supported")
        raise InputError(
            f"{path.name}: {image.GetNumberOfComponentsPerPixel()}-component (vector) images are not supported"
        )
    return volume_from_sitk(image, path.name, source_format="seg.nrrd" if suffix == ".seg.nrrd" else suffix.lstrip("."))


_ITK_OBJECT = re.compile(r"^.*?ERROR:\s*(\w+\(0x[0-9a-fA-F]+\):\s*)?")


def _itk_reason(exc: BaseException) -> str:
    # ITK messages carry file/line noise; the last "Description:" line is the useful one, else
    # the text from the last "ERROR:" on (it may span lines, e.g. a printed matrix).
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith("Description:"):
            return line.removeprefix("Description:").strip()[:200]
    starts = [index for index, line in enumerate(lines) if "ERROR:" in line]
    if starts:
        first = starts[-1]
        return " ".join([_ITK_OBJECT.sub("", lines[first]), *lines[first + 1 :]])[:200]
    return lines[-1][:200] if lines else type(exc).__name__


def volume_from_sitk(image, name: str, *, source_format: str, modality: str | None = None) -> Volume:
    dimension = image.GetDimension()
    array = squeeze_to_3d(_sitk_array(image), name)
    if dimension < 3:
        raise InputError(f"{name}: expected a 3D volume, got {dimension}D with size {image.GetSize()}")
    spacing = tuple(image.GetSpacing()[:3])
    origin = tuple(image.GetOrigin()[:3])
    full_direction = np.asarray(image.GetDirection(), dtype=float).reshape(dimension, dimension)
    label_names = _slicer_segment_names(image) if source_format == "seg.nrrd" else None
    return Volume(
        array=array,
        spacing=spacing[::-1],
        origin=origin,
        direction=full_direction[:3, :3],
        source_format=source_format,
        modality=modality,
        label_names=label_names,
    )


def _sitk_array(image) -> np.ndarray:
    import SimpleITK as sitk

    # GetArrayFromImage returns index order reversed: (z, y, x) for 3D, as napari wants.
    return sitk.GetArrayFromImage(image)


def _slicer_segment_names(image) -> dict[int, str] | None:
    """3D Slicer stores segment names and label values as ``SegmentN_*`` header fields."""
    keys = set(image.GetMetaDataKeys())
    names: dict[int, str] = {}
    index = 0
    while f"Segment{index}_Name" in keys:
        value_key = f"Segment{index}_LabelValue"
        value = int(image.GetMetaData(value_key)) if value_key in keys else index + 1
        names[value] = image.GetMetaData(f"Segment{index}_Name")
        index += 1
    return names or None
