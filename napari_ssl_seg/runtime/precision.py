"""How networks run on a device: the autocast precision and the memory layout, chosen in one place.

Training and prediction ask :func:`execution_for` and get the same answer for the same device:

* **CUDA**: float16 autocast with a gradient scaler (the papers' recipe), standard layout.
* **CPU with native bfloat16** (AVX512-BF16 or AMX): bfloat16 autocast, channels-last 3D.
  On the 2-core development CPU (AVX512-BF16) one ``quick`` V-Net training step (batch 4,
  16x64x64) took 168 ms in float32, 93 ms under bfloat16 autocast, 104 ms channels-last and 78 ms
  with both; a paper V-Net window (80x112x112) predicted in 733 ms and 163 ms. Weights, optimiser
  state, losses and softmax stay float32 (autocast only lowers convolutions and matrix products),
  and bfloat16 keeps float32's exponent range, so no gradient scaler is needed.
* **CPU without it**: float32, channels-last (oneDNN's 3D convolutions are faster in that layout
  whatever the precision; emulated bfloat16 would be slower than float32).
* **Apple MPS**: float32, standard layout (nothing measured there).

``mixed_precision=False`` (``--set amp=false``, ``Predictor(amp=False)``) keeps float32 everywhere,
layout included: the reference an accuracy comparison needs.

One guard comes with CPU bfloat16: oneDNN's bfloat16 3-D convolution (torch 2.13 on AVX512-BF16)
returns wrong *weight gradients* when its input is exactly two voxels deep, off by up to 1e36 and
sometimes inf or NaN, for 3x3x3 kernels with padding and 8 to 128 channels; depths 1 and 3 to 10
agree with float32 to 0.5%. The ``quick`` V-Net's bottleneck is 2x8x8, so without the guard its
deepest weights take garbage steps. :func:`guard_thin_convolutions` runs exactly those calls in
float32 (a bottleneck this small is a sliver of the compute); ``tests/test_precision.py`` fails
without the guard.

And one work-around of a slow kernel: the CPU's channels-last BatchNorm vectorises over the channels, and with
fewer than 16 (the ``quick`` network's 8 at full resolution) its backward pass is slower than the standard
layout's by 5x to 10x (torch 2.13, 4x8x16x64x64 bfloat16: forward and backward 23-25 ms against 2.6 ms; with 16
channels channels-last is the faster, 7.5 ms; without gradients it is the faster too).
:func:`thin_batchnorm_in_standard_layout` runs exactly those layers, when gradients are on, on a standard-layout
copy (its gradient too) and hands the next layer channels-last again: 8.3 ms with the copies (docs/benchmarks.md
has what a training iteration gains).

And what the networks return leaves in the standard layout: the CPU's softmax and log-softmax over the class
axis of a channels-last tensor run over its short innermost axis, about 2x slower than in the standard layout
(torch 2.13, 4x8x16x64x64 float32: 2.2 ms against 1.0 ms each), and every loss, teacher target and MC-dropout
sample takes several, on logits and on tensors made from them. :func:`scores_in_standard_layout` copies the
output heads' results (docs/benchmarks.md: UA-MT, UG-CEMT and UG-MCL 4-8% faster an iteration, the others 0-3%).
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch
from torch import nn

__all__ = [
    "Execution",
    "cpu_has_native_bf16",
    "execution_for",
    "guard_thin_convolutions",
    "scores_in_standard_layout",
    "thin_batchnorm_in_standard_layout",
]

# The input depth at which oneDNN's bfloat16 conv3d weight gradient is wrong (module docstring).
_FAULTY_DEPTH = 2
# Below this many channels the CPU's channels-last BatchNorm is slower than the standard layout (module docstring).
_THIN_BATCHNORM_CHANNELS = 16
# The networks' output heads, by the attribute name every network gives them: the class scores of the V-Net, the
# ResNets and the MultiCURE backbone (``classifier``) and UG-MCL's signed-distance head (``sdf_head``).
_OUTPUT_HEADS = ("classifier", "sdf_head")


def cpu_has_native_bf16() -> bool:
    """True when this CPU computes bfloat16 in hardware (AVX512-BF16 or AMX tiles)."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in probes)


@dataclass(frozen=True)
class Execution:
    """The precision and layout networks use on ``device``; see the module docstring."""

    device: torch.device
    autocast_dtype: torch.dtype | None = None
    channels_last: bool = False

    @property
    def needs_grad_scaler(self) -> bool:
        """float16's narrow exponent range needs loss scaling; bfloat16 and float32 do not."""
        return self.autocast_dtype == torch.float16

    @property
    def label(self) -> str:
        """A short name for logs and benchmark tables: ``bfloat16, channels-last``."""
        precision = "float32" if self.autocast_dtype is None else str(self.autocast_dtype).removeprefix("torch.")
        return f"{precision}{', channels-last' if self.channels_last else ''}"

    def autocast(self) -> AbstractContextManager[object]:
        if self.autocast_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def prepare_module(self, module: nn.Module) -> nn.Module:
        """``module`` moved to the device, its 5-D weights in the chosen layout (in place)."""
        layout = torch.channels_last_3d if self.channels_last else torch.contiguous_format
        module.to(self.device).to(memory_format=layout)
        if self.device.type == "cpu" and self.autocast_dtype == torch.bfloat16:
            guard_thin_convolutions(module)
        if self.device.type == "cpu" and self.channels_last:
            thin_batchnorm_in_standard_layout(module)
            scores_in_standard_layout(module)
        return module

    def prepare_input(self, tensor: torch.Tensor) -> torch.Tensor:
        """A 5-D batch in the chosen layout (other tensors, such as label maps, unchanged)."""
        if self.channels_last and tensor.ndim == 5:
            return tensor.contiguous(memory_format=torch.channels_last_3d)
        return tensor


