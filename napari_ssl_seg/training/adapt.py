"""Adapt the active teacher to the project's own scans: BatchNorm statistics re-estimated over them, no labels.

A teacher trained elsewhere (a shipped one, a colleague's) normalises its features with statistics of the
scans it was trained on; a lab's scanner, protocol and patients shift them. Re-estimating those
statistics over the project's training cases (weights unchanged, no gradient, no label needed: AdaBN,
Li et al. 2016; the same estimate a run makes at its end, training/batchnorm.py) raised the shipped
teachers' right-lung Dice on two real chest CTs of patients no model saw from 0.932-0.954 to 0.962-0.969,
the left lungs staying level or better (``benchmarks/real_ct.py --statistics-batches 100``).

The adapted teacher is a new model version whose parent is the active one, so rolling back is one
click. With a labeled validation case the promotion rule decides (training/promote.py: it becomes
active only if it validates at least as well). Without one there is nothing to decide on: the adapted
teacher becomes active and the outcome says it was not validated. Validation and test cases are left
out of the estimate, so they still judge it fairly.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from napari_ssl_seg.errors import InputError
from napari_ssl_seg.inference.device import select_device
from napari_ssl_seg.networks.checkpoint import card_timestamp, load_checkpoint, save_card, save_checkpoint
from napari_ssl_seg.runtime.precision import execution_for
from napari_ssl_seg.store.models import activate_model, active_model, register_model
from napari_ssl_seg.store.project import Project
from napari_ssl_seg.training.batchnorm import BATCH_PATCHES, batchnorm_layers, reestimate_over_cases
from napari_ssl_seg.training.job import default_retrain_dir
from napari_ssl_seg.training.promote import RetrainOutcome, is_better, validation_dice

__all__ = ["AdaptOutcome", "adapt_active_teacher", "adaptation_cases"]


@dataclass(frozen=True)
class AdaptOutcome(RetrainOutcome):
    """A retrain's outcome (versions, validation Dice of both, promoted or not; None: not validated) and the number
    of training cases whose statistics the new version took."""

    cases: int = 0

    @property
    def validated(self) -> bool:
        return self.new_dice is not None

    def as_dict(self) -> dict[str, Any]:
        return {**super().as_dict(), "validated": self.validated}


def _scored_on_parent(metric: str) -> bool:
    """A card metric that scores the parent's network (its validation and test figures, as a shipped card records
    them): measured with other statistics, it does not describe the adapted weights."""
    return "validation" in metric or metric.startswith("test_")


def adaptation_cases(project: Project) -> list[str]:
    """Every training case, labeled or not: the scans the teacher is to work on. Validation and test cases judge."""
    return [case.name for case in project.cases() if case.split == "train"]


def adapt_active_teacher(
    project: Project, *, batches: int = 100, device: str = "auto", seed: int = 0, out_dir: Path | None = None
) -> AdaptOutcome:
    """Register the active teacher with statistics of the project's training cases; activate it as said above.

    Raises :class:`InputError` when there is no active teacher, no training case, or no BatchNorm
    layer in the teacher (nothing to adapt); nothing is registered then.
    """
    if batches < 1:
        raise InputError(f"--batches must be at least 1, got {batches}")
    active = active_model(project)
    if active is None:
        raise InputError("no active teacher to adapt: load or train one first")
    cases = adaptation_cases(project)
    if not cases:
        raise InputError(f"project {project.root} has no training case to adapt the teacher to")
    networks, card = load_checkpoint(active.checkpoint(project))
    if not batchnorm_layers(networks["model"]):
        raise InputError(f"teacher {active.name} has no BatchNorm layer: there are no statistics to adapt")
    target = select_device(device)
    network = networks["model"]
    # The precision the predictor deploys the teacher in (and 3x faster than float32 on a bfloat16 CPU).
    seen = reestimate_over_cases(
        network, project, cases, card, batches=batches, seed=seed, execution=execution_for(target)
    )
    networks["model"] = network.cpu()
    statistics = {"cases": len(cases), "patches": seen * BATCH_PATCHES, "adapted_from": active.name}
    metrics = {key: value for key, value in card.metrics.items() if not _scored_on_parent(key)}
    parent = card.weights_sha256 or active.name  # as a run's card names the model it started from
    metrics |= {"batchnorm_statistics": statistics}
    adapted = dataclasses.replace(card, metrics=metrics, parent=parent, created_at=card_timestamp())
    out = out_dir or default_retrain_dir(project.root, kind="adapt")
    out.mkdir(parents=True, exist_ok=True)
    checkpoint = out / "model.safetensors"
    save_checkpoint(checkpoint, networks, adapted)
    old_dice = new_dice = None
    if any(case.split == "validation" and case.is_labeled for case in project.cases()):
        old_dice = validation_dice(project, active.checkpoint(project), device=device)
        new_dice = validation_dice(project, checkpoint, device=device)
        adapted.metrics["validation_dice"] = new_dice
        save_card(checkpoint, adapted)  # the weights as written above
    version = register_model(project, checkpoint, parent=active.name, activate=False)
    promoted = new_dice is None or is_better(new_dice, old_dice)
    if promoted:
        activate_model(project, version.id)
    now = active_model(project)
    now_name = now.name if now else active.name
    return AdaptOutcome(
        "completed", out, active.name, version.name, old_dice, new_dice, promoted, now_name, cases=len(cases)
    )
