"""A trainable wrapper whose forward can also return decoder features, for feature-space losses.

Prototype contrastive losses (papers 003 and 004) need a network's intermediate features, but the
training loop may wrap trainable networks in ``DistributedDataParallel``, which synchronises
gradients only through ``forward``. So a method holds :class:`WithFeatures` (not the bare
network) and calls ``self.networks[name](x, features=True)``. Without the flag the wrapper returns
plain logits, so the loop's validation and anything else that treats it as a segmentation network
keeps working; :attr:`WithFeatures.config` is the inner network's, and methods export
:attr:`WithFeatures.net`, so checkpoints hold the bare network.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple, cast

import torch
from torch import nn

from napari_ssl_seg.networks.vnet import VNet

__all__ = ["FeatureOutput", "WithFeatures", "vnet_levels"]


class FeatureOutput(NamedTuple):
    """Logits (N, C, z, y, x) and every decoder level's features, coarsest first."""

    logits: torch.Tensor
    levels: list[torch.Tensor]


def vnet_levels(vnet: VNet, x: torch.Tensor) -> FeatureOutput:
    """The V-Net forward pass keeping each decoder level (``VNet.decode_features`` keeps the last only)."""
    features = vnet.encode(x)
    h = vnet.bottleneck_dropout(features.bottleneck)
    levels = []
    for index, (up, stage) in enumerate(zip(vnet.up, vnet.decoder, strict=True)):
        h = stage(up(h) + features.skips[-1 - index])
        levels.append(h)
    return FeatureOutput(vnet.classify(h), levels)


class WithFeatures(nn.Module):
    """Wrap a V-Net or a network with ``forward_features(x, *extra)``; see the module docstring."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        if not isinstance(net, VNet) and not hasattr(net, "forward_features"):
            raise TypeError(f"{type(net).__name__} exposes no decoder features")
        self.net = net

    @property
    def config(self) -> dict[str, Any]:
        return dict(cast(Mapping[str, Any], self.net.config))

    def forward(self, x: torch.Tensor, *extra: Any, features: bool = False) -> torch.Tensor | FeatureOutput:
        if not features:
            return self.net(x, *extra)
        if isinstance(self.net, VNet):
            return vnet_levels(self.net, x)
        forward_features = cast(Callable[..., tuple[torch.Tensor, Any]], self.net.forward_features)
        logits, levels = forward_features(x, *extra)
        return FeatureOutput(logits, list(levels))
