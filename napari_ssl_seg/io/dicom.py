"""DICOM series folders, read with SimpleITK's GDCM series reader.

Only the voxel data, geometry and modality are kept: patient identifiers are
never copied into a :class:`Volume`, a log or a model card.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from napari_ssl_seg.errors import InputError
from napari_ssl_seg.io.sitk_files import itk_reason, native_stderr_captured, volume_from_sitk
from napari_ssl_seg.io.volume import Volume, check_declared_size

MODALITY_TAG = "0008|0060"
POSITION_TAG = "0020|0032"
ORIENTATION_TAG = "0020|0037"
# Slice gaps may differ by this fraction of the mean gap (rounding in the headers) and no more.
GAP_TOLERANCE = 0.05


def read_dicom_series(folder: Path, *, containing: Path | None = None) -> Volume:
    """The largest series of ``folder``, or the series that holds the file ``containing``."""
    # GDCM and ITK print warnings ("No Series were found", "missing slices") straight to stderr.
    with native_stderr_captured():
        return _read_dicom_series(folder, containing)


def _read_dicom_series(folder: Path, containing: Path | None = None) -> Volume:
    import SimpleITK as sitk

    try:
        series_ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)) or ()
    except Exception as exc:
        raise InputError(f"{folder.name}: cannot scan folder for DICOM ({itk_reason(exc)})") from None
    if not series_ids:
        raise InputError(f"{folder.name}: folder holds no DICOM series (and is not a supported file)")
    files_per_series = {
        series: sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series) for series in series_ids
    }
    chosen = max(series_ids, key=lambda series: len(files_per_series[series]))
    if containing is not None:
        wanted = Path(containing).resolve()
        holding = [series for series in series_ids if wanted in {Path(f).resolve() for f in files_per_series[series]}]
        if not holding:
            raise InputError(f"{Path(containing).name}: not a slice of a DICOM series in {folder.name}")
        chosen = holding[0]
    files = files_per_series[chosen]
    notes: tuple[str, ...] = ()
    if len(series_ids) > 1 and containing is None:
        sizes = sorted((len(names) for names in files_per_series.values()), reverse=True)
        notes = (
            f"{folder.name}: {len(series_ids)} DICOM series found (slices: {sizes}); "
            f"using the largest, {len(files)} slices",
        )
    if len(files) < 2:
        raise InputError(f"{folder.name}: the DICOM series has only {len(files)} slice; a 3D volume needs several")
    try:  # the slice size from one header, so that a corrupt Rows/Columns is refused before allocating
        probe = sitk.ImageFileReader()
        probe.SetFileName(files[0])
        probe.ReadImageInformation()
        slice_size = probe.GetSize()[:2]
    except Exception as exc:
        raise InputError(f"{folder.name}: DICOM series cannot be read ({itk_reason(exc)})") from None
    check_declared_size((*slice_size, len(files)), folder.name)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    reader.MetaDataDictionaryArrayUpdateOn()
    try:
        image = reader.Execute()
    except Exception as exc:
        raise InputError(f"{folder.name}: DICOM series cannot be read ({itk_reason(exc)})") from None
    _check_even_slices(reader, len(files), folder.name)
    modality = reader.GetMetaData(0, MODALITY_TAG).strip() if reader.HasMetaDataKey(0, MODALITY_TAG) else None
    volume = volume_from_sitk(image, folder.name, source_format="dicom", modality=modality or None)
    return replace(volume, notes=notes)


def _check_even_slices(reader, count: int, name: str) -> None:
    """Refuse a series with a missing (unreadable, deleted) or misplaced slice.

    ITK only warns and averages the gaps into one spacing, which would silently stretch the
    volume and misplace every label drawn on it.
    """
    if not all(reader.HasMetaDataKey(i, POSITION_TAG) for i in range(count)):
        return  # no positions recorded (secondary capture): nothing to check against
    try:
        rows = [reader.GetMetaData(i, POSITION_TAG).split("\\") for i in range(count)]
        positions = np.array([[float(v) for v in row] for row in rows])
        cosines = [float(v) for v in reader.GetMetaData(0, ORIENTATION_TAG).split("\\")]
        normal = np.cross(cosines[:3], cosines[3:6])
    except (ValueError, IndexError, RuntimeError):
        return  # unparsable tags: ITK already placed the slices as well as it can
    if positions.shape[1] != 3 or not np.all(np.isfinite(positions)) or np.linalg.norm(normal) < 0.5:
        return
    gaps = np.diff(np.sort(positions @ normal))
    mean_gap = float(np.mean(gaps))
    if mean_gap <= 0 or np.max(np.abs(gaps - mean_gap)) > GAP_TOLERANCE * mean_gap:
        raise InputError(
            f"{name}: DICOM slices are unevenly spaced (gaps from {gaps.min():.4g} to {gaps.max():.4g} mm); "
            "a slice is missing, unreadable or duplicated"
        )
