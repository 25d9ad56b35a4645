"""What runs on each sliding window: one function per uncertainty kind, one shared window loop.

Every function takes a batch of windows (N, C_in, z, y, x) and returns a tuple of tensors that
MONAI's ``sliding_window_inference`` blends with Gaussian weights:

* ``probabilities`` (N, C, ...): the prediction. With MC dropout it is the mean of the T passes:
  there is no separate deterministic pass when uncertainty is asked for.
* optionally one more single-channel map (N, 1, ...), blended like the probabilities:
  the mean per-pass entropy for BALD, or the teacher-student entropy for disagreement.

The entropy of the mean (the main uncertainty map) is computed once after blending, from the
blended probabilities, so it is exactly the entropy of the probabilities the label map comes from.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from napari_ssl_seg.inference import UNCERTAINTY_KINDS
from napari_ssl_seg.inference.mc_dropout import SCOPES, entropy, mc_dropout_moments

__all__ = ["UNCERTAINTY_KINDS", "WindowFunction", "window_function"]

WindowFunction = Callable[[torch.Tensor], tuple[torch.Tensor, ...]]


def _plain(network: nn.Module) -> WindowFunction:
    def run(windows: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (torch.softmax(network(windows).float(), dim=1),)

    return run


def _mc_dropout(network: nn.Module, samples: int, scope: str, chunk: int | None, bald: bool) -> WindowFunction:
    def run(windows: torch.Tensor) -> tuple[torch.Tensor, ...]:
        mean, expected = mc_dropout_moments(
            network, windows, samples, scope=scope, chunk=chunk, with_expected_entropy=bald
        )
        return (mean,) if expected is None else (mean, expected.unsqueeze(1))

    return run


def _disagreement(teacher: nn.Module, student: nn.Module) -> WindowFunction:
    def run(windows: torch.Tensor) -> tuple[torch.Tensor, ...]:
        teacher_probabilities = torch.softmax(teacher(windows).float(), dim=1)
        student_probabilities = torch.softmax(student(windows).float(), dim=1)
        averaged = (teacher_probabilities + student_probabilities) / 2
        # The teacher alone is the prediction (it is the validated, deployed network); the two
        # networks' average only measures how much they disagree.
        return teacher_probabilities, entropy(averaged).unsqueeze(1)

    return run


def window_function(
    kind: str,
    networks: dict[str, nn.Module],
    *,
    samples: int = 8,
    chunk: int | None = None,
    bald: bool = False,
) -> WindowFunction:
    """The per-window function for uncertainty ``kind`` (see :data:`UNCERTAINTY_KINDS`).

    ``networks`` is what :func:`load_checkpoint` returns: ``"model"`` and optionally ``"student"``.
    Networks must already be in eval mode on the right device; MC dropout switches only the
    dropout layers on, for the duration of each call.
    """
    model = networks["model"]
    if kind == "none":
        return _plain(model)
    if kind in ("mc_dropout", "fast"):
        scope = SCOPES[0] if kind == "mc_dropout" else SCOPES[1]
        return _mc_dropout(model, samples, scope, chunk, bald)
    if kind == "disagreement":
        if "student" not in networks:
            raise ValueError("disagreement uncertainty needs a checkpoint that carries a student network")
        return _disagreement(model, networks["student"])
    raise ValueError(f"unknown uncertainty kind {kind!r} (known: {', '.join(UNCERTAINTY_KINDS)})")
