"""Sharpness-aware minimisation (SAM, Foret et al. 2021) around any torch optimiser.

One SAM step: with the gradient g of the loss at w, move to w + e with
e = rho * g / ||g|| (the worst-case point within radius rho, to first order), compute the gradient
there, restore w, and let the base optimiser (SGD) step with that second gradient. UG-CEMT trains
this way (rho = 0.05). The loop owns the two loss evaluations; this module only moves weights.

The perturbation depends only on the gradient's direction, so gradients that are all scaled by
the same factor (AMP's GradScaler) give the same e: the first pass needs no unscaling.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

__all__ = ["SamPerturbation", "sam_ascent"]


class SamPerturbation:
    """The ascent applied to some parameters; :meth:`restore` undoes it exactly."""

    def __init__(self, applied: list[tuple[torch.nn.Parameter, torch.Tensor]]) -> None:
        self.applied = applied

    @torch.no_grad()
    def restore(self) -> None:
        # Subtracting e again could differ from w by a rounding error; copying the saved w cannot.
        for parameter, original in self.applied:
            parameter.copy_(original)
        self.applied = []


@torch.no_grad()
def sam_ascent(parameters: Iterable[torch.nn.Parameter], rho: float) -> SamPerturbation:
    """Move every parameter with a gradient by ``rho * g / ||g||`` (global L2 norm over all of them).

    Returns the perturbation to :meth:`SamPerturbation.restore` after the second backward pass.
    A zero or non-finite gradient (e.g. an AMP overflow step) leaves the weights unmoved.
    """
    with_grad = [p for p in parameters if p.grad is not None]
    if not with_grad or rho == 0:
        return SamPerturbation([])
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad.float()) for p in with_grad]))
    # Decided on the device (torch.where), not by `if float(norm) == 0`: a branch on the norm would
    # make every SAM step wait for the device. A zero or non-finite norm moves by exactly 0 (where()
    # does not carry the NaN of inf * 0), and restore() puts back the same weights either way.
    usable = torch.isfinite(norm) & (norm > 0)
    scale = torch.where(usable, rho / (norm + 1e-12), torch.zeros_like(norm))
    applied = []
    for parameter in with_grad:
        applied.append((parameter, parameter.detach().clone()))
        step = parameter.grad.to(parameter.dtype) * scale.to(parameter.dtype)
        parameter.add_(torch.where(usable, step, torch.zeros_like(step)))
    return SamPerturbation(applied)
