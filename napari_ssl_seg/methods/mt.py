"""Mean Teacher (Tarvainen & Valpola 2017) as the UA-MT lineage runs it for 3D segmentation.

* Student trained with ``0.5 (CE + Dice)`` on labeled data (UA-MT's supervised loss).
* Teacher = EMA of the student, a = min(1 - 1/(step + 1), ``ema_decay``) (:mod:`.ema`); it sees
  the unlabeled images with noise ``clamp(0.1 N(0, 1), -0.2, 0.2)`` (:mod:`.perturbations`).
* Consistency: mean squared difference of student and teacher softmax on the unlabeled images,
  weighted by ``ctx.rampup * consistency`` (0.1, the lineage's lambda_max).

Decisions the paper leaves open:

* The teacher runs in eval mode (the loop's rule for non-trainable networks): dropout off,
  BatchNorm with running statistics, which the EMA carries along with the weights (see
  :mod:`.ema`). The UA-MT code keeps its teacher in train mode (batch statistics, dropout on).
* The student sees labeled and unlabeled images in one pass, so BatchNorm normalises over both
  (as in UA-MT); consistency covers the unlabeled part only.
* With no unlabeled images in a batch the consistency term is 0 (the method degrades to
  supervised training rather than failing).
* The EMA step index is ``ctx.iteration * steps_per_iteration + ctx.step``.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

import torch

from napari_ssl_seg.methods.base import Batch, LossOutput, SemiSupervisedMethod, StepContext
from napari_ssl_seg.methods.ema import ema_update, freeze
from napari_ssl_seg.methods.losses import dice_ce_loss, softmax_mse
from napari_ssl_seg.methods.perturbations import mean_teacher_noise
from napari_ssl_seg.methods.settings import MethodSettings, check_at_most
from napari_ssl_seg.networks.checkpoint import build_network

__all__ = ["MeanTeacher", "MeanTeacherSettings"]


@dataclasses.dataclass(frozen=True)
class MeanTeacherSettings(MethodSettings):
    """The consistency weight, the teacher's EMA decay and the teacher-input noise."""

    consistency: float = 0.1
    ema_decay: float = 0.99
    noise_std: float = 0.1
    noise_clip: float = 0.2

    def check(self) -> None:
        check_at_most("ema_decay", self.ema_decay, 1.0)


class MeanTeacher(SemiSupervisedMethod):
    """Mean Teacher: student + EMA teacher with softmax-MSE consistency on noised teacher inputs.

    Settings (defaults are the UA-MT lineage's values):

    * ``consistency`` (0.1): maximum consistency weight, multiplied by the loop's ramp-up.
    * ``ema_decay`` (0.99): EMA decay of the teacher.
    * ``noise_std`` (0.1), ``noise_clip`` (0.2): teacher-input noise ``clamp(std N(0,1), -clip, clip)``.
    """

    name: ClassVar[str] = "mt"
    inference_network: ClassVar[str] = "teacher"
    disagreement_network: ClassVar[str | None] = "student"
    inference_alternatives: ClassVar[tuple[str, ...]] = ("student",)
    Settings: ClassVar[type[MethodSettings]] = MeanTeacherSettings
    settings: MeanTeacherSettings

    def __init__(self, network: Mapping[str, Any], settings: Mapping[str, Any] | None = None) -> None:
        super().__init__(network, settings)
        student = build_network(self.network_config)
        # The teacher starts as a copy; the first EMA update (a = 0) would make it one anyway.
        self.networks["student"] = student
        self.networks["teacher"] = freeze(copy.deepcopy(student))

    def trainable(self) -> list[str]:
        return ["student"]

    def _teacher_input(self, images: torch.Tensor) -> torch.Tensor:
        return mean_teacher_noise(images, self.settings.noise_std, self.settings.noise_clip)

    def _consistency(
        self, student_logits: torch.Tensor, teacher_input: torch.Tensor, ctx: StepContext
    ) -> tuple[torch.Tensor, dict[str, float]]:
        with torch.no_grad():
            teacher_probabilities = torch.softmax(self.networks["teacher"](teacher_input).float(), dim=1)
        return softmax_mse(student_logits, teacher_probabilities), {}

    def loss(self, batch: Batch, ctx: StepContext) -> LossOutput:
        labeled = batch.labeled_count
        logits = self.networks["student"](batch.all_images)
        supervised = dice_ce_loss(logits[:labeled], batch.labeled_target)
        weight = ctx.rampup * self.settings.consistency
        logs: dict[str, float | torch.Tensor] = {}
        if batch.unlabeled_image.shape[0] > 0:
            teacher_input = self._teacher_input(batch.unlabeled_image)
            consistency, logs = self._consistency(logits[labeled:], teacher_input, ctx)
        else:
            consistency = logits.new_zeros(())
        loss = supervised + weight * consistency
        logs.update(
            {
                "supervised": supervised.detach(),
                "consistency": consistency.detach(),
                "consistency_weight": weight,
            }
        )
        return LossOutput(loss, logs)

    def update_teachers(self, ctx: StepContext) -> None:
        step = ctx.iteration * self.steps_per_iteration + ctx.step
        ema_update(self.unwrapped("teacher"), self.unwrapped("student"), step, self.settings.ema_decay)

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "networks": {"student": "trained", "teacher": "EMA of student (inference)"},
            "reference": "Tarvainen & Valpola 2017, as in the UA-MT code (METHODS.md baselines)",
        }
