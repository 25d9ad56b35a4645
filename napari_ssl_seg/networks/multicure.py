"""Paper 003's MultiCURE module and the auxiliary network that carries it.

**MultiCURE** (multi-branch contextual uncertainty reduction), on a feature map z with d channels
and a binary uncertainty map U (1 = uncertain voxel):

* branch 1: 3x3x3 conv + BN + ReLU; branch 2: 5x5x5 conv + BN + ReLU;
* branch 3: 3x3x3 *deformable* conv + BN + ReLU (:class:`~.deformable.DeformConv3d`, built on
  ``grid_sample`` because PyTorch has no 3D deformable conv), plus the uncertainty attention map;
* selective-kernel fusion: concatenate the branches (3d channels), global average pool, one
  linear reduction to 3d / r (+ ReLU), one linear layer per branch back to d, softmax across the
  three branches, and the branch outputs summed with those weights.

Decisions the paper leaves open:

* **The attention map** is U itself, broadcast over the d channels and scaled by a learnable
  per-channel weight that starts at 1 (so at initialisation it is the paper's plain sum; the
  network may learn how strongly each channel marks uncertain voxels).
* **r** = 16 as in selective-kernel networks, with at least 8 hidden units (3d / 16 is below 1
  at the CPU widths). No BatchNorm in the fusion MLP: it would fail on a batch of one.
* **Where**: on the auxiliary network's last decoder level (full resolution), because U is a
  voxel map of the predictive network's output; the refined features go to the classifier.

**The auxiliary network** (:class:`CureResNet3d`, network name ``"resnet3d_multicure"``) is the
:class:`~.resnet3d.ResNet3dSegmenter` with MultiCURE between its decoder and its classifier.
``forward(x, uncertainty)`` takes U from the predictive network during training. A deployed
auxiliary network has no predictive network beside it, so ``forward(x)`` without U builds its
own: the classifier on the un-refined features, thresholded at the card's
``uncertainty_threshold`` (a choice of this project; the paper describes training only).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from monai.networks.blocks import Convolution
from torch import nn

from napari_ssl_seg.errors import InputError
from napari_ssl_seg.networks.deformable import DeformConv3d
from napari_ssl_seg.networks.resnet3d import RESNET_KEYS, ResNet3dSegmenter, check_keys

__all__ = ["CureResNet3d", "MultiCURE", "build_cure_resnet3d", "confidence_uncertainty_map"]


def confidence_uncertainty_map(logits: torch.Tensor, threshold: float) -> torch.Tensor:
    """Binary map (N, 1, z, y, x): 1 where the largest softmax probability is below ``threshold``."""
    confidence = torch.softmax(logits.detach().float(), dim=1).amax(dim=1, keepdim=True)
    return (confidence < threshold).to(logits.dtype)


class MultiCURE(nn.Module):
    """The MultiCURE block; see the module docstring. ``forward(z, uncertainty)`` keeps z's shape."""

    def __init__(self, channels: int, reduction: int = 16, min_hidden: int = 8) -> None:
        super().__init__()
        self.branch3 = Convolution(3, channels, channels, kernel_size=3, padding=1, norm="BATCH", act="RELU")
        self.branch5 = Convolution(3, channels, channels, kernel_size=5, padding=2, norm="BATCH", act="RELU")
        self.deform = DeformConv3d(channels, channels, 3)
        self.deform_post = nn.Sequential(nn.BatchNorm3d(channels), nn.ReLU(inplace=True))
        self.attention_scale = nn.Parameter(torch.ones(channels))
        hidden = max(3 * channels // reduction, min_hidden)
        self.reduce = nn.Sequential(nn.Linear(3 * channels, hidden), nn.ReLU(inplace=True))
        self.select = nn.ModuleList(nn.Linear(hidden, channels) for _ in range(3))

    def forward(self, z: torch.Tensor, uncertainty: torch.Tensor) -> torch.Tensor:
        if uncertainty.ndim == 4:
            uncertainty = uncertainty.unsqueeze(1)
        if uncertainty.shape[2:] != z.shape[2:]:
            # A coarser level: a region is uncertain if any voxel in it is (nearest would drop some).
            uncertainty = F.adaptive_max_pool3d(uncertainty.float(), z.shape[2:])
        attention = self.attention_scale.view(1, -1, 1, 1, 1) * uncertainty.to(z.dtype)
        branches = [self.branch3(z), self.branch5(z), self.deform_post(self.deform(z)) + attention]
        pooled = torch.cat(branches, dim=1).mean(dim=(2, 3, 4))
        hidden = self.reduce(pooled)
        weights = torch.softmax(torch.stack([layer(hidden) for layer in self.select], dim=1), dim=1)
        batch = weights.shape[0]
        return sum(branch * weights[:, index].view(batch, -1, 1, 1, 1) for index, branch in enumerate(branches))


class CureResNet3d(nn.Module):
    """Paper 003's auxiliary network: 3D ResNet encoder-decoder with MultiCURE before the classifier.

    ``backbone`` takes :class:`~.resnet3d.ResNet3dSegmenter`'s keyword arguments (``in_channels``,
    ``num_classes``, ``base_width``, ``depth``, ``dropout``, ``blocks``) with its defaults, so the
    two networks never disagree on them.
    """

    name = "resnet3d_multicure"

    def __init__(self, *, uncertainty_threshold: float = 0.7, **backbone: Any) -> None:
        super().__init__()
        if not 0.0 < uncertainty_threshold <= 1.0:
            raise ValueError(f"uncertainty_threshold must be in (0, 1], got {uncertainty_threshold}")
        self.backbone = ResNet3dSegmenter(**backbone)
        self.multicure = MultiCURE(self.backbone.base_width)
        self.uncertainty_threshold = float(uncertainty_threshold)

    @property
    def config(self) -> dict[str, Any]:
        return {**self.backbone.config, "name": self.name, "uncertainty_threshold": self.uncertainty_threshold}

    def forward_features(
        self, x: torch.Tensor, uncertainty: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(logits, decoder levels coarsest first, the last one refined by MultiCURE)."""
        levels = self.backbone.decode_levels(self.backbone.encode(x))
        if uncertainty is None:
            # Deployed alone: the network's own un-refined prediction marks the uncertain voxels.
            uncertainty = confidence_uncertainty_map(self.backbone.classify(levels[-1]), self.uncertainty_threshold)
        levels[-1] = self.multicure(levels[-1], uncertainty)
        return self.backbone.classify(levels[-1]), levels

    def forward(self, x: torch.Tensor, uncertainty: torch.Tensor | None = None) -> torch.Tensor:
        return self.forward_features(x, uncertainty)[0]


def build_cure_resnet3d(config: Mapping[str, Any]) -> nn.Module:
    """Builder for ``{"name": "resnet3d_multicure", ...}`` network entries."""
    allowed = RESNET_KEYS | {"uncertainty_threshold"}
    check_keys(config, allowed, "ResNet3d-MultiCURE")
    try:
        return CureResNet3d(**{key: config[key] for key in allowed if key in config})
    except (TypeError, ValueError) as exc:
        raise InputError(f"invalid ResNet3d-MultiCURE settings in model card: {exc}") from None
