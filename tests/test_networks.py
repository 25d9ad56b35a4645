"""The papers' V-Net and UG-CEMT's cross-attention block."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from napari_ssl_seg.networks import CrossAttention3d, VNet, cross_attended_logits, stage_conv_counts

SHAPE = (1, 1, 16, 32, 16)  # divisible by 2**4


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def small(**kwargs) -> VNet:
    torch.manual_seed(0)
    return VNet(**{"base_width": 4, **kwargs})


def test_parameter_count_matches_papers_vnet():
    # UA-MT V-Net layout (1/2/3/3/3 encoder, 3/3/2/1 decoder, BN, biases), 1 input channel, 2 classes.
    assert n_params(VNet(in_channels=1, num_classes=2, base_width=16)) == 9_448_866
    assert abs(9_448_866 - 9.45e6) / 9.45e6 < 0.02


def test_stage_layout():
    assert stage_conv_counts(5) == (1, 2, 3, 3, 3)
    net = VNet(base_width=4)
    assert [len(stage.convs) for stage in net.encoder] == [1, 2, 3, 3, 3]
    assert [len(stage.convs) for stage in net.decoder] == [3, 3, 2, 1]
    assert [stage.convs[0].conv.out_channels for stage in net.encoder] == [4, 8, 16, 32, 64]
    assert net.bottleneck_channels == 64


def test_output_shape():
    net = small(num_classes=3, in_channels=2).eval()
    with torch.no_grad():
        out = net(torch.randn(1, 2, 16, 32, 16))
    assert out.shape == (1, 3, 16, 32, 16)


def test_encode_decode_equals_forward_in_eval():
    net = small().eval()
    x = torch.randn(SHAPE)
    with torch.no_grad():
        features = net.encode(x)
        assert len(features.skips) == 4
        assert features.bottleneck.shape == (1, 64, 1, 2, 1)
        assert torch.equal(net.decode(features), net(x))


def test_encode_is_deterministic_in_train_mode_and_decode_is_stochastic():
    # MC dropout reuses one encoding: the encoder holds no dropout, the decoder does.
    net = small()
    net.eval()
    for module in net.dropout_modules():
        module.train()
    x = torch.randn(SHAPE)
    with torch.no_grad():
        features = net.encode(x)
        assert torch.equal(features.bottleneck, net.encode(x).bottleneck)
        assert not torch.equal(net.decode(features), net.decode(features))


def test_dropout_exactly_two_at_stated_positions():
    net = small(dropout=0.3)
    dropouts = [m for m in net.modules() if "Dropout" in type(m).__name__]
    assert len(dropouts) == 2
    assert all(isinstance(m, nn.Dropout3d) and m.p == 0.3 for m in dropouts)
    assert dropouts[0] is net.bottleneck_dropout and dropouts[1] is net.final_dropout
    assert net.dropout_modules() == dropouts
    off = small(dropout=0.0)
    assert not [m for m in off.modules() if "Dropout" in type(m).__name__]
    assert set(off.state_dict()) == set(net.state_dict())


def test_residual_switch_keeps_parameters_changes_output():
    with_res, without = small(residual=True), small(residual=False)
    assert n_params(with_res) == n_params(without)
    without.load_state_dict(with_res.state_dict())  # same names, same shapes
    with_res.eval()
    without.eval()
    x = torch.randn(SHAPE)
    with torch.no_grad():
        assert not torch.allclose(with_res(x), without(x))
    # the first stage (1 -> 4 channels) cannot be residual; the others are
    assert [s.residual for s in with_res.encoder] == [False, True, True, True, True]
    assert not any(s.residual for s in without.encoder)


@pytest.mark.parametrize("shape", [(1, 1, 16, 32, 12), (1, 1, 8, 16, 16), (1, 2, 16, 16, 16), (1, 16, 16, 16)])
def test_bad_input_raises(shape):
    net = small().eval()
    with pytest.raises(ValueError, match="V-Net"):
        net(torch.randn(shape))


def test_cross_attention_identity_at_init_then_not():
    block = CrossAttention3d(16)
    assert block.key_channels == 2
    assert block.gamma.item() == 0.0 and block.gamma.numel() == 1
    xs, xt = torch.randn(2, 16, 2, 3, 2), torch.randn(2, 16, 2, 3, 2)
    out_s, out_t = block(xs, xt)
    assert torch.equal(out_s, xs) and torch.equal(out_t, xt)
    with torch.no_grad():
        block.gamma.fill_(1.0)
    out_s, out_t = block(xs, xt)
    assert not torch.allclose(out_s, xs) and not torch.allclose(out_t, xt)
    # symmetry: swapping the sides and their projections swaps the outputs
    swapped = CrossAttention3d(16)
    swapped.load_state_dict(
        {k.replace("_s.", "_x.").replace("_t.", "_s.").replace("_x.", "_t."): v for k, v in block.state_dict().items()}
    )
    back_t, back_s = swapped(xt, xs)
    assert torch.allclose(back_s, out_s, atol=1e-6) and torch.allclose(back_t, out_t, atol=1e-6)


def test_cross_attention_sends_no_gradient_to_teacher():
    block = CrossAttention3d(8, key_channels=4)
    with torch.no_grad():
        block.gamma.fill_(1.0)
    xs = torch.randn(1, 8, 2, 2, 2, requires_grad=True)
    xt = torch.randn(1, 8, 2, 2, 2, requires_grad=True)
    out_s, out_t = block(xs, xt)
    assert not out_t.requires_grad
    (out_s.square().sum() + out_t.sum()).backward()
    assert xt.grad is None
    assert xs.grad is not None and xs.grad.abs().sum() > 0
    assert block.gamma.grad is not None and block.key_t.weight.grad is not None


def test_cross_attention_refuses_mismatch():
    block = CrossAttention3d(8)
    with pytest.raises(ValueError):
        block(torch.randn(1, 8, 2, 2, 2), torch.randn(1, 8, 2, 2, 4))
    with pytest.raises(ValueError, match="max_tokens"):
        CrossAttention3d(8, max_tokens=4)(torch.randn(1, 8, 2, 2, 2), torch.randn(1, 8, 2, 2, 2))


def test_cross_attended_logits_trains_student_only():
    student, teacher = small(residual=False), small(residual=False)
    teacher.load_state_dict(student.state_dict())
    block = CrossAttention3d(student.bottleneck_channels)
    x = torch.randn(2, 1, 16, 16, 16)
    student.eval()
    teacher.eval()
    logits_s, logits_t = cross_attended_logits(student, teacher, block, x, x)
    assert logits_s.shape == logits_t.shape == (2, 2, 16, 16, 16)
    with torch.no_grad():
        assert torch.allclose(logits_t, teacher(x))  # gamma = 0: CA is the identity
    logits_s.sum().backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert any(p.grad is not None for p in student.parameters())
