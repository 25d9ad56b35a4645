"""Predict a volume with a trained teacher: label map and uncertainty map in the source geometry.

Volume -> reorient to the card's orientation (flips and axis swaps, exact) -> normalise per the
model card -> (resample to the training spacing when the card has one) -> Gaussian-blended sliding
windows (prediction and uncertainty share one window loop) -> back to the source grid -> label map
(argmax, then the card's post-processing: :mod:`.components`) + entropy map (float16) + optional BALD
map. The entropy map is left as the network gave it, islands included.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from napari_ssl_seg.errors import InputError
from napari_ssl_seg.inference import UNCERTAINTY_KINDS
from napari_ssl_seg.inference.components import LARGEST_COMPONENT, keep_largest_components
from napari_ssl_seg.inference.device import select_device
from napari_ssl_seg.inference.mc_dropout import entropy
from napari_ssl_seg.inference.sliding import WindowPlan, run_sliding_window
from napari_ssl_seg.inference.window_functions import window_function
from napari_ssl_seg.intensity import normalise_intensity
from napari_ssl_seg.io import Volume
from napari_ssl_seg.io.orientation import reorientation
from napari_ssl_seg.io.volume import validate_volume
from napari_ssl_seg.networks import ModelCard, load_checkpoint
from napari_ssl_seg.progress import StepProgress
from napari_ssl_seg.runtime.precision import Execution, execution_for

__all__ = ["Prediction", "Predictor"]

# Post-processing works on slabs of this many slices so the float32 temporaries of a CT-sized
# volume (one per class) never exist for the whole volume at once.
_SLAB = 16
# Resample only when the spacing differs by more than this fraction: interpolation blurs.
SPACING_TOLERANCE = 0.01
_HALF_BLENDING_ELEMENTS = 2**26
VOXEL_ORDER_NOTE = (
    "the model card records no orientation (a card from before orientations were recorded): the network sees"
    " this file's voxel order, so a file stored in another order than its training data can come back mirrored;"
    " retrain the teacher to give it one"
)


def torch_to_numpy(dtype: torch.dtype) -> type:
    return np.float16 if dtype == torch.float16 else np.float32


@dataclass
class Prediction:
    """A prediction in the source geometry; maps are ``None`` when not asked for."""

    label: Volume
    uncertainty: Volume | None
    mutual_information: Volume | None
    kind: str
    samples: int
    seconds: float
    device: str
    num_classes: int
    notes: list[str] = field(default_factory=list)
    #: How the network ran: "float32", "bfloat16, channels-last", "float16" (runtime/precision.py).
    precision: str = "float32"
    #: Probability of the predicted class (float16), kept only when asked (calibration reports).
    confidence: np.ndarray | None = None
    #: Classes reduced to their largest connected component (the card's post-processing).
    largest_component: list[int] = field(default_factory=list)

    def summary(self) -> dict[str, object]:
        return {
            "uncertainty": self.kind,
            "samples": self.samples,
            "seconds": round(self.seconds, 3),
            "device": self.device,
            "precision": self.precision,
            "shape": list(self.label.shape),
            "classes_found": sorted(int(v) for v in np.unique(self.label.array)),
            "largest_component_only": list(self.largest_component),
            "notes": list(self.notes),
        }


#: MC-dropout masks are drawn from this seed on every prediction.
MASK_SEED = 0


@contextmanager
def _seeded_masks(device: torch.device) -> Iterator[None]:
    """The same case and teacher give the same maps, and the queue the same order, on every run: drawn afresh,
    one teacher's case ranking by ``boundary_entropy`` (the default then) moved between 0.15 and 0.51 in
    Spearman over 18 cases (docs/convergence.md). The caller's random state is restored afterwards."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(MASK_SEED)
        yield


