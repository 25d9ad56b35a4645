"""A corpus of malformed volume files and folders, generated fresh by the tests.

Every entry must be refused by ``info``, ``init``, ``predict`` and the napari reader with one clear
message. Most are a valid small file with one deliberate defect (a cut, a flipped header field, an
impossible size), so that a refusal proves the defect was noticed, not that the file was garbage.
"""

from __future__ import annotations

import gzip
import os
import re
import struct
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from reliability.dicom_corpus import dicom_cases

SHAPE = (6, 8, 10)  # (z, y, x)

# NIfTI-1 header byte offsets (the format's fixed 348-byte layout).
_DIM, _DATATYPE, _VOX_OFFSET, _MAGIC = 40, 70, 108, 344
_QFORM_CODE, _SFORM_CODE, _SROW_X = 252, 254, 280


def _nifti_bytes(array: np.ndarray, affine: np.ndarray | None = None) -> bytes:
    """An uncompressed single-file NIfTI-1 image, as bytes (array given in (x, y, z) order)."""
    image = nib.Nifti1Image(array, np.diag([0.7, 0.8, 2.5, 1.0]) if affine is None else affine)
    return image.to_bytes()


def _patched(data: bytes, offset: int, fmt: str, *values: float) -> bytes:
    packed = struct.pack("<" + fmt, *values)
    return data[:offset] + packed + data[offset + len(packed) :]


def _with_sform(data: bytes, affine: np.ndarray) -> bytes:
    """Force ``affine`` into the header as the sform (nibabel refuses to build such images itself)."""
    data = _patched(data, _QFORM_CODE, "hh", 0, 1)
    return _patched(data, _SROW_X, "12f", *np.asarray(affine, dtype=float)[:3].ravel())


def _volume_xyz(dtype: str = "int16") -> np.ndarray:
    return np.arange(np.prod(SHAPE), dtype=dtype).reshape(SHAPE[::-1])


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _sitk_file(path: Path, array_zyx: np.ndarray, *, vector: bool = False) -> Path:
    image = sitk.GetImageFromArray(array_zyx, isVector=vector)
    image.SetSpacing((0.7, 0.8, 2.5)[: image.GetDimension()])
    sitk.WriteImage(image, str(path), useCompression=False)
    return path


def _header_edit(path: Path, pattern: str, replacement: str) -> Path:
    """Rewrite one NRRD/MetaImage header line (the header is ASCII, the data follows it)."""
    data = path.read_bytes()
    edited, count = re.subn(pattern.encode(), replacement.encode(), data, count=1, flags=re.MULTILINE)
    assert count == 1, f"{pattern!r} not found in {path.name}"
    return _write(path, edited)


