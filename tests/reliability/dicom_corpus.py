"""DICOM series written with SimpleITK, carrying patient identifiers that must never surface."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from napari_ssl_seg.io import Volume
from napari_ssl_seg.io.dicom import write_dicom_series

# Identifiers planted in every slice; none may appear in CLI output, logs, project files or cards.
PATIENT_NAME = "Quixotewright^Ottilie"
PATIENT_ID = "PID-73915-XQ"
BIRTH_DATE = "19470331"
PHI_STRINGS = (PATIENT_NAME, "Quixotewright", "Ottilie", PATIENT_ID, BIRTH_DATE)
STUDY_UID = "1.2.826.0.1.3680043.2.1125.77"


def write_series(
    folder: Path,
    array_zyx: np.ndarray,
    *,
    series: str = "1.2.826.0.1.3680043.2.1125.7.1",
    spacing: tuple[float, float, float] = (2.5, 0.8, 0.7),
    prefix: str = "slice",
) -> list[Path]:
    """One file per slice (the package's writer) with the planted patient identifiers."""
    identifiers = {"0010|0010": PATIENT_NAME, "0010|0020": PATIENT_ID, "0010|0030": BIRTH_DATE, "0020|000d": STUDY_UID}
    volume = Volume(array=array_zyx.astype(np.int16), spacing=spacing)
    return write_dicom_series(
        volume, folder, modality="CT", series_uid=series, extra_tags=identifiers, file_prefix=prefix
    )


def ramp(shape: tuple[int, int, int]) -> np.ndarray:
    return (np.arange(np.prod(shape)).reshape(shape) % 2000 - 1000).astype(np.int16)


def dicom_cases(folder: Path) -> dict[str, Path]:
    cases: dict[str, Path] = {}
    empty = folder / "empty_dicom"
    empty.mkdir()
    cases["DICOM empty folder"] = empty
    junk = folder / "junk_dicom"
    junk.mkdir()
    rng = np.random.default_rng(8)
    for index in range(3):
        (junk / f"IM{index:04d}.dcm").write_bytes(rng.bytes(2048))
    cases["DICOM folder of random bytes"] = junk
    single = folder / "single_slice"
    write_series(single, ramp((1, 8, 10)))
    cases["DICOM single slice"] = single
    mixed = folder / "mixed_sizes"
    write_series(mixed, ramp((3, 8, 10)), prefix="a")
    write_series(mixed, ramp((3, 16, 12)), prefix="b")  # same series UID, other matrix size
    cases["DICOM series with mixed slice sizes"] = mixed
    truncated = folder / "truncated_slice"
    paths = write_series(truncated, ramp((5, 8, 10)))
    paths[2].write_bytes(paths[2].read_bytes()[:300])  # a slice in the middle: the series has a gap
    cases["DICOM series with a truncated slice"] = truncated
    flipped = folder / "flipped_slice"
    paths = write_series(flipped, ramp((5, 8, 10)))
    data = bytearray(paths[3].read_bytes())
    data[128:132] = b"XXXX"  # the "DICM" magic after the 128-byte preamble
    paths[3].write_bytes(bytes(data))
    cases["DICOM series with a corrupted slice"] = flipped
    return cases