def execution_for(device: torch.device, *, mixed_precision: bool = True) -> Execution:
    """How networks run on ``device``; ``mixed_precision=False`` is plain float32 in the standard layout."""
    if not mixed_precision:
        return Execution(device)
    if device.type == "cuda":
        return Execution(device, torch.float16)
    if device.type == "cpu":
        return Execution(device, torch.bfloat16 if cpu_has_native_bf16() else None, channels_last=True)
    return Execution(device)


def _enter_float32(module: nn.Module, args: tuple[object, ...]) -> tuple[object, ...] | None:
    image = args[0]
    guard = None
    if (
        isinstance(image, torch.Tensor)
        and image.ndim == 5
        and image.shape[2] == _FAULTY_DEPTH
        and image.device.type == "cpu"
        and torch.is_autocast_enabled("cpu")
    ):
        guard = torch.autocast("cpu", enabled=False)
        guard.__enter__()
    module._float32_guards.append(guard)  # type: ignore[operator]
    return None if guard is None else (image.float(), *args[1:])


def _leave_float32(module: nn.Module, args: tuple[object, ...], output: object) -> None:
    guard = module._float32_guards.pop()  # type: ignore[operator]
    if guard is not None:
        guard.__exit__(None, None, None)


def guard_thin_convolutions(module: nn.Module) -> nn.Module:
    """Run every ``Conv3d`` of ``module`` in float32 when its input is two voxels deep (in place).

    Forward hooks rather than a wrapper module, so state dicts and checkpoints are unchanged; the
    closing hook runs even when the forward raises (``always_call``), so autocast is never left
    off. Idempotent.
    """
    for conv in module.modules():
        if isinstance(conv, nn.Conv3d) and not hasattr(conv, "_float32_guards"):
            conv._float32_guards = []  # a stack: the same module may be called re-entrantly
            conv.register_forward_pre_hook(_enter_float32)
            conv.register_forward_hook(_leave_float32, always_call=True)
    return module


def _to_standard_layout(module: nn.Module, args: tuple[object, ...]) -> tuple[object, ...] | None:
    image = args[0]
    # Only where a backward follows: without one, channels-last is as fast and the copies would cost.
    copy = isinstance(image, torch.Tensor) and image.ndim == 5 and torch.is_grad_enabled()
    copy = copy and image.is_contiguous(memory_format=torch.channels_last_3d) and not image.is_contiguous()
    module._copied_to_standard_layout = copy
    return (image.contiguous(), *args[1:]) if copy else None  # type: ignore[union-attr]


def _gradient_to_standard_layout(gradient: torch.Tensor) -> torch.Tensor:
    return gradient.contiguous()


def _back_to_channels_last(module: nn.Module, args: tuple[object, ...], output: object) -> object:
    if module._copied_to_standard_layout and isinstance(output, torch.Tensor):
        if output.requires_grad:
            # The gradient comes back channels-last from the layers after; the backward pass wants it in the
            # layout of its input (2.6 ms then, against 11 ms with a channels-last gradient, 4x8x16x64x64).
            output.register_hook(_gradient_to_standard_layout)
        return output.contiguous(memory_format=torch.channels_last_3d)
    return None


def thin_batchnorm_in_standard_layout(module: nn.Module) -> nn.Module:
    """Run every ``BatchNorm3d`` of ``module`` with fewer than 16 channels on a standard-layout copy (in place).

    Only while gradients are on (a training forward); without them the layer runs as it is. The output goes back
    to channels-last, so the layers after it see the layout they were prepared for. Hooks, as for
    :func:`guard_thin_convolutions`: state dicts and checkpoints are unchanged. Idempotent.
    """
    for norm in module.modules():
        thin = isinstance(norm, nn.BatchNorm3d) and norm.num_features < _THIN_BATCHNORM_CHANNELS
        if thin and not getattr(norm, "_standard_layout", False):
            norm._standard_layout = True
            norm.register_forward_pre_hook(_to_standard_layout)
            norm.register_forward_hook(_back_to_channels_last)
    return module


def _scores_to_standard_layout(module: nn.Module, args: tuple[object, ...], output: object) -> object:
    if isinstance(output, torch.Tensor) and output.ndim == 5 and not output.is_contiguous():
        return output.contiguous()
    return None


def scores_in_standard_layout(module: nn.Module) -> nn.Module:
    """Make every output head of ``module`` (a ``Conv3d`` named ``classifier`` or ``sdf_head``) return its result in
    the standard layout (in place; see the module docstring).

    The gradient reaches the head in the head's own layout (the copy's backward). A hook, as for
    :func:`guard_thin_convolutions`: state dicts and checkpoints are unchanged. Idempotent.
    """
    for name, head in module.named_modules():
        is_head = isinstance(head, nn.Conv3d) and name.rpartition(".")[2] in _OUTPUT_HEADS
        if is_head and not getattr(head, "_scores_in_standard_layout", False):
            head._scores_in_standard_layout = True
            head.register_forward_hook(_scores_to_standard_layout)
    return module
