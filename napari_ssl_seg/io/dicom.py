"""DICOM series folders, read with SimpleITK's GDCM series reader.

Only the voxel data, geometry and modality are kept: patient identifiers are
never copied into a :class:`Volume`, a log or a model card.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from napari_ssl_seg.errors import InputError
from napari_ssl_seg.io.sitk_files import itk_reason, native_stderr_captured, sitk_image, volume_from_sitk
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


# Scanners store CT as unsigned values with this intercept (stored = HU + 1024); GDCM converts on write.
CT_RESCALE_INTERCEPT = -1024
DEFAULT_STUDY_UID = "1.2.826.0.1.3680043.2.1125.99"
DEFAULT_SERIES_UID = "1.2.826.0.1.3680043.2.1125.1"


def write_dicom_series(
    volume: Volume,
    folder: Path,
    *,
    modality: str,
    series_uid: str = DEFAULT_SERIES_UID,
    extra_tags: dict[str, str] | None = None,
    file_prefix: str | None = None,
) -> list[Path]:
    """Write ``volume`` as a DICOM series, one file per slice, the way a scanner stores it.

    Each slice carries its own position, the shared orientation and slice thickness, and, for CT,
    the rescale intercept scanners use, so a reader must apply it to get Hounsfield units back. No
    patient identifier is written unless ``extra_tags`` names one (tests check that none surfaces).
    Values are rounded to 16-bit integers. Files are ``<file_prefix>_<slice>.dcm`` (by default the
    series UID's last component). Returns the files in slice order.
    """
    import SimpleITK as sitk

    folder.mkdir(parents=True, exist_ok=True)
    image = sitk_image(volume, np.round(volume.array).astype(np.int16))
    direction = np.ravel(volume.direction)
    # DICOM's row and column cosines are the x and y columns of the (x, y, z) direction matrix.
    cosines = (direction[0], direction[3], direction[6], direction[1], direction[4], direction[7])
    shared = {
        MODALITY_TAG: modality,
        "0020|000d": DEFAULT_STUDY_UID,
        "0020|000e": series_uid,
        ORIENTATION_TAG: "\\".join(f"{value:.8f}" for value in cosines),
        "0018|0050": f"{volume.spacing[0]:.6f}",
        **({"0028|1052": str(CT_RESCALE_INTERCEPT), "0028|1053": "1"} if modality == "CT" else {}),
        **(extra_tags or {}),
    }
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    files = []
    for index in range(image.GetDepth()):
        slice_image = image[:, :, index]
        position = image.TransformIndexToPhysicalPoint((0, 0, index))
        tags = {
            **shared,
            POSITION_TAG: "\\".join(f"{p:.6f}" for p in position),
            "0020|0013": str(index + 1),
            "0008|0018": f"{series_uid}.{index + 1}",
        }
        for tag, value in tags.items():
            slice_image.SetMetaData(tag, value)
        path = folder / f"{file_prefix or series_uid.rsplit('.', 1)[-1]}_{index:04d}.dcm"
        writer.SetFileName(str(path))
        writer.Execute(slice_image)
        files.append(path)
    return files
