"""Losses shared by the methods: supervised Dice (+ cross-entropy) and softmax consistency terms.

Conventions (UA-MT lineage, which MT, UA-MT and UG-CEMT follow):

* Targets are class ids of shape (N, z, y, x), int64; logits are (N, C, z, y, x).
* Dice is MONAI's soft Dice on the softmax with one-hot targets, computed over the whole batch as
  one volume (``batch=True``: the lineage's ``dice_loss`` sums intersections over the batch, so a
  patch without foreground does not produce a 0/0 term of its own), smoothing 1e-5 as there.
* The supervised loss of the lineage is ``0.5 * (CE + Dice)`` (UA-MT's ``supervised_loss``);
  :func:`dice_ce_loss` has the two weights as arguments. ``include_background=False`` restricts
  Dice to foreground classes, as the lineage's binary Dice on class 1 does (CE always covers all
  classes). UCMT's released ``DSCLoss`` averages the Dice of every class, background included.
* Consistency is the squared difference of softmax probabilities averaged over classes and voxels
  (the lineage's ``softmax_mse_loss`` followed by ``mean``). The masked variant averages over
  selected voxels only (UA-MT: ``sum(mask * d) / (C * sum(mask))``); the weighted variant keeps
  the plain average of ``w * d`` (UG-CEMT's expectation ``E[U(x) ||p_s - p_t||^2]``, with the
  squared norm taken as a class average so the lineage's weights carry over; see ugcemt.py).
"""

from __future__ import annotations

from functools import cache

import torch
import torch.nn.functional as F
from monai.losses import DiceCELoss, DiceLoss

__all__ = [
    "cross_entropy_loss",
    "dice_ce_loss",
    "dice_loss",
    "masked_softmax_mse",
    "softmax_mse",
    "weighted_softmax_mse",
]

_EPS = 1e-16


@cache
def _dice(include_background: bool) -> DiceLoss:
    return DiceLoss(include_background=include_background, to_onehot_y=True, softmax=True, batch=True)


@cache
def _dice_ce(include_background: bool, dice_weight: float, ce_weight: float) -> DiceCELoss:
    return DiceCELoss(
        include_background=include_background,
        to_onehot_y=True,
        softmax=True,
        batch=True,
        lambda_dice=dice_weight,
        lambda_ce=ce_weight,
    )


def _check(logits: torch.Tensor, target: torch.Tensor) -> None:
    if logits.ndim != target.ndim + 1 or logits.shape[0] != target.shape[0] or logits.shape[2:] != target.shape[1:]:
        raise ValueError(f"logits {tuple(logits.shape)} and class-id target {tuple(target.shape)} do not match")


def _include(logits: torch.Tensor, include_background: bool) -> bool:
    # With one class there is no foreground channel: MONAI would warn and return 0, so keep it.
    return include_background or logits.shape[1] == 1


def dice_loss(logits: torch.Tensor, target: torch.Tensor, *, include_background: bool = True) -> torch.Tensor:
    """Soft Dice loss of ``softmax(logits)`` against class ids ``target`` (MONAI ``DiceLoss``)."""
    _check(logits, target)
    return _dice(_include(logits, include_background))(logits.float(), target.unsqueeze(1).long())


def dice_ce_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    dice_weight: float = 0.5,
    ce_weight: float = 0.5,
    include_background: bool = False,
) -> torch.Tensor:
    """``dice_weight * Dice + ce_weight * CE`` (MONAI ``DiceCELoss``); defaults give UA-MT's 0.5 (CE + Dice)."""
    _check(logits, target)
    return _dice_ce(_include(logits, include_background), float(dice_weight), float(ce_weight))(
        logits.float(), target.unsqueeze(1).long()
    )


def cross_entropy_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Voxel-mean cross-entropy against class ids (hard pseudo-labels in CPS)."""
    _check(logits, target)
    return F.cross_entropy(logits.float(), target.long())


def _squared_difference(student_logits: torch.Tensor, teacher_probabilities: torch.Tensor) -> torch.Tensor:
    if student_logits.shape != teacher_probabilities.shape:
        raise ValueError(
            f"student logits {tuple(student_logits.shape)} and teacher probabilities "
            f"{tuple(teacher_probabilities.shape)} differ"
        )
    # The target is a target: no gradient ever flows into the teacher's side.
    return (torch.softmax(student_logits.float(), dim=1) - teacher_probabilities.detach().float()) ** 2


def softmax_mse(student_logits: torch.Tensor, teacher_probabilities: torch.Tensor) -> torch.Tensor:
    """Mean over classes and voxels of (softmax(student) - teacher)^2 (Mean Teacher's consistency)."""
    return _squared_difference(student_logits, teacher_probabilities).mean()


def masked_softmax_mse(
    student_logits: torch.Tensor, teacher_probabilities: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """The squared difference averaged over the voxels where ``mask`` (N, z, y, x) is set (UA-MT).

    Returns 0 (with a graph) when no voxel is selected, as UA-MT's ``+ 1e-16`` denominator does.
    """
    difference = _squared_difference(student_logits, teacher_probabilities)
    mask = mask.to(difference.dtype).unsqueeze(1)
    if mask.shape[2:] != difference.shape[2:] or mask.shape[0] != difference.shape[0]:
        raise ValueError(f"mask {tuple(mask.shape)} does not fit probabilities {tuple(difference.shape)}")
    classes = difference.shape[1]
    return (mask * difference).sum() / (classes * mask.sum() + _EPS)


def weighted_softmax_mse(
    student_logits: torch.Tensor, teacher_probabilities: torch.Tensor, weight: torch.Tensor
) -> torch.Tensor:
    """Mean over classes and voxels of ``weight * (softmax(student) - teacher)^2`` (UG-CEMT's Eq. 7).

    ``weight`` (N, z, y, x) is a per-voxel weight (e.g. exp(-entropy)); it gets no gradient.
    """
    difference = _squared_difference(student_logits, teacher_probabilities)
    weight = weight.detach().to(difference.dtype).unsqueeze(1)
    if weight.shape[2:] != difference.shape[2:] or weight.shape[0] != difference.shape[0]:
        raise ValueError(f"weight {tuple(weight.shape)} does not fit probabilities {tuple(difference.shape)}")
    return (weight * difference).mean()
