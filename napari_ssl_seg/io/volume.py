"""The one volume type the whole package passes around.

Axis and geometry conventions (stated once, used everywhere):

* ``array`` is indexed ``[z, y, x]`` (napari's and NumPy-from-ITK order).
* ``spacing`` is in millimetres, in the same ``(z, y, x)`` order as the array.
* ``origin`` is the physical position of voxel ``[0, 0, 0]`` in LPS millimetres,
  written ``(x, y, z)`` exactly as ITK, SimpleITK and DICOM report it.
* ``direction`` is ITK's 3x3 direction matrix, row-major, whose column ``j`` is
  the LPS unit vector of index axis ``j`` in ITK's ``(i, j, k) = (x, y, z)``
  order. Identity means an axis-aligned LPS volume.

Keeping origin and direction in ITK's form means ``info`` prints what
SimpleITK, ITK-SNAP and 3D Slicer print, with no reinterpretation.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from napari_ssl_seg.errors import InputError

Matrix3 = tuple[tuple[float, float, float], tuple[float, float, float], tuple[float, float, float]]

IDENTITY_DIRECTION: Matrix3 = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))

# Spacing outside this range is almost certainly a broken header (metres
# written as millimetres, or a zeroed field), not a real scanner geometry.
MIN_SPACING_MM = 1e-4
MAX_SPACING_MM = 1e4
# An origin farther than 10 km from the scanner's isocentre is a corrupt header; it would also
# leave napari's float32 world coordinates without sub-millimetre precision.
MAX_ORIGIN_MM = 1e7


@dataclass(frozen=True, eq=False)
class Volume:
    """A 3D image or label map with its physical geometry."""

    array: np.ndarray
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    #: Any 3x3 (an array too) is accepted; it is stored as a tuple of tuples (``__post_init__``).
    direction: Matrix3 | np.ndarray = IDENTITY_DIRECTION
    source_format: str = "memory"
    modality: str | None = None
    label_names: dict[int, str] | None = None
    notes: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        object.__setattr__(self, "spacing", tuple(float(s) for s in self.spacing))
        object.__setattr__(self, "origin", tuple(float(o) for o in self.origin))
        matrix = np.asarray(self.direction, dtype=float).reshape(3, 3)
        object.__setattr__(self, "direction", tuple(tuple(float(v) for v in row) for row in matrix))

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(n) for n in self.array.shape)  # type: ignore[return-value]

    @property
    def direction_matrix(self) -> np.ndarray:
        return np.asarray(self.direction, dtype=float)

    def with_array(self, array: np.ndarray, **changes: Any) -> Volume:
        """Same geometry, another voxel array (a prediction, a label map)."""
        if tuple(array.shape) != self.shape:
            raise ValueError(f"array shape {array.shape} does not match volume shape {self.shape}")
        return replace(self, array=array, notes=(), **changes)

    def index_to_lps(self) -> np.ndarray:
        """4x4 affine from ITK index ``(x, y, z)`` to LPS millimetres."""
        affine = np.eye(4)
        affine[:3, :3] = self.direction_matrix @ np.diag(self.spacing[::-1])
        affine[:3, 3] = self.origin
        return affine

    def index_to_ras(self) -> np.ndarray:
        """4x4 affine from index ``(x, y, z)`` to RAS millimetres (NIfTI's convention)."""
        return np.diag([-1.0, -1.0, 1.0, 1.0]) @ self.index_to_lps()

    def napari_layer_kwargs(self) -> dict[str, Any]:
        """Layer ``scale``/``translate`` (or ``affine`` when oblique) in napari's z, y, x world.

        napari's world here is LPS with axes reversed to (z, y, x), so that
        points in the viewer read as scanner millimetres.
        """
        scale = list(self.spacing)
        translate = list(self.origin[::-1])
        if np.allclose(self.direction_matrix, np.eye(3), atol=1e-6):
            return {"scale": scale, "translate": translate}
        # The direction reversed to (z, y, x) order; napari's composite
        # transform applies scale first, then this affine (which carries the
        # origin), so world = R @ (spacing * index) + origin.
        reverse = np.eye(3)[::-1]
        rotation = reverse @ self.direction_matrix @ reverse
        affine = np.eye(4)
        affine[:3, :3] = rotation
        affine[:3, 3] = translate
        return {"scale": scale, "affine": affine}

    def value_range(self) -> tuple[float, float]:
        if self.array.size == 0:
            raise InputError("volume has no voxels")
        return float(np.min(self.array)), float(np.max(self.array))

    def geometry_dict(self) -> dict[str, Any]:
        """The ``info --json`` object: geometry plus dtype and value range."""
        low, high = self.value_range()
        return {
            "shape": list(self.shape),
            "spacing": list(self.spacing),
            "origin": list(self.origin),
            "direction": [v for row in self.direction for v in row],
            "dtype": str(self.array.dtype),
            "min": low,
            "max": high,
            "format": self.source_format,
            "modality": self.modality,
        }


def validate_volume(volume: Volume, *, name: str) -> Volume:
    """Reject volumes no model or annotator can use; ``name`` goes in the message."""
    array = volume.array
    if array.ndim != 3:
        raise InputError(f"{name}: expected a 3D volume, got {array.ndim}D with shape {tuple(array.shape)}")
    if min(array.shape) == 0:
        raise InputError(f"{name}: volume has an empty axis (shape {tuple(array.shape)})")
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_) or np.iscomplexobj(array):
        # complex is a NumPy "number", but no intensity window, model or label map means anything for it
        raise InputError(f"{name}: unsupported voxel type {array.dtype}")
    spacing = np.asarray(volume.spacing)
    if not np.all(np.isfinite(spacing)) or np.any(spacing < MIN_SPACING_MM) or np.any(spacing > MAX_SPACING_MM):
        raise InputError(
            f"{name}: implausible voxel spacing {tuple(spacing)} mm (expected {MIN_SPACING_MM} to {MAX_SPACING_MM} mm)"
        )
    if not np.all(np.isfinite(volume.origin)):
        raise InputError(f"{name}: origin is not finite: {volume.origin}")
    if np.max(np.abs(volume.origin)) > MAX_ORIGIN_MM:
        raise InputError(f"{name}: implausible origin {volume.origin} mm (beyond {MAX_ORIGIN_MM:.0e} mm)")
    direction = volume.direction_matrix
    if not np.all(np.isfinite(direction)) or abs(abs(np.linalg.det(direction)) - 1.0) > 1e-3:
        raise InputError(f"{name}: direction matrix is not orthonormal: {direction.tolist()}")
    if np.issubdtype(array.dtype, np.floating):
        # min/max propagate NaN and expose +-Inf, without a full-size boolean mask.
        low, high = float(np.min(array)), float(np.max(array))
        if not (np.isfinite(low) and np.isfinite(high)):
            raise InputError(f"{name}: volume contains NaN or infinite values")
    return volume


def geometry_mismatch(a: Volume, b: Volume, *, rtol: float = 1e-4, atol_mm: float = 1e-3) -> str | None:
    """Describe how two volumes' voxel grids differ, or ``None`` when they coincide."""
    if a.shape != b.shape:
        return f"shape {a.shape} vs {b.shape}"
    if not np.allclose(a.spacing, b.spacing, rtol=rtol, atol=atol_mm):
        return f"spacing {a.spacing} vs {b.spacing}"
    if not np.allclose(a.origin, b.origin, atol=max(atol_mm, rtol * max(a.spacing))):
        return f"origin {a.origin} vs {b.origin}"
    if not np.allclose(a.direction_matrix, b.direction_matrix, atol=1e-4):
        return f"direction {a.direction} vs {b.direction}"
    return None


# A header claiming more voxels than this is broken (or hostile): refuse it before any library
# allocates the buffer. 2**30 voxels is a 1024^3 volume, beyond any routine scanner output, and
# refusing early keeps a corrupt size field from exhausting the memory of a shared machine.
MAX_VOXELS = 2**30


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
