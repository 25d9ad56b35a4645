"""The one interface every semi-supervised method implements.

A method states three things and nothing else (ARCHITECTURE.md, "seams that must hold"):

1. its **networks**: every ``nn.Module`` it needs (students, teachers, heads, attention blocks),
   by name, and which of them the optimiser trains;
2. its **loss for a batch**: a (labeled, unlabeled) :class:`Batch` in, a scalar loss out;
3. its **teacher update**: what happens after each optimiser step (EMA, nothing, ...).

The training loop owns everything else: data, augmentation, batching, devices, mixed precision,
the optimiser (plain SGD or SAM, as the method asks), learning-rate and ramp-up schedules,
checkpoints and exact resume, validation, logging and torch.distributed. A method never touches
files, devices or the project store, and never calls ``backward()`` or an optimiser itself.

Distributed training: the loop may replace entries of :attr:`SemiSupervisedMethod.networks` by
``DistributedDataParallel`` wrappers of the trainable networks, so a method must call its trainable
networks through ``self.networks[name](...)`` (their ``forward``), and reach plain attributes
through :meth:`SemiSupervisedMethod.unwrapped`.
"""

from __future__ import annotations

import functools
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from napari_ssl_seg.methods.settings import MethodSettings, SAMSettings
from napari_ssl_seg.networks.features import WithFeatures

__all__ = [
    "Batch",
    "LossOutput",
    "SemiSupervisedMethod",
    "StepContext",
    "TensorToken",
    "cache_matches",
    "gaussian_rampup",
    "same_tensor",
    "tensor_token",
]


@dataclass
class Batch:
    """One training batch, already augmented and on the training device.

    ``labeled_image``: (B_l, C, z, y, x) float; ``labeled_target``: (B_l, z, y, x) int64 class ids;
    ``unlabeled_image``: (B_u, C, z, y, x) float (B_u may be 0 for supervised training).
    """

    labeled_image: torch.Tensor
    labeled_target: torch.Tensor
    unlabeled_image: torch.Tensor
    #: What the method's :meth:`SemiSupervisedMethod.data_targets` made of this batch in the data stage.
    extras: dict[str, torch.Tensor] = field(default_factory=dict)

    @functools.cached_property
    def all_images(self) -> torch.Tensor:
        """Labeled then unlabeled images in one tensor (the order methods index by).

        Concatenated once per batch: every call of one iteration (both steps, SAM's second pass)
        gets the same tensor, which is what lets per-iteration caches recognise it by identity.
        """
        return torch.cat([self.labeled_image, self.unlabeled_image], dim=0)

    @property
    def labeled_count(self) -> int:
        return int(self.labeled_image.shape[0])


TensorToken = tuple[torch.Tensor, int]


def tensor_token(tensor: torch.Tensor) -> TensorToken:
    """A reference to ``tensor`` and its in-place version counter, for :func:`same_tensor`."""
    return tensor, tensor._version


def same_tensor(token: TensorToken | None, tensor: torch.Tensor) -> bool:
    """Whether ``tensor`` is the very tensor ``token`` was made from, unmodified since.

    Identity, not content: comparing contents (``torch.equal``) makes the host wait for the device,
    a synchronisation per step on CUDA. The token holds the tensor, so its id cannot be reused.
    """
    return token is not None and token[0] is tensor and token[1] == tensor._version


def cache_matches(cache: Mapping[str, Any] | None, batch: Batch, ctx: StepContext) -> bool:
    """Whether a per-iteration cache (keys ``iteration``, ``labeled``, ``source``) was made from ``batch``.

    Two-step methods compute maps in step 0 and reuse them in step 1; SAM calls a step's loss twice.
    ``source`` is the :func:`tensor_token` of the ``batch.all_images`` the cache was made from, so a
    cache from another batch (even of equal contents) is never used.
    """
    if cache is None or cache["iteration"] != ctx.iteration or cache["labeled"] != batch.labeled_count:
        return False
    return same_tensor(cache["source"], batch.all_images)


def gaussian_rampup(iteration: int, length: int) -> float:
    """exp(-5 (1 - t/length)^2), clipped to [0, 1]: the papers' consistency ramp-up."""
    if length <= 0:
        return 1.0
    t = min(max(iteration, 0), length) / length
    return float(math.exp(-5.0 * (1.0 - t) ** 2))


@dataclass(frozen=True)
class StepContext:
    """What the loop tells a method about where training stands.

    ``rampup`` is the loop's Gaussian ramp-up in [0, 1] for this iteration (the config's
    ``rampup_iterations``); a method multiplies it by its own maximum consistency weight.
    ``step`` is the sub-step within the iteration (0 .. ``steps_per_iteration`` - 1), for methods
    that take two optimiser steps per iteration (UCMT, UG-CEMT's second stage).
    ``coupling`` weighs the terms a method does not ramp up but that tie its trainable networks
    together (CCE dual's consistency regularisation): 1, except while a network that ``--init`` did
    not fit is still learning; then it follows ``rampup``.
    """

    iteration: int
    max_iterations: int
    rampup: float
    step: int = 0
    num_classes: int = 2
    coupling: float = 1.0

    @property
    def progress(self) -> float:
        return self.iteration / max(self.max_iterations, 1)


@dataclass
class LossOutput:
    """The scalar loss to minimise and the named parts worth logging.

    Log values are numbers or 0-d tensors; a method returns tensors as they are (detached), never
    ``float(t)``: the loop turns them into numbers only when it writes a log record, so a CUDA step
    does not wait for the device to finish just to be logged.
    """

    loss: torch.Tensor
    logs: dict[str, float | torch.Tensor] = field(default_factory=dict)


