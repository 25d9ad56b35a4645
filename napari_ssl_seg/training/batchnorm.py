"""BatchNorm statistics of the exported network re-estimated over every training case, kept if it validates better.

A network's BatchNorm running statistics are averages over the patches it trained on. With two
labeled cases, and a third of the patches centred on foreground, those are a narrow sample of a few
scans, while sliding-window inference sees every part of every scan. At the end of a run this step
resets the statistics of the exported network and re-estimates them (weights unchanged, no gradient)
from patches placed uniformly in all training cases, labeled and unlabeled: the project's unlabeled
scans are at hand, and this is where a supervised run first uses them (AdaBN's idea, Li et al. 2016).
Measured on five teachers at 10% labels, +0.01 to +0.025 test Dice and 5 to 15 mm less HD95
(docs/label_gap.md). The validation split decides: the re-estimated network replaces the export only
if it scores higher, and the card says so (``metrics["batchnorm_statistics"]``).

The passes run in the precision and layout the run trained in (``runtime/precision.py``: bfloat16 and
channels-last on this CPU), as the statistics were gathered during training and as the predictor deploys the
network. In float32 the 100 passes took 15-17 s of a 300-iteration retrain's 23-38 s step on 2 cores, against 5 s
in bfloat16 (docs/benchmarks.md).

The validation cases are left out of the estimate so that they still judge it fairly. The patches
come from their own seed, and the global torch generator is restored afterwards, so a run's training
randomness is the same with and without this step.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import math
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from napari_ssl_seg.evaluation.validation import ValidationCase, ValidationScore, validate_network
from napari_ssl_seg.networks.checkpoint import ModelCard, load_checkpoint, save_checkpoint
from napari_ssl_seg.runtime.precision import Execution, execution_for
from napari_ssl_seg.store.project import Project
from napari_ssl_seg.store.records import CaseRecord
from napari_ssl_seg.training.data import LabelSnapshot, load_cases
from napari_ssl_seg.training.runlog import read_log
from napari_ssl_seg.training.sampler import TwoStreamSampler, has_lateral_classes

__all__ = [
    "BATCH_PATCHES",
    "batchnorm_layers",
    "case_groups",
    "recalibrate_export",
    "reestimate_batchnorm",
    "reestimate_over_cases",
    "run_statistics_summary",
    "statistics_summary",
    "training_patches",
]

#: Patches per forward pass of the estimate (the product's CPU batch: 2 labeled + 2 unlabeled).
BATCH_PATCHES = 4
#: Added to the run's seed for the estimate's patches: a stream of its own.
SEED_OFFSET = 7919
#: Image voxels (at the card's spacing) the estimate holds at once: 1 GiB of float32, three CTs of 512x512x300
#: for a teacher of their own spacing. Fifty such scans would need about 16 GB; they are read a group at a time.
MAX_VOXELS_IN_MEMORY = 2**28


def batchnorm_layers(network: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [module for module in network.modules() if isinstance(module, nn.modules.batchnorm._BatchNorm)]


def reestimate_batchnorm(
    network: nn.Module, batches: Iterable[torch.Tensor], execution: Execution | None = None
) -> int:
    """Replace ``network``'s BatchNorm running statistics by their cumulative average over ``batches``.

    ``execution``: the precision and layout of the passes (None: float32 on the network's device).
    With one, the network is moved to its device and layout (in place, as the predictor does).

    Each batch weighs the same whatever its place in ``batches``, so the order the cases come in
    (:func:`training_patches` reads them a group at a time) does not change the estimate.

    Every other weight is unchanged. The network runs in training mode (dropout included) as when it
    gathered its statistics during training, and is left in evaluation mode. Returns the number of
    batches seen; with no BatchNorm layer nothing runs and 0 is returned.
    """
    layers = batchnorm_layers(network)
    if not layers:
        return 0
    momenta = [layer.momentum for layer in layers]
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None  # None: a cumulative average, each batch weighted equally
    if execution is not None:
        execution.prepare_module(network)
    device = next(network.parameters()).device
    prepare = execution.prepare_input if execution is not None else (lambda batch: batch)
    precision = execution.autocast() if execution is not None else contextlib.nullcontext()
    seen = 0
    network.train()
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), precision:
            for batch in batches:
                network(prepare(batch.to(device)))
                seen += 1
    finally:
        for layer, momentum in zip(layers, momenta, strict=True):
            layer.momentum = momentum
        network.eval()
    return seen


def _voxels_at(record: CaseRecord, spacing: Sequence[float] | None) -> float:
    """About how many voxels a case holds once resampled to ``spacing`` (None: as stored).

    From the physical volume rather than data.resampled_shape: the stored spacing is in the file's axis order and
    ``spacing`` in the card's orientation, and a product of all three axes does not depend on their order.
    """
    voxels = float(math.prod(record.shape))
    if spacing is None:
        return voxels
    return voxels * math.prod(record.spacing) / math.prod(spacing)


def case_groups(
    project: Project, cases: Sequence[str], card: ModelCard, *, max_voxels: float = MAX_VOXELS_IN_MEMORY
) -> list[list[str]]:
    """``cases`` in order, cut into groups whose images at the card's spacing fit ``max_voxels`` together.

    A case larger than the budget on its own still gets a group (one case is the least the estimate can hold).
    """
    records = {record.name: record for record in project.cases()}  # one query, not one per case
    groups: list[list[str]] = []
    held = 0.0
    for name in cases:
        voxels = _voxels_at(records[name], card.spacing)
        if not groups or held + voxels > max_voxels:
            groups.append([])
            held = 0.0
        groups[-1].append(name)
        held += voxels
    return groups


def _batches_per_group(batches: int, groups: Sequence[Sequence[str]]) -> list[int]:
    """``batches`` shared in proportion to each group's cases (the sampler draws cases uniformly), summing exactly."""
    total = sum(len(group) for group in groups)
    bounds, seen = [0], 0
    for group in groups:
        seen += len(group)
        bounds.append(round(batches * seen / total))
    return [end - start for start, end in itertools.pairwise(bounds)]


def training_patches(
    project: Project,
    cases: Sequence[str],
    card: ModelCard,
    *,
    batches: int,
    seed: int,
    lateral: bool,
    max_voxels: float = MAX_VOXELS_IN_MEMORY,
) -> Iterator[torch.Tensor]:
    """``batches`` batches of patches of ``cases``, prepared as ``card`` deploys its network.

    The cases are read a group at a time (:func:`case_groups`), so a project of many fine-spaced
    scans never sits in memory at once; a project that fits in one group gets the same patches as
    one sampler over all its cases.
    """
    groups = case_groups(project, cases, card, max_voxels=max_voxels)
    index = 0
    for group, count in zip(groups, _batches_per_group(batches, groups), strict=True):
        if count == 0:
            continue
        data = load_cases(
            project,
            dict.fromkeys(group),
            card.intensity,
            pad_to=card.patch_size,
            orientation=card.orientation,
            spacing=card.spacing,
        )
        # Plain random crops (no foreground oversampling, no intensity changes): inference sees every place.
        sampler = TwoStreamSampler(
            data,
            [],
            patch_size=card.patch_size,
            batch_labeled=BATCH_PATCHES,
            batch_unlabeled=0,
            seed=seed,
            lateral=lateral,
        )
        for _ in range(count):
            yield sampler.batch(index).labeled_image
            index += 1
        del data, sampler  # before the next group is read: one group in memory at a time, not two


def reestimate_over_cases(
    network: nn.Module,
    project: Project,
    cases: Sequence[str],
    card: ModelCard,
    *,
    batches: int,
    seed: int,
    lateral: bool | None = None,
    execution: Execution | None = None,
) -> int:
    """:func:`reestimate_batchnorm` over :func:`training_patches` of ``cases``; returns the batches seen.

    ``lateral`` None: flip left-right only when the card's classes name no side, as a run decides by default.
    ``execution``: as for :func:`reestimate_batchnorm`.
    """
    if lateral is None:
        lateral = not has_lateral_classes(card.classes)
    return reestimate_batchnorm(
        network, training_patches(project, cases, card, batches=batches, seed=seed, lateral=lateral), execution
    )


def recalibrate_export(
    project: Project,
    model_path: Path,
    snapshot: LabelSnapshot,
    validation: Sequence[ValidationCase],
    *,
    batches: int,
    seed: int,
    lateral: bool,
    device: torch.device,
    scoring: Mapping[str, Any],
) -> dict[str, Any] | None:
    """Re-estimate the exported model's BatchNorm statistics over the snapshot's training cases; keep it if better.

    ``model_path``: the export (a stem or either file). ``scoring``: :func:`validate_network`'s keyword
    arguments as the loop validates; its ``amp`` (the run's mixed precision) also sets the passes'
    precision. Returns the record of what was measured (None when the network has no BatchNorm layer):
    the validation Dice as trained and re-estimated, whether the export was replaced, and then, under
    ``best``, the adopted score as the loop keeps its best.
    """
    started = time.perf_counter()
    cases = [*snapshot.labeled, *snapshot.unlabeled]
    networks, card = load_checkpoint(model_path)
    network = networks["model"].to(device)
    if not batchnorm_layers(network):
        return None
    as_trained: float = card.metrics["validation_dice"]
    execution = execution_for(device, mixed_precision=bool(scoring.get("amp", True)))
    seen = reestimate_over_cases(
        network, project, cases, card, batches=batches, seed=seed + SEED_OFFSET, lateral=lateral, execution=execution
    )
    score: ValidationScore = validate_network(network, validation, card, device=device, **scoring)
    adopted = score.dice > as_trained
    record: dict[str, Any] = {
        "validation_dice_as_trained": as_trained,
        "validation_dice_reestimated": score.dice,
        "adopted": adopted,
        "cases": len(cases),
        "patches": seen * BATCH_PATCHES,
        "seconds": round(time.perf_counter() - started, 1),  # the estimate and its validation: the run's last wait
    }
    if adopted:
        metrics = {
            **card.metrics,
            "validation_dice": score.dice,
            "per_case_validation_dice": dict(score.per_case),
            "batchnorm_statistics": {key: record[key] for key in ("cases", "patches", "validation_dice_as_trained")},
        }
        networks["model"] = network.cpu()
        adopted_card = dataclasses.replace(card, metrics=metrics, postprocessing=dict(score.postprocessing or {}))
        save_checkpoint(model_path, networks, adopted_card, overwrite=True)
        record["best"] = {"dice": score.dice, "per_case": dict(score.per_case), "post": score.postprocessing}
    return record


def statistics_summary(record: Mapping[str, Any]) -> str:
    """One line for a run log's "batchnorm" record (what :func:`recalibrate_export` returned); "" if it is not one."""
    before, after = record.get("validation_dice_as_trained"), record.get("validation_dice_reestimated")
    if not isinstance(before, int | float) or not isinstance(after, int | float):
        return ""
    kept = "kept" if record.get("adopted") else "not kept (no better)"
    cases = record.get("cases", "all")
    digits = next((d for d in (3, 4, 5) if f"{before:.{d}f}" != f"{after:.{d}f}"), 3)  # never "0.824 → 0.824"
    scores = f"{before:.{digits}f} → {after:.{digits}f}"
    return f"BatchNorm statistics of {cases} training cases {kept}: validation Dice {scores}"


def run_statistics_summary(log_path: Path, iterations: int) -> str:
    """:func:`statistics_summary` of the step that ended a run at ``iterations`` (its log.jsonl); "" if none did."""
    if not log_path.is_file():
        return ""
    ends = [record for record in read_log(log_path) if record.get("kind") == "batchnorm"]  # one per completed end
    return statistics_summary(ends[-1]) if ends and ends[-1].get("iteration") == iterations else ""
