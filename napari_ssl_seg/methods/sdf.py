"""Signed distance maps of label masks and their smooth inverse (UG-MCL, dual-task consistency).

Convention (paper 002, Eq. 1): negative inside the object, zero on its boundary, positive outside;
normalised to [-1, 1] per sample and class, inside by the largest inside distance and outside by
the largest outside distance (the dual-task-consistency lineage's normalisation), so the map fits
a ``tanh`` head. The inverse transform is ``sigmoid(-k * sdf)`` with a large k (1500 in that
lineage): about 1 inside, 0 outside, 0.5 on the boundary.

Decisions the paper leaves open:

* **Boundary** = foreground voxels with a background voxel among their 6 neighbours (the inner
  boundary). The patch edge is not a boundary: an object cut by the crop continues outside it,
  and the Euclidean distance transform measures distances inside the patch only, consistently.
* **Distances are in voxels**, not millimetres: a batch carries no spacing, and the per-sample
  normalisation removes the overall scale anyway (anisotropy remains, as in the lineage's code).
* **Empty and full masks**, which the lineage's code leaves at 0 everywhere (the inverse transform
  would then read 0.5, "undecided"): an absent class is +1 everywhere (all outside, inverse 0) and
  a class filling the patch is -1 everywhere (all inside, inverse 1), so the SDF and its inverse
  always agree with the mask.
* **Multi-class**: one map per foreground class (one-vs-rest), channels 1 .. C-1 of the label.

* **Where distances are measured.** In training they are measured once per labeled case, on its
  whole label map (:func:`signed_distances`), and cropped and flipped with each patch; each patch
  then normalises its crop (:func:`normalise_sdf`). A boundary outside the patch is then where it
  really is, which a transform of the patch alone cannot see. :func:`sdf_targets` measures inside
  a patch (batches built by hand, tests); the two agree wherever the nearest boundary lies in the
  patch, and exactly for an object that the patch holds whole with a margin.

Cost: SciPy's exact transform runs on the CPU, about 0.7 s per 112x112x80 sample and foreground
class on one core (measured). Drawn per patch, the 14 maps of a ``quick`` UG-MCL batch (2
patches of 16x64x64, 7 classes) took 0.23 s on one thread and 0.13 s on two, most of a ``quick``
iteration; measured once per case, they cost that once per run, and a patch only its crop and a
division. The case's maps are kept as float16 (integer distances exact to 2048 voxels, the rest
to 5e-4 relative): (classes - 1) x 2 bytes per voxel of each labeled training case.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np
import torch
from numpy.typing import DTypeLike
from scipy import ndimage

__all__ = ["mask_sdf", "normalise_sdf", "sdf_targets", "sdf_to_probability", "signed_distances"]

_SIX_NEIGHBOURS = ndimage.generate_binary_structure(3, 1)

Item = TypeVar("Item")


def _signed_distance(mask: np.ndarray) -> np.ndarray:
    """Voxel distances of one binary mask: outside > 0 (>= 1), boundary 0, inside < 0; float32.

    A mask without a voxel is +1 everywhere (all outside), one of voxels only -1 (all inside): any
    crop of them normalises to the +1 / -1 of an absent or filling class.
    """
    if not mask.any():
        return np.ones(mask.shape, dtype=np.float32)
    if mask.all():
        return -np.ones(mask.shape, dtype=np.float32)
    distances = ndimage.distance_transform_edt(~mask) - ndimage.distance_transform_edt(mask)
    eroded = ndimage.binary_erosion(mask, structure=_SIX_NEIGHBOURS, border_value=1)
    distances[mask & ~eroded] = 0.0
    return distances.astype(np.float32)


def _threaded(function: Callable[[Item], np.ndarray], items: Sequence[Item]) -> list[np.ndarray]:
    workers = max(1, min(len(items), torch.get_num_threads()))
    if workers == 1:
        return [function(item) for item in items]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sdf") as pool:
        return list(pool.map(function, items))


def signed_distances(label: np.ndarray, num_classes: int, dtype: DTypeLike = np.float32) -> np.ndarray:
    """Unnormalised signed voxel distances of each foreground class of a 3D label map: (C-1, z, y, x).

    Negative inside, 0 on the inner boundary, positive outside (see :func:`_signed_distance`), in
    ``dtype``. Normalise a crop of it with :func:`normalise_sdf`. Each class's mask and float32
    map exist only while its own transform runs, so a large case never holds all of them at once.
    """
    label = np.asarray(label)
    if label.ndim != 3:
        raise ValueError(f"signed_distances expects a 3D label map, got shape {label.shape}")

    def one_class(value: int) -> np.ndarray:
        return _signed_distance(label == value).astype(dtype, copy=False)

    return np.stack(_threaded(one_class, range(1, num_classes)))


def normalise_sdf(distances: torch.Tensor) -> torch.Tensor:
    """(N, K, z, y, x) signed distances -> SDF in [-1, 1] per sample and class (float32).

    Outside divided by the largest outside distance in the crop, inside by the largest inside one;
    a crop with no voxel inside (> 0 everywhere) is +1, one with no voxel outside (<= 0) is -1.
    """
    distances = distances.float()
    spatial = tuple(range(2, distances.ndim))
    outside = distances.clamp(min=0)
    inside = (-distances).clamp(min=0)
    largest_outside = outside.amax(dim=spatial, keepdim=True)
    largest_inside = inside.amax(dim=spatial, keepdim=True)
    # A class whose voxels in the crop are all boundary has no inside distance: its map is 0 there.
    sdf = outside / largest_outside.clamp(min=1e-6) - inside / largest_inside.clamp(min=1e-6)
    sdf = torch.where(distances.amin(dim=spatial, keepdim=True) > 0, torch.ones_like(sdf), sdf)
    return torch.where(largest_outside == 0, -torch.ones_like(sdf), sdf)


def mask_sdf(mask: np.ndarray) -> np.ndarray:
    """Normalised signed distance map (float32, same shape) of one binary 3D ``mask``."""
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 3:
        raise ValueError(f"mask_sdf expects a 3D mask, got shape {mask.shape}")
    return normalise_sdf(torch.from_numpy(_signed_distance(mask))[None, None])[0, 0].numpy()


def sdf_targets(target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """SDF of each foreground class, distances measured inside each patch: class ids (N, z, y, x) ->
    (N, num_classes - 1, z, y, x) float.

    Computed on the CPU with SciPy's exact Euclidean distance transform (no gradient is needed:
    the labels are constants); returned on ``target``'s device.
    """
    if target.ndim != 4:
        raise ValueError(f"sdf_targets expects class ids (N, z, y, x), got shape {tuple(target.shape)}")
    labels = target.detach().to("cpu").numpy()
    masks = [labels[n] == c for n in range(labels.shape[0]) for c in range(1, num_classes)]
    stacked = np.stack(_threaded(_signed_distance, masks)).reshape(labels.shape[0], num_classes - 1, *labels.shape[1:])
    return normalise_sdf(torch.from_numpy(stacked)).to(target.device)


def sdf_to_probability(sdf: torch.Tensor, k: float = 1500.0) -> torch.Tensor:
    """The smooth inverse transform ``sigmoid(-k * sdf)``: foreground probability from an SDF."""
    return torch.sigmoid(-k * sdf.float())
