"""UG-MCL (paper 002): uncertainty-guided mutual consistency learning with a dual-task V-Net.

* **Network** (:class:`DualTaskVNet`): the papers' V-Net with a second head on the last decoder
  features: a 1x1x1 conv + ``tanh`` regressing the signed distance map (SDF, :mod:`.sdf`) of each
  foreground class, beside the segmentation classifier. Both heads read the same features after
  the last dropout (one dropout mask per pass, so the two heads see the same sample).
* **Supervised** (Eq. 2): Dice + CE on the segmentation head and the MSE between the SDF head and
  the SDF of the label, each with weight 1 as the equation writes them.
* **Mean teacher**: EMA teacher (decay 0.99, parameters and BatchNorm statistics, :mod:`.ema`) fed
  with the noised images (``clamp(0.1 N(0,1), -0.2, 0.2)``); T = 8 MC-dropout passes give the
  entropy u; voxels with u < u_th count, u_th ramping from 0.75 ln C to ln C (:func:`uamt_threshold`).
* **Intra-task consistency** (Eq. 4): beta * masked MSE(softmax seg_s, softmax seg_t) + (1 - beta)
  * masked MSE(sdf_s, sdf_t), beta = 0.75 (the paper's ablation optimum).
* **Cross-task consistency** (Eq. 6): mean (softmax seg_s[1:] - sigmoid(-k sdf_s))^2, k = 1500,
  gradients into both heads.
* L = L_sup + lambda_i L_itc + lambda_c L_ctc, both lambdas = 0.1 x the loop's Gaussian ramp-up.

Decisions the paper leaves open:

* **Which images.** Eq. (4) and (6) are written over D (all data) and Fig. 1 says the cross-task
  term covers labeled and unlabeled data, so both consistency terms use the whole batch.
* **Where the label's SDF is measured.** The lineage's code transforms each patch; here the
  distances are measured once per labeled case on its whole label map and each patch normalises
  its crop of them (:mod:`.sdf`): the same map where the patch holds the nearest boundary, the
  true distance where the crop cuts an object, and the transform's cost once per case instead of
  once per patch.
* **Multi-class.** The SDF head has C - 1 channels (one-vs-rest per foreground class); the
  cross-task term compares them with softmax channels 1 .. C - 1. The paper is binary.
* **MC dropout** is the project's (dropout layers only, BatchNorm in eval), on the teacher's
  segmentation V-Net; the consistency targets are the teacher's deterministic outputs, as in
  :mod:`.uamt`.
* **Inference and export**: the teacher's V-Net alone (``model``) and the student's V-Net
  (``student``), plain :class:`~napari_ssl_seg.networks.vnet.VNet` s: the SDF head is training
  state, so every loader and the predictor see an ordinary V-Net (MC dropout applies).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from napari_ssl_seg.inference.mc_dropout import entropy, mc_dropout_moments
from napari_ssl_seg.methods.base import Batch, LossOutput, SemiSupervisedMethod, StepContext
from napari_ssl_seg.methods.ema import ema_update, freeze
from napari_ssl_seg.methods.losses import dice_ce_loss, masked_softmax_mse
from napari_ssl_seg.methods.perturbations import mean_teacher_noise
from napari_ssl_seg.methods.sdf import normalise_sdf, sdf_targets, sdf_to_probability, signed_distances
from napari_ssl_seg.methods.settings import MethodSettings, check_at_most
from napari_ssl_seg.methods.uamt import UAMTSettings, uamt_threshold
from napari_ssl_seg.networks.checkpoint import build_network
from napari_ssl_seg.networks.vnet import VNet

__all__ = ["UGMCL", "DualTaskVNet", "UGMCLSettings", "masked_mse"]

_EPS = 1e-16


class DualTaskVNet(nn.Module):
    """A V-Net plus an SDF regression head; ``forward(x)`` gives logits, ``forward(x, dual=True)`` both."""

    def __init__(self, vnet: VNet) -> None:
        super().__init__()
        if not isinstance(vnet, VNet):
            raise TypeError(f"UG-MCL needs the project's VNet, got {type(vnet).__name__}")
        if vnet.num_classes < 2:
            raise ValueError("UG-MCL needs at least 2 classes (background and one foreground)")
        self.vnet = vnet
        self.sdf_head = nn.Conv3d(vnet.base_width, vnet.num_classes - 1, kernel_size=1)

    @property
    def config(self) -> dict[str, Any]:
        # What is exported is the V-Net (the SDF head is training state); the loop reads this.
        return dict(self.vnet.config)

    def forward(self, x: torch.Tensor, dual: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        return self.decode(self.vnet.encode(x), dual)

    def decode(self, features: Any, dual: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """:meth:`forward` from the V-Net's encoding (which MC dropout of the teacher reuses)."""
        decoded = self.vnet.final_dropout(self.vnet.decode_features(features))
        logits = self.vnet.classifier(decoded)
        if not dual:
            return logits
        return logits, torch.tanh(self.sdf_head(decoded))


