"""The one Dice of the project: per class, per case, and the rule for empty masks, stated once.

Every place that scores a segmentation uses it: the training loop's checkpoint choice (and so the
model card's ``validation_dice``), the promotion of a retrained teacher, ``evaluate``, and the
labeling simulation. Before, the loop used MONAI's ``DiceMetric(ignore_empty=True)``, which drops a
class absent from the reference, while the promotion scored it 0: a stray class scored 1.0 in one
and 0.5 in the other, so the loop and the promotion could disagree on which teacher is better.

==========================  =====
class in this case          Dice
==========================  =====
in reference and prediction 2|P∩R| / (|P| + |R|)
only in the reference       0   (missed)
only in the prediction      0   (every voxel a false positive)
in neither                  1   (nothing to find, nothing found)
==========================  =====

A case's Dice is the mean over the scored classes. Computed from one confusion count over the
voxels (``np.bincount``) rather than MONAI's ``compute_dice``: the one-hot masks MONAI needs cost a
pass and a volume-sized mask per class, and the counts give every class at once, with the empty
cases above decided from the same counts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["case_dice", "class_dice", "confusion_counts"]


def confusion_counts(prediction: np.ndarray, reference: np.ndarray, num_labels: int) -> np.ndarray:
    """``counts[p, r]``: voxels predicted ``p`` whose reference is ``r`` (labels ``0..num_labels-1``)."""
    predicted = np.asarray(prediction).astype(np.int64, copy=False).ravel()
    actual = np.asarray(reference).astype(np.int64, copy=False).ravel()
    if predicted.shape != actual.shape:
        raise ValueError(f"prediction has {predicted.size} voxels, the reference {actual.size}")
    if predicted.size and (min(predicted.min(), actual.min()) < 0 or max(predicted.max(), actual.max()) >= num_labels):
        raise ValueError(f"labels must lie in 0..{num_labels - 1}")
    flat = np.bincount(predicted * num_labels + actual, minlength=num_labels * num_labels)
    return flat.reshape(num_labels, num_labels)


def class_dice(prediction: np.ndarray, reference: np.ndarray, classes: Sequence[int]) -> dict[int, float]:
    """Dice of each class in ``classes``, with the empty-mask rule of the module docstring."""
    classes = [int(label) for label in classes]
    if not classes:
        return {}
    top = max(int(np.max(prediction, initial=0)), int(np.max(reference, initial=0)), *classes) + 1
    counts = confusion_counts(prediction, reference, top)
    predicted, actual, both = counts.sum(axis=1), counts.sum(axis=0), np.diag(counts)
    result = {}
    for label in classes:
        total = int(predicted[label] + actual[label])
        result[label] = 1.0 if total == 0 else 2.0 * float(both[label]) / total
    return result


def case_dice(per_class: Mapping[int, float]) -> float:
    """The case's Dice: the mean over its scored classes (0 when no class was scored)."""
    return float(np.mean(list(per_class.values()))) if per_class else 0.0
