"""The training loop's validation: the live network scored exactly as the promotion will score it.

The loop used to predict its validation cases on its own path (the case's native spacing, its own
sliding window) while the deployed teacher predicts through :class:`Predictor` (resampled to the
card's spacing, and back): on a cohort whose slice spacing varies, one validation case scored
0.55 on the loop's path and 0.70 on the predictor's, so the checkpoint was chosen on a number the
user never sees. Now both go through the predictor, on the source grid, with :mod:`.dice`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from napari_ssl_seg.evaluation.dice import case_dice, class_dice
from napari_ssl_seg.inference.predictor import Predictor
from napari_ssl_seg.io import Volume
from napari_ssl_seg.networks.checkpoint import ModelCard

__all__ = ["ValidationCase", "validate_network"]


@dataclass(frozen=True)
class ValidationCase:
    """A validation case as stored: its image volume and its reference label on the same grid."""

    name: str
    image: Volume
    label: np.ndarray


def scored_classes(card: ModelCard) -> list[int]:
    """The foreground classes a card's network predicts (what every evaluation scores)."""
    classes = [int(k) for k in sorted(card.classes) if int(k) != 0]
    return classes or list(range(1, int(card.network.get("num_classes", 2))))


def validate_network(
    network: nn.Module,
    cases: Sequence[ValidationCase],
    card: ModelCard,
    *,
    device: torch.device,
    overlap: float,
    amp: bool = True,
) -> tuple[float, dict[str, float]]:
    """Mean case Dice over ``cases`` and per case, of ``network`` deployed as ``card`` describes it.

    ``amp`` as for :class:`Predictor`: the training loop passes its own, so validation leaves the
    live network's weights in the layout training uses.
    """
    was_training = network.training
    predictor = Predictor({"model": network}, card, device=device, overlap=overlap, amp=amp)
    classes = scored_classes(card)
    per_case: dict[str, float] = {}
    try:
        for case in cases:
            predicted = predictor.predict(case.image, uncertainty="none", name=case.name)
            per_case[case.name] = case_dice(class_dice(np.asarray(predicted.label.array), case.label, classes))
    finally:
        network.train(was_training)
    mean = float(np.mean(list(per_case.values()))) if per_case else 0.0
    return mean, per_case