class Predictor:
    """A loaded teacher ready to predict volumes; see the module docstring for the pipeline.

    Args:
        networks: ``{"model": teacher, "student": ...}`` as :func:`load_checkpoint` returns.
        card: the model card (patch size, intensity normalisation, spacing, classes).
        device: ``"auto"`` (CUDA, then MPS, then CPU) or an explicit device.
        amp: mixed precision where the device has it (float16 on CUDA, bfloat16 on a CPU with
            native bfloat16, with channels-last: :mod:`napari_ssl_seg.runtime.precision`);
            default on. False: float32 in the standard layout, the reference.
        sw_batch_size: windows per network call; default 4 on CUDA, 1 on CPU.
        overlap: sliding-window overlap fraction.
        half_blending: blend windows (and hold the normalised input) in float16, halving the memory
            of the volume-sized buffers; default on when voxels x classes reach 2**26 (a 512x512x300 CT
            with 2 classes), where float32 buffers alone would take about 1.3 GB. The network still
            runs in float32 (or AMP on CUDA); only the blended sums are rounded (relative 1e-3).
        mc_chunk: MC-dropout passes stacked per decoder call; default all on CUDA (fills the GPU),
            1 on CPU: on the 2-core development CPU stacking gained no speed (2 passes per call ran
            5% slower than 1, 4 and 8 ran 12-14% slower: the stacked full-resolution decoder
            activations fall out of cache), and with 2 a 300x512x512 MC run peaked at 2.85 GB, not 2.11.
    """

    def __init__(
        self,
        networks: Mapping[str, nn.Module],
        card: ModelCard,
        *,
        device: str | torch.device | None = "auto",
        amp: bool | None = None,
        sw_batch_size: int | None = None,
        overlap: float = 0.25,
        mc_chunk: int | None = None,
        half_blending: bool | None = None,
    ) -> None:
        self.device = device if isinstance(device, torch.device) else select_device(device)
        self.card = card
        self.networks = {name: module.to(self.device).eval() for name, module in networks.items()}
        self.amp = True if amp is None else bool(amp)
        self.sw_batch_size = sw_batch_size or (4 if self.device.type == "cuda" else 1)
        if not 0.0 <= overlap < 1.0:
            raise InputError(f"overlap must be in [0, 1), got {overlap}")
        self.overlap = overlap
        self.mc_chunk = mc_chunk  # None: mc_dropout.default_chunk for the device
        self.num_classes = card.num_classes
        self.in_channels = int(card.network.get("in_channels", 1))
        self.half_blending = half_blending
        self._prepared_for: Execution | None = None  # the execution the networks' layout was last set for

    @classmethod
    def from_checkpoint(cls, path: Path | str, **kwargs: object) -> Predictor:
        networks, card = load_checkpoint(path)
        return cls(networks, card, **kwargs)  # type: ignore[arg-type]

    @property
    def has_student(self) -> bool:
        return "student" in self.networks

    def default_uncertainty(self) -> str:
        """MC dropout when the network has dropout, else teacher-student disagreement, else none."""
        dropout = float(self.card.network.get("dropout", 0.0) or 0.0)
        if dropout > 0:
            return "mc_dropout"
        return "disagreement" if self.has_student else "none"

    # -- the pipeline --------------------------------------------------------------------------
    @property
    def execution(self) -> Execution:
        """Precision and layout of the network calls, as ``amp`` asks for on this device."""
        return execution_for(self.device, mixed_precision=self.amp)

    def window_plan(self) -> WindowPlan:
        """How the windows run; the networks are put in the layout it asks for (once per change of ``amp``)."""
        execution = self.execution
        if execution != self._prepared_for:
            for network in self.networks.values():
                execution.prepare_module(network)
            self._prepared_for = execution
        return WindowPlan(
            roi=tuple(self.card.patch_size),
            overlap=self.overlap,
            sw_batch_size=self.sw_batch_size,
            device=self.device,
            execution=execution,
        )

    def blending_dtype(self, shape: tuple[int, ...]) -> torch.dtype:
        """float16 for volume-sized buffers when asked or when the volume is CT-sized, else float32."""
        half = self.half_blending
        if half is None:
            half = int(np.prod(shape)) * self.num_classes >= _HALF_BLENDING_ELEMENTS
        return torch.float16 if half else torch.float32

    def prepare(self, volume: Volume, resample: bool) -> tuple[torch.Tensor, tuple[int, int, int] | None]:
        """The normalised (1, 1, z, y, x) input, and the source shape when it was resampled."""
        if self.in_channels != 1:
            raise InputError(f"model expects {self.in_channels} input channels; only single-channel volumes work")
        target = self.card.spacing
        resampled = resample and target is not None and not np.allclose(volume.spacing, target, rtol=SPACING_TOLERANCE)
        shape = volume.shape
        if resampled:
            shape = tuple(
                max(1, round(n * s / t)) for n, s, t in zip(volume.shape, volume.spacing, target, strict=True)
            )
        dtype = self.blending_dtype(shape)
        if not resampled:
            normalised = normalise_intensity(volume.array, self.card.intensity, dtype=torch_to_numpy(dtype))
            return torch.from_numpy(normalised)[None, None], None
        image = torch.from_numpy(normalise_intensity(volume.array, self.card.intensity))[None, None]
        image = F.interpolate(image, size=shape, mode="trilinear", align_corners=False)
        return image.to(dtype), volume.shape

    def predict(
        self,
        volume: Volume,
        *,
        uncertainty: str | None = None,
        samples: int = 8,
        bald: bool = False,
        resample: bool = True,
        progress: StepProgress | None = None,
        name: str = "image",
        keep_confidence: bool = False,
        postprocess: bool = True,
    ) -> Prediction:
        """Label map and uncertainty map of ``volume``, both on its own voxel grid.

        ``uncertainty`` is one of :data:`UNCERTAINTY_KINDS` (default: :meth:`default_uncertainty`);
        ``samples`` is T for MC dropout; ``bald`` adds the mutual-information map (MC dropout).
        ``postprocess=False`` returns the argmax as the network gave it, without the card's clean-up
        (validation uses it to choose that clean-up).
        """
        validate_volume(volume, name=name)
        kind = uncertainty or self.default_uncertainty()
        if kind not in UNCERTAINTY_KINDS:
            raise InputError(f"unknown uncertainty {kind!r} (known: {', '.join(UNCERTAINTY_KINDS)})")
        if kind == "disagreement" and not self.has_student:
            raise InputError("this model carries no student network; use --uncertainty mc_dropout or fast")
        if not 1 <= samples <= 128:
            raise InputError(f"--samples must be between 1 and 128, got {samples}")
        if bald and kind not in ("mc_dropout", "fast"):
            raise InputError("the mutual-information (BALD) map needs MC-dropout uncertainty")
        start = time.perf_counter()
        orientation = reorientation(volume.direction, volume.shape, self.card.orientation)
        image, source_shape = self.prepare(orientation.volume_to_target(volume), resample)
        function = window_function(kind, self.networks, samples=samples, chunk=self.mc_chunk, bald=bald)
        plan = self.window_plan()
        with _seeded_masks(self.device):
            outputs = run_sliding_window(image, function, plan, progress=progress)
        del image
        if source_shape is not None:
            outputs = tuple(F.interpolate(o.float(), size=source_shape, mode="trilinear") for o in outputs)
            plan.notes.append(f"resampled to the model's spacing {self.card.spacing} mm and back")
        maps = _postprocess(outputs, kind, bald, self.num_classes, keep_confidence)
        cleaned = self.card.postprocessing.get(LARGEST_COMPONENT, []) if postprocess else []
        if cleaned:
            maps = (keep_largest_components(maps[0], cleaned), *maps[1:])
        label, entropy_map, mutual, confidence = (None if m is None else orientation.to_source(m) for m in maps)
        if orientation.target is None:
            plan.notes.append(VOXEL_ORDER_NOTE)  # the command line prints it as a warning, the docks show one
        label_names = {int(k): v for k, v in self.card.classes.items() if int(k) != 0} or None
        return Prediction(
            label=volume.with_array(label, label_names=label_names, modality=None, source_format="prediction"),
            uncertainty=None if entropy_map is None else volume.with_array(entropy_map, label_names=None),
            mutual_information=None if mutual is None else volume.with_array(mutual, label_names=None),
            kind=kind,
            samples=samples if kind in ("mc_dropout", "fast") else (2 if kind == "disagreement" else 1),
            seconds=time.perf_counter() - start,
            device=str(self.device),
            num_classes=self.num_classes,
            notes=plan.notes,
            precision=self.execution.label,
            confidence=confidence,
            largest_component=list(cleaned),
        )


