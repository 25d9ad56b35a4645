"""Prototype-guided contrastive learning (papers 003 and 004).

Both papers split voxels into *reliable* and *uncertain* ones, average the features of reliable
voxels per class into a prototype c_k, pull each uncertain voxel's feature towards its class
prototype (cosine similarity over a temperature tau), and push prototypes of different classes
apart. What decides reliability and where the class of a voxel comes from differs per paper and
lives in the methods; this module is the shared loss:

* **pull** = cross-entropy of ``cos(v, c_j) / tau`` over the present prototypes j, with the
  voxel's class as the target: the InfoNCE form. Paper 003's Eq. (5) writes the denominator over
  j != k only, which has no lower bound (with two classes it is ``-(s_k - s_j) / tau``, and the
  loss falls without limit as the features separate); the standard form used here is >= 0 and
  has the same gradient direction.
* **separation** = mean cosine similarity of distinct prototype pairs (minimised: pushed apart).
* **Gradients**: the pull term sees detached prototypes (uncertain voxels move towards the
  reliable ones, never the reverse); the separation term reaches the reliable features through
  the prototypes.
* Classes without a reliable voxel in the batch have no prototype; their uncertain voxels are
  skipped. With fewer than two prototypes there is nothing to contrast and the loss is 0.
* Feature levels coarser than the label are matched by nearest-neighbour resampling of the
  class map and the reliability mask (:func:`networks_prototype_loss`), the mean over levels
  being the multi-level loss.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

_ABSENT_LOGIT = -1.0e4

__all__ = ["class_prototypes", "networks_prototype_loss", "prototype_contrastive_loss", "resize_nearest"]


def class_prototypes(
    features: torch.Tensor, labels: torch.Tensor, num_classes: int, weights: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean feature per class: features (M, D), labels (M,) -> (prototypes (K, D), present (K,) bool).

    ``weights`` (M,) selects the rows that count (a bool mask, or 0/1); rows of absent classes are zero.
    """
    if features.ndim != 2 or labels.shape != features.shape[:1]:
        raise ValueError(f"features {tuple(features.shape)} and labels {tuple(labels.shape)} do not match")
    one_hot = F.one_hot(labels.long(), num_classes).to(features.dtype)  # (M, K)
    if weights is not None:
        one_hot = one_hot * weights.to(features.dtype).unsqueeze(1)
    counts = one_hot.sum(dim=0)
    sums = one_hot.t() @ features
    prototypes = sums / counts.clamp_min(1.0).unsqueeze(1)
    return prototypes, counts > 0


def prototype_contrastive_loss(
    features: torch.Tensor,
    labels: torch.Tensor,
    reliable: torch.Tensor,
    num_classes: int,
    *,
    temperature: float = 0.1,
    separation_weight: float = 1.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Pull + separation loss of one feature map; see the module docstring.

    ``features`` (N, D, z, y, x); ``labels`` (N, z, y, x) class ids; ``reliable`` (N, z, y, x) bool.
    Returns the loss (a graph-connected 0 when there is nothing to contrast) and its parts.
    """
    if features.shape[0] != labels.shape[0] or features.shape[2:] != labels.shape[1:]:
        raise ValueError(f"features {tuple(features.shape)} and labels {tuple(labels.shape)} do not match")
    if reliable.shape != labels.shape:
        raise ValueError(f"reliable mask {tuple(reliable.shape)} and labels {tuple(labels.shape)} differ")
    flat = features.float().movedim(1, -1).reshape(-1, features.shape[1])
    labels, reliable = labels.reshape(-1).long(), reliable.reshape(-1).bool()
    # Masks and weights instead of boolean indexing (flat[reliable]) and `if present.sum() < 2`:
    # data-dependent shapes and branches make the host wait for the device on every step. The
    # sums below equal the indexed form; with fewer than two prototypes both terms are exactly 0.
    prototypes, present = class_prototypes(flat, labels, num_classes, weights=reliable)
    normalised = F.normalize(prototypes, dim=1)  # rows of absent classes stay 0
    uncertain = (~reliable & present[labels]).float()
    # Absent prototypes get a logit no cosine reaches, so the softmax is over the present ones only;
    # finite rather than -inf, so voxels left out by `uncertain` carry no NaN into the backward pass.
    # Classes along the first axis, voxels along the second: PyTorch's CPU (log-)softmax over a
    # short innermost axis (M x K) is about 9x slower than over K rows of M
    # (benchmarks/cpu_reductions.py). The temperature divides the K prototypes, not the K x M similarities.
    similarity = (normalised.detach() / temperature) @ F.normalize(flat, dim=1).t()
    similarity = similarity.masked_fill(~present[:, None], _ABSENT_LOGIT)
    per_voxel = F.cross_entropy(similarity[None], labels[None], reduction="none")[0]
    pull = (per_voxel * uncertain).sum() / uncertain.sum().clamp_min(1.0)
    pairs = present[:, None] & present[None, :] & ~torch.eye(num_classes, dtype=torch.bool, device=present.device)
    pairwise = normalised @ normalised.t()
    separation = (pairwise * pairs).sum() / pairs.sum().clamp_min(1)
    loss = pull + separation_weight * separation
    logs = {
        "reliable_fraction": reliable.float().mean(),
        "prototypes": present.sum().float(),
        "pull": pull.detach(),
        "separation": separation.detach(),
    }
    return loss, logs


def resize_nearest(tensor: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Nearest-neighbour resampling of an integer or boolean (N, z, y, x) map to ``size``."""
    if tuple(tensor.shape[1:]) == tuple(size):
        return tensor
    resized = F.interpolate(tensor.unsqueeze(1).float(), size=tuple(size), mode="nearest").squeeze(1)
    return resized.to(tensor.dtype)


def networks_prototype_loss(
    networks_levels: Sequence[Sequence[torch.Tensor]],
    labels: torch.Tensor,
    reliable: torch.Tensor,
    num_classes: int,
    temperature: float,
    separation_weight: float,
) -> torch.Tensor:
    """Sum over networks of the mean over each network's feature levels of :func:`prototype_contrastive_loss`.

    ``networks_levels`` holds, per network, its feature maps (any resolutions; ``labels`` and
    ``reliable`` are resampled to each). Papers 003 and 004 both expose ``temperature`` and
    ``separation`` (``separation_weight``) as settings under those names.
    """
    if not networks_levels or not all(networks_levels):
        raise ValueError("networks_prototype_loss needs at least one feature level per network")
    per_network = []
    for levels in networks_levels:
        losses = [
            prototype_contrastive_loss(
                level,
                resize_nearest(labels, level.shape[2:]),
                resize_nearest(reliable, level.shape[2:]),
                num_classes,
                temperature=temperature,
                separation_weight=separation_weight,
            )[0]
            for level in levels
        ]
        # sum(rest, first) rather than sum(all): no 0 + ... term, so one level is exactly its loss.
        per_network.append(sum(losses[1:], losses[0]) / len(losses))
    return sum(per_network[1:], per_network[0])
