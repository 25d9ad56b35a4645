"""Files through SimpleITK: NRRD and MetaImage reading, ITK's errors as one line, its image type.

DICOM series (io/dicom.py) are read through SimpleITK too and share these pieces.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from napari_ssl_seg.errors import InputError
from napari_ssl_seg.io.volume import Volume, check_declared_size, squeeze_to_3d

__all__ = ["itk_reason", "native_stderr_captured", "read_itk_file", "volume_from_sitk"]

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


def read_itk_file(path: Path, suffix: str) -> Volume:
    """An NRRD (.seg.nrrd included) or MetaImage file through SimpleITK; ``InputError`` if unusable."""
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
            reason = itk_reason(exc)
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


def itk_reason(exc: BaseException) -> str:
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


def sitk_image(volume: Volume, array: np.ndarray):
    """A SimpleITK image of ``array`` (napari's (z, y, x) order) with ``volume``'s geometry."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.ascontiguousarray(array))
    image.SetSpacing(tuple(float(s) for s in volume.spacing[::-1]))
    image.SetOrigin(tuple(float(o) for o in volume.origin))
    image.SetDirection(tuple(float(v) for row in volume.direction for v in row))
    return image


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
