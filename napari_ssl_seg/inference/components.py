"""Keep each class's largest connected component: the post-processing a teacher's card may ask for.

A network that sees one patch at a time can label air outside the body as lung or a bright bowel loop
as vertebra, far from the structure. Such islands cost little Dice but dominate the Hausdorff distance
and look wrong in the overlay. As nnU-Net does, whether a class is cleaned this way is decided per
class from the run's own validation cases (:func:`choose_largest_component_classes`) and recorded in
the model card (``postprocessing.largest_component``), so ribs, which are many components, are left
alone while each lung is kept whole. The components themselves come from MONAI's
``KeepLargestConnectedComponent`` (26-connectivity: diagonal neighbours join, the most conservative
choice); removed voxels become background.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from monai.transforms import KeepLargestConnectedComponent

from napari_ssl_seg.networks.checkpoint import LARGEST_COMPONENT

__all__ = ["LARGEST_COMPONENT", "choose_largest_component_classes", "keep_largest_components"]


def keep_largest_components(label: np.ndarray, classes: Sequence[int]) -> np.ndarray:
    """``label`` with every class in ``classes`` reduced to its largest 26-connected component.

    Each class is decided on its own mask; other classes are untouched. Returns a new array of the
    same shape and dtype.
    """
    classes = [int(c) for c in classes]
    if not classes:
        return np.array(label, copy=True)
    transform = KeepLargestConnectedComponent(applied_labels=classes, is_onehot=False, independent=True)
    cleaned = transform(np.array(label, copy=True)[None])
    return np.asarray(cleaned[0], dtype=label.dtype)


def choose_largest_component_classes(
    raw: Sequence[Mapping[int, float]], cleaned: Sequence[Mapping[int, float]]
) -> list[int]:
    """The classes whose mean Dice over the cases is higher with only their largest component kept.

    ``raw[i]`` and ``cleaned[i]`` are case i's Dice per class without and with the clean-up. A tie
    keeps the class as predicted (nnU-Net's rule): a case with two true pieces of a class costs more
    than an island does, so without evidence nothing is removed.
    """
    if len(raw) != len(cleaned):
        raise ValueError(f"{len(raw)} raw and {len(cleaned)} cleaned cases")
    classes = sorted({int(c) for case in raw for c in case})
    chosen = []
    for label in classes:
        before = [case[label] for case in raw if label in case]
        after = [case[label] for case in cleaned if label in case]
        if before and len(after) == len(before) and float(np.mean(after)) > float(np.mean(before)):
            chosen.append(label)
    return chosen
