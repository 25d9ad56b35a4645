"""The V-Net every paper in this project uses (the UA-MT lineage), not MONAI's ``VNet``.

MONAI's ``monai.networks.nets.VNet`` is a different design (PReLU, 5x5x5 kernels, about
45.6 M parameters); the papers' numbers (about 9.45 M parameters at base width 16) and their
MC-dropout positions belong to the UA-MT V-Net, so this module rebuilds that one from MONAI's
``Convolution`` block:

* encoder stages with 1/2/3/3/3 conv layers (3x3x3 conv, BatchNorm3d, ReLU) at
  ``base_width * (1, 2, 4, 8, 16)`` channels, down-sampling by a stride-2 2x2x2 conv (+BN+ReLU);
* decoder stages with 3/3/2/1 conv layers, up-sampling by a stride-2 2x2x2 transposed conv
  (+BN+ReLU) and *additive* skip connections;
* a 1x1x1 conv to ``num_classes`` logits;
* ``Dropout3d(p)`` after the bottleneck and after the last decoder stage (the two MC-dropout
  positions of UA-MT, UG-CEMT and UG-MCL).

The forward pass is split into :meth:`VNet.encode` (everything up to the bottleneck, before its
dropout) and :meth:`VNet.decode` (bottleneck dropout, decoder, last dropout, classifier). Monte
Carlo dropout then runs the deterministic encoder once and only the decoder T times, and
UG-CEMT's cross-attention swaps the bottleneck between the two calls
(:meth:`VNetFeatures.with_bottleneck`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from monai.networks.blocks import Convolution
from torch import nn

__all__ = ["VNet", "VNetFeatures", "build_decoder", "check_segmenter_args", "mc_dropout", "stage_conv_counts"]


def stage_conv_counts(depth: int) -> tuple[int, ...]:
    """Conv layers per encoder stage: 1, 2, 3, 3, 3, ... (the papers' 1/2/3/3/3 at depth 5).

    The decoder stage at a level has as many conv layers as the encoder stage at that level,
    which gives the papers' 3/3/2/1 decoder at depth 5.
    """
    return tuple(min(level + 1, 3) for level in range(depth))


def check_segmenter_args(
    what: str, in_channels: int, num_classes: int, base_width: int, depth: int, dropout: float
) -> None:
    """Raise ``ValueError`` for arguments no encoder-decoder of this layout can be built with.

    Shared with the 3D ResNet (:mod:`.resnet3d`), which mirrors the V-Net's interface.
    """
    if depth < 2:
        raise ValueError(f"{what} depth must be at least 2, got {depth}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    if in_channels < 1 or num_classes < 1 or base_width < 1:
        raise ValueError("in_channels, num_classes and base_width must be positive")


def mc_dropout(p: float) -> nn.Module:
    """``Dropout3d(p)`` at an MC-dropout position, ``nn.Identity`` when ``p`` is 0 (same state dict)."""
    return nn.Dropout3d(p) if p > 0 else nn.Identity()


def build_decoder(widths: Sequence[int], stage: Callable[[int], nn.Module]) -> tuple[nn.ModuleList, nn.ModuleList]:
    """The up-sampling convs and decoder stages, coarsest first: up[i] goes from level depth-1-i to depth-2-i.

    Each up-sampling is a stride-2 2x2x2 transposed conv (+BN+ReLU) from ``widths[level + 1]`` to
    ``widths[level]`` channels; ``stage(level)`` builds the block that follows the additive skip.
    Modules are built in the order up, stage, up, stage, ... so seeded initialisation is the same
    for every network that uses this.
    """
    up, decoder = nn.ModuleList(), nn.ModuleList()
    for level in reversed(range(len(widths) - 1)):
        up.append(
            Convolution(
                3,
                widths[level + 1],
                widths[level],
                strides=2,
                kernel_size=2,
                padding=0,
                output_padding=0,
                is_transposed=True,
                act="RELU",
                norm="BATCH",
            )
        )
        decoder.append(stage(level))
    return up, decoder


def _conv(in_channels: int, out_channels: int, *, act: str | None = "RELU") -> Convolution:
    return Convolution(3, in_channels, out_channels, kernel_size=3, strides=1, padding=1, act=act, norm="BATCH")


class ConvStage(nn.Module):
    """``n`` (3x3x3 conv, BN, ReLU) layers, with UA-MT's short residual where channels match.

    With ``residual`` the last layer's ReLU moves after the addition (UA-MT's
    ``ResidualConvBlock``: ``relu(convs(x) + x)``). Both variants hold the same parameters under
    the same names, so a state dict moves between them.
    """

    def __init__(self, n_convs: int, in_channels: int, out_channels: int, *, residual: bool) -> None:
        super().__init__()
        self.residual = residual and in_channels == out_channels
        layers = []
        for index in range(n_convs):
            last = index == n_convs - 1
            act = None if (self.residual and last) else "RELU"
            layers.append(_conv(in_channels if index == 0 else out_channels, out_channels, act=act))
        self.convs = nn.Sequential(*layers)
        self.relu = nn.ReLU(inplace=True) if self.residual else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.convs(x)
        if self.residual:
            out = self.relu(out + x)
        return out


@dataclass(frozen=True)
class VNetFeatures:
    """What :meth:`VNet.encode` returns: the skip tensors (finest first) and the bottleneck.

    Never modified in place by :meth:`VNet.decode`, so one encoding can feed many stochastic
    decodes (MC dropout).
    """

    skips: tuple[torch.Tensor, ...]
    bottleneck: torch.Tensor

    def with_bottleneck(self, bottleneck: torch.Tensor) -> VNetFeatures:
        """The same skips with a replaced bottleneck (e.g. after cross-attention)."""
        if bottleneck.shape != self.bottleneck.shape:
            raise ValueError(f"bottleneck shape {tuple(bottleneck.shape)} != {tuple(self.bottleneck.shape)}")
        return VNetFeatures(self.skips, bottleneck)


class VNet(nn.Module):
    """The papers' V-Net (UA-MT lineage); see the module docstring for the layout.

    Args:
        in_channels: input image channels.
        num_classes: output logit channels (background included).
        base_width: channels of the first stage (16 in the papers; smaller for CPU runs).
        depth: resolution levels (5 in the papers); input sizes must be divisible by 2**(depth-1).
        dropout: ``Dropout3d`` probability at the two MC-dropout positions; 0 disables both
            (they become ``nn.Identity``, the state dict is unchanged).
        residual: UA-MT's short residual inside each conv stage; UG-CEMT drops it.
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 2,
        base_width: int = 16,
        depth: int = 5,
        dropout: float = 0.5,
        residual: bool = True,
    ) -> None:
        super().__init__()
        check_segmenter_args("V-Net", in_channels, num_classes, base_width, depth, dropout)
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.base_width = base_width
        self.depth = depth
        self.dropout_p = float(dropout)
        self.residual = residual

        counts = stage_conv_counts(depth)
        widths = [base_width * 2**level for level in range(depth)]
        self.encoder = nn.ModuleList()
        self.down = nn.ModuleList()
        for level in range(depth):
            stage_in = in_channels if level == 0 else widths[level]
            self.encoder.append(ConvStage(counts[level], stage_in, widths[level], residual=residual))
            if level < depth - 1:
                self.down.append(
                    Convolution(
                        3,
                        widths[level],
                        widths[level + 1],
                        strides=2,
                        kernel_size=2,
                        padding=0,
                        act="RELU",
                        norm="BATCH",
                    )
                )
        self.up, self.decoder = build_decoder(
            widths, lambda level: ConvStage(counts[level], widths[level], widths[level], residual=residual)
        )
        self.bottleneck_dropout = mc_dropout(dropout)
        self.final_dropout = mc_dropout(dropout)
        self.classifier = nn.Conv3d(widths[0], num_classes, kernel_size=1)

    @property
    def config(self) -> dict[str, Any]:
        """The constructor arguments, as stored in a model card's ``network`` entry."""
        return {
            "name": "vnet",
            "in_channels": self.in_channels,
            "num_classes": self.num_classes,
            "base_width": self.base_width,
            "depth": self.depth,
            "dropout": self.dropout_p,
            "residual": self.residual,
        }

    @property
    def size_divisor(self) -> int:
        """Every spatial input size must be a multiple of this (one halving per level)."""
        return 2 ** (self.depth - 1)

    @property
    def bottleneck_channels(self) -> int:
        """Channels at the bottleneck, for sizing a cross-attention block."""
        return self.base_width * 2 ** (self.depth - 1)

    def dropout_modules(self) -> list[nn.Dropout3d]:
        """The MC-dropout layers (empty when dropout is 0), to switch them on alone at inference."""
        return [m for m in (self.bottleneck_dropout, self.final_dropout) if isinstance(m, nn.Dropout3d)]

    def check_input(self, x: torch.Tensor) -> None:
        """Raise ``ValueError`` unless ``x`` is (N, in_channels, z, y, x) with divisible sizes."""
        if x.ndim != 5:
            raise ValueError(f"V-Net expects a 5-D tensor (N, C, z, y, x), got shape {tuple(x.shape)}")
        if x.shape[1] != self.in_channels:
            raise ValueError(f"V-Net expects {self.in_channels} input channel(s), got {x.shape[1]}")
        divisor = self.size_divisor
        if any(size % divisor for size in x.shape[2:]):
            raise ValueError(
                f"V-Net input spatial size {tuple(x.shape[2:])} must be divisible by {divisor} "
                f"(2**(depth-1) with depth {self.depth}); pad or crop the patch"
            )

    def encode(self, x: torch.Tensor) -> VNetFeatures:
        """Encoder up to and including the bottleneck stage, before the bottleneck dropout.

        Deterministic in train mode too (no dropout here), so MC dropout can reuse it.
        """
        self.check_input(x)
        skips = []
        for level, stage in enumerate(self.encoder):
            x = stage(x)
            if level < self.depth - 1:
                skips.append(x)
                x = self.down[level](x)
        return VNetFeatures(tuple(skips), x)

    def decode_features(self, features: VNetFeatures) -> torch.Tensor:
        """Bottleneck dropout and the decoder with additive skips: the last stage's features."""
        x = self.bottleneck_dropout(features.bottleneck)
        for index, (up, stage) in enumerate(zip(self.up, self.decoder, strict=True)):
            x = stage(up(x) + features.skips[-1 - index])
        return x

    def classify(self, decoded: torch.Tensor) -> torch.Tensor:
        """Last dropout and the 1x1x1 classifier: logits from :meth:`decode_features`' output."""
        return self.classifier(self.final_dropout(decoded))

    def decode(self, features: VNetFeatures) -> torch.Tensor:
        """Bottleneck dropout, decoder with additive skips, last dropout, 1x1x1 classifier: logits."""
        return self.classify(self.decode_features(features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, num_classes, z, y, x) = ``decode(encode(x))``."""
        return self.decode(self.encode(x))
