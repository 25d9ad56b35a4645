"""Hard pseudo-labels and the masked losses that train on them (papers 003 and 004).

:mod:`.losses` covers whole-volume losses; pseudo-label methods supervise only selected voxels
(confident ones, low-entropy ones), so these variants take a voxel mask (N, z, y, x):

* :func:`masked_cross_entropy`: the mean cross-entropy over the selected voxels (the "ignore
  index" CE of the papers), optionally weighted per voxel;
* :func:`masked_dice_loss`: soft Dice of the softmax against the one-hot pseudo-label, with both
  restricted to the selected voxels and summed over the batch (the lineage's ``batch=True`` Dice),
  foreground classes only as :func:`~.losses.dice_ce_loss` defaults to.

With no voxel selected both return a graph-connected 0 (never NaN), so an early iteration where
nothing is confident simply contributes nothing.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["confident_pseudo_labels", "masked_cross_entropy", "masked_dice_loss", "masked_mean"]

_SMOOTH = 1e-5


def confident_pseudo_labels(probabilities: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(argmax class ids (N, z, y, x), mask of voxels whose largest probability exceeds ``threshold``)."""
    confidence, labels = probabilities.detach().max(dim=1)
    return labels, confidence > threshold


def _check(logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> None:
    if target.shape != logits.shape[:1] + logits.shape[2:] or mask.shape != target.shape:
        raise ValueError(
            f"logits {tuple(logits.shape)}, target {tuple(target.shape)} and mask {tuple(mask.shape)} do not match"
        )


def masked_mean(per_voxel: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """sum(mask * per_voxel) / sum(mask), 0 for an empty mask: one per-voxel loss under several masks."""
    if mask.shape != per_voxel.shape:
        raise ValueError(f"per-voxel loss {tuple(per_voxel.shape)} and mask {tuple(mask.shape)} do not match")
    selected = mask.to(per_voxel.dtype)
    return (selected * per_voxel).sum() / selected.sum().clamp_min(1.0)


def masked_cross_entropy(logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """sum(mask * CE) / sum(mask): cross-entropy averaged over the selected voxels."""
    _check(logits, target, mask)
    return masked_mean(F.cross_entropy(logits.float(), target.long(), reduction="none"), mask)


def masked_dice_loss(logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Soft Dice loss over the selected voxels (batch-wise, averaged over the foreground classes)."""
    _check(logits, target, mask)
    probabilities = torch.softmax(logits.float(), dim=1)
    classes = probabilities.shape[1]
    one_hot = F.one_hot(target.long(), classes).movedim(-1, 1).to(probabilities.dtype)
    selected = mask.to(probabilities.dtype).unsqueeze(1)
    if classes > 1:
        probabilities, one_hot = probabilities[:, 1:], one_hot[:, 1:]
    dims = (0, 2, 3, 4)
    intersection = (selected * probabilities * one_hot).sum(dim=dims)
    denominator = (selected * probabilities).sum(dim=dims) + (selected * one_hot).sum(dim=dims)
    # An empty mask needs no branch (a branch on mask.any() waits for the device): every sum is 0,
    # so each class's Dice is (0 + smooth) / (0 + smooth) and the loss is exactly 0, gradients too.
    dice = 1.0 - (2.0 * intersection + _SMOOTH) / (denominator + _SMOOTH)
    return dice.mean()
