"""Paper 004: dual network with Cross Consistency Enhancement (CCE), KL weighting, prototypes.

* **Networks.** ``subnet_a``: a 3D ResNet-34-style encoder-decoder
  (:class:`~napari_ssl_seg.networks.resnet3d.ResNet3dSegmenter`); ``subnet_b``: the papers'
  V-Net. Both trained, no teacher; each held in :class:`~napari_ssl_seg.networks.features.WithFeatures`.
* **Supervised** (Eq. 2): CE + Dice of both subnets on the labeled images, plus ``cr_weight``
  (0.5) x the consistency regularisation (CR, :func:`disagreement_consistency`): the MSE between
  the two softmax outputs on voxels where the subnets' argmaxes differ while at least one of them
  is confident (largest probability > ``cr_threshold`` 0.6), averaged over those voxels.
* **CCE** on the unlabeled images:
  - cross pseudo supervision: each subnet's CE against the other's argmax, on the other's
    confident voxels (probability > ``cps_threshold`` 0.6);
  - entropy-filtered supervision (:func:`entropy_filter_mask`): the same cross CE, on every voxel
    except those whose entropy is above the ``entropy_percentile`` (70, LA's value) of its batch
    in *both* subnets.
* **Uncertainty weighting** (:func:`kl_divergences`, :func:`kl_weighted`, METHODS.md's formulation of the
  cited works, Eqs. 13-15 were lost): D = KL(p_a || p_b) per voxel on temperature-sharpened
  softmax (T = 0.5), L = mean(exp(-D) CE(logits, other's argmax)) + mean(D), both directions.
* **Prototype-guided contrastive learning** (:mod:`.prototypes`), per subnet on its last decoder
  features: reliable voxels = the subnets agree and both entropies are below their batch
  percentile; uncertain voxels pulled to their class prototype, prototypes pushed apart.
* L = L_sup + lambda(t) (L_cps + L_efs + L_ue) + lambda_c(t) L_pgl, both lambdas 0.1 x the loop's
  Gaussian ramp-up.
* **Warm start** (``--init``, the one-click retrain): the deployed V-Net fits subnet B only; subnet A
  starts random. The loop then ramps the coupling terms up over the whole run, the CR term included
  (``StepContext.coupling``): at full weight from the first iteration the random ResNet pulled the
  V-Net down (10% labels: validation 0.68 to 0.34 in 3000 iterations).

Decisions the paper leaves open:

* **Inference**: subnet B (the V-Net) as ``model`` (MC dropout applies; it is also the network
  of the paper's baselines); subnet A exported as ``student`` for disagreement uncertainty. The
  paper does not say which subnet its numbers come from.
* **Unconfident CPS voxels** are ignored. The paper's binary rule ("1 if above the threshold,
  else 0") would label every unconfident voxel background, the very bias towards easy classes
  its introduction criticises; ignoring them is the usual masked-CE reading and extends to C classes.
* **EFS pseudo-labels**: the other subnet's argmax (the paper: the framework relies on
  inter-network interaction); the two entropy thresholds are the percentile of each subnet's own
  entropies over the unlabeled part of the batch.
* **The unsupervised weight** (lost in conversion): the CPS lineage's 0.1 with the ramp-up; the
  contrastive coefficient's formula was lost too: 0.1 with the same ramp-up.
* **The contrastive loss's third term** (a soft constraint on the prototypes, paper Table 6) is
  lost with the equations and not implemented; pull + separation as METHODS.md describes.
* **Classes for the prototypes**: the label on labeled images (where reliable also requires the
  agreed prediction to be correct), the argmax of the mean of the two softmax outputs elsewhere.
* **Gradients** flow into both subnets through D (as in the cited rectification works); pseudo-
  labels and masks are detached. Temperature for the prototypes: 0.1 (not given).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from napari_ssl_seg.inference.mc_dropout import entropy
from napari_ssl_seg.methods.base import Batch, LossOutput, SemiSupervisedMethod, StepContext
from napari_ssl_seg.methods.losses import dice_ce_loss
from napari_ssl_seg.methods.prototypes import networks_prototype_loss
from napari_ssl_seg.methods.pseudo_labels import confident_pseudo_labels, masked_mean
from napari_ssl_seg.methods.settings import MethodSettings, check_at_most, check_positive
from napari_ssl_seg.networks.checkpoint import build_network
from napari_ssl_seg.networks.features import WithFeatures
from napari_ssl_seg.networks.resnet3d import RESNET34_BLOCKS, resnet_config_like
from napari_ssl_seg.runtime.class_ids import class_ids

__all__ = [
    "CCEDual",
    "disagreement_consistency",
    "entropy_filter_mask",
    "entropy_threshold",
    "kl_divergences",
    "kl_weighted",
]

_EPS = 1e-8


def disagreement_consistency(
    probabilities_a: torch.Tensor, probabilities_b: torch.Tensor, threshold: float
) -> torch.Tensor:
    """MSE of two softmax maps on voxels where the argmaxes differ and at least one is confident."""
    confidence_a, label_a = probabilities_a.detach().max(dim=1)
    confidence_b, label_b = probabilities_b.detach().max(dim=1)
    mask = (label_a != label_b) & ((confidence_a > threshold) | (confidence_b > threshold))
    squared = ((probabilities_a - probabilities_b) ** 2).mean(dim=1)
    selected = mask.to(squared.dtype)
    return (selected * squared).sum() / (selected.sum() + _EPS)


def entropy_threshold(values: torch.Tensor, percentile: float) -> torch.Tensor:
    """The ``percentile`` (0-100) of ``values``: the k-th smallest, k = ceil(p/100 n) (at least 1).

    ``kthvalue`` rather than ``torch.quantile``, which refuses tensors above 16 M elements.
    """
    flat = values.detach().reshape(-1).float()
    k = min(max(math.ceil(percentile / 100.0 * flat.numel()), 1), flat.numel())
    return flat.kthvalue(k).values


def entropy_filter_mask(entropy_a: torch.Tensor, entropy_b: torch.Tensor, percentile: float) -> torch.Tensor:
    """True where a voxel is kept: not above its batch percentile in both networks at once."""
    above_a = entropy_a > entropy_threshold(entropy_a, percentile)
    above_b = entropy_b > entropy_threshold(entropy_b, percentile)
    return ~(above_a & above_b)


def kl_divergences(
    logits_a: torch.Tensor, logits_b: torch.Tensor, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per voxel KL(p_a || p_b) and KL(p_b || p_a), p = softmax(logits / T): each log-softmax taken once."""
    log_a = F.log_softmax(logits_a.float() / temperature, dim=1)
    log_b = F.log_softmax(logits_b.float() / temperature, dim=1)
    difference = log_a - log_b
    return (log_a.exp() * difference).sum(dim=1), (log_b.exp() * -difference).sum(dim=1)


