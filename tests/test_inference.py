"""Inference engine: MC-dropout correctness, the fast engine vs the obvious one, geometry, fallbacks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import rotation_matrix
from torch import nn

from napari_ssl_seg.errors import InputError
from napari_ssl_seg.inference.mc_dropout import dropout_sampling, mc_dropout_moments
from napari_ssl_seg.inference.naive_mc_dropout import obvious_mc_dropout
from napari_ssl_seg.inference.predictor import Predictor
from napari_ssl_seg.inference.sliding import WindowPlan, count_windows, run_sliding_window
from napari_ssl_seg.io import Volume
from napari_ssl_seg.networks import ModelCard, VNet


class CyclingDropout(nn.modules.dropout._DropoutNd):
    """A 'dropout' whose k-th stacked sample (batch row k) votes for class k % C (eval: class 0)."""

    def __init__(self, num_classes: int) -> None:
        super().__init__(p=0.5)
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        votes = torch.zeros(x.shape[0], self.num_classes, *x.shape[2:])
        for row in range(x.shape[0]):
            votes[row, row % self.num_classes if self.training else 0] = 1.0
        return votes


class SplitNetwork(nn.Module):
    """Certain (class 1) on the left half of x; on the right half each MC sample votes differently."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.dropout = CyclingDropout(num_classes)
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        votes = self.dropout(x)
        certain = torch.zeros_like(votes)
        certain[:, 1] = 1.0
        left = torch.zeros_like(votes[:, :1])
        left[..., : x.shape[-1] // 2] = 1.0
        return 100.0 * (left * certain + (1 - left) * votes)


@pytest.mark.parametrize("num_classes", [2, 4])
def test_entropy_is_zero_where_passes_agree_and_ln_c_where_they_split_evenly(num_classes: int) -> None:
    network = SplitNetwork(num_classes).eval()
    x = torch.zeros(1, 1, 2, 3, 8)
    # All passes in one call: the toy network tells them apart by their row in the stacked batch.
    samples = 4 * num_classes
    mean, expected = mc_dropout_moments(network, x, samples=samples, chunk=samples, with_expected_entropy=True)
    from napari_ssl_seg.inference.mc_dropout import entropy, mutual_information

    h = entropy(mean)
    assert torch.allclose(h[..., :4], torch.zeros(()), atol=1e-5)
    assert torch.allclose(h[..., 4:], torch.tensor(math.log(num_classes)), atol=1e-5)
    # Every single pass is confident, so all of the split is epistemic: BALD equals the entropy.
    assert torch.allclose(mutual_information(mean, expected), h, atol=1e-5)
    assert not network.dropout.training  # mode restored


def test_uncertainty_passes_leave_batchnorm_statistics_and_modes_unchanged() -> None:
    torch.manual_seed(0)
    network = VNet(base_width=4, depth=3, num_classes=3)
    with torch.no_grad():  # give BatchNorm non-trivial running statistics
        network.train()
        network(torch.randn(2, 1, 16, 16, 16))
    network.eval()
    before = {key: value.clone() for key, value in network.state_dict().items()}
    mc_dropout_moments(network, torch.randn(1, 1, 16, 32, 32), samples=8, chunk=3)
    after = network.state_dict()
    assert all(torch.equal(before[key], after[key]) for key in before)
    assert not any(module.training for module in network.modules())
    with dropout_sampling(network):
        training = [type(m).__name__ for m in network.modules() if m.training]
    assert sorted(training) == ["Dropout3d", "Dropout3d"]


class MaskBankDropout(nn.modules.dropout._DropoutNd):
    """Dropout3d whose channel masks come from a fixed bank, in call order (same masks for both engines)."""

    def __init__(self, bank: torch.Tensor) -> None:
        super().__init__(p=0.5)
        self.bank = bank
        self.cursor = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x
        rows = self.bank[self.cursor : self.cursor + x.shape[0]]
        self.cursor += x.shape[0]
        return x * rows[:, :, None, None, None] * 2.0


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("chunk", [1, 3])  # 1: the CPU's one pass per call, on the features as they are
def test_fast_engine_equals_obvious_method_for_the_same_dropout_masks(chunk: int, channels_last: bool) -> None:
    torch.manual_seed(1)
    network = VNet(base_width=4, depth=3, num_classes=3).eval()
    layout = torch.channels_last_3d if channels_last else torch.contiguous_format
    network.to(memory_format=layout)
    samples = 8
    generator = torch.Generator().manual_seed(7)
    banks = {
        "bottleneck_dropout": torch.bernoulli(
            torch.full((samples, network.bottleneck_channels), 0.5), generator=generator
        ),
        "final_dropout": torch.bernoulli(torch.full((samples, network.base_width), 0.5), generator=generator),
    }
    x = torch.randn(1, 1, 16, 32, 32).contiguous(memory_format=layout)

    def install() -> None:
        for name, bank in banks.items():
            setattr(network, name, MaskBankDropout(bank))

    install()
    fast, _ = mc_dropout_moments(network, x, samples, chunk=chunk)
    install()
    with torch.no_grad(), dropout_sampling(network):
        obvious = torch.stack([torch.softmax(network(x), dim=1) for _ in range(samples)]).mean(dim=0)
    assert torch.allclose(fast, obvious, atol=1e-5)
    # And the masks matter: a different bank gives a different mean.
    banks["final_dropout"] = 1 - banks["final_dropout"]
    install()
    other, _ = mc_dropout_moments(network, x, samples, chunk=chunk)
    assert not torch.allclose(fast, other, atol=1e-3)


def _predictor(num_classes: int = 3, dropout: float = 0.5, patch=(8, 16, 16)) -> Predictor:
    torch.manual_seed(3)
    network = VNet(base_width=4, depth=3, num_classes=num_classes, dropout=dropout)
    card = ModelCard(
        method="supervised",
        network=network.config,
        patch_size=patch,
        intensity={"kind": "zscore"},
        classes={i: f"class{i}" for i in range(num_classes)},
    )
    return Predictor({"model": network}, card, device="cpu")


def _oblique_volume(shape=(11, 20, 27)) -> Volume:
    rng = np.random.default_rng(0)
    return Volume(
        array=rng.normal(size=shape).astype(np.float32),
        spacing=(2.5, 0.8, 0.7),
        origin=(-12.5, 30.25, 101.0),
        direction=rotation_matrix(0.3, -0.2, 0.1),
    )


def test_prediction_maps_keep_the_source_geometry_and_float16_uncertainty() -> None:
    volume = _oblique_volume()
    prediction = _predictor().predict(volume, samples=4, bald=True)
    for produced in (prediction.label, prediction.uncertainty, prediction.mutual_information):
        assert produced is not None
        assert produced.shape == volume.shape
        assert produced.spacing == volume.spacing and produced.origin == volume.origin
        assert produced.direction == volume.direction
    assert prediction.uncertainty.array.dtype == np.float16
    assert prediction.label.array.dtype == np.uint8
    h = prediction.uncertainty.array.astype(np.float32)
    assert h.min() >= 0 and h.max() <= math.log(3) + 1e-3
    mi = prediction.mutual_information.array.astype(np.float32)
    assert (mi <= h + 1e-2).all()


def test_mean_of_passes_matches_the_obvious_method_statistically() -> None:
    """Same distribution, independent masks: the two engines' mean probabilities agree closely."""
    volume = _oblique_volume((8, 16, 32))
    predictor = _predictor()
    torch.manual_seed(0)
    fast = predictor.predict(volume, samples=64)
    torch.manual_seed(1)
    _, _, obvious_entropy = obvious_mc_dropout(predictor, volume, samples=64)
    difference = np.abs(fast.uncertainty.array.astype(np.float32) - obvious_entropy)
    assert float(difference.mean()) < 0.02


def test_resampling_to_the_model_spacing_returns_to_the_source_grid() -> None:
    predictor = _predictor()
    predictor.card.spacing = (5.0, 1.6, 1.4)
    volume = _oblique_volume()
    prediction = predictor.predict(volume, samples=2)
    assert prediction.label.shape == volume.shape
    assert any("resampled" in note for note in prediction.notes)


def test_window_count_matches_monai() -> None:
    predictor = _predictor()
    volume = _oblique_volume()
    calls: list[tuple[int, int]] = []
    predictor.predict(volume, uncertainty="none", progress=lambda done, total: calls.append((done, total)))
    expected = count_windows(volume.shape, predictor.card.patch_size, predictor.overlap)
    assert calls[-1] == (expected, expected)


def test_out_of_memory_falls_back_to_fewer_windows_per_batch() -> None:
    attempts: list[int] = []

    def function(windows: torch.Tensor) -> tuple[torch.Tensor, ...]:
        attempts.append(windows.shape[0])
        if windows.shape[0] > 1:
            raise torch.OutOfMemoryError("simulated")
        return (torch.softmax(torch.stack([windows[:, 0], -windows[:, 0]], dim=1), dim=1),)

    plan = WindowPlan(roi=(4, 8, 8), sw_batch_size=4)
    (out,) = run_sliding_window(torch.randn(1, 1, 8, 16, 16), function, plan)
    assert out.shape == (1, 2, 8, 16, 16)
    assert plan.sw_batch_size == 1 and attempts[0] == 4
    assert any("out of memory" in note for note in plan.notes)

    def always(windows: torch.Tensor) -> tuple[torch.Tensor, ...]:
        raise torch.OutOfMemoryError("simulated")

    with pytest.raises(InputError, match="out of memory"):
        run_sliding_window(torch.randn(1, 1, 8, 16, 16), always, WindowPlan(roi=(4, 8, 8), sw_batch_size=2))


def test_fast_mode_and_disagreement_and_bad_requests() -> None:
    predictor = _predictor()
    volume = _oblique_volume()
    fast = predictor.predict(volume, uncertainty="fast", samples=8)
    assert fast.uncertainty is not None and fast.kind == "fast"
    with pytest.raises(InputError, match="student"):
        predictor.predict(volume, uncertainty="disagreement")
    with pytest.raises(InputError, match="samples"):
        predictor.predict(volume, samples=0)
    with pytest.raises(InputError, match="3D"):
        predictor.predict(Volume(np.zeros((4, 4), np.float32), spacing=(1, 1, 1)))
    with pytest.raises(InputError, match="NaN"):
        predictor.predict(Volume(np.full((4, 8, 8), np.nan, np.float32), spacing=(1, 1, 1)))
    student = VNet(base_width=4, depth=3, num_classes=3, dropout=0.0)
    teacher = predictor.networks["model"]
    both = Predictor({"model": teacher, "student": student}, predictor.card, device="cpu")
    disagreement = both.predict(volume, uncertainty="disagreement")
    assert disagreement.samples == 2 and disagreement.uncertainty is not None
    plain = both.predict(volume, uncertainty="none")
    # The teacher alone is the prediction in disagreement mode.
    assert np.array_equal(plain.label.array, disagreement.label.array)
    assert plain.uncertainty is None


def test_default_uncertainty_follows_the_network() -> None:
    assert _predictor().default_uncertainty() == "mc_dropout"
    assert _predictor(dropout=0.0).default_uncertainty() == "none"


def test_half_precision_blending_matches_float32() -> None:
    volume = _oblique_volume((12, 24, 40))
    predictor = _predictor()
    assert predictor.blending_dtype((12, 24, 40)) == torch.float32
    assert predictor.blending_dtype((300, 512, 512)) == torch.float16  # CT-sized: half the buffer memory
    full = predictor.predict(volume, uncertainty="none")
    predictor.half_blending = True
    assert predictor.prepare(volume, resample=False)[0].dtype == torch.float16
    half = predictor.predict(volume, uncertainty="none")
    agreement = float((full.label.array == half.label.array).mean())
    assert agreement > 0.995
    torch.manual_seed(0)
    mc = predictor.predict(volume, samples=4)
    assert mc.uncertainty is not None and np.isfinite(mc.uncertainty.array.astype(np.float32)).all()


def test_mc_passes_run_one_at_a_time_on_the_cpu_and_stacked_on_cuda() -> None:
    from napari_ssl_seg.inference.mc_dropout import default_chunk

    assert default_chunk(torch.device("cpu"), 8) == 1
    assert default_chunk(torch.device("cuda"), 8) == 8
    network = SplitNetwork(2).eval()
    x = torch.zeros(1, 1, 2, 3, 8)
    one_at_a_time, _ = mc_dropout_moments(network, x, samples=8)  # each pass is row 0: votes class 0
    assert torch.allclose(one_at_a_time[0, 0, ..., 4:], torch.ones(()), atol=1e-5)


def test_mc_dropout_maps_repeat_and_leave_the_callers_random_state_alone() -> None:
    volume = _oblique_volume()
    predictor = _predictor()
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    first = predictor.predict(volume, samples=4)
    assert torch.equal(torch.rand(3), expected)  # as if no prediction had drawn from it
    second = predictor.predict(volume, samples=4)  # the caller's state has moved on: the masks repeat regardless
    assert np.array_equal(first.uncertainty.array, second.uncertainty.array)
    assert np.array_equal(first.label.array, second.label.array)
    assert float(first.uncertainty.array.astype(np.float32).max()) > 0  # the masks did differ between passes
