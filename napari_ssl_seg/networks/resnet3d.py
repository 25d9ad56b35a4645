"""A 3D ResNet encoder-decoder: the second architecture of the dual-network papers (003, 004).

Paper 004 names subnet A "ResNet-34 based"; paper 003 takes "ResNet" for its auxiliary network
from the MCF work it follows. Neither gives the layout, so this module builds the closest thing
that fits the project's patch sizes and the V-Net's interface:

* level 0 (full resolution): one 3x3x3 conv + BatchNorm + ReLU stem at ``base_width`` channels;
  no 7x7 stride-2 stem and no max-pool, because 3D patches are only 80 slices deep and the
  decoder needs a full-resolution skip;
* levels 1 .. depth-1: ResNet-34's stages of basic blocks (two 3x3x3 convs with an identity or
  1x1x1 projection shortcut), ``(3, 4, 6, 3)`` blocks at ``base_width * 2**level`` channels, the
  first block of each stage down-sampling with stride 2 (depths other than 5 repeat the last
  count or drop the tail);
* decoder: per level a stride-2 2x2x2 transposed conv (+BN+ReLU), an *additive* skip (as the
  V-Net, so both networks of a pair have the same decoder shape) and one basic block;
* ``Dropout3d`` after the bottleneck and before the 1x1x1 classifier, the V-Net's two MC-dropout
  positions, so :mod:`napari_ssl_seg.inference.mc_dropout` treats both networks alike.

The forward pass is split like :class:`~napari_ssl_seg.networks.vnet.VNet` (``encode``,
``decode_features``, ``classify``), so MC dropout runs the encoder once; :meth:`decode_levels`
returns every decoder level for multi-level feature losses.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from monai.networks.blocks import Convolution
from torch import nn

from napari_ssl_seg.errors import InputError
from napari_ssl_seg.networks.vnet import VNetFeatures, build_decoder, check_segmenter_args, mc_dropout

__all__ = ["RESNET34_BLOCKS", "BasicBlock3d", "ResNet3dSegmenter", "build_resnet3d", "resnet_config_like"]

RESNET34_BLOCKS = (3, 4, 6, 3)


class BasicBlock3d(nn.Module):
    """ResNet's basic block in 3D: conv-BN-ReLU-conv-BN plus shortcut, then ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(
            Convolution(
                3, in_channels, out_channels, kernel_size=3, strides=stride, padding=1, norm="BATCH", act="RELU"
            ),
            Convolution(3, out_channels, out_channels, kernel_size=3, padding=1, norm="BATCH", act=None),
        )
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = Convolution(
                3, in_channels, out_channels, kernel_size=1, strides=stride, padding=0, norm="BATCH", act=None
            )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


def _stage_blocks(blocks: Sequence[int], depth: int) -> list[int]:
    # Level l (1-based below the stem) gets blocks[l-1]; deeper networks repeat the last count.
    return [int(blocks[min(level, len(blocks) - 1)]) for level in range(depth - 1)]


