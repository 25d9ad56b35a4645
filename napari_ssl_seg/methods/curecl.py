"""Paper 003: predictive + auxiliary networks, MultiCURE, multi-level prototype contrastive loss.

* **Networks.** ``predictive``: the papers' V-Net. ``auxiliary``: the 3D ResNet encoder-decoder
  with the MultiCURE module before its classifier (:class:`~napari_ssl_seg.networks.multicure.CureResNet3d`).
  Both are held in :class:`~napari_ssl_seg.networks.features.WithFeatures` so one ``forward``
  returns logits and decoder features (DDP-safe).
* **Uncertainty map.** The predictive network's softmax confidence (largest probability) below
  ``confidence`` marks uncertain voxels (1); the map, detached, feeds the auxiliary's MultiCURE.
* **Supervised** (Eq. 1): CE + Dice of both networks on the labeled images (unit weights).
* **Unsupervised** (Eq. 2), on the unlabeled images, voxels where the predictive confidence
  exceeds ``confidence`` (0.7) only: CE + Dice of the auxiliary against the predictive network's
  argmax, plus ``lambda_reg`` x the XOR regulariser (:func:`xor_regulariser`).
* **Contrastive** (Sec. 2.2, :mod:`.prototypes`): per network, class prototypes from reliable
  voxels at every decoder level, uncertain voxels pulled to their prototype, prototypes pushed
  apart; the loss is the mean over levels, summed over the two networks.
* L = L_s + lambda_u L_u + lambda_c L_c, lambda_u = 1 (constant, as the paper sets it),
  lambda_c = 0.1 x the loop's Gaussian ramp-up.

Decisions the paper leaves open:

* **XOR regulariser.** "The L1 distance between the XOR predictions" of the two networks: here the
  XOR map is where the two argmax predictions differ (within the confident voxels), and the
  regulariser is the L1 distance, averaged over classes and those voxels, between the auxiliary's
  softmax and the predictive network's one-hot pseudo-label: it presses the auxiliary hardest
  where the two disagree. ``lambda_reg`` is not given; 1.0.
* **Gradients.** The predictive network is the pseudo-label generator: its labels and its
  uncertainty map are detached, so L_u trains the auxiliary only.
* **Whose features are contrasted.** Not stated; both networks', so the predictive V-Net (the
  inference model) also learns from the unlabeled images. Classes: the label on labeled images,
  the predictive argmax on unlabeled ones. Reliable: predictive confidence > ``confidence`` (and,
  on labeled images, a correct prediction); uncertain: the rest.
* **Eq. (5)**'s denominator (j != k) has no lower bound; the standard InfoNCE form is used (see
  :mod:`.prototypes`), ``temperature`` 0.1 (not given), prototype separation weight 1.
* **lambda_c** is printed as ``0.1 e^{4 (1 - t/t_max)^2}``, which grows to 5.5 at t = 0; read as
  the lineage's ramp-up ``0.1 e^{-5 (1 - t/t_max)^2}``.
* **The MultiCURE threshold** is not given; the same 0.7 as the pseudo-label confidence.
* **Inference**: the predictive V-Net (``model``; MC dropout applies), the auxiliary network as
  ``student`` (disagreement uncertainty; alone it builds its own uncertainty map, see
  :mod:`napari_ssl_seg.networks.multicure`). The ResNet has ResNet-34's (3, 4, 6, 3) blocks.
* **Cost**: the grid_sample deformable conv at full resolution dominates on a CPU (its backward
  pass especially): the ``quick`` preset takes about 10-20 s per iteration on one core, against
  about 3-4 s for ``ccedual``/``ugmcl``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from napari_ssl_seg.methods.base import Batch, LossOutput, SemiSupervisedMethod, StepContext
from napari_ssl_seg.methods.losses import dice_ce_loss
from napari_ssl_seg.methods.prototypes import networks_prototype_loss
from napari_ssl_seg.methods.pseudo_labels import confident_pseudo_labels, masked_cross_entropy, masked_dice_loss
from napari_ssl_seg.methods.settings import MethodSettings, check_at_most, check_positive
from napari_ssl_seg.networks.checkpoint import build_network
from napari_ssl_seg.networks.features import WithFeatures
from napari_ssl_seg.networks.resnet3d import RESNET34_BLOCKS, resnet_config_like
from napari_ssl_seg.runtime.class_ids import class_ids

__all__ = ["CURECL", "auxiliary_network_config", "xor_regulariser"]


def xor_regulariser(
    auxiliary_logits: torch.Tensor, pseudo_label: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, float]:
    """L1 distance between the auxiliary softmax and the one-hot pseudo-label where the argmaxes differ.

    ``mask`` (N, z, y, x) restricts the voxels considered (the confident ones). Returns the loss
    (averaged over classes and XOR voxels; 0 where there are none) and the XOR fraction.
    """
    probabilities = torch.softmax(auxiliary_logits.float(), dim=1)
    xor = (class_ids(probabilities.detach()) != pseudo_label) & mask
    one_hot = F.one_hot(pseudo_label.long(), probabilities.shape[1]).movedim(-1, 1).to(probabilities.dtype)
    distance = (probabilities - one_hot).abs()
    selected = xor.to(distance.dtype).unsqueeze(1)
    loss = (selected * distance).sum() / (distance.shape[1] * selected.sum()).clamp_min(1.0)
    return loss, xor.float().mean()


def auxiliary_network_config(network: Mapping[str, Any], blocks: Sequence[int], threshold: float) -> dict[str, Any]:
    """The auxiliary ResNet's model-card entry, sized like the V-Net config ``network``."""
    return {**resnet_config_like(network, blocks, "resnet3d_multicure"), "uncertainty_threshold": float(threshold)}


