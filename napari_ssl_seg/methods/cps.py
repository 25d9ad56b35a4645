"""Cross Pseudo Supervision (Chen et al. 2021): two networks teach each other with hard labels.

* Two V-Nets of the same architecture, initialised differently: independent random draws of
  Kaiming-normal conv weights (the CPS paper's "same architecture, different initialisation").
* Each network: ``0.5 (CE + Dice)`` on labeled data (the lineage's supervised loss, so CPS
  compares with the other methods on equal terms) plus ``ctx.rampup * consistency`` times the
  cross-entropy against the other network's argmax on the unlabeled images.

Decisions the paper leaves open (or sets for 2D natural images):

* ``consistency`` (0.1): the CPS paper's trade-off 1.5 was tuned for Cityscapes with a
  different supervised loss; the 3D medical re-implementations (SSL4MIS lineage) use the
  lineage's 0.1 with the Gaussian ramp-up, as here.
* Pseudo supervision on the unlabeled images only (the CPS paper also applies it to labeled
  ones, where the labels already supervise).
* Inference uses ``net1``; ``net2`` is exported as the disagreement network. Neither is an EMA.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import nn

from napari_ssl_seg.methods.base import Batch, LossOutput, SemiSupervisedMethod, StepContext
from napari_ssl_seg.methods.losses import cross_entropy_loss, dice_ce_loss
from napari_ssl_seg.methods.settings import MethodSettings
from napari_ssl_seg.networks.checkpoint import build_network
from napari_ssl_seg.runtime.class_ids import class_ids

__all__ = ["CrossPseudoSupervision", "initialise_weights"]

INIT_SCHEMES = ("kaiming", "xavier")


@torch.no_grad()
def initialise_weights(module: nn.Module, scheme: str) -> nn.Module:
    """Re-draw conv weights (Kaiming-normal fan-in ReLU, or Xavier-normal), zero biases, BN to (1, 0)."""
    if scheme not in INIT_SCHEMES:
        raise ValueError(f"unknown initialisation {scheme!r} (known: {', '.join(INIT_SCHEMES)})")
    for layer in module.modules():
        if isinstance(layer, nn.Conv3d | nn.ConvTranspose3d):
            if scheme == "kaiming":
                nn.init.kaiming_normal_(layer.weight, mode="fan_in", nonlinearity="relu")
            else:
                nn.init.xavier_normal_(layer.weight)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
        elif isinstance(layer, nn.modules.batchnorm._BatchNorm) and layer.affine:
            nn.init.ones_(layer.weight)
            nn.init.zeros_(layer.bias)
    return module


@dataclasses.dataclass(frozen=True)
class CPSSettings(MethodSettings):
    """``consistency``: the maximum weight of the pseudo-supervision term."""

    consistency: float = 0.1


class CrossPseudoSupervision(SemiSupervisedMethod):
    """CPS: networks ``net1`` and ``net2``, each supervised by the other's argmax on unlabeled data.

    Settings: ``consistency`` (0.1), the maximum weight of the pseudo-supervision term.
    """

    name: ClassVar[str] = "cps"
    inference_network: ClassVar[str] = "net1"
    disagreement_network: ClassVar[str | None] = "net2"
    inference_alternatives: ClassVar[tuple[str, ...]] = ("net2",)
    Settings: ClassVar[type[MethodSettings]] = CPSSettings
    settings: CPSSettings

    def __init__(self, network: Mapping[str, Any], settings: Mapping[str, Any] | None = None) -> None:
        super().__init__(network, settings)
        self.networks["net1"] = initialise_weights(build_network(self.network_config), "kaiming")
        self.networks["net2"] = initialise_weights(build_network(self.network_config), "kaiming")

    def trainable(self) -> list[str]:
        return ["net1", "net2"]

    def loss(self, batch: Batch, ctx: StepContext) -> LossOutput:
        labeled = batch.labeled_count
        images = batch.all_images
        logits_1 = self.networks["net1"](images)
        logits_2 = self.networks["net2"](images)
        supervised = dice_ce_loss(logits_1[:labeled], batch.labeled_target) + dice_ce_loss(
            logits_2[:labeled], batch.labeled_target
        )
        weight = ctx.rampup * self.settings.consistency
        if batch.unlabeled_image.shape[0] > 0:
            unlabeled_1, unlabeled_2 = logits_1[labeled:], logits_2[labeled:]
            pseudo_1 = class_ids(unlabeled_1.detach())
            pseudo_2 = class_ids(unlabeled_2.detach())
            pseudo = cross_entropy_loss(unlabeled_1, pseudo_2) + cross_entropy_loss(unlabeled_2, pseudo_1)
        else:
            pseudo = logits_1.new_zeros(())
        loss = supervised + weight * pseudo
        logs = {
            "supervised": supervised.detach(),
            "cps": pseudo.detach(),
            "consistency_weight": weight,
        }
        return LossOutput(loss, logs)

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "networks": {"net1": "trained (inference)", "net2": "trained (disagreement)"},
            "reference": "Chen et al. 2021 (CPS), 3D medical settings of the UA-MT lineage",
        }
