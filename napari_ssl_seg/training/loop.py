"""The one training loop every method runs in (methods/base.py states the division of labour).

Per iteration: draw a (labeled, unlabeled) batch; for each of the method's optimiser steps, build
the :class:`StepContext` (Gaussian ramp-up of the config), compute the method's loss, back-propagate
(precision and layout as :mod:`napari_ssl_seg.runtime.precision` chooses for the device), take
an SGD or SAM step, and let the method update its teachers; then step the learning-rate schedule.
Every ``validate_every`` iterations (and at the end) the inference network (with
``inference_selection=validation``, each of the method's candidate networks) is scored on the
validation split, the best one exported as ``<out>/model.safetensors`` + ``model.json``
(:mod:`.export`); every ``checkpoint_every`` iterations (at the end and on cancel) the full state is
saved for exact resume. ``<out>`` also gets ``log.jsonl`` and ``tensorboard/``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from napari_ssl_seg.errors import InputError
from napari_ssl_seg.evaluation.validation import ValidationCase, validate_network
from napari_ssl_seg.inference.components import one_piece_classes
from napari_ssl_seg.inference.device import select_device
from napari_ssl_seg.methods.base import Batch, StepContext
from napari_ssl_seg.methods.registry import build_method
from napari_ssl_seg.networks.checkpoint import checkpoint_paths, save_checkpoint
from napari_ssl_seg.runtime.core_sharing import CoreShare
from napari_ssl_seg.runtime.precision import execution_for
from napari_ssl_seg.store.project import Project
from napari_ssl_seg.training.batchnorm import recalibrate_export
from napari_ssl_seg.training.budget import start_record
from napari_ssl_seg.training.config import TrainConfig
from napari_ssl_seg.training.data import LabelSnapshot, load_cases
from napari_ssl_seg.training.distributed import DistContext, broadcast_module, init_distributed, wrap_for_ddp
from napari_ssl_seg.training.export import deployed_card, exported_networks, run_model_card
from napari_ssl_seg.training.log_sums import LogSums
from napari_ssl_seg.training.optim import build_optimizer, build_scheduler, clip_gradients, unique_parameters
from napari_ssl_seg.training.plan import PLAN_WARNING
from napari_ssl_seg.training.prefetch import BatchPrefetcher
from napari_ssl_seg.training.run_start import ramps, seed_everything, start_info, warm_start
from napari_ssl_seg.training.runlog import RunLog
from napari_ssl_seg.training.sampler import TwoStreamSampler, has_lateral_classes
from napari_ssl_seg.training.sharpness_aware import sam_ascent
from napari_ssl_seg.training.state import load_resume_state, save_resume_state

__all__ = ["TrainResult", "train"]

Progress = Callable[[int, int, Mapping[str, Any]], None]


@dataclass
class TrainResult:
    """How a run ended: ``status`` is "completed" or "cancelled"."""

    status: str
    iterations: int
    out_dir: Path
    model_path: Path | None
    best_validation_dice: float | None
    best_iteration: int | None
    log_path: Path


class _Run:
    """One training run; split from :func:`train` so the steps read in order."""

    def __init__(self, project: Project, config: TrainConfig, out_dir: Path, info: dict[str, Any], **kw: Any) -> None:
        self.project, self.config, self.out_dir, self.info = project, config, out_dir, info
        self.device: torch.device = kw["device"]
        self.dist: DistContext = kw["dist"]
        self.progress: Progress | None = kw["progress"]
        self.should_stop: Callable[[], bool] | None = kw["should_stop"]
        self.resume_state: dict[str, Any] | None = kw["resume_state"]
        self.snapshot = LabelSnapshot.from_dict(info["snapshot"])
        self.num_classes = int(info["network"]["num_classes"])
        self.seed = int(info["seed"])
        self.train_seconds = 0.0
        # Runs recorded before orientations were (resumed from their folder) saw voxel order.
        self.orientation: str | None = info.get("orientation")
        self.execution = execution_for(self.device, mixed_precision=config.amp)
        self.best: dict[str, Any] = {"dice": None, "iteration": None, "per_case": {}}

    # -- setup ---------------------------------------------------------------
    def build(self) -> None:
        config, rank = self.config, self.dist.rank
        # Same seed on every rank: networks that DDP does not wrap (teachers) start identical too.
        seed_everything(self.seed, 0)
        self.method = build_method(config.method, self.info["network"], config.method_settings)
        init_state = self.info.pop("init_state", None)
        self.notes = [PLAN_WARNING + warning for warning in (config.plan or {}).get("warnings", [])]
        if init_state is not None:
            self.info["untrained_peers"] = warm_start(self.method, init_state, config, self.notes)
        for module in self.method.networks.values():
            self.execution.prepare_module(module)
        trainable = self.method.trainable()
        self.teachers = [name for name in self.method.networks if name not in trainable]
        for name in self.teachers:
            self.method.networks[name].requires_grad_(False)
        if self.dist.enabled:
            for name in trainable:
                self.method.networks[name] = wrap_for_ddp(self.method.networks[name], self.device)
            for name in self.teachers:
                broadcast_module(self.method.networks[name], self.dist)
        self.params: list[nn.Parameter] = unique_parameters(self.method.networks[name] for name in trainable)
        self.optimizer = build_optimizer(self.params, config)
        self.scheduler = build_scheduler(self.optimizer, config)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.execution.needs_grad_scaler)
        uses_unlabeled = bool(getattr(self.method, "uses_unlabeled", True))
        grid = {"pad_to": config.patch_size, "orientation": self.orientation, "spacing": self.info["spacing"]}
        labeled = load_cases(self.project, self.snapshot.labeled, self.info["intensity"], **grid)
        unlabeled = []
        if uses_unlabeled and config.batch_unlabeled:
            names = dict.fromkeys(self.snapshot.unlabeled)
            unlabeled = load_cases(self.project, names, self.info["intensity"], **grid)
        self.lateral = lateral = config.lateral_augmentation == "on" or (
            config.lateral_augmentation == "auto" and not has_lateral_classes(self.info["classes"])
        )
        if not lateral:
            self.notes.append(
                "classes name a side (left/right), or have no names: no left-right flips or rot90 in augmentation"
            )
        self.sampler = TwoStreamSampler(
            labeled,
            unlabeled,
            patch_size=config.patch_size,
            batch_labeled=config.batch_labeled,
            batch_unlabeled=config.batch_unlabeled if uses_unlabeled else 0,
            seed=self.seed,
            rank=rank,
            lateral=lateral,
            foreground_fraction=config.foreground_oversampling,
            num_classes=int(self.info["network"]["num_classes"]),
            case_target=self.method.case_target,
            intensity_augmentation=config.intensity_augmentation,
        )
        if uses_unlabeled and config.batch_unlabeled and not self.snapshot.unlabeled:
            self.notes.append("no unlabeled training case: the unlabeled stream samples the labeled images")
        validation = self.snapshot.validation.items() if self.dist.is_main else {}.items()  # rank 0 validates
        self.validation = [
            ValidationCase(name, self.project.read_image(name), np.asarray(self.project.read_label(name, v).array))
            for name, v in validation
        ]
        self.scoring = {"overlap": config.overlap, "amp": config.amp, "choose_cleanup": config.postprocessing}
        if config.postprocessing:  # counted once here, not at every validation and candidate
            classes = range(1, int(self.info["network"]["num_classes"]))
            self.scoring["one_piece"] = one_piece_classes((case.label for case in self.validation), classes)
        self.start = 0
        if self.resume_state is not None:
            state = load_resume_state(
                self.out_dir,
                networks={name: self.method.unwrapped(name) for name in self.method.networks},
                optimizer=self.optimizer,
                scheduler=self.scheduler,
                scaler=self.scaler,
                device=self.device,
            )
            self.start = int(state["iteration"])
            self.best = dict(state["best"])
        else:
            # Training randomness (dropout, method noise) differs per rank; sampling has its own seeds.
            seed_everything(self.seed, 1, rank)
        self.log = (
            RunLog(self.out_dir, resume_from=self.start if self.resume_state else None) if self.dist.is_main else None
        )
        if self.log is not None:
            work = (config.method, config.patch_size, config.base_width, config.batch_labeled + config.batch_unlabeled)
            self.log.write("start", self.start, start_record(*work, self.device.type, self.dist.world_size))
            for note in self.notes:
                self.log.write("note", self.start, {"message": note})

    def draw(self, iteration: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """The data stage: the sampled patches and the targets the method derives from them on the CPU."""
        images, targets, unlabeled, case_target = self.sampler.batch(iteration)
        return images, targets, unlabeled, self.method.data_targets(targets, case_target)

    def device_batch(self, images: torch.Tensor, targets: torch.Tensor, unlabeled: torch.Tensor, extras: Any) -> Batch:
        """The drawn batch on the device (asynchronous if the prefetcher pinned it), images in the networks' layout."""
        images, targets, unlabeled = (t.to(self.device, non_blocking=True) for t in (images, targets, unlabeled))
        extras = {key: value.to(self.device, non_blocking=True) for key, value in extras.items()}
        return Batch(self.execution.prepare_input(images), targets, self.execution.prepare_input(unlabeled), extras)

    def _loss(self, batch: Batch, ctx: StepContext) -> tuple[torch.Tensor, dict[str, float | torch.Tensor]]:
        with self.execution.autocast():
            output = self.method.loss(batch, ctx)
        return output.loss, output.logs

    def step(self, batch: Batch, ctx: StepContext) -> dict[str, float | torch.Tensor]:
        """One optimiser step; its logs stay tensors (training/log_sums.py): nothing here waits for the device."""
        self.optimizer.zero_grad(set_to_none=True)
        loss, logs = self._loss(batch, ctx)
        self.scaler.scale(loss).backward()
        if self.method.optimizer == "sam":
            perturbation = sam_ascent(self.params, self.method.sam_rho)
            self.optimizer.zero_grad(set_to_none=True)
            second, _ = self._loss(batch, ctx)
            self.scaler.scale(second).backward()
            perturbation.restore()
        if self.config.grad_clip is not None:
            clip_gradients(self.params, self.optimizer, self.scaler, self.config.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return {"loss": loss.detach(), **logs}

    # -- validation, export, checkpoint ----------------------------------------------
    def validate(self, iteration: int) -> None:
        method = self.method
        if self.config.inference_selection == "validation":
            candidates = method.inference_candidates()
        else:  # the network as trained, as before candidates existed (UG-MCL's keeps its SDF head)
            candidates = {method.inference_network: method.unwrapped(method.inference_network)}
        deployed = deployed_card(method, self.info, self.config)  # as the promotion will predict with it
        scores = {
            name: validate_network(network, self.validation, deployed, device=self.device, **self.scoring)
            for name, network in candidates.items()
        }
        # max() keeps the first of equal scores, and the method's own network comes first.
        chosen = max(scores, key=lambda name: scores[name].dice)
        dice, per_case, cleanup = scores[chosen].dice, scores[chosen].per_case, scores[chosen].postprocessing
        improved = self.best["dice"] is None or dice > self.best["dice"]
        if improved:
            self.best = {"dice": dice, "iteration": iteration, "per_case": per_case, "network": chosen, "post": cleanup}
            self.export(iteration)
        # Seconds spent training (not validating) since this process started or resumed the run:
        # what a convergence curve puts on its time axis.
        record: dict[str, Any] = {"dice": dice, "per_case": per_case, "best": improved, "postprocessing": cleanup}
        record |= {"raw_dice": scores[chosen].raw_dice, "train_seconds": round(self.train_seconds, 3)}
        if len(scores) > 1:
            record |= {"network": chosen, "candidates": {name: score.dice for name, score in scores.items()}}
        self.log.write("validation", iteration, record)

    def export(self, iteration: int) -> None:
        card = run_model_card(
            self.method,
            self.info,
            self.config,
            self.snapshot,
            self.best,
            iteration=iteration,
            seed=self.seed,
            world_size=self.dist.world_size,
        )
        networks = exported_networks(self.method, self.best.get("network"))
        save_checkpoint(self.out_dir / "model", networks, card, overwrite=True)

    def checkpoint(self, iteration: int) -> None:
        save_resume_state(
            self.out_dir,
            networks={name: self.method.unwrapped(name) for name in self.method.networks},
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            scaler=self.scaler,
            info={"iteration": iteration, "best": self.best, "run": {**self.info, "config": self.config.to_dict()}},
        )

    def recalibrate(self, iteration: int) -> None:
        """BatchNorm statistics over every training case (training/batchnorm.py), kept if they validate better."""
        del self.sampler  # the step loads every training case again: free the training's copies first
        settings = {"batches": self.config.batchnorm_batches, "seed": self.seed, "lateral": self.lateral}
        settings |= {"device": self.device, "scoring": self.scoring}
        record = recalibrate_export(self.project, self.out_dir / "model", self.snapshot, self.validation, **settings)
        if record is not None:
            self.log.write("batchnorm", iteration, {key: value for key, value in record.items() if key != "best"})
            if record["adopted"]:  # a resumed, extended run then compares its validations with the adopted score
                self.best |= record["best"]
                self.checkpoint(iteration)

    def run(self) -> TrainResult:
        config, method = self.config, self.method
        method.train(True)
        iteration, status = self.start, "completed"
        sums = LogSums()
        cuda = self.device.type == "cuda"  # where drawing ahead pays (training/prefetch.py)
        prefetcher = BatchPrefetcher(self.draw, stop=config.iterations, depth=2 * cuda, pin_memory=cuda)
        # The cores shared with the GUI while it computes beside this run (runtime/core_sharing.py).
        with prefetcher as ahead, CoreShare.from_environment() as cores:
            while iteration < config.iterations:
                if self.dist.stop_requested(iteration, self.should_stop):
                    status = "cancelled"
                    break
                cores.update()
                started = time.perf_counter()
                batch = self.device_batch(*ahead.get(iteration))
                logs: dict[str, float | torch.Tensor] = {}
                for step in range(method.steps_per_iteration):
                    rampup, coupling = ramps(iteration, config, self.info.get("untrained_peers"))
                    ctx = StepContext(iteration, config.iterations, rampup, step, self.num_classes, coupling)
                    step_logs = self.step(batch, ctx)
                    prefix = f"step{step}/" if method.steps_per_iteration > 1 else ""
                    logs.update({prefix + key: value for key, value in step_logs.items()})
                    method.update_teachers(ctx)
                    for name in self.teachers:
                        broadcast_module(method.networks[name], self.dist)
                logs["lr"] = self.optimizer.param_groups[0]["lr"]
                logs["rampup"] = rampup
                self.scheduler.step()
                iteration += 1
                self.train_seconds += time.perf_counter() - started
                sums.add(logs)
                last = iteration == config.iterations
                log = iteration % config.log_every == 0 or last
                validate = iteration % config.validate_every == 0 or last
                save = iteration % config.checkpoint_every == 0 or last
                # A scaled float16 loss may overflow once (the scaler then skips that step): its check.
                check = not self.scaler.is_enabled()
                means = sums.means(iteration, check_losses=check) if log or validate or save else {}
                if self.progress is not None and self.dist.is_main:
                    self.progress(iteration, config.iterations, means)
                if log:
                    if self.log is not None:
                        self.log.write("train", iteration, {**means, "it_per_s": sums.rate, "threads": cores.current})
                    sums.reset()
                if validate and self.dist.is_main:
                    self.validate(iteration)
                    method.train(True)
                if save and self.dist.is_main:
                    self.checkpoint(iteration)
                if validate or save:
                    # The other ranks wait here rather than inside the next collective, which could time out.
                    self.dist.barrier()
        if status == "cancelled" and self.dist.is_main:
            self.checkpoint(iteration)
            self.log.write("cancelled", iteration, {})
        elif config.batchnorm_batches and self.dist.is_main and self.best["dice"] is not None:
            self.recalibrate(iteration)
        self.dist.barrier()
        if self.log is not None:
            self.log.close()
        model = checkpoint_paths(self.out_dir / "model")[0]
        return TrainResult(
            status=status,
            iterations=iteration,
            out_dir=self.out_dir,
            model_path=model if model.is_file() else None,
            best_validation_dice=self.best["dice"],
            best_iteration=self.best["iteration"],
            log_path=self.out_dir / "log.jsonl",
        )


def train(
    project_root: Path | str,
    config: TrainConfig,
    out_dir: Path | str,
    *,
    init_model: Path | str | None = None,
    device: str = "auto",
    progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
    command: str | None = None,
    resume: bool = False,
) -> TrainResult:
    """Train ``config.method`` on the project at ``project_root``, writing into ``out_dir``.

    ``init_model``: a deployed checkpoint whose ``model`` weights start every matching network
    (fine-tuning). ``progress(iteration, total, logs)`` is called after every iteration (``logs``: the
    means since the last log record at log, validation and checkpoint points, else empty);
    ``should_stop()`` before every iteration (true: checkpoint and return "cancelled").
    ``resume``: continue the run in ``out_dir`` from its last checkpoint; only the settings in
    ``RESUMABLE_CHANGES`` may differ (raising ``iterations`` extends a finished run).
    """
    config = dataclasses.replace(config, method_settings=dict(config.method_settings)).validate()
    out_dir = Path(out_dir)
    chosen = select_device(device)
    dist_ctx = init_distributed(chosen.type)
    if dist_ctx.enabled and chosen.type == "cuda":
        chosen = torch.device("cuda", dist_ctx.local_rank)
    try:
        project = Project.open(project_root)
    except InputError:
        dist_ctx.close()
        raise
    try:
        config, info, resume_state = start_info(project, config, out_dir, init_model, command, resume, dist_ctx)
        if dist_ctx.is_main:
            out_dir.mkdir(parents=True, exist_ok=True)
        dist_ctx.barrier()
        run = _Run(
            project,
            config,
            out_dir,
            info,
            device=chosen,
            dist=dist_ctx,
            progress=progress,
            should_stop=should_stop,
            resume_state=resume_state,
        )
        run.build()
        return run.run()
    finally:
        project.close()
        dist_ctx.close()