def kl_weighted(cross_entropy: torch.Tensor, divergence: torch.Tensor) -> torch.Tensor:
    """mean(exp(-D) CE) + mean(D) from a per-voxel cross-entropy and divergence."""
    return (torch.exp(-divergence) * cross_entropy).mean() + divergence.mean()


@dataclasses.dataclass(frozen=True)
class CCEDualSettings(MethodSettings):
    """See :class:`CCEDual` for each setting's meaning and source."""

    cr_weight: float = 0.5
    cr_threshold: float = 0.6
    cps_threshold: float = 0.6
    entropy_percentile: float = 70.0
    kl_temperature: float = 0.5
    unsupervised: float = 0.1
    contrastive: float = 0.1
    temperature: float = 0.1
    separation: float = 1.0
    resnet_blocks: tuple[int, ...] = tuple(RESNET34_BLOCKS)

    def check(self) -> None:
        check_at_most("cr_threshold", self.cr_threshold, 1.0, inclusive=False)
        check_at_most("cps_threshold", self.cps_threshold, 1.0, inclusive=False)
        check_at_most("entropy_percentile", self.entropy_percentile, 100.0)
        for name in ("entropy_percentile", "kl_temperature", "temperature"):
            check_positive(name, getattr(self, name))


class CCEDual(SemiSupervisedMethod):
    """Paper 004 (CCE dual network); see the module docstring.

    Settings: ``cr_weight`` (0.5), ``cr_threshold`` (0.6), ``cps_threshold`` (0.6),
    ``entropy_percentile`` (70), ``kl_temperature`` (0.5), ``unsupervised`` (0.1),
    ``contrastive`` (0.1), ``temperature`` (0.1), ``separation`` (1.0), ``resnet_blocks``
    ([3, 4, 6, 3]).
    """

    name: ClassVar[str] = "ccedual"
    inference_network: ClassVar[str] = "subnet_b"
    disagreement_network: ClassVar[str | None] = "subnet_a"
    Settings: ClassVar[type[MethodSettings]] = CCEDualSettings
    settings: CCEDualSettings

    def __init__(self, network: Mapping[str, Any], settings: Mapping[str, Any] | None = None) -> None:
        super().__init__(network, settings)
        resnet = resnet_config_like(self.network_config, self.settings.resnet_blocks)
        self.networks["subnet_a"] = WithFeatures(build_network(resnet))
        self.networks["subnet_b"] = WithFeatures(build_network(self.network_config))

    def trainable(self) -> list[str]:
        return ["subnet_a", "subnet_b"]

    def loss(self, batch: Batch, ctx: StepContext) -> LossOutput:
        labeled = batch.labeled_count
        images, target = batch.all_images, batch.labeled_target
        out_a = self.networks["subnet_a"](images, features=True)
        out_b = self.networks["subnet_b"](images, features=True)
        logits_a, logits_b = out_a.logits.float(), out_b.logits.float()
        prob_a, prob_b = torch.softmax(logits_a, dim=1), torch.softmax(logits_b, dim=1)
        num_classes = logits_a.shape[1]

        supervised = dice_ce_loss(logits_a[:labeled], target, dice_weight=1.0, ce_weight=1.0) + dice_ce_loss(
            logits_b[:labeled], target, dice_weight=1.0, ce_weight=1.0
        )
        consistency = disagreement_consistency(prob_a[:labeled], prob_b[:labeled], self.settings.cr_threshold)
        supervised = supervised + ctx.coupling * self.settings.cr_weight * consistency

        with torch.no_grad():
            entropy_a, entropy_b = entropy(prob_a), entropy(prob_b)
        logs: dict[str, float | torch.Tensor] = {}
        if batch.unlabeled_image.shape[0] > 0:
            u = slice(labeled, None)
            pseudo_a, confident_a = confident_pseudo_labels(prob_a[u], self.settings.cps_threshold)
            pseudo_b, confident_b = confident_pseudo_labels(prob_b[u], self.settings.cps_threshold)
            # CPS, EFS and the KL weighting all take each subnet's cross-entropy against the other's argmax,
            # under different masks and weights: computed once per subnet (2 instead of 6 passes and graphs).
            ce_a = F.cross_entropy(logits_a[u], pseudo_b, reduction="none")
            ce_b = F.cross_entropy(logits_b[u], pseudo_a, reduction="none")
            cps = masked_mean(ce_a, confident_b) + masked_mean(ce_b, confident_a)
            keep = entropy_filter_mask(entropy_a[u], entropy_b[u], self.settings.entropy_percentile)
            efs = masked_mean(ce_a, keep) + masked_mean(ce_b, keep)
            divergence, reverse = kl_divergences(logits_a[u], logits_b[u], self.settings.kl_temperature)
            ue_a, ue_b = kl_weighted(ce_a, divergence), kl_weighted(ce_b, reverse)
            unsupervised = cps + efs + ue_a + ue_b
            logs.update(
                {
                    "cps": cps.detach(),
                    "efs": efs.detach(),
                    "kl_weighted": (ue_a + ue_b).detach(),
                    "kl_divergence": divergence.detach().mean(),
                    "efs_kept_fraction": keep.float().mean(),
                }
            )
        else:
            unsupervised = logits_a.new_zeros(())

        # Prototype reliability: agreement and low entropy in both subnets (batch percentiles).
        with torch.no_grad():
            label_a, label_b = class_ids(prob_a), class_ids(prob_b)
            percentile = self.settings.entropy_percentile
            reliable = (
                (label_a == label_b)
                & (entropy_a < entropy_threshold(entropy_a, percentile))
                & (entropy_b < entropy_threshold(entropy_b, percentile))
            )
            classes = class_ids((prob_a + prob_b) / 2)
            classes[:labeled] = target
            reliable[:labeled] &= label_a[:labeled] == target
        # The last (full-resolution) decoder level of each subnet only.
        contrastive = networks_prototype_loss(
            [out_a.levels[-1:], out_b.levels[-1:]],
            classes,
            reliable,
            num_classes,
            self.settings.temperature,
            self.settings.separation,
        )

        weight_u = ctx.rampup * self.settings.unsupervised
        weight_c = ctx.rampup * self.settings.contrastive
        loss = supervised + weight_u * unsupervised + weight_c * contrastive
        logs.update(
            {
                "supervised": supervised.detach(),
                "consistency_regularisation": consistency.detach(),
                "unsupervised": unsupervised.detach(),
                "contrastive": contrastive.detach(),
                "consistency_weight": weight_u,
                "reliable_fraction": reliable.float().mean(),
            }
        )
        return LossOutput(loss, logs)

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "networks": {
                "subnet_a": "3D ResNet-34 encoder-decoder, trained (disagreement)",
                "subnet_b": "V-Net, trained (inference)",
            },
            "reference": "paper 004 (CCE dual network); METHODS.md '004'",
        }
