"""Networks that ``--init`` does not fit (untrained peers), and how they catch up before the method couples them.

CCE dual and CURE-CL pair the V-Net, which a deployed teacher fits, with a ResNet that starts random.
Coupled to the warm-started V-Net from the first iteration, a random peer pulls it down (CCE dual at
10% labels: validation 0.68 to 0.34 in 3000 iterations). Ramping the coupling up over the whole run
instead (the form until 2026-12-08) only postponed it: in every seed the validation rose and then fell
as the coupling reached full weight against a ResNet that had learnt from two labeled cases at a
fine-tune's learning rate (best at 1500-1750 of 3000 iterations, 0.04-0.11 lower at the end; MT, UA-MT
and UG-CEMT rose in two of those seeds).

So the peer first learns from the network that was fitted (distillation): for the first
``peer_distillation`` share of the run each peer's loss is Dice + CE against the labels on the labeled
patches and against the fitted network's prediction on the unlabeled ones, and the fitted network is
left as deployed (predicting in evaluation mode, no gradient). Then the method's own loss takes over,
as if ``--init`` had fitted the peer: the config's ramp-up, counted from the end of the distillation
(none in the ``finetune`` preset), and full coupling. With ``peer_distillation`` 0, or when the network
the method infers with is itself untrained, the coupling ramps up over the run as before.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from napari_ssl_seg.methods.base import Batch, LossOutput, SemiSupervisedMethod, StepContext, gaussian_rampup
from napari_ssl_seg.methods.losses import dice_ce_loss
from napari_ssl_seg.runtime.class_ids import class_ids
from napari_ssl_seg.training.config import TrainConfig

__all__ = ["distillation_loss", "in_distillation", "ramps", "step_loss", "untrained_peers"]


def untrained_peers(method: SemiSupervisedMethod, copied: list[str], config: TrainConfig) -> dict[str, Any] | None:
    """The trainable networks ``--init`` did not fit and how they catch up; None if all fit.

    Stored in the run's info, so a resumed run keeps the schedule it began with (a run recorded before
    distillation has no ``distillation_iterations``: its coupling ramps over the run, as it began).
    """
    fitted = {name.split(".", 1)[0] for name in copied}
    networks = [name for name in method.trainable() if name not in fitted]
    if not networks:
        return None
    distillation = int(config.iterations * config.peer_distillation)
    if distillation == 0 or method.inference_network not in fitted:
        return {"networks": networks, "rampup_iterations": max(config.rampup_iterations, config.iterations)}
    return {
        "networks": networks,
        "source": method.inference_network,
        "distillation_iterations": distillation,
        "rampup_iterations": config.rampup_iterations,
    }


def in_distillation(iteration: int, peers: Mapping[str, Any] | None) -> bool:
    return peers is not None and iteration < int(peers.get("distillation_iterations", 0))


def ramps(iteration: int, config: TrainConfig, peers: Mapping[str, Any] | None) -> tuple[float, float]:
    """The step's consistency ramp-up and coupling weight (:class:`StepContext`), given :func:`untrained_peers`.

    Both are 0 while the peers distil; afterwards the ramp counts from the distillation's end.
    """
    if not peers:
        return gaussian_rampup(iteration, config.rampup_iterations), 1.0
    start = int(peers.get("distillation_iterations", 0))
    if iteration < start:
        return 0.0, 0.0
    rampup = gaussian_rampup(iteration - start, int(peers["rampup_iterations"]))
    return rampup, rampup


def distillation_loss(method: SemiSupervisedMethod, batch: Batch, peers: Mapping[str, Any]) -> LossOutput:
    """Each peer's Dice + CE against the labels (labeled patches) and the fitted network's prediction (the rest)."""
    labeled = batch.labeled_count
    source = method.unwrapped(str(peers["source"]))
    was_training = source.training
    source.eval()  # the deployed prediction: no dropout, and its BatchNorm statistics stay as they are
    with torch.no_grad():
        pseudo = class_ids(source(batch.unlabeled_image).float()) if batch.unlabeled_image.shape[0] else None
    source.train(was_training)
    loss = batch.labeled_image.new_zeros((), dtype=torch.float32)
    agreement = []
    for name in peers["networks"]:
        logits = method.networks[name](batch.all_images).float()
        loss = loss + dice_ce_loss(logits[:labeled], batch.labeled_target, dice_weight=1.0, ce_weight=1.0)
        if pseudo is not None:
            loss = loss + dice_ce_loss(logits[labeled:], pseudo, dice_weight=1.0, ce_weight=1.0)
            agreement.append((class_ids(logits[labeled:].detach()) == pseudo).float().mean())
    logs: dict[str, float | torch.Tensor] = {"distillation": loss.detach()}
    if agreement:
        logs["peer_agreement"] = torch.stack(agreement).mean()
    return LossOutput(loss, logs)


def step_loss(
    method: SemiSupervisedMethod, batch: Batch, ctx: StepContext, peers: Mapping[str, Any] | None
) -> LossOutput:
    """The loss the loop minimises at ``ctx``: the peers' distillation first, the method's own after."""
    if in_distillation(ctx.iteration, peers):
        return distillation_loss(method, batch, peers)  # type: ignore[arg-type]
    return method.loss(batch, ctx)
