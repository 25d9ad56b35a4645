"""The optimiser, its learning-rate schedule and gradient clipping, as a :class:`TrainConfig` names them.

``sgd`` with ``step`` is the papers' recipe (METHODS.md). nnU-Net's (SGD, momentum 0.99, Nesterov,
poly decay with exponent 0.9, gradient norm clipped at 12) and AdamW are the alternatives
``benchmarks/convergence.py`` compares with it; torch provides all three pieces.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import nn

from napari_ssl_seg.training.config import TrainConfig

__all__ = ["POLY_EXPONENT", "WARMUP_START", "build_optimizer", "build_scheduler", "clip_gradients", "unique_parameters"]

POLY_EXPONENT = 0.9
WARMUP_START = 0.1  # the warm-up's first lr, as a fraction of ``lr``


def unique_parameters(modules: Iterable[nn.Module]) -> list[nn.Parameter]:
    """The parameters of ``modules`` in order, each once (methods may share a sub-network between them)."""
    seen: set[int] = set()
    parameters = []
    for module in modules:
        for parameter in module.parameters():
            if id(parameter) not in seen:
                seen.add(id(parameter))
                parameters.append(parameter)
    return parameters


def build_optimizer(parameters: Sequence[nn.Parameter], config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "adamw":
        return torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(
        parameters,
        lr=config.lr,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
        nesterov=config.nesterov,
    )


def build_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig) -> torch.optim.lr_scheduler.LRScheduler:
    """Stepped once per iteration by the loop; the warm-up (if any) comes first, then the schedule.

    The schedule counts its iterations from the end of the warm-up, so a step decay at ``lr_step``
    and the poly decay's end fall where they would without one, shifted by the warm-up.
    """
    from torch.optim import lr_scheduler

    warmup = min(config.warmup_iterations, config.iterations // 2)
    if config.schedule == "poly":
        main: lr_scheduler.LRScheduler = lr_scheduler.PolynomialLR(
            optimizer, total_iters=config.iterations - warmup, power=POLY_EXPONENT
        )
    else:
        main = lr_scheduler.StepLR(optimizer, step_size=config.lr_step, gamma=config.lr_gamma)
    if not warmup:
        return main
    ramp = lr_scheduler.LinearLR(optimizer, start_factor=WARMUP_START, end_factor=1.0, total_iters=warmup)
    return lr_scheduler.SequentialLR(optimizer, [ramp, main], milestones=[warmup])


def clip_gradients(
    parameters: Sequence[nn.Parameter], optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, limit: float
) -> torch.Tensor:
    """Clip the total gradient norm at ``limit`` (on unscaled gradients); returns the norm before clipping.

    The norm stays a tensor: reading it would make every step wait for the device.
    """
    scaler.unscale_(optimizer)
    return torch.nn.utils.clip_grad_norm_(parameters, limit)
