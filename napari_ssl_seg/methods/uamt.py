"""UA-MT (Yu et al. 2019): Mean Teacher with an MC-dropout uncertainty mask on the consistency.

On top of :class:`~napari_ssl_seg.methods.mt.MeanTeacher`: the teacher runs T = 8 MC-dropout
passes on the noised unlabeled images; the entropy H of their mean softmax selects the voxels
whose consistency counts (H < threshold); the threshold ramps from 0.75 ln 2 to ln 2 with
``exp(-5 (1 - t/t_max)^2)`` over the whole training (t = iteration, t_max = max_iterations), as in
the UA-MT code. Consistency = masked softmax MSE, ``sum(mask d) / (C sum(mask))``.

Decisions the paper leaves open:

* **C classes:** ln 2 is the largest entropy of two classes; for C classes the threshold is
  ``(start + (end - start) ramp) ln C`` (``threshold_start`` 0.75, ``threshold_end`` 1.0), the
  same fraction of the largest possible entropy.
* **MC dropout** uses :func:`~napari_ssl_seg.inference.mc_dropout.mc_dropout_moments`: only the
  dropout layers sample (BatchNorm in eval; METHODS.md), the encoder runs once, and the T passes
  share one noise draw. The UA-MT code gives every pass its own noise and runs the teacher in train
  mode (batch statistics); the project's MC-dropout definition is the one used at inference too.
* **Consistency target:** the teacher's deterministic prediction (eval mode, dropout off) on the
  same noised input; the MC passes only estimate the uncertainty (the UA-MT code's target is one
  more pass of a teacher in train mode).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

import torch

from napari_ssl_seg.inference.mc_dropout import entropy, mc_dropout_moments
from napari_ssl_seg.methods.base import StepContext, gaussian_rampup
from napari_ssl_seg.methods.losses import masked_softmax_mse
from napari_ssl_seg.methods.mt import MeanTeacher, MeanTeacherSettings
from napari_ssl_seg.methods.settings import MethodSettings, check_mc_samples

__all__ = ["UncertaintyAwareMeanTeacher", "uamt_threshold"]


def uamt_threshold(
    iteration: int, max_iterations: int, num_classes: int, start: float = 0.75, end: float = 1.0
) -> float:
    """UA-MT's entropy threshold at ``iteration``: (start + (end - start) ramp(t)) ln C."""
    if num_classes < 2:
        raise ValueError(f"an entropy threshold needs at least 2 classes, got {num_classes}")
    ramp = gaussian_rampup(iteration, max_iterations)
    return (start + (end - start) * ramp) * math.log(num_classes)


@dataclasses.dataclass(frozen=True)
class UAMTSettings(MeanTeacherSettings):
    """Mean Teacher's settings, the MC-dropout passes and the entropy threshold's ramp."""

    mc_samples: int = 8
    threshold_start: float = 0.75
    threshold_end: float = 1.0

    def check(self) -> None:
        super().check()
        check_mc_samples(self.mc_samples)


class UncertaintyAwareMeanTeacher(MeanTeacher):
    """UA-MT: Mean Teacher whose consistency counts only voxels the teacher is certain about.

    Settings: those of :class:`MeanTeacher` (``consistency`` 0.1, ``ema_decay`` 0.99,
    ``noise_std`` 0.1, ``noise_clip`` 0.2) plus

    * ``mc_samples`` (8): MC-dropout passes T of the teacher;
    * ``threshold_start`` (0.75), ``threshold_end`` (1.0): the entropy threshold's ramp, as
      fractions of ln C.
    """

    name: ClassVar[str] = "uamt"
    Settings: ClassVar[type[MethodSettings]] = UAMTSettings
    settings: UAMTSettings

    def _consistency(
        self, student_logits: torch.Tensor, teacher_input: torch.Tensor, ctx: StepContext
    ) -> tuple[torch.Tensor, dict[str, float]]:
        teacher = self.networks["teacher"]
        with torch.no_grad():
            # The deterministic pass and the MC passes share one encoding (no dropout in the encoder).
            features = teacher.encode(teacher_input)
            teacher_probabilities = torch.softmax(teacher.decode(features).float(), dim=1)
            mean, _ = mc_dropout_moments(teacher, teacher_input, self.settings.mc_samples, features=features)
            uncertainty = entropy(mean)
            threshold = uamt_threshold(
                ctx.iteration,
                ctx.max_iterations,
                teacher_probabilities.shape[1],
                self.settings.threshold_start,
                self.settings.threshold_end,
            )
            mask = uncertainty < threshold
        consistency = masked_softmax_mse(student_logits, teacher_probabilities, mask)
        return consistency, {"threshold": threshold, "mask_fraction": mask.float().mean()}

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "reference": "Yu et al. 2019 (UA-MT); threshold scaled by ln C for C classes",
        }
