"""Mixed precision and layout (runtime/precision.py): what lower precision must not change."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from napari_ssl_seg.networks import ModelCard, VNet, load_checkpoint, save_checkpoint
from napari_ssl_seg.runtime.precision import (
    Execution,
    cpu_has_native_bf16,
    execution_for,
    guard_thin_convolutions,
    scores_in_standard_layout,
    thin_batchnorm_in_standard_layout,
)

CPU_BF16 = Execution(torch.device("cpu"), torch.bfloat16, channels_last=True)
CPU_CHANNELS_LAST = Execution(torch.device("cpu"), channels_last=True)


def _card(network: VNet) -> ModelCard:
    return ModelCard(
        method="supervised",
        network=network.config,
        patch_size=(8, 16, 16),
        intensity={"kind": "zscore"},
        classes={0: "background", 1: "foreground"},
    )


def _gradients(network: nn.Module, images: torch.Tensor, target: torch.Tensor, execution: Execution) -> dict:
    network = execution.prepare_module(network)
    network.zero_grad(set_to_none=True)
    with execution.autocast():
        logits = network(execution.prepare_input(images))
    nn.functional.cross_entropy(logits.float(), target).backward()
    return {name: p.grad.detach().clone() for name, p in network.named_parameters()}


def test_execution_per_device() -> None:
    cpu = execution_for(torch.device("cpu"))
    assert cpu.channels_last and cpu.autocast_dtype == (torch.bfloat16 if cpu_has_native_bf16() else None)
    assert not cpu.needs_grad_scaler
    reference = execution_for(torch.device("cpu"), mixed_precision=False)
    assert (reference.autocast_dtype, reference.channels_last) == (None, False)
    cuda = execution_for(torch.device("cuda"))  # only described, nothing runs on it
    assert cuda.autocast_dtype == torch.float16 and cuda.needs_grad_scaler and not cuda.channels_last
    assert CPU_BF16.label == "bfloat16, channels-last" and reference.label == "float32"


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("channels", [32, 64])
def test_a_two_deep_bf16_convolution_has_float32_weight_gradients(channels: int, channels_last: bool) -> None:
    # Without the guard oneDNN's bfloat16 weight gradient here is off by 90% to 1e36 (module
    # docstring); at other depths bfloat16 rounding alone gives about 0.3%.
    torch.manual_seed(channels)
    execution = Execution(torch.device("cpu"), torch.bfloat16, channels_last=channels_last)
    conv = nn.Conv3d(channels, channels, 3, padding=1)
    images = torch.randn(2, channels, 2, 8, 8)
    upstream = torch.randn(2, channels, 2, 8, 8)
    reference = copy.deepcopy(conv)
    reference(images).backward(upstream)
    execution.prepare_module(conv)
    with execution.autocast():
        output = conv(execution.prepare_input(images))
    output.float().backward(upstream)
    error = (conv.weight.grad - reference.weight.grad).norm() / reference.weight.grad.norm()
    assert float(error) < 0.02


def test_bf16_training_gradients_of_a_two_deep_bottleneck_stay_finite_and_in_scale() -> None:
    # The quick V-Net's layout at a smaller size: the bottleneck is 2 voxels deep. bfloat16 changes
    # an untrained network's deep gradients by 20-35% (rounding through BatchNorm at init), so
    # this asks for what the fault breaks: finite gradients of the right magnitude everywhere.
    torch.manual_seed(0)
    network = VNet(1, 3, base_width=8, depth=4, dropout=0.0)
    images = torch.randn(2, 1, 16, 32, 32)
    target = torch.randint(0, 3, (2, 16, 32, 32))
    reference = _gradients(copy.deepcopy(network), images, target, Execution(torch.device("cpu")))
    lowered = _gradients(copy.deepcopy(network), images, target, CPU_BF16)
    for name, expected in reference.items():
        assert torch.isfinite(lowered[name]).all(), name
        if expected.ndim < 5:
            continue  # biases before BatchNorm have no gradient to speak of: their ratio is noise
        scale = float(lowered[name].norm() / expected.norm().clamp_min(1e-12))
        assert 0.5 < scale < 2.0, f"{name}: gradient norm {scale:.3g} times float32's"


def test_the_guard_runs_two_deep_convolutions_in_float32_and_others_in_bf16() -> None:
    conv = guard_thin_convolutions(nn.Conv3d(4, 4, 3, padding=1))
    guard_thin_convolutions(conv)  # idempotent: one pair of hooks
    assert len(conv._forward_pre_hooks) == 1
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert conv(torch.randn(1, 4, 2, 4, 4)).dtype == torch.float32
        assert conv(torch.randn(1, 4, 3, 4, 4)).dtype == torch.bfloat16
        with pytest.raises(RuntimeError):
            conv(torch.randn(1, 5, 2, 4, 4))  # wrong channel count: the forward raises inside the guard
        assert torch.is_autocast_enabled("cpu")  # and autocast is back on for what follows
    assert conv._float32_guards == []


def test_thin_batchnorm_runs_in_the_standard_layout_and_hands_on_channels_last() -> None:
    torch.manual_seed(4)
    thin, wide = nn.BatchNorm3d(8), nn.BatchNorm3d(16)
    network = nn.Sequential(nn.Conv3d(8, 8, 3, padding=1), thin, nn.Conv3d(8, 16, 3, padding=1), wide)
    reference = copy.deepcopy(network)
    CPU_CHANNELS_LAST.prepare_module(network)
    assert len(thin._forward_pre_hooks) == len(thin._forward_hooks) == 1
    thin_batchnorm_in_standard_layout(network)  # idempotent: still one pair of hooks
    assert len(thin._forward_pre_hooks) == len(thin._forward_hooks) == 1
    assert not wide._forward_pre_hooks and not wide._forward_hooks
    seen = []
    thin.register_forward_pre_hook(lambda module, args: seen.append(args[0].is_contiguous()))
    conv_inputs = []
    network[2].register_forward_pre_hook(
        lambda module, args: conv_inputs.append(args[0].is_contiguous(memory_format=torch.channels_last_3d))
    )
    images = torch.randn(2, 8, 4, 6, 6)
    out = network(CPU_CHANNELS_LAST.prepare_input(images.clone().requires_grad_(True)))
    expected = reference(images)
    assert seen == [True] and conv_inputs == [True]
    torch.testing.assert_close(out, expected)
    probe = torch.randn(expected.shape)  # a loss whose gradient through BatchNorm is not zero
    (out * probe).sum().backward()
    (expected * probe).sum().backward()
    for (name, ours), theirs in zip(network.named_parameters(), reference.parameters(), strict=True):
        if name in ("0.bias", "2.bias"):
            continue  # a convolution's bias before BatchNorm has no gradient but rounding
        scale = float(theirs.grad.abs().max())
        torch.testing.assert_close(ours.grad, theirs.grad, rtol=1e-4, atol=1e-5 * scale, msg=name)
    torch.testing.assert_close(thin.running_var, reference[1].running_var)
    with torch.no_grad():  # no backward to follow: the layer runs channels-last, no copies
        torch.testing.assert_close(network(CPU_CHANNELS_LAST.prepare_input(images)), reference(images))
    assert seen == [True, False] and conv_inputs == [True, True]
    plain = Execution(torch.device("cpu")).prepare_module(nn.BatchNorm3d(8))
    assert not plain._forward_pre_hooks, "only a channels-last CPU execution needs the copies"


def test_the_gradient_reaches_a_thin_batchnorm_in_the_standard_layout() -> None:
    norm = CPU_CHANNELS_LAST.prepare_module(nn.BatchNorm3d(8))
    images = CPU_CHANNELS_LAST.prepare_input(torch.randn(2, 8, 4, 6, 6)).requires_grad_(True)
    out = norm(images)
    assert out.is_contiguous(memory_format=torch.channels_last_3d), "the next layer gets channels-last back"
    gradients = []
    out.grad_fn.next_functions[0][0].register_prehook(lambda grad_outputs: gradients.append(grad_outputs[0]))
    out.backward(torch.randn(out.shape).contiguous(memory_format=torch.channels_last_3d))
    assert gradients and gradients[0].is_contiguous(), "BatchNorm's backward got a channels-last gradient"
    assert images.grad.is_contiguous(memory_format=torch.channels_last_3d)


def test_the_output_heads_hand_their_scores_over_in_the_standard_layout() -> None:
    from napari_ssl_seg.methods.ugmcl import DualTaskVNet

    torch.manual_seed(5)
    network = DualTaskVNet(VNet(1, 3, base_width=4, depth=3, dropout=0.0))
    reference = copy.deepcopy(network)
    CPU_CHANNELS_LAST.prepare_module(network)
    heads = [network.vnet.classifier, network.sdf_head]
    assert [len(head._forward_hooks) for head in heads] == [1, 1]
    scores_in_standard_layout(network)  # idempotent: still one hook per head
    assert [len(head._forward_hooks) for head in heads] == [1, 1]
    images = torch.randn(2, 1, 8, 16, 16)
    inside = []
    network.vnet.decoder[-1].register_forward_hook(
        lambda module, args, output: inside.append(output.is_contiguous(memory_format=torch.channels_last_3d))
    )
    logits, sdf = network(CPU_CHANNELS_LAST.prepare_input(images), dual=True)
    expected_logits, expected_sdf = reference(images, dual=True)
    assert inside == [True], "the layers before the heads still run channels-last"
    assert logits.is_contiguous() and sdf.is_contiguous()
    torch.testing.assert_close(logits, expected_logits)
    torch.testing.assert_close(sdf, expected_sdf)
    target = torch.randint(0, 3, (2, 8, 16, 16))
    for scores, distances in ((logits, sdf), (expected_logits, expected_sdf)):
        (nn.functional.cross_entropy(scores, target) + distances.square().mean()).backward()
    for (name, ours), theirs in zip(network.named_parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(ours.grad, theirs.grad, rtol=1e-4, atol=1e-6, msg=name)
    plain = Execution(torch.device("cpu")).prepare_module(VNet(1, 3, base_width=4, depth=3))
    assert not plain.classifier._forward_hooks, "only a channels-last CPU execution needs the copy"


def test_a_channels_last_network_saves_and_predicts_as_the_standard_layout(tmp_path: Path) -> None:
    torch.manual_seed(1)
    network = VNet(1, 2, base_width=4, depth=3, dropout=0.0).eval()
    images = torch.randn(1, 1, 8, 16, 16)
    with torch.no_grad():
        expected = network(images)
    CPU_BF16.prepare_module(network)
    card = _card(network)
    save_checkpoint(tmp_path / "model", {"model": network}, card)
    loaded, _ = load_checkpoint(tmp_path / "model.safetensors")
    with torch.no_grad():
        assert torch.allclose(loaded["model"].eval()(images), expected, atol=1e-5)


def test_a_predictor_sets_its_networks_layout_when_amp_changes() -> None:
    from napari_ssl_seg.inference.predictor import Predictor
    from napari_ssl_seg.io import Volume

    torch.manual_seed(2)
    network = VNet(1, 2, base_width=4, depth=3, dropout=0.0)
    card = _card(network)
    predictor = Predictor({"model": network}, card, device="cpu")
    volume = Volume(array=torch.randn(8, 16, 16).numpy(), spacing=(1.0, 1.0, 1.0))
    for amp in (True, False, True):
        predictor.amp = amp
        prediction = predictor.predict(volume, uncertainty="none")
        assert prediction.precision == execution_for(torch.device("cpu"), mixed_precision=amp).label
        channels_last = execution_for(torch.device("cpu"), mixed_precision=amp).channels_last
        weight = network.encoder[1].convs[0].conv.weight  # 3x3x3, 8 channels: the two layouts differ
        assert weight.is_contiguous(memory_format=torch.channels_last_3d) == channels_last
        assert weight.is_contiguous() != channels_last
