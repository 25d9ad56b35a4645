"""Supervised baseline: the V-Net trained on labeled patches only (Dice + cross-entropy).

Every paper's lower bound ("V-Net, labeled only") and the cheapest retrain. Unlabeled patches are
not used, so the loop does not even draw them (:attr:`SupervisedMethod.uses_unlabeled`).

Loss: MONAI ``DiceCELoss`` with softmax. The Dice part leaves out the background (the papers'
binary Dice is on the foreground channel; here the mean over foreground classes) and is computed
over the whole batch (``batch=True``): a small structure is absent from many patches, and a
per-patch Dice of an absent class turns every stray voxel into a full-size penalty.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

from monai.losses import DiceCELoss

from napari_ssl_seg.methods.base import Batch, LossOutput, SemiSupervisedMethod, StepContext
from napari_ssl_seg.methods.settings import MethodSettings
from napari_ssl_seg.networks.checkpoint import build_network

__all__ = ["SupervisedMethod", "SupervisedSettings"]


@dataclasses.dataclass(frozen=True)
class SupervisedSettings(MethodSettings):
    """The weights of the Dice and the cross-entropy terms."""

    lambda_dice: float = 1.0
    lambda_ce: float = 1.0


class SupervisedMethod(SemiSupervisedMethod):
    """One network ``model``; settings ``lambda_dice`` and ``lambda_ce`` weight the two loss terms."""

    name: ClassVar[str] = "supervised"
    Settings: ClassVar[type[MethodSettings]] = SupervisedSettings
    settings: SupervisedSettings
    #: Read by the training loop: this method never looks at unlabeled patches.
    uses_unlabeled: ClassVar[bool] = False

    def __init__(self, network: Mapping[str, Any], settings: Mapping[str, Any] | None = None) -> None:
        super().__init__(network, settings)
        self.networks["model"] = build_network(self.network_config)
        self.criterion = DiceCELoss(
            include_background=False,
            to_onehot_y=True,
            softmax=True,
            batch=True,
            lambda_dice=self.settings.lambda_dice,
            lambda_ce=self.settings.lambda_ce,
        )

    def trainable(self) -> list[str]:
        return ["model"]

    def loss(self, batch: Batch, ctx: StepContext) -> LossOutput:
        logits = self.networks["model"](batch.labeled_image)
        loss = self.criterion(logits.float(), batch.labeled_target[:, None])
        return LossOutput(loss, {"supervised": loss.detach()})
