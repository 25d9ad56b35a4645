"""Exponential-moving-average (EMA) teachers, from one student or from the average of several.

The update of the mean-teacher lineage (UA-MT code, METHODS.md "Standard recipe")::

    a = min(1 - 1 / (step + 1), decay)
    theta_teacher <- a * theta_teacher + (1 - a) * sum_i w_i * theta_student_i      (sum_i w_i = 1)

With one student (w = 1) this is the Mean Teacher update; with two students and w = (0.5, 0.5) it
is UCMT's Eq. (6), the EMA of the students' average. The warm-up term ``1 - 1/(step + 1)`` makes
the first update (step 0) a plain copy, so the teacher's initial weights never matter.

Decisions the papers leave open:

* **Buffers (BatchNorm running mean/variance).** The reference codes average parameters only and
  keep their teachers in train mode, so a teacher's BatchNorm normalises with the statistics of its
  own batch. In this project the loop keeps every non-trainable network in eval mode
  (:meth:`SemiSupervisedMethod.train`), so a teacher normalises with its *running* statistics;
  left alone they would stay at their initial (0, 1) and the teacher would be wrong at inference.
  So floating-point buffers follow the same EMA as the parameters (the running statistics then
  match the averaged weights as closely as an average can), and integer buffers (BatchNorm's
  ``num_batches_tracked``) are copied from the first student, since a count has no average.
* **Step index.** The caller passes the step; methods with two optimiser steps per iteration use
  ``iteration * steps_per_iteration + step`` so each update has its own index and the warm-up
  counts updates, not iterations.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["ema_coefficient", "ema_update", "freeze"]


def ema_coefficient(step: int, decay: float) -> float:
    """The teacher's keep-fraction a = min(1 - 1/(step + 1), decay) (0 at step 0: a plain copy)."""
    if not 0.0 <= decay <= 1.0:
        raise ValueError(f"EMA decay must be in [0, 1], got {decay}")
    return min(1.0 - 1.0 / (max(step, 0) + 1.0), decay)


def freeze(module: nn.Module) -> nn.Module:
    """Switch off gradients for every parameter (a teacher learns only through :func:`ema_update`)."""
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    return module


@torch.no_grad()
def ema_update(
    teacher: nn.Module,
    students: nn.Module | Sequence[nn.Module],
    step: int,
    decay: float,
    weights: Sequence[float] | None = None,
) -> float:
    """Move ``teacher`` towards the weighted average of ``students``; return the coefficient a used.

    ``weights`` (default: equal) must be non-negative and sum to 1. All networks must have the same
    parameter and buffer names and shapes. See the module docstring for how buffers are handled.
    """
    students = [students] if isinstance(students, nn.Module) else list(students)
    if not students:
        raise ValueError("ema_update needs at least one student")
    if weights is None:
        weights = [1.0 / len(students)] * len(students)
    weights = [float(w) for w in weights]
    if len(weights) != len(students) or any(w < 0 for w in weights) or abs(sum(weights) - 1.0) > 1e-6:
        raise ValueError(f"EMA weights must be {len(students)} non-negative numbers summing to 1, got {weights}")
    a = ema_coefficient(step, decay)

    teacher_params = dict(teacher.named_parameters())
    student_params = [dict(student.named_parameters()) for student in students]
    for name, target in teacher_params.items():
        sources = [params.get(name) for params in student_params]
        if any(source is None or source.shape != target.shape for source in sources):
            raise ValueError(f"teacher parameter {name!r} has no matching parameter in every student")
        average = sum(w * source.detach().to(target.dtype) for w, source in zip(weights, sources, strict=True))
        target.mul_(a).add_(average, alpha=1.0 - a)

    teacher_buffers = dict(teacher.named_buffers())
    student_buffers = [dict(student.named_buffers()) for student in students]
    for name, target in teacher_buffers.items():
        sources = [buffers.get(name) for buffers in student_buffers]
        if any(source is None or source.shape != target.shape for source in sources):
            raise ValueError(f"teacher buffer {name!r} has no matching buffer in every student")
        if target.is_floating_point():
            average = sum(w * source.to(target.dtype) for w, source in zip(weights, sources, strict=True))
            target.mul_(a).add_(average, alpha=1.0 - a)
        else:
            target.copy_(sources[0])
    return a
