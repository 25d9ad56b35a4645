"""Training configuration: one dataclass, two presets, ``key=value`` overrides.

``paper`` is the UA-MT lineage's standard recipe (METHODS.md, "Standard recipe") for a GPU;
``quick`` is a CPU retrain of a few minutes that still learns the synthetic cohort. Everything a
run depends on lives here, so the config stored beside a run (and in the model card) reproduces it.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from napari_ssl_seg.errors import InputError
from napari_ssl_seg.methods.registry import method_class

__all__ = ["PRESETS", "TrainConfig", "apply_overrides", "preset"]


@dataclass
class TrainConfig:
    """Everything the training loop needs besides the project and the output folder.

    ``patch_size`` is (z, y, x) and must be divisible by ``2 ** (depth - 1)`` (the V-Net halves it
    ``depth - 1`` times). ``seed`` None means the project's seed. ``method_settings`` become
    the method's typed settings and are checked here (unknown keys and wrong types are refused).
    ``overlap`` is the sliding-window overlap used for validation; its default is the predictor's, so
    the loop's validation predicts as the promotion, ``evaluate`` and the GUI do. ``intensity``
    None means: the ``--init`` model's, else chosen from the first labeled training case.
    """

    method: str = "supervised"
    iterations: int = 6000
    batch_labeled: int = 2
    batch_unlabeled: int = 2
    patch_size: tuple[int, int, int] = (80, 112, 112)
    base_width: int = 16
    depth: int = 5
    dropout: float = 0.5
    residual: bool = True
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    lr_step: int = 2500
    lr_gamma: float = 0.1
    # "sgd" (the papers') or "adamw"; "step" decays the lr by lr_gamma every lr_step iterations (the
    # papers'), "poly" by (1 - i / iterations) ** 0.9 (nnU-Net's); grad_clip: the gradient-norm limit
    # (nnU-Net's 12), None for none. See training/optim.py.
    optimizer: str = "sgd"
    nesterov: bool = False
    schedule: str = "step"
    grad_clip: float | None = None
    # The share of labeled patches centred on a foreground voxel (a class drawn uniformly, then a
    # voxel of it) instead of anywhere: nnU-Net's 0.33. 0 is the papers' plain random crop.
    foreground_oversampling: float = 0.0
    # The first warmup_iterations raise the lr linearly from lr / 10 to lr, then the schedule
    # starts: a fine-tune's first steps on a converged teacher do not take it out of its minimum.
    # At most half the run warms up (a run shortened by --iterations keeps a schedule).
    warmup_iterations: int = 0
    rampup_iterations: int = 6000
    checkpoint_every: int = 500
    validate_every: int = 500
    log_every: int = 20
    seed: int | None = None
    amp: bool = True
    overlap: float = 0.25
    method_settings: dict[str, Any] = field(default_factory=dict)
    intensity: dict[str, Any] | None = None
    # The (z, y, x) spacing in mm every case is resampled to for training and prediction; None: the
    # median spacing of the labeled training cases. The plan (training/plan.py) sets it from the data.
    target_spacing: tuple[float, float, float] | None = None
    # The plan this config was made from (``--config plan``), with its reasons: recorded in the card.
    plan: dict[str, Any] | None = None
    # "auto": no left-right flips or in-plane rot90 when a class name says left or right (a flipped
    # left lung still labeled "left lung" teaches the network to ignore the side); "on" / "off" force it.
    lateral_augmentation: str = "auto"
    # Brightness, contrast and gamma changes of each patch (nnU-Net's, training/sampler.py); off keeps
    # the crops and flips alone, as every run before 2026-12-05 had.
    intensity_augmentation: bool = False
    # Which network is exported: "method", the one the paper infers with (UCMT's teacher, CPS's first
    # network); "validation", whichever of the method's candidate networks (teacher, students)
    # validates best at each validation. Both select on the validation split only.
    inference_selection: str = "method"
    # Choose, at each validation, which classes the card reduces to their largest component
    # (inference/components.py); False exports cards without a clean-up, as before 2026-12-05.
    postprocessing: bool = True
    # At the end of a run, re-estimate the exported network's BatchNorm statistics from this many
    # batches of 4 patches of every training case, labeled and unlabeled, and keep them if they
    # validate better (training/batchnorm.py). Every preset sets 100; 0 (a bare config, as every run
    # before 2026-12-06 had) leaves them as trained.
    batchnorm_batches: int = 0

    def validate(self) -> TrainConfig:
        """Raise :class:`InputError` for values the loop cannot use; return ``self``."""
        positive = ("iterations", "batch_labeled", "base_width", "lr_step", "checkpoint_every")
        positive += ("validate_every", "log_every")
        for name in positive:
            if getattr(self, name) < 1:
                raise InputError(f"setting {name} must be at least 1, got {getattr(self, name)}")
        if min(self.batch_unlabeled, self.rampup_iterations, self.warmup_iterations, self.batchnorm_batches) < 0:
            negative = "batch_unlabeled, rampup_iterations, warmup_iterations and batchnorm_batches"
            raise InputError(f"settings {negative} must not be negative")
        if self.depth < 2:
            raise InputError(f"setting depth must be at least 2, got {self.depth}")
        if not 0.0 <= self.dropout < 1.0:
            raise InputError(f"setting dropout must be in [0, 1), got {self.dropout}")
        if not 0.0 <= self.foreground_oversampling <= 1.0:
            raise InputError(f"setting foreground_oversampling must be in [0, 1], got {self.foreground_oversampling}")
        if not 0.0 <= self.overlap < 1.0:
            raise InputError(f"setting overlap must be in [0, 1), got {self.overlap}")
        if self.lr <= 0 or self.lr_gamma <= 0 or self.momentum < 0 or self.weight_decay < 0:
            raise InputError("settings lr and lr_gamma must be positive, momentum and weight_decay not negative")
        if self.optimizer not in ("sgd", "adamw") or self.schedule not in ("step", "poly"):
            raise InputError(
                f"setting optimizer must be sgd or adamw and schedule step or poly, got {self.optimizer!r}, "
                f"{self.schedule!r}"
            )
        if self.nesterov and (self.optimizer != "sgd" or self.momentum <= 0):
            raise InputError("setting nesterov needs optimizer sgd with a positive momentum")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise InputError(f"setting grad_clip must be positive or none, got {self.grad_clip}")
        if self.lateral_augmentation not in ("auto", "on", "off"):
            raise InputError(f"setting lateral_augmentation must be auto, on or off, got {self.lateral_augmentation!r}")
        if self.inference_selection not in ("method", "validation"):
            choice = self.inference_selection
            raise InputError(f"setting inference_selection must be method or validation, got {choice!r}")
        try:
            method_class(self.method).Settings.from_mapping(self.method_settings)
        except ValueError as exc:
            raise InputError(f"method {self.method!r}: {exc}") from None
        if self.target_spacing is not None and (
            len(self.target_spacing) != 3 or not all(math.isfinite(v) and v > 0 for v in self.target_spacing)
        ):
            raise InputError(
                f"setting target_spacing must be three positive numbers (z,y,x), got {self.target_spacing}"
            )
        if len(self.patch_size) != 3 or min(self.patch_size) < 1:
            raise InputError(f"setting patch_size must be three positive integers (z,y,x), got {self.patch_size}")
        divisor = 2 ** (self.depth - 1)
        if any(size % divisor for size in self.patch_size):
            raise InputError(
                f"patch_size {','.join(map(str, self.patch_size))} must be divisible by {divisor} "
                f"(2**(depth-1) with depth {self.depth})"
            )
        return self

    def network_config(self, num_classes: int, in_channels: int = 1) -> dict[str, Any]:
        """The model card ``network`` entry these settings describe."""
        return {
            "name": "vnet",
            "in_channels": in_channels,
            "num_classes": num_classes,
            "base_width": self.base_width,
            "depth": self.depth,
            "dropout": self.dropout,
            "residual": self.residual,
        }

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["patch_size"] = list(self.patch_size)
        data["target_spacing"] = None if self.target_spacing is None else list(self.target_spacing)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        """Rebuild from :meth:`to_dict` output (e.g. a resumed run's ``config.json``)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise InputError(f"unknown training setting(s): {', '.join(sorted(unknown))}")
        values = dict(data)
        if "patch_size" in values:
            values["patch_size"] = tuple(int(v) for v in values["patch_size"])
        if values.get("target_spacing") is not None:
            values["target_spacing"] = tuple(float(v) for v in values["target_spacing"])
        return cls(**values).validate()


# UA-MT's "40 epochs" ramp-up: its LA code calls the ramp-up with ``iter_num // 150``, so one of its
# "epochs" is 150 iterations and 40 of them are 6000 iterations, the whole run. We keep that ratio
# (ramp-up = all iterations) rather than a count of passes over a dataset whose size varies.
# A CPU teacher from scratch: width 8 and depth 4 (about 0.6 M parameters), 16 slices fit every
# cohort case (20-38 slices), 64x64 in-plane covers a good part of the anatomy. Lower dropout
# than the papers' 0.5 because dropping half of 8 channels is mostly noise; MC dropout still has
# something to sample. The budget is the measured one (benchmarks/convergence.py, docs/convergence.md):
# supervised with a third of the patches foreground-centred reaches validation Dice 0.80 on the
# demo cohort by 3000 iterations and is flat after; the lr decays at 80% to settle the weights.
_QUICK = TrainConfig(
    iterations=4000,
    patch_size=(16, 64, 64),
    base_width=8,
    depth=4,
    dropout=0.2,
    lr_step=3200,
    foreground_oversampling=0.33,
    rampup_iterations=4000,
    checkpoint_every=250,
    validate_every=250,
    log_every=10,
    batchnorm_batches=100,
)

PRESETS: dict[str, TrainConfig] = {
    "paper": TrainConfig(batchnorm_batches=100),
    "quick": _QUICK,
    # The one-click retrain: fine-tune a trained teacher on one or two more labeled cases. The
    # network comes from the teacher's card; a tenth of the from-scratch lr, warmed up and decayed
    # to zero, keeps the teacher in its minimum (at the from-scratch lr a converged teacher lost
    # 0.11 test Dice); no consistency ramp-up, since the teacher's pseudo-labels are already good.
    "finetune": dataclasses.replace(
        _QUICK,
        iterations=300,
        lr=0.001,
        schedule="poly",
        warmup_iterations=30,
        rampup_iterations=0,
        checkpoint_every=100,
        validate_every=100,
        log_every=5,  # UCMT and UG-CEMT do about one iteration a second on 2 cores: progress every 5 s
    ),
}


def preset(name: str) -> TrainConfig:
    """A fresh copy of a named preset (``paper``, ``quick`` or ``finetune``)."""
    if name not in PRESETS:
        raise InputError(f"unknown config {name!r} (known: {', '.join(sorted(PRESETS))})")
    return dataclasses.replace(PRESETS[name], method_settings={})


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _parse_value(name: str, text: str, current: Any, annotation: str) -> Any:
    """Parse ``text`` as the type of field ``name`` (known from its annotation and current value)."""
    text = text.strip()
    if "None" in annotation and text.lower() in ("none", "null", ""):
        return None
    try:
        if name == "patch_size":
            parts = [int(v) for v in text.replace("x", ",").split(",") if v.strip()]
            if len(parts) != 3:
                raise ValueError("expected three integers z,y,x")
            return tuple(parts)
        if name == "target_spacing":
            spacing = [float(v) for v in text.replace("x", ",").split(",") if v.strip()]
            if len(spacing) != 3:
                raise ValueError("expected three numbers z,y,x in mm")
            return tuple(spacing)
        if annotation.startswith("bool"):
            if text.lower() in _TRUE:
                return True
            if text.lower() in _FALSE:
                return False
            raise ValueError("expected true or false")
        if annotation.startswith("int"):
            return int(text)
        if annotation.startswith("float"):
            return float(text)
        if annotation.startswith("str"):
            return text
        if annotation.startswith("dict"):
            value = json.loads(text)
            if not isinstance(value, dict):
                raise ValueError("expected a JSON object")
            return value
    except (ValueError, json.JSONDecodeError) as exc:
        raise InputError(f"setting {name}={text!r}: {exc}") from None
    raise InputError(f"setting {name} cannot be set from the command line (current value {current!r})")


def _setting_value(text: str) -> Any:
    """A method setting: JSON when it parses (numbers, booleans, lists), else the plain string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def apply_overrides(config: TrainConfig, overrides: Iterable[str]) -> TrainConfig:
    """A copy of ``config`` with ``key=value`` strings applied and checked.

    Keys are :class:`TrainConfig` fields; ``settings.NAME=VALUE`` (or ``method_settings.NAME``) sets
    one method setting (the method itself rejects names it does not know). Unknown keys and values
    of the wrong type are an :class:`InputError`.
    """
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    values = config.to_dict()
    values["patch_size"] = tuple(values["patch_size"])
    if values["target_spacing"] is not None:
        values["target_spacing"] = tuple(values["target_spacing"])
    values["method_settings"] = dict(values["method_settings"])
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise InputError(f"setting {item!r} must look like key=value")
        prefix, dot, setting = key.partition(".")
        if dot and prefix in ("settings", "method_settings"):
            if not setting:
                raise InputError(f"setting {item!r} names no method setting")
            values["method_settings"][setting] = _setting_value(text)
            continue
        if key not in fields:
            known = ", ".join(sorted(fields))
            raise InputError(f"unknown setting {key!r} (known: {known}, settings.NAME for method settings)")
        annotation = str(fields[key].type)
        values[key] = _parse_value(key, text, values[key], annotation)
    return TrainConfig(**values).validate()
