"""The training loop's validation: the live network scored exactly as the promotion will score it.

The loop used to predict its validation cases on its own path (the case's native spacing, its own
sliding window) while the deployed teacher predicts through :class:`Predictor` (resampled to the
card's spacing, and back): on a cohort whose slice spacing varies, one validation case scored
0.55 on the loop's path and 0.70 on the predictor's, so the checkpoint was chosen on a number the
user never sees. Now both go through the predictor, on the source grid, with :mod:`.dice`.

The same predictions decide the card's post-processing (:mod:`..inference.components`): each case is
scored as predicted and with every class reduced to its largest component, the classes that gain (or
lose nothing and are one piece in every reference) are recorded, and the score is the one the deployed
teacher, cleaned that way, gets.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from napari_ssl_seg.evaluation.dice import case_dice, class_dice
from napari_ssl_seg.inference.components import (
    choose_largest_component_classes,
    keep_largest_components,
    one_piece_classes,
)
from napari_ssl_seg.inference.predictor import Predictor
from napari_ssl_seg.io import Volume
from napari_ssl_seg.networks.checkpoint import LARGEST_COMPONENT, ModelCard

__all__ = ["ValidationCase", "ValidationScore", "validate_network"]


@dataclass(frozen=True)
class ValidationCase:
    """A validation case as stored: its image volume and its reference label on the same grid."""

    name: str
    image: Volume
    label: np.ndarray


@dataclass(frozen=True)
class ValidationScore:
    """Mean case Dice, per case, and the classes the card should reduce to their largest component."""

    dice: float
    per_case: dict[str, float]
    largest_component: tuple[int, ...] = ()
    #: The mean case Dice as the network predicts, before any clean-up.
    raw_dice: float = 0.0

    @property
    def postprocessing(self) -> dict[str, list[int]]:
        """The model card's ``postprocessing`` entry for this choice (empty when nothing is cleaned)."""
        return {LARGEST_COMPONENT: list(self.largest_component)} if self.largest_component else {}


def scored_classes(card: ModelCard) -> list[int]:
    """The foreground classes a card's network predicts (what every evaluation scores)."""
    classes = [int(k) for k in sorted(card.classes) if int(k) != 0]
    return classes or list(range(1, card.num_classes))


def validate_network(
    network: nn.Module,
    cases: Sequence[ValidationCase],
    card: ModelCard,
    *,
    device: torch.device,
    overlap: float,
    amp: bool = True,
    choose_cleanup: bool = True,
    one_piece: Collection[int] | None = None,
) -> ValidationScore:
    """Score ``network`` deployed as ``card`` describes it on ``cases``, and choose its clean-up.

    ``amp`` as for :class:`Predictor`: the training loop passes its own, so validation leaves the
    live network's weights in the layout training uses. ``choose_cleanup=False`` scores the network
    as it predicts and chooses no clean-up. ``one_piece``: the cases' :func:`one_piece_classes`, if the
    caller has them already (the loop validates the same cases many times); computed when None.
    """
    was_training = network.training
    predictor = Predictor({"model": network}, card, device=device, overlap=overlap, amp=amp)
    classes = scored_classes(card)
    raw: dict[str, dict[int, float]] = {}
    cleaned: dict[str, dict[int, float]] = {}
    try:
        for case in cases:
            predicted = np.asarray(
                predictor.predict(case.image, uncertainty="none", name=case.name, postprocess=False).label.array
            )
            raw[case.name] = class_dice(predicted, case.label, classes)
            if choose_cleanup:
                cleaned[case.name] = class_dice(keep_largest_components(predicted, classes), case.label, classes)
    finally:
        network.train(was_training)
    chosen = []
    if choose_cleanup:
        if one_piece is None:
            one_piece = one_piece_classes((case.label for case in cases), classes)
        chosen = choose_largest_component_classes(list(raw.values()), list(cleaned.values()), one_piece)
    per_case = {
        name: case_dice({c: (cleaned[name][c] if c in chosen else dice) for c, dice in per_class.items()})
        for name, per_class in raw.items()
    }
    return ValidationScore(
        dice=_mean(per_case.values()),
        per_case=per_case,
        largest_component=tuple(chosen),
        raw_dice=_mean(case_dice(per_class) for per_class in raw.values()),
    )


def _mean(values: Iterable[float]) -> float:
    values = list(values)
    return float(np.mean(values)) if values else 0.0
