"""One anatomical orientation for every voxel a network sees, and the exact way back.

The same scan stored with its voxels in another order (LPS from a DICOM export, RAS from a NIfTI
tool, a sagittal acquisition) is the same patient: a network that works in storage order would see
a mirrored or transposed body and swap the lungs. So training, validation and prediction reorient
every volume to :data:`CANONICAL` first and map results back to the source grid afterwards.

The reorientation is a permutation and flips of the array axes (the closest axis-aligned frame for
oblique scans), never a resampling, so the round trip is exact. Orientation codes name, for ITK's
index axes ``(i, j, k) = (x, y, z)`` in that order, the patient direction each axis grows toward
(``"LPS"``: x toward the patient's left, y posterior, z superior; an identity ITK direction), as
ITK-SNAP, SimpleITK's ``DICOMOrient`` and 3D Slicer spell them.

nibabel's orientation tools do the axis arithmetic; MONAI's ``Orientation`` would need a MetaTensor
with a RAS affine for what is here a plain array with ITK geometry.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from nibabel import orientations

from napari_ssl_seg.errors import InputError
from napari_ssl_seg.io.volume import Volume

__all__ = ["CANONICAL", "Reorientation", "axis_codes", "check_orientation", "reorientation"]

#: The orientation networks trained by this package see (recorded in their model cards).
CANONICAL = "LPS"

# nibabel's labels are (negative end, positive end) per world axis; ITK's world is LPS.
_LPS_LABELS = (("R", "L"), ("A", "P"), ("I", "S"))
_PAIRS = {"L": "LR", "R": "LR", "P": "PA", "A": "PA", "S": "SI", "I": "SI"}


def check_orientation(code: Any, *, source: str = "orientation") -> str:
    """``code`` if it names three distinct patient axes (e.g. "LPS", "RAS", "ASL"), else InputError."""
    text = str(code).upper() if code is not None else ""
    if len(text) != 3 or any(c not in _PAIRS for c in text) or len({_PAIRS[c] for c in text}) != 3:
        raise InputError(f"{source} must be three letters, one of L/R, A/P, S/I each (e.g. LPS), got {code!r}")
    return text


_IDENTITY = np.array([[0, 1], [1, 1], [2, 1]], dtype=float)


def _orientation_of(direction: Any) -> np.ndarray:
    """nibabel's orientation array of an ITK direction (flat or 3x3): each index axis's LPS axis and sign."""
    affine = np.eye(4)
    affine[:3, :3] = np.asarray(direction, dtype=float).reshape(3, 3)
    return orientations.io_orientation(affine)


def axis_codes(direction: Any) -> str:
    """The orientation code of an ITK direction matrix (closest axes for an oblique one)."""
    return "".join(orientations.ornt2axcodes(_orientation_of(direction), labels=_LPS_LABELS))


@dataclass(frozen=True)
class Reorientation:
    """Takes ``[z, y, x]`` arrays between a volume's storage order and a target orientation."""

    #: None: voxel order, i.e. no reorientation (a model card from before orientations were recorded).
    target: str | None
    shape: tuple[int, int, int]
    _forward: np.ndarray
    _backward: np.ndarray

    @property
    def is_identity(self) -> bool:
        return bool(np.array_equal(self._forward, _IDENTITY))

    def _apply(self, array: np.ndarray, ornt: np.ndarray) -> np.ndarray:
        if np.array_equal(ornt, _IDENTITY):
            return array
        # nibabel works on (x, y, z); the package's arrays are (z, y, x).
        moved = orientations.apply_orientation(np.asarray(array).transpose(2, 1, 0), ornt)
        return np.ascontiguousarray(moved.transpose(2, 1, 0))

    def to_target(self, array: np.ndarray) -> np.ndarray:
        """A source-grid array in the target orientation."""
        if tuple(array.shape) != self.shape:
            raise ValueError(f"array shape {array.shape} is not the source shape {self.shape}")
        return self._apply(array, self._forward)

    def to_source(self, array: np.ndarray) -> np.ndarray:
        """A target-orientation array back on the source grid, voxel for voxel."""
        return self._apply(array, self._backward)

    def target_spacing(self, spacing: tuple[float, float, float]) -> tuple[float, float, float]:
        """Source ``(z, y, x)`` spacing as the target's axes carry it."""
        xyz = np.asarray(spacing, dtype=float)[::-1]
        moved = np.empty(3)
        for source_axis, (target_axis, _flip) in enumerate(self._forward):
            moved[int(target_axis)] = xyz[source_axis]
        return tuple(float(v) for v in moved[::-1])  # type: ignore[return-value]

    def target_shape(self) -> tuple[int, int, int]:
        """The source shape as the target's axes carry it (without touching an array)."""
        xyz = self.shape[::-1]
        moved = [0, 0, 0]
        for source_axis, (target_axis, _flip) in enumerate(self._forward):
            moved[int(target_axis)] = int(xyz[source_axis])
        return (moved[2], moved[1], moved[0])

    def volume_to_target(self, volume: Volume) -> Volume:
        """The whole volume in the target orientation, with the geometry that keeps every voxel in place."""
        if self.is_identity:
            return volume
        moved = volume.index_to_lps() @ orientations.inv_ornt_aff(self._forward, self.shape[::-1])
        new_spacing_xyz = np.linalg.norm(moved[:3, :3], axis=0)
        return replace(
            volume,
            array=self.to_target(volume.array),
            spacing=tuple(new_spacing_xyz[::-1]),
            origin=tuple(moved[:3, 3]),
            direction=moved[:3, :3] / new_spacing_xyz,
        )


def reorientation(direction: Any, shape: tuple[int, int, int], target: str | None = CANONICAL) -> Reorientation:
    """How to take a ``[z, y, x]`` array of ``shape`` stored with ITK ``direction`` to ``target``."""
    if target is None:
        return Reorientation(None, (int(shape[0]), int(shape[1]), int(shape[2])), _IDENTITY, _IDENTITY)
    source_ornt = _orientation_of(direction)
    target = check_orientation(target)
    target_ornt = orientations.axcodes2ornt(tuple(target), labels=_LPS_LABELS)
    forward = orientations.ornt_transform(source_ornt, target_ornt)
    backward = orientations.ornt_transform(target_ornt, source_ornt)
    return Reorientation(target, (int(shape[0]), int(shape[1]), int(shape[2])), forward, backward)
