"""The window loop: MONAI's Gaussian-blended sliding window, with progress and an OOM fallback."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from monai.inferers import sliding_window_inference

from napari_ssl_seg.errors import InputError
from napari_ssl_seg.inference.window_functions import WindowFunction
from napari_ssl_seg.progress import StepProgress
from napari_ssl_seg.runtime.precision import Execution

__all__ = ["WindowPlan", "count_windows", "run_sliding_window"]


def count_windows(shape: Sequence[int], roi: Sequence[int], overlap: float) -> int:
    """How many windows MONAI's sliding window visits (for a progress bar's total).

    Mirrors MONAI's scan: the image is padded up to the window where smaller, the stride is
    ``int(roi * (1 - overlap))`` (at least 1), and a last window is placed flush with the end.
    """
    total = 1
    for size, window in zip(shape, roi, strict=True):
        size = max(size, window)
        stride = max(int(window * (1 - overlap)), 1)
        total *= 1 if size == window else math.ceil((size - window) / stride) + 1
    return total


@dataclass
class WindowPlan:
    """How to run the windows; the OOM fallback edits a copy of it and says what it changed."""

    roi: tuple[int, int, int]
    overlap: float = 0.25
    sw_batch_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    output_device: torch.device | None = None
    # Precision and layout of the network calls (runtime/precision.py); None: float32, as stored.
    execution: Execution | None = None
    notes: list[str] = field(default_factory=list)


def _once(image: torch.Tensor, function: WindowFunction, plan: WindowPlan, progress: StepProgress | None):
    total = count_windows(image.shape[2:], plan.roi, plan.overlap)
    done = 0

    execution = plan.execution or Execution(plan.device)

    def counted(windows: torch.Tensor) -> tuple[torch.Tensor, ...]:
        nonlocal done
        with execution.autocast():
            # The network always sees float32 windows; outputs take the blending buffers' dtype,
            # which MONAI derives from the input's (float16 for CT-sized volumes, see Predictor).
            outputs = tuple(o.to(image.dtype) for o in function(execution.prepare_input(windows.float())))
        done = min(done + windows.shape[0], total)
        if progress is not None:
            progress(done, total)
        return outputs

    with torch.no_grad():
        outputs = sliding_window_inference(
            image,
            roi_size=plan.roi,
            sw_batch_size=plan.sw_batch_size,
            predictor=counted,
            overlap=plan.overlap,
            mode="gaussian",
            sw_device=plan.device,
            device=plan.output_device or plan.device,
        )
    return outputs if isinstance(outputs, tuple) else (outputs,)


def _fallback(plan: WindowPlan) -> WindowPlan | None:
    """The next smaller configuration after an out-of-memory error, or None when none is left.

    Written here rather than taken from MONAI's ``SlidingWindowInfererAdapt``: that inferer covers
    only the second step (blending on the CPU), never fewer windows per batch, and its last resort
    moves the whole computation to the CPU without telling the caller, where a user should learn
    why a prediction got slow (``plan.notes``) or be told the way out.
    """
    if plan.sw_batch_size > 1:
        smaller = max(plan.sw_batch_size // 2, 1)
        plan.notes.append(f"out of memory: retrying with {smaller} window(s) at a time instead of {plan.sw_batch_size}")
        plan.sw_batch_size = smaller
        return plan
    output = plan.output_device or plan.device
    if output.type != "cpu":
        plan.notes.append("out of memory: retrying with the blended output kept in CPU memory")
        plan.output_device = torch.device("cpu")
        return plan
    return None


def run_sliding_window(
    image: torch.Tensor,
    function: WindowFunction,
    plan: WindowPlan,
    *,
    progress: StepProgress | None = None,
) -> tuple[torch.Tensor, ...]:
    """Blend ``function`` over ``image`` (1, C, z, y, x); on out-of-memory shrink and retry.

    The fallback halves the windows per batch down to one, then moves the blended output to
    CPU memory; after that it gives up with an :class:`InputError` naming the way out. Notes on
    what was changed are appended to ``plan.notes``.
    """
    while True:
        try:
            return _once(image, function, plan, progress)
        except torch.OutOfMemoryError:
            if plan.device.type == "cuda":
                torch.cuda.empty_cache()
            if _fallback(plan) is None:
                raise InputError(
                    f"out of memory on {plan.device} even with one window at a time; "
                    "use --device cpu or a model with a smaller patch"
                ) from None
