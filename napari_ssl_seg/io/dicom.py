"""DICOM series folders, read with SimpleITK's GDCM series reader.

Only the voxel data, geometry and modality are kept: patient identifiers are
never copied into a :class:`Volume`, a log or a model card.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from napari_ssl_seg.errors import InputError
from napari_ssl_seg.io.read import _itk_reason, volume_from_sitk
from napari_ssl_seg.io.volume import Volume

MODALITY_TAG = "0008|0060"


def read_dicom_series(folder: Path) -> Volume:
    import SimpleITK as sitk

    try:
        series_ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)) or ()
    except Exception as exc:
        raise InputError(f"{folder.name}: cannot scan folder for DICOM ({_itk_reason(exc)})") from None
    if not series_ids:
        raise InputError(f"{folder.name}: folder holds no DICOM series (and is not a supported file)")
    files_per_series = {
        series: sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series) for series in series_ids
    }
    chosen = max(series_ids, key=lambda series: len(files_per_series[series]))
    files = files_per_series[chosen]
    notes: tuple[str, ...] = ()
    if len(series_ids) > 1:
        sizes = sorted((len(names) for names in files_per_series.values()), reverse=True)
        notes = (
            f"{folder.name}: {len(series_ids)} DICOM series found (slices: {sizes}); "
            f"using the largest, {len(files)} slices",
        )
    if len(files) < 2:
        raise InputError(f"{folder.name}: the DICOM series has only {len(files)} slice; a 3D volume needs several")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    reader.MetaDataDictionaryArrayUpdateOn()
    try:
        image = reader.Execute()
    except Exception as exc:
        raise InputError(f"{folder.name}: DICOM series cannot be read ({_itk_reason(exc)})") from None
    modality = reader.GetMetaData(0, MODALITY_TAG).strip() if reader.HasMetaDataKey(0, MODALITY_TAG) else None
    volume = volume_from_sitk(image, folder.name, source_format="dicom", modality=modality or None)
    return replace(volume, notes=notes)