@dataclasses.dataclass(frozen=True)
class CURECLSettings(MethodSettings):
    """See :class:`CURECL` for each setting's meaning and source."""

    confidence: float = 0.7
    unsupervised: float = 1.0
    lambda_reg: float = 1.0
    contrastive: float = 0.1
    temperature: float = 0.1
    separation: float = 1.0
    aux_blocks: tuple[int, ...] = tuple(RESNET34_BLOCKS)

    def check(self) -> None:
        check_positive("confidence", self.confidence)
        check_at_most("confidence", self.confidence, 1.0, inclusive=False)
        check_positive("temperature", self.temperature)


class CURECL(SemiSupervisedMethod):
    """Paper 003 (MultiCURE + contrastive learning); see the module docstring.

    Settings: ``confidence`` (0.7), ``unsupervised`` (1.0, lambda_u), ``lambda_reg`` (1.0),
    ``contrastive`` (0.1, lambda_c's maximum), ``temperature`` (0.1), ``separation`` (1.0),
    ``aux_blocks`` ([3, 4, 6, 3]).
    """

    name: ClassVar[str] = "curecl"
    inference_network: ClassVar[str] = "predictive"
    disagreement_network: ClassVar[str | None] = "auxiliary"
    Settings: ClassVar[type[MethodSettings]] = CURECLSettings
    settings: CURECLSettings

    def __init__(self, network: Mapping[str, Any], settings: Mapping[str, Any] | None = None) -> None:
        super().__init__(network, settings)
        self.networks["predictive"] = WithFeatures(build_network(self.network_config))
        auxiliary = auxiliary_network_config(self.network_config, self.settings.aux_blocks, self.settings.confidence)
        self.networks["auxiliary"] = WithFeatures(build_network(auxiliary))

    def trainable(self) -> list[str]:
        return ["predictive", "auxiliary"]

    def loss(self, batch: Batch, ctx: StepContext) -> LossOutput:
        labeled = batch.labeled_count
        images = batch.all_images
        threshold = self.settings.confidence
        predictive = self.networks["predictive"](images, features=True)
        probabilities = torch.softmax(predictive.logits.detach().float(), dim=1)
        pseudo, confident = confident_pseudo_labels(probabilities, threshold)
        uncertainty_map = (~confident).to(images.dtype).unsqueeze(1)
        auxiliary = self.networks["auxiliary"](images, uncertainty_map, features=True)
        num_classes = predictive.logits.shape[1]

        target = batch.labeled_target
        supervised = dice_ce_loss(predictive.logits[:labeled], target, dice_weight=1.0, ce_weight=1.0) + dice_ce_loss(
            auxiliary.logits[:labeled], target, dice_weight=1.0, ce_weight=1.0
        )

        logs: dict[str, float | torch.Tensor] = {}
        if batch.unlabeled_image.shape[0] > 0:
            logits_u, pseudo_u, mask_u = auxiliary.logits[labeled:], pseudo[labeled:], confident[labeled:]
            regulariser, xor_fraction = xor_regulariser(logits_u, pseudo_u, mask_u)
            unsupervised = (
                masked_cross_entropy(logits_u, pseudo_u, mask_u)
                + masked_dice_loss(logits_u, pseudo_u, mask_u)
                + self.settings.lambda_reg * regulariser
            )
            logs.update({"xor_regulariser": regulariser.detach(), "xor_fraction": xor_fraction})
        else:
            unsupervised = auxiliary.logits.new_zeros((), dtype=torch.float32)

        # Classes for the contrastive loss: labels where known, the predictive argmax elsewhere.
        classes = pseudo.clone()
        classes[:labeled] = target
        reliable = confident.clone()
        reliable[:labeled] &= pseudo[:labeled] == target
        contrastive = networks_prototype_loss(
            [predictive.levels, auxiliary.levels],
            classes,
            reliable,
            num_classes,
            self.settings.temperature,
            self.settings.separation,
        )
        weight_u = self.settings.unsupervised
        weight_c = ctx.rampup * self.settings.contrastive
        loss = supervised + weight_u * unsupervised + weight_c * contrastive
        logs.update(
            {
                "supervised": supervised.detach(),
                "unsupervised": unsupervised.detach(),
                "contrastive": contrastive.detach(),
                "contrastive_weight": weight_c,
                "confident_fraction": confident.float().mean(),
            }
        )
        return LossOutput(loss, logs)

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "networks": {
                "predictive": "V-Net, trained (inference)",
                "auxiliary": "3D ResNet + MultiCURE, trained (disagreement)",
            },
            "reference": "paper 003 (MultiCURE + prototype contrastive learning); METHODS.md '003'",
        }