class ResNet3dSegmenter(nn.Module):
    """3D ResNet-34-style encoder-decoder returning class logits (N, C, z, y, x).

    Args mirror :class:`~napari_ssl_seg.networks.vnet.VNet` (``in_channels``, ``num_classes``,
    ``base_width``, ``depth``, ``dropout``) plus ``blocks``: basic blocks per down-sampling stage.
    """

    name = "resnet3d"

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 2,
        base_width: int = 16,
        depth: int = 5,
        dropout: float = 0.5,
        blocks: Sequence[int] = RESNET34_BLOCKS,
    ) -> None:
        super().__init__()
        check_segmenter_args("ResNet", in_channels, num_classes, base_width, depth, dropout)
        blocks = [int(b) for b in blocks]
        if not blocks or min(blocks) < 1:
            raise ValueError(f"blocks must be positive counts, got {blocks}")
        self.in_channels, self.num_classes, self.base_width = in_channels, num_classes, base_width
        self.depth, self.dropout_p, self.blocks = depth, float(dropout), blocks

        widths = [base_width * 2**level for level in range(depth)]
        self.stem = Convolution(3, in_channels, widths[0], kernel_size=3, padding=1, norm="BATCH", act="RELU")
        self.encoder = nn.ModuleList()
        for level, count in enumerate(_stage_blocks(blocks, depth), start=1):
            layers = [BasicBlock3d(widths[level - 1], widths[level], stride=2)]
            layers += [BasicBlock3d(widths[level], widths[level]) for _ in range(count - 1)]
            self.encoder.append(nn.Sequential(*layers))
        # Decoder, coarsest first, as in the V-Net.
        self.up, self.decoder = build_decoder(widths, lambda level: BasicBlock3d(widths[level], widths[level]))
        self.bottleneck_dropout = mc_dropout(dropout)
        self.final_dropout = mc_dropout(dropout)
        self.classifier = nn.Conv3d(widths[0], num_classes, kernel_size=1)

    @property
    def config(self) -> dict[str, Any]:
        """The constructor arguments, as stored in a model card's network entry."""
        return {
            "name": self.name,
            "in_channels": self.in_channels,
            "num_classes": self.num_classes,
            "base_width": self.base_width,
            "depth": self.depth,
            "dropout": self.dropout_p,
            "blocks": list(self.blocks),
        }

    @property
    def size_divisor(self) -> int:
        return 2 ** (self.depth - 1)

    def check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 5 or x.shape[1] != self.in_channels:
            raise ValueError(f"ResNet3d expects (N, {self.in_channels}, z, y, x), got {tuple(x.shape)}")
        if any(size % self.size_divisor for size in x.shape[2:]):
            raise ValueError(
                f"ResNet3d input spatial size {tuple(x.shape[2:])} must be divisible by {self.size_divisor}"
            )

    def encode(self, x: torch.Tensor) -> VNetFeatures:
        """Stem and encoder stages: skips (finest first) and the bottleneck, before its dropout."""
        self.check_input(x)
        x = self.stem(x)
        skips = []
        for stage in self.encoder:
            skips.append(x)
            x = stage(x)
        return VNetFeatures(tuple(skips), x)

    def decode_levels(self, features: VNetFeatures) -> list[torch.Tensor]:
        """Every decoder level's output, coarsest first; the last is full resolution."""
        x = self.bottleneck_dropout(features.bottleneck)
        levels = []
        for index, (up, stage) in enumerate(zip(self.up, self.decoder, strict=True)):
            x = stage(up(x) + features.skips[-1 - index])
            levels.append(x)
        return levels

    def decode_features(self, features: VNetFeatures) -> torch.Tensor:
        return self.decode_levels(features)[-1]

    def classify(self, decoded: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.final_dropout(decoded))

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(logits, decoder levels coarsest first) in one pass."""
        levels = self.decode_levels(self.encode(x))
        return self.classify(levels[-1]), levels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.decode_features(self.encode(x)))


def resnet_config_like(network: Mapping[str, Any], blocks: Sequence[int], name: str = "resnet3d") -> dict[str, Any]:
    """A ResNet model-card entry sized like another network's entry (a V-Net's, in papers 003/004).

    Only the arguments both architectures share are copied, so the pair agrees on channels, width,
    depth and dropout; ``name`` picks the builder (``"resnet3d"`` or ``"resnet3d_multicure"``).
    """
    keys = ("in_channels", "num_classes", "base_width", "depth", "dropout")
    return {"name": name, **{key: network[key] for key in keys if key in network}, "blocks": list(blocks)}


def check_keys(config: Mapping[str, Any], allowed: set[str], what: str) -> None:
    """Refuse model-card settings a builder does not know (the card came from a file)."""
    unknown = set(config) - allowed - {"name"}
    if unknown:
        raise InputError(f"unknown {what} setting(s) in model card: {', '.join(sorted(unknown))}")


RESNET_KEYS = {"in_channels", "num_classes", "base_width", "depth", "dropout", "blocks"}


def build_resnet3d(config: Mapping[str, Any]) -> nn.Module:
    """Builder for ``{"name": "resnet3d", ...}`` network entries (see ``NETWORK_BUILDERS``)."""
    check_keys(config, RESNET_KEYS, "ResNet3d")
    try:
        return ResNet3dSegmenter(**{key: config[key] for key in RESNET_KEYS if key in config})
    except (TypeError, ValueError) as exc:
        raise InputError(f"invalid ResNet3d settings in model card: {exc}") from None