def _postprocess(
    outputs: tuple[torch.Tensor, ...], kind: str, bald: bool, num_classes: int, keep_confidence: bool
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """Argmax, entropy and BALD maps from the blended outputs, slab by slab along z."""
    probabilities = outputs[0][0]  # (C, z, y, x)
    extra = outputs[1][0, 0] if len(outputs) > 1 else None
    depth = probabilities.shape[1]
    label = np.empty(probabilities.shape[1:], dtype=np.uint8 if num_classes <= 256 else np.uint16)
    want_entropy = kind != "none"
    entropy_map = np.empty(probabilities.shape[1:], dtype=np.float16) if want_entropy else None
    mutual = np.empty(probabilities.shape[1:], dtype=np.float16) if bald else None
    confidence = np.empty(probabilities.shape[1:], dtype=np.float16) if keep_confidence else None
    for z0 in range(0, depth, _SLAB):
        slab = probabilities[:, z0 : z0 + _SLAB].float().cpu()
        top, index = slab.max(dim=0)
        label[z0 : z0 + _SLAB] = index.numpy()
        if confidence is not None:
            confidence[z0 : z0 + _SLAB] = top.numpy()
        if not want_entropy:
            continue
        if kind == "disagreement":
            assert extra is not None
            slab_entropy = extra[z0 : z0 + _SLAB].float().cpu()
        else:
            slab_entropy = entropy(slab, dim=0)
        entropy_map[z0 : z0 + _SLAB] = slab_entropy.numpy()  # type: ignore[index]
        if bald:
            assert extra is not None and mutual is not None
            expected = extra[z0 : z0 + _SLAB].float().cpu()
            mutual[z0 : z0 + _SLAB] = (slab_entropy - expected).clamp_min(0.0).numpy()
    return label, entropy_map, mutual, confidence
