"""What a run fixes before its first iteration: snapshot, intensity, network, seeds, init weights.

Kept apart from the loop so that a resumed run can take all of it from its checkpoint instead.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_ssl_seg.errors import InputError
from napari_ssl_seg.io.orientation import CANONICAL, reorientation
from napari_ssl_seg.methods.base import SemiSupervisedMethod, gaussian_rampup
from napari_ssl_seg.networks.checkpoint import checkpoint_paths, load_checkpoint
from napari_ssl_seg.store.project import Project
from napari_ssl_seg.training.config import TrainConfig
from napari_ssl_seg.training.data import load_cases, resolve_intensity, take_snapshot
from napari_ssl_seg.training.distributed import DistContext, broadcast_json
from napari_ssl_seg.training.state import resume_paths

__all__ = [
    "RESUMABLE_CHANGES",
    "copy_init_weights",
    "ramps",
    "resume_info",
    "run_info",
    "seed_everything",
    "start_info",
    "untrained_peers",
    "warm_start",
]

# Settings that may change when a run is resumed (extending it, or checking it more often).
RESUMABLE_CHANGES = frozenset({"iterations", "checkpoint_every", "validate_every", "log_every", "batchnorm_batches"})
#: What ``--init`` takes from the init model's card rather than from the user's config.
INIT_MODEL_KEYS = frozenset({"base_width", "depth", "dropout", "residual", "patch_size", "target_spacing"})
#: What ``--config plan`` sets (training/plan.py), and the plan itself.
PLANNED_KEYS = frozenset(
    {"target_spacing", "patch_size", "depth", "base_width", "batch_labeled", "batch_unlabeled", "iterations"}
    | {"rampup_iterations", "lr_step", "foreground_oversampling", "intensity", "lateral_augmentation", "plan"}
    | {"intensity_augmentation"}
)


def seed_everything(seed: int, *streams: int) -> None:
    state = np.random.SeedSequence([seed, *streams]).generate_state(2)
    torch.manual_seed(int(state[0]))
    np.random.seed(int(state[1]))
    random.seed(int(state[1]))


def copy_init_weights(method: SemiSupervisedMethod, source: Mapping[str, torch.Tensor]) -> list[str]:
    """Load ``source`` into every network, or its outermost sub-module, with the same keys and shapes.

    Sub-modules count because a method may wrap a V-Net (UG-CEMT's student holds it next to its
    attention block): the fine-tune path starts every student and teacher from the deployed model.
    Returns the names of the modules that were loaded (``network`` or ``network.sub``).
    """
    copied = []
    for name in method.networks:
        for sub_name, module in method.unwrapped(name).named_modules():
            own = module.state_dict()
            if set(own) == set(source) and all(own[k].shape == source[k].shape for k in own):
                module.load_state_dict({k: v.to(own[k].dtype) for k, v in source.items()})
                copied.append(f"{name}.{sub_name}" if sub_name else name)
                break
    return copied


def untrained_peers(method: SemiSupervisedMethod, copied: list[str], config: TrainConfig) -> dict[str, Any] | None:
    """The trainable networks ``--init`` did not fit, and the ramp-up their coupling gets; None if all fit.

    CCE dual and CURE-CL pair the V-Net, which the deployed teacher fits, with a ResNet that starts
    random. The ``finetune`` preset has no ramp-up, since a teacher's pseudo-labels are already good;
    a random peer's are not, and at full weight from the first iteration its coupling pulled the
    warm-started V-Net down (CCE dual at 10% labels: validation 0.68 to 0.34 in 3000 iterations). Such
    a peer starts from scratch, so its coupling gets the from-scratch ramp-up: over the whole run, as
    the ``quick`` preset's. Stored in the run's info, so a resumed run keeps the ramp it began with.
    """
    fitted = {name.split(".", 1)[0] for name in copied}
    networks = [name for name in method.trainable() if name not in fitted]
    if not networks:
        return None
    return {"networks": networks, "rampup_iterations": max(config.rampup_iterations, config.iterations)}


def warm_start(
    method: SemiSupervisedMethod, source: Mapping[str, torch.Tensor], config: TrainConfig, notes: list[str]
) -> dict[str, Any] | None:
    """Start ``method``'s networks from the ``--init`` weights; returns its :func:`untrained_peers`.

    What was copied, and which networks start untrained, is appended to ``notes`` (the run's log).
    """
    copied = copy_init_weights(method, source)
    if not copied:
        raise InputError(f"--init model fits none of method {config.method!r}'s networks")
    notes.append(f"initialised from the --init model: {', '.join(copied)}")
    peers = untrained_peers(method, copied, config)
    if peers:
        notes.append(f"untrained at the start: {', '.join(peers['networks'])}; their coupling ramps up over the run")
    return peers


def ramps(iteration: int, config: TrainConfig, peers: Mapping[str, Any] | None) -> tuple[float, float]:
    """The step's consistency ramp-up and coupling weight (:class:`StepContext`), given ``untrained_peers``."""
    if not peers:
        return gaussian_rampup(iteration, config.rampup_iterations), 1.0
    rampup = gaussian_rampup(iteration, int(peers["rampup_iterations"]))
    return rampup, rampup


def run_info(
    project: Project, config: TrainConfig, init_model: Path | str | None, command: str | None
) -> dict[str, Any]:
    """Everything fixed at the start of a run: snapshot, intensity, network, seed, parent."""
    snapshot = take_snapshot(project)
    init_card = None
    if init_model is not None:
        init_networks, init_card = load_checkpoint(init_model)
        # The architecture must be the deployed model's so its weights can be copied.
        for key in ("base_width", "depth", "dropout", "residual"):
            if key in init_card.network:
                setattr(config, key, init_card.network[key])
        # ... and it keeps predicting on the patch and the voxel size it learnt on (its plan's).
        config.patch_size = tuple(init_card.patch_size)
        if init_card.spacing is not None:
            config.target_spacing = tuple(init_card.spacing)
        config.validate()
    intensity = resolve_intensity(project, snapshot, config.intensity or (init_card.intensity if init_card else None))
    num_classes = max([*snapshot.classes, 1]) + 1
    if not snapshot.classes:
        labels = load_cases(project, snapshot.labeled, intensity, orientation=None)  # only the class count
        num_classes = max(int(case.label.max()) for case in labels) + 1
        num_classes = max(num_classes, 2)
    network = config.network_config(num_classes)
    if init_card is not None and int(init_card.network.get("num_classes", -1)) != num_classes:
        raise InputError(
            f"--init model predicts {init_card.network.get('num_classes')} classes, the project has {num_classes}"
        )
    classes = {0: "background", **{i: snapshot.classes.get(i, f"class {i}") for i in range(1, num_classes)}}
    # A run continuing a teacher keeps the orientation its network saw (None: voxel order, an old card).
    orientation = init_card.orientation if init_card is not None else CANONICAL
    if config.target_spacing is not None:
        spacing = [float(v) for v in config.target_spacing]
    else:
        records = [project.case(name) for name in snapshot.labeled]
        spacings = [reorientation(r.direction, r.shape, orientation).target_spacing(r.spacing) for r in records]
        spacing = [float(v) for v in np.median(np.asarray(spacings), axis=0)]
    return {
        "config": config.to_dict(),
        "snapshot": snapshot.to_dict(),
        "intensity": intensity,
        "network": network,
        "classes": {str(k): v for k, v in classes.items()},
        "spacing": spacing,
        "orientation": orientation,
        "seed": project.seed if config.seed is None else int(config.seed),
        "command": command,
        "init_model": None if init_model is None else str(init_model),
        "parent": None if init_card is None else (init_card.weights_sha256 or Path(init_model).stem),
        "init_state": None if init_card is None else {k: v for k, v in init_networks["model"].state_dict().items()},
    }


def resume_info(out_dir: Path, config: TrainConfig) -> dict[str, Any]:
    json_path = resume_paths(out_dir)[1]
    if not json_path.is_file():
        raise InputError(f"nothing to resume in {out_dir} (no state/resume.json); start without --resume")
    try:
        state = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"cannot read resume state {json_path}: {exc}") from None
    saved = TrainConfig.from_dict(state["run"]["config"]).to_dict()
    wanted = config.to_dict()
    # With --init the saved config took the init model's architecture; those keys are not the user's.
    ignore = RESUMABLE_CHANGES | (INIT_MODEL_KEYS if state["run"]["parent"] else set())
    if saved.get("plan") is not None and wanted.get("plan") is not None:
        # A plan made again from a project labeled since: the run continues on the plan it began with.
        ignore |= PLANNED_KEYS
    differs = sorted(key for key in wanted if key not in ignore and wanted[key] != saved[key])
    if differs:
        raise InputError(
            f"cannot resume with changed setting(s) {', '.join(differs)}; "
            f"only {', '.join(sorted(RESUMABLE_CHANGES))} may change"
        )
    for key in RESUMABLE_CHANGES:
        saved[key] = wanted[key]
    return {**state["run"], "config": saved, "_state": state}


def start_info(
    project: Project,
    config: TrainConfig,
    out_dir: Path,
    init_model: Path | str | None,
    command: str | None,
    resume: bool,
    dist_ctx: DistContext,
) -> tuple[TrainConfig, dict[str, Any], dict[str, Any] | None]:
    """``(config, info, resume state)`` of a new run in ``out_dir``, or of the run it holds with ``resume``."""
    if resume:
        info = resume_info(out_dir, config)
        return TrainConfig.from_dict(info["config"]), info, info.pop("_state")
    if resume_paths(out_dir)[1].exists() or checkpoint_paths(out_dir / "model")[1].exists():
        raise InputError(f"{out_dir} already holds a run; use --resume to continue it or choose another --out")
    info = run_info(project, config, init_model, command)
    # Every rank must train on rank 0's snapshot (labels may be saved while ranks start up).
    init_state = info.pop("init_state")
    info = broadcast_json(info, dist_ctx)
    info["init_state"] = init_state
    info["config"] = config.to_dict()
    return config, info, None