def masked_mse(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Squared difference averaged over channels and the voxels where ``mask`` (N, z, y, x) is set."""
    if prediction.shape != target.shape or mask.shape != prediction.shape[:1] + prediction.shape[2:]:
        raise ValueError(f"shapes {tuple(prediction.shape)}, {tuple(target.shape)}, {tuple(mask.shape)} differ")
    difference = (prediction.float() - target.detach().float()) ** 2
    weight = mask.to(difference.dtype).unsqueeze(1)
    return (weight * difference).sum() / (difference.shape[1] * weight.sum() + _EPS)


@dataclasses.dataclass(frozen=True)
class UGMCLSettings(UAMTSettings):
    """UA-MT's settings (UG-MCL's teacher side is UA-MT's), the cross-task weight, the mix ``beta``
    and the signed-distance head's weight and sharpness; see :class:`UGMCL`."""

    cross_task: float = 0.1
    beta: float = 0.75
    sdf_weight: float = 1.0
    sdf_k: float = 1500.0

    def check(self) -> None:
        super().check()
        check_at_most("beta", self.beta, 1.0)


class UGMCL(SemiSupervisedMethod):
    """UG-MCL; see the module docstring.

    Settings (paper values): ``consistency`` (0.1, lambda_i's maximum), ``cross_task`` (0.1,
    lambda_c's maximum), ``beta`` (0.75), ``sdf_weight`` (1.0), ``sdf_k`` (1500),
    ``ema_decay`` (0.99), ``mc_samples`` (8), ``threshold_start`` (0.75) / ``threshold_end``
    (1.0) as fractions of ln C, ``noise_std`` (0.1), ``noise_clip`` (0.2).
    """

    name: ClassVar[str] = "ugmcl"
    inference_network: ClassVar[str] = "teacher"
    disagreement_network: ClassVar[str | None] = "student"
    inference_alternatives: ClassVar[tuple[str, ...]] = ("student",)
    Settings: ClassVar[type[MethodSettings]] = UGMCLSettings
    settings: UGMCLSettings

    def __init__(self, network: Mapping[str, Any], settings: Mapping[str, Any] | None = None) -> None:
        super().__init__(network, settings)
        student = DualTaskVNet(build_network(self.network_config))
        self.networks["student"] = student
        self.networks["teacher"] = freeze(copy.deepcopy(student))

    def trainable(self) -> list[str]:
        return ["student"]

    def case_target(self, label: np.ndarray) -> np.ndarray:
        # Distances measured once per case, on its whole label map (methods/sdf.py says why).
        return signed_distances(label, int(self.network_config["num_classes"]), np.float16)

    def data_targets(
        self, labeled_target: torch.Tensor, case_target: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        if case_target is None:
            return {"sdf": sdf_targets(labeled_target, int(self.network_config["num_classes"]))}
        return {"sdf": normalise_sdf(case_target)}

    def loss(self, batch: Batch, ctx: StepContext) -> LossOutput:
        labeled = batch.labeled_count
        images = batch.all_images
        logits, sdf = self.networks["student"](images, dual=True)
        num_classes = logits.shape[1]
        # The loop computes the SDF targets in its data stage; a batch built by hand has none yet.
        sdf_label = batch.extras.get("sdf")
        if sdf_label is None:
            sdf_label = sdf_targets(batch.labeled_target, num_classes)
        segmentation = dice_ce_loss(logits[:labeled], batch.labeled_target, dice_weight=1.0, ce_weight=1.0)
        sdf_loss = torch.mean((sdf[:labeled].float() - sdf_label) ** 2)
        supervised = segmentation + self.settings.sdf_weight * sdf_loss

        teacher = self.unwrapped("teacher")
        noisy = mean_teacher_noise(images, self.settings.noise_std, self.settings.noise_clip)
        with torch.no_grad():
            features = teacher.vnet.encode(noisy)
            teacher_logits, teacher_sdf = teacher.decode(features, dual=True)
            mean, _ = mc_dropout_moments(teacher.vnet, noisy, self.settings.mc_samples, features=features)
            threshold = uamt_threshold(
                ctx.iteration,
                ctx.max_iterations,
                num_classes,
                self.settings.threshold_start,
                self.settings.threshold_end,
            )
            mask = entropy(mean) < threshold
        beta = self.settings.beta
        intra = beta * masked_softmax_mse(logits, torch.softmax(teacher_logits.float(), dim=1), mask) + (
            1.0 - beta
        ) * masked_mse(sdf, teacher_sdf, mask)
        foreground = torch.softmax(logits.float(), dim=1)[:, 1:]
        cross = torch.mean((foreground - sdf_to_probability(sdf, self.settings.sdf_k)) ** 2)

        weight_intra = ctx.rampup * self.settings.consistency
        weight_cross = ctx.rampup * self.settings.cross_task
        loss = supervised + weight_intra * intra + weight_cross * cross
        logs = {
            "supervised": segmentation.detach(),
            "sdf": sdf_loss.detach(),
            "intra_task": intra.detach(),
            "cross_task": cross.detach(),
            "consistency_weight": weight_intra,
            "threshold": threshold,
            "mask_fraction": mask.float().mean(),
        }
        return LossOutput(loss, logs)

    def update_teachers(self, ctx: StepContext) -> None:
        step = ctx.iteration * self.steps_per_iteration + ctx.step
        ema_update(self.unwrapped("teacher"), self.unwrapped("student"), step, self.settings.ema_decay)

    def export(self) -> dict[str, nn.Module]:
        """Plain V-Nets: the teacher's as ``model``, the student's as ``student`` (no SDF heads)."""
        teacher, student = self.unwrapped("teacher"), self.unwrapped("student")
        assert isinstance(teacher, DualTaskVNet) and isinstance(student, DualTaskVNet)
        return {"model": teacher.vnet, "student": student.vnet}

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "networks": {
                "student": "V-Net + SDF head, trained",
                "teacher": "EMA of student; its V-Net is the inference model",
            },
            "reference": "Zhang et al. (UG-MCL), paper 002; METHODS.md 'UG-MCL'",
        }