class SemiSupervisedMethod(ABC):
    """Base class of every method; see the module docstring for the contract.

    Subclasses set the class attributes, build their networks in ``__init__`` (from the
    ``network`` config, a model card ``network`` entry, via :func:`napari_ssl_seg.networks.build_network`)
    and implement :meth:`loss`. ``settings`` overrides the defaults of the method's
    :attr:`Settings` dataclass; unknown keys and wrong types are an error, so a typo never
    silently trains the wrong thing.
    """

    name: ClassVar[str]
    #: Optimiser steps per iteration; :meth:`loss` is called once per step with ``ctx.step`` set.
    steps_per_iteration: ClassVar[int] = 1
    #: "sgd" or "sam" (sharpness-aware minimisation around SGD; the loop calls :meth:`loss` twice).
    optimizer: ClassVar[str] = "sgd"
    #: The network used at inference and exported as the checkpoint's ``model``.
    inference_network: ClassVar[str] = "model"
    #: A second network exported as the checkpoint's ``student`` (teacher-student disagreement), or None.
    disagreement_network: ClassVar[str | None] = None
    #: Other networks that can serve at inference (same architecture as the inference network). With the
    #: config's ``inference_selection=validation`` the loop validates them beside the inference network
    #: and exports whichever validates best; by default only the paper's inference network is used.
    inference_alternatives: ClassVar[tuple[str, ...]] = ()
    #: False for methods that train on labeled data only: the loop then draws no unlabeled patches.
    uses_unlabeled: ClassVar[bool] = True
    #: The method's settings: a frozen dataclass whose defaults are the paper's values.
    Settings: ClassVar[type[MethodSettings]] = MethodSettings

    def __init__(self, network: Mapping[str, Any], settings: Mapping[str, Any] | None = None) -> None:
        try:
            self.settings = self.Settings.from_mapping(settings)
        except ValueError as exc:
            raise ValueError(f"method {self.name!r}: {exc}") from None
        if self.optimizer == "sam" and not isinstance(self.settings, SAMSettings):
            raise TypeError(f"method {self.name!r} uses SAM: its Settings must derive from SAMSettings (sam_rho)")
        self.network_config: dict[str, Any] = dict(network)
        self.networks: nn.ModuleDict = nn.ModuleDict()

    # -- what the loop asks ------------------------------------------------
    @abstractmethod
    def trainable(self) -> list[str]:
        """Names of the networks the optimiser updates (the others get no gradients)."""

    @abstractmethod
    def loss(self, batch: Batch, ctx: StepContext) -> LossOutput:
        """The loss for ``batch`` at ``ctx``; called in train mode, gradients enabled."""

    def case_target(self, label: np.ndarray) -> np.ndarray | None:
        """A channel-first array (K, z, y, x) computed once per labeled training case from its whole
        label map (z, y, x); the sampler crops and flips it with each of the case's patches and
        hands the crops to :meth:`data_targets`. For targets that are dearer per patch than per case,
        or that a patch alone cannot measure (distances to a boundary outside it). Default: none.
        """
        return None

    def data_targets(
        self, labeled_target: torch.Tensor, case_target: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Targets derived from the labels on the CPU, in the loop's data stage; they reach
        :meth:`loss` as ``batch.extras``. Default: none.

        For work that needs the labels on the host (SciPy distance transforms): done here, it never
        makes a training step wait for the device, and where the loop draws batches ahead (CUDA) it
        runs beside the device's work. ``labeled_target`` is (B_l, z, y, x) class ids on the CPU;
        ``case_target`` the crops of :meth:`case_target` (B_l, K, z, y, x), None where it has none.
        """
        return {}

    def update_teachers(self, ctx: StepContext) -> None:  # noqa: B027 (optional hook)
        """After each optimiser step: EMA teachers and the like. Default: nothing."""

    def train(self, mode: bool = True) -> None:
        """Put trainable networks in train mode and every other network in eval mode."""
        trainable = set(self.trainable())
        for name, module in self.networks.items():
            module.train(mode and name in trainable)

    def unwrapped(self, name: str) -> nn.Module:
        """The plain module behind ``self.networks[name]`` (the loop may have wrapped it in DDP)."""
        module = self.networks[name]
        return getattr(module, "module", module)

    def export(self) -> dict[str, nn.Module]:
        """The networks a deployment checkpoint holds: ``model`` and optionally ``student``.

        A network held in :class:`~napari_ssl_seg.networks.features.WithFeatures` (for feature
        losses) is exported bare: checkpoints hold the segmentation network, never the wrapper.
        """
        exported = {"model": self._bare(self.inference_network)}
        if self.disagreement_network is not None:
            exported["student"] = self._bare(self.disagreement_network)
        return exported

    def inference_candidates(self) -> dict[str, nn.Module]:
        """The plain segmentation networks that may serve at inference, the method's own choice first.

        Built from :meth:`export` so a method that strips training-only parts (heads, attention)
        offers the same stripped networks here.
        """
        exported = self.export()
        candidates = {self.inference_network: exported["model"]}
        for name in self.inference_alternatives:
            if name == self.disagreement_network and "student" in exported:
                candidates[name] = exported["student"]
            else:
                candidates[name] = self._bare(name)
        return candidates

    def _bare(self, name: str) -> nn.Module:
        module = self.unwrapped(name)
        return module.net if isinstance(module, WithFeatures) else module

    @property
    def sam_rho(self) -> float:
        """The radius of SAM's ascent step, for methods whose :attr:`optimizer` is ``"sam"``."""
        if not isinstance(self.settings, SAMSettings):
            raise TypeError(f"method {self.name!r} does not use SAM")
        return self.settings.sam_rho

    def describe(self) -> dict[str, Any]:
        """Method name and effective settings, for the model card and the log."""
        return {"method": self.name, "settings": self.settings.to_dict()}
