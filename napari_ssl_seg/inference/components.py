"""Keep each class's largest connected component: the post-processing a teacher's card may ask for.

A network that sees one patch at a time can label air outside the body as lung or a bright bowel loop
as vertebra, far from the structure. Such islands cost little Dice but dominate the Hausdorff distance
and look wrong in the overlay. As nnU-Net does, whether a class is cleaned this way is decided per
class from the run's own validation cases (:func:`choose_largest_component_classes`) and recorded in
the model card (``postprocessing.largest_component``), so ribs, which are many components, are left
alone while each lung is kept whole.

Where the validation cases cannot tell (the network left no island on them), the reference labels
decide: a class drawn as one piece in every validation case is cleaned (:func:`one_piece_classes`).
On the real chest CTs of two other patients the right lung came in 27-72 pieces, while the cohort's
validation cases, deformations of one patient, showed it none; nnU-Net's strict rule alone left it
scattered. The components themselves come from MONAI's ``KeepLargestConnectedComponent``
(26-connectivity: diagonal neighbours join, the most conservative choice); removed voxels become
background.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence

import numpy as np
from monai.transforms import KeepLargestConnectedComponent

from napari_ssl_seg.networks.checkpoint import LARGEST_COMPONENT

__all__ = [
    "LARGEST_COMPONENT",
    "choose_largest_component_classes",
    "keep_largest_components",
    "one_piece_classes",
]


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


#: A class counts as drawn in one piece when its largest piece holds this share of its voxels. Not 1.0:
#: resampling a reference to 10 mm slices leaves specks (the cohort's lungs, vertebral columns and tissue
#: keep 97.8-100 % in their largest piece, in up to 6 pieces), while a class of many true pieces is far
#: below it (the ribs: 27-62 %).
ONE_PIECE_SHARE = 0.95


def one_piece_classes(labels: Iterable[np.ndarray], classes: Sequence[int], share: float = ONE_PIECE_SHARE) -> set[int]:
    """The classes whose largest piece holds ``share`` of them in every label holding them.

    Pieces as :func:`keep_largest_components` sees them (26-connected), so the rule and the clean-up
    agree on what a piece is. A class absent from every label is not one piece: there is no evidence.
    """
    seen: set[int] = set()
    split: set[int] = set()
    for label in labels:
        label = np.asarray(label)
        largest = keep_largest_components(label, classes)
        for value in classes:
            total = int(np.count_nonzero(label == value))
            if total == 0:
                continue
            seen.add(int(value))
            if np.count_nonzero(largest == value) < share * total:
                split.add(int(value))
    return seen - split


def choose_largest_component_classes(
    raw: Sequence[Mapping[int, float]],
    cleaned: Sequence[Mapping[int, float]],
    one_piece: Collection[int] = (),
) -> list[int]:
    """The classes whose mean Dice over the cases is higher with only their largest component kept.

    ``raw[i]`` and ``cleaned[i]`` are case i's Dice per class without and with the clean-up. A class
    whose Dice falls is never cleaned: a case with two true pieces of a class costs more than an island
    does. A tie (nothing removed on these cases) keeps the class as predicted, as nnU-Net does, unless
    the class is in ``one_piece`` (:func:`one_piece_classes` of the reference labels): then the
    annotators' own drawing says that a second piece of any size is an error.
    """
    if len(raw) != len(cleaned):
        raise ValueError(f"{len(raw)} raw and {len(cleaned)} cleaned cases")
    classes = sorted({int(c) for case in raw for c in case})
    chosen = []
    for label in classes:
        before = [case[label] for case in raw if label in case]
        after = [case[label] for case in cleaned if label in case]
        if not before or len(after) != len(before):
            continue
        gain = float(np.mean(after)) - float(np.mean(before))
        if gain > 0 or (gain == 0 and label in one_piece):
            chosen.append(label)
    return chosen
