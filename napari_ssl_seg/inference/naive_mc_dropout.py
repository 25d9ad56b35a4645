"""The obvious MC-dropout method, kept as the yardstick for the fast engine (tests and benchmark).

This is what MONAI Label's epistemic scorer does: one plain sliding-window pass for the
prediction, then T more full sliding-window passes with dropout on, each running the whole
network on every window. (That scorer also puts BatchNorm in train mode; this reference does not,
so that it differs from the fast engine only in speed, not in the distribution it samples.)
"""

from __future__ import annotations

import numpy as np
import torch

from napari_ssl_seg.inference.mc_dropout import dropout_sampling, entropy
from napari_ssl_seg.inference.predictor import Predictor
from napari_ssl_seg.inference.sliding import run_sliding_window
from napari_ssl_seg.inference.window_functions import window_function
from napari_ssl_seg.io import Volume

__all__ = ["obvious_mc_dropout"]


def obvious_mc_dropout(predictor: Predictor, volume: Volume, samples: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(plain label map, mean probabilities (C, z, y, x) of T stochastic passes, their entropy)."""
    image, _ = predictor.prepare(volume, resample=False)
    plain = window_function("none", predictor.networks)

    plan = predictor.window_plan

    (probabilities,) = run_sliding_window(image, plain, plan())
    label = probabilities[0].argmax(dim=0).cpu().numpy()
    total: torch.Tensor | None = None
    model = predictor.networks["model"]
    for _ in range(samples):
        with dropout_sampling(model):
            (stochastic,) = run_sliding_window(image, plain, plan())
        total = stochastic if total is None else total + stochastic
    assert total is not None
    mean = total[0] / samples
    return label, mean.cpu().numpy(), entropy(mean, dim=0).cpu().numpy()