def nifti_cases(folder: Path) -> dict[str, Path]:
    good = _nifti_bytes(_volume_xyz())
    cases: dict[str, Path] = {}

    def add(name: str, filename: str, data: bytes) -> None:
        cases[name] = _write(folder / filename, gzip.compress(data) if filename.endswith(".gz") else data)

    cases["nifti truncated .nii.gz"] = _write(folder / "cut.nii.gz", gzip.compress(good)[: len(good) // 3])
    cases["nifti truncated .nii"] = _write(folder / "cut.nii", good[: 352 + 40])
    add("nifti header cut short", "short_header.nii", good[:200])
    add("nifti bad magic", "magic.nii", _patched(good, _MAGIC, "4s", b"x+9\0"))
    add("nifti dim[0]=9", "ndim9.nii", _patched(good, _DIM, "h", 9))
    add("nifti negative dim", "negdim.nii", _patched(good, _DIM + 2, "h", -10))
    huge = _patched(good, _DIM, "8h", 3, 30000, 30000, 30000, 1, 1, 1, 1)
    add("nifti absurd dims .nii", "huge.nii", huge)
    add("nifti absurd dims .nii.gz", "huge.nii.gz", huge)
    add("nifti unknown datatype", "dtype.nii", _patched(good, _DATATYPE, "h", 9999))
    add("nifti vox_offset past end", "offset.nii", _patched(good, _VOX_OFFSET, "f", 1e9))
    add("nifti zero spacing", "zero_spacing.nii.gz", _with_sform(good, np.diag([0.7, 0.0, 2.5, 1.0])))
    add("nifti absurd spacing", "km.nii.gz", _with_sform(good, np.diag([1e7, 0.8, 2.5, 1.0])))
    nan_affine = np.diag([0.7, 0.8, 2.5, 1.0])
    nan_affine[0, 3] = np.nan
    add("nifti NaN origin", "nan_origin.nii.gz", _with_sform(good, nan_affine))
    skew = np.array([[0.7, 0.7, 0, 0], [0, 0.8, 0, 0], [0, 0, 2.5, 0], [0, 0, 0, 1.0]])
    add("nifti non-orthogonal axes", "skew.nii.gz", _with_sform(good, skew))
    add("nifti 2D", "flat.nii.gz", _nifti_bytes(np.zeros((10, 8), np.int16)))
    add("nifti 4D", "time.nii.gz", _nifti_bytes(np.zeros((10, 8, 6, 3), np.int16)))
    add("nifti 5D", "five.nii.gz", _nifti_bytes(np.zeros((10, 8, 6, 2, 2), np.int16)))
    add("nifti zero-size axis", "empty_axis.nii.gz", _nifti_bytes(np.zeros((10, 0, 6), np.int16)))
    for name, value, dtype in (("NaN", np.nan, "float32"), ("+Inf", np.inf, "float64"), ("-Inf", -np.inf, "float32")):
        array = _volume_xyz(dtype)
        array[3, 2, 1] = value
        add(f"nifti {name} voxel", f"{name.strip('+-')}_{dtype}_{len(cases)}.nii.gz", _nifti_bytes(array))
    add("nifti complex voxels", "complex.nii.gz", _nifti_bytes(_volume_xyz("complex64")))
    rgb = np.zeros(SHAPE[::-1], dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    add("nifti RGB voxels", "rgb.nii.gz", _nifti_bytes(rgb))
    return cases


def nrrd_cases(folder: Path) -> dict[str, Path]:
    array = _volume_xyz().T.copy()  # (z, y, x) for SimpleITK
    cases: dict[str, Path] = {}

    def fresh(filename: str) -> Path:
        return _sitk_file(folder / filename, array)

    good = fresh("template.nrrd").read_bytes()
    cases["nrrd truncated data"] = _write(folder / "cut.nrrd", good[: len(good) - 50])
    header_end = good.index(b"\n\n")
    cases["nrrd header without data"] = _write(folder / "header_only.nrrd", good[: header_end - 20])
    compressed = _sitk_file(folder / "gz_template.nrrd", array)
    sitk.WriteImage(sitk.ReadImage(str(compressed)), str(compressed), useCompression=True)
    data = compressed.read_bytes()
    cases["nrrd truncated gzip"] = _write(folder / "cut_gz.nrrd", data[: len(data) - 60])
    cases["nrrd zero size"] = _header_edit(fresh("zero.nrrd"), r"^sizes: .*$", "sizes: 10 0 6")
    cases["nrrd dimension mismatch"] = _header_edit(fresh("dim.nrrd"), r"^dimension: 3$", "dimension: 7")
    cases["nrrd unknown type"] = _header_edit(fresh("type.nrrd"), r"^type: .*$", "type: quaternion")
    cases["nrrd unknown encoding"] = _header_edit(fresh("enc.nrrd"), r"^encoding: .*$", "encoding: zstd9")
    cases["nrrd NaN spacing"] = _header_edit(
        fresh("nan.nrrd"), r"^space directions: .*$", "space directions: (nan,0,0) (0,0.8,0) (0,0,2.5)"
    )
    cases["nrrd absurd spacing"] = _header_edit(
        fresh("km.nrrd"), r"^space directions: .*$", "space directions: (1e7,0,0) (0,0.8,0) (0,0,2.5)"
    )
    cases["nrrd absurd sizes"] = _header_edit(fresh("huge.nrrd"), r"^sizes: .*$", "sizes: 100000 100000 100000")
    detached = folder / "detached.nhdr"
    detached.write_text(
        "NRRD0004\ntype: short\ndimension: 3\nsizes: 10 8 6\nspace directions: (1,0,0) (0,1,0) (0,0,1)\n"
        "space: left-posterior-superior\nencoding: raw\nendian: little\ndata file: missing.raw\n"
    )
    cases["nhdr with missing data file"] = detached
    cases["nrrd vector"] = _sitk_file(folder / "vector.nrrd", np.zeros((*SHAPE, 3), np.float32), vector=True)
    cases["nrrd 2D"] = _sitk_file(folder / "flat.nrrd", np.zeros((8, 10), np.int16))
    return cases


def mha_cases(folder: Path) -> dict[str, Path]:
    array = _volume_xyz().T.copy()
    cases: dict[str, Path] = {}

    def fresh(filename: str, values: np.ndarray = array) -> Path:
        return _sitk_file(folder / filename, values)

    good = fresh("template.mha").read_bytes()
    cases["mha truncated data"] = _write(folder / "cut.mha", good[: len(good) - 50])
    cases["mha truncated header"] = _write(folder / "cut_header.mha", good[:60])
    cases["mha absurd sizes"] = _header_edit(fresh("huge.mha"), r"^DimSize = .*$", "DimSize = 100000 100000 100000")
    cases["mha unknown element type"] = _header_edit(fresh("type.mha"), r"^ElementType = .*$", "ElementType = MET_X")
    cases["mha zero spacing"] = _header_edit(fresh("zero.mha"), r"^ElementSpacing = .*$", "ElementSpacing = 0 0 0")
    cases["mha absurd spacing"] = _header_edit(fresh("km.mha"), r"^ElementSpacing = .*$", "ElementSpacing = 1e9 1 1")
    cases["mha absurd origin"] = _header_edit(fresh("origin.mha"), r"^Offset = .*$", "Offset = 1e30 0 0")
    cases["mha degenerate direction"] = _header_edit(
        fresh("direction.mha"), r"^TransformMatrix = .*$", "TransformMatrix = 1 0 0 1 0 0 0 0 1"
    )
    nan = array.astype(np.float32)
    nan[1, 2, 3] = np.nan
    cases["mha NaN voxel"] = fresh("nan.mha", nan)
    cases["mha 2D"] = _sitk_file(folder / "flat.mha", np.zeros((8, 10), np.int16))
    header = folder / "lost.mhd"
    header.write_text(
        "ObjectType = Image\nNDims = 3\nDimSize = 10 8 6\nElementType = MET_SHORT\nElementDataFile = lost.raw\n"
    )
    cases["mhd with missing raw file"] = header
    return cases


def other_cases(folder: Path) -> dict[str, Path]:
    cases: dict[str, Path] = {}
    cases["empty file"] = _write(folder / "empty.nii.gz", b"")
    cases["missing file"] = folder / "does_not_exist.nrrd"
    cases["unknown extension"] = _write(folder / "notes.txt", b"not an image")
    loop = folder / "loop.nii.gz"
    os.symlink(loop, loop)
    cases["symlink loop"] = loop
    a, b = folder / "ping", folder / "pong"
    os.symlink(b, a)
    os.symlink(a, b)
    cases["symlink loop (two links)"] = a
    cases["dangling symlink"] = folder / "dangling.mha"
    os.symlink(folder / "nowhere.mha", cases["dangling symlink"])
    fifo = folder / "pipe.nii"
    os.mkfifo(fifo)
    cases["FIFO named .nii"] = fifo
    (folder / "fake.nii.gz").mkdir()
    cases["folder named .nii.gz"] = folder / "fake.nii.gz"
    return cases


GENERATORS: tuple[Callable[[Path], dict[str, Path]], ...] = (
    nifti_cases,
    nrrd_cases,
    mha_cases,
    dicom_cases,
    other_cases,
)


def build_corpus(folder: Path) -> dict[str, Path]:
    """Every malformed file or folder, by a readable name."""
    cases: dict[str, Path] = {}
    for generate in GENERATORS:
        sub = folder / generate.__name__
        sub.mkdir(parents=True)
        made = generate(sub)
        assert not set(made) & set(cases), "corpus names must be unique"
        cases.update(made)
    return cases
