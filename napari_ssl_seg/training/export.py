"""What a training run exports: the chosen network(s) and the model card that describes them.

The loop calls this at every validation that improves on the best; the card records how the
weights were made (command, config, label versions, seed) and how they validated, so a model file
alone says where it came from (and ``--init`` can chain cards through ``parent``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from torch import nn

from napari_ssl_seg.methods.base import SemiSupervisedMethod
from napari_ssl_seg.networks.checkpoint import ModelCard
from napari_ssl_seg.training.config import TrainConfig
from napari_ssl_seg.training.data import LabelSnapshot

__all__ = ["deployed_card", "exported_networks", "run_model_card"]


def deployed_card(method: SemiSupervisedMethod, info: Mapping[str, Any], config: TrainConfig) -> ModelCard:
    """How the run's network is deployed (spacing, intensity, orientation): what validation predicts with."""
    return ModelCard(
        method=method.name,
        network=dict(info["network"]),
        patch_size=tuple(config.patch_size),
        intensity=dict(info["intensity"]),
        classes={int(k): v for k, v in info["classes"].items()},
        spacing=tuple(info["spacing"]),
        orientation=info.get("orientation"),
    )


def exported_networks(method: SemiSupervisedMethod, chosen: str | None) -> dict[str, nn.Module]:
    """The method's export, with candidate ``chosen`` as ``model`` when it is not the method's own choice."""
    exported = method.export()
    if chosen is None or chosen == method.inference_network:
        return exported
    # The method's own inference network becomes the disagreement partner of the chosen one.
    partner = {"student": exported["model"]} if "student" in exported else {}
    return {"model": method.inference_candidates()[chosen], **partner}


def run_model_card(
    method: SemiSupervisedMethod,
    info: Mapping[str, Any],
    config: TrainConfig,
    snapshot: LabelSnapshot,
    best: Mapping[str, Any],
    *,
    iteration: int,
    seed: int,
    world_size: int,
) -> ModelCard:
    """The card of the run's best model so far (``best``: dice, iteration, per_case, network, post)."""
    extra = {}
    if method.disagreement_network is not None:
        student = method.unwrapped(method.disagreement_network)
        extra["student"] = dict(getattr(student, "config", info["network"]))
    return dataclasses.replace(
        deployed_card(method, info, config),
        training={
            "command": info["command"],
            "config": config.to_dict(),
            "method_settings": method.describe()["settings"],
            "seed": seed,
            "label_versions": dict(snapshot.labeled),
            "validation_label_versions": dict(snapshot.validation),
            "unlabeled_cases": list(snapshot.unlabeled),
            "project": snapshot.project_name,
            "iterations": iteration,
            "world_size": world_size,
        },
        metrics={
            "validation_dice": best["dice"],
            "per_case_validation_dice": dict(best["per_case"]),
            "best_iteration": best["iteration"],
            "inference_network": best.get("network") or method.inference_network,
        },
        parent=info["parent"],
        extra_networks=extra,
        postprocessing=dict(best.get("post") or {}),
    )
