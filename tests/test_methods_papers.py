"""UG-MCL (002), paper 003 (MultiCURE + contrastive) and paper 004 (CCE dual network).

Unit tests of each new loss and block on constructed inputs, then a 2-iteration run of each method
through the real training loop, whose exported checkpoint the Predictor loads and runs.
Tiny networks (base width 4, depth 3) and 8x16x16 patches keep the file to seconds on a CPU.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import make_tiny_project, tiny_config

from napari_ssl_seg.inference.predictor import Predictor
from napari_ssl_seg.io import Volume
from napari_ssl_seg.methods.ccedual import (
    disagreement_consistency,
    entropy_filter_mask,
    entropy_threshold,
    kl_divergences,
    kl_weighted,
)
from napari_ssl_seg.methods.curecl import xor_regulariser
from napari_ssl_seg.methods.prototypes import class_prototypes, prototype_contrastive_loss
from napari_ssl_seg.methods.pseudo_labels import masked_cross_entropy, masked_dice_loss
from napari_ssl_seg.methods.registry import available_methods, build_method
from napari_ssl_seg.methods.sdf import mask_sdf, normalise_sdf, sdf_targets, sdf_to_probability, signed_distances
from napari_ssl_seg.methods.ugmcl import DualTaskVNet
from napari_ssl_seg.networks.checkpoint import build_network, load_checkpoint
from napari_ssl_seg.networks.deformable import DeformConv3d
from napari_ssl_seg.networks.multicure import CureResNet3d, MultiCURE
from napari_ssl_seg.networks.resnet3d import ResNet3dSegmenter
from napari_ssl_seg.networks.vnet import VNet
from napari_ssl_seg.training.loop import train
from napari_ssl_seg.training.runlog import read_log

NEW_METHODS = ("ugmcl", "curecl", "ccedual")
STUDENTS = {"ugmcl": VNet, "curecl": CureResNet3d, "ccedual": ResNet3dSegmenter}


@pytest.fixture(autouse=True)
def _small_threads():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(previous)


# -- signed distance maps (UG-MCL) -------------------------------------------------------------
def _ball(shape: tuple[int, int, int] = (12, 14, 16), radius: float = 4.0) -> np.ndarray:
    z, y, x = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    centre = [(n - 1) / 2 for n in shape]
    return (z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2 < radius**2


def test_sdf_is_negative_inside_zero_on_boundary_positive_outside() -> None:
    mask = _ball()
    sdf = mask_sdf(mask)
    eroded = np.zeros_like(mask)
    eroded[1:-1, 1:-1, 1:-1] = (
        mask[1:-1, 1:-1, 1:-1]
        & mask[:-2, 1:-1, 1:-1]
        & mask[2:, 1:-1, 1:-1]
        & mask[1:-1, :-2, 1:-1]
        & mask[1:-1, 2:, 1:-1]
        & mask[1:-1, 1:-1, :-2]
        & mask[1:-1, 1:-1, 2:]
    )
    boundary = mask & ~eroded
    assert boundary.any() and eroded.any()
    assert np.all(sdf[boundary] == 0.0)
    assert np.all(sdf[eroded] < 0.0) and np.all(sdf[~mask] > 0.0)
    assert sdf.min() == pytest.approx(-1.0) and sdf.max() == pytest.approx(1.0)
    # Deeper inside is more negative, farther outside more positive.
    centre = tuple(n // 2 for n in mask.shape)
    assert sdf[centre] == sdf.min()
    assert sdf[0, 0, 0] == sdf.max()


def test_sdf_empty_and_full_masks_and_inverse_transform() -> None:
    assert np.all(mask_sdf(np.zeros((4, 5, 6), bool)) == 1.0)
    assert np.all(mask_sdf(np.ones((4, 5, 6), bool)) == -1.0)
    labels = np.zeros((2, 12, 14, 16), dtype=np.int64)
    labels[0][_ball()] = 1
    labels[0, 0:3, 0:3, 0:3] = 2
    maps = sdf_targets(torch.from_numpy(labels), num_classes=3)
    assert maps.shape == (2, 2, 12, 14, 16) and maps.dtype == torch.float32
    for n in range(2):  # the maps, drawn on several threads, land in (sample, class) order
        for c in (1, 2):
            assert np.array_equal(maps[n, c - 1].numpy(), mask_sdf(labels[n] == c))
    assert float(maps.min()) >= -1.0 and float(maps.max()) <= 1.0
    probability = sdf_to_probability(maps, k=1500.0)
    for c in (1, 2):
        mask = torch.from_numpy(labels == c)
        boundary = maps[:, c - 1] == 0
        # sigmoid(-k sdf) is the mask away from the boundary and 0.5 on it.
        assert torch.allclose(probability[:, c - 1][~boundary], mask[~boundary].float(), atol=1e-3)
        assert torch.all(probability[:, c - 1][boundary] == 0.5)
        assert torch.all(mask[boundary])  # the boundary is the inner one
    assert torch.all(maps[1] == 1.0)  # an unlabeled-foreground sample is all outside


def test_distances_measured_on_the_whole_case_see_boundaries_outside_the_patch() -> None:
    label = np.zeros((12, 40, 40), dtype=np.int64)
    label[:, 6:34, 6:34][_ball((12, 28, 28), radius=5.0)] = 1  # whole inside the crop, with a margin
    label[2:10, 20:31, 28:37] = 2  # a slab the crop cuts one voxel before its end (y = 30)
    label[:, :, :3] = 3  # outside the crop: absent from it
    crop = (slice(0, 12), slice(4, 30), slice(4, 38))
    case_distances = signed_distances(label, 4)
    assert case_distances.shape == (3, 12, 40, 40)
    patch = torch.from_numpy(label[crop])[None]
    measured_on_case = normalise_sdf(torch.from_numpy(case_distances[(slice(None), *crop)].astype(np.float16))[None])
    measured_on_patch = sdf_targets(patch, 4)
    # The ball's map is the patch's own (float16 storage: distances to 5e-4 relative).
    assert torch.allclose(measured_on_case[0, 0], measured_on_patch[0, 0], atol=2e-3)
    assert torch.all(measured_on_case[0, 2] == 1.0) and torch.all(measured_on_patch[0, 2] == 1.0)
    # The slab: inside, outside and boundary agree; the inside distances reach past the cut.
    assert torch.equal(torch.sign(measured_on_case[0, 1]), torch.sign(measured_on_patch[0, 1]))
    assert not torch.allclose(measured_on_case[0, 1], measured_on_patch[0, 1], atol=0.05)
    # A class that fills the crop, though not the case, is inside everywhere.
    filling = signed_distances(np.pad(np.ones((4, 8, 8), np.int64), 1), 2)[:, 1:5, 1:9, 1:9]
    assert torch.all(normalise_sdf(torch.from_numpy(filling)[None]) == -1.0)
    # UG-MCL takes the case's distances in the data stage and normalises their crops.
    method = build_method("ugmcl", tiny_config().network_config(4))
    stored = method.case_target(label)
    assert stored.dtype == np.float16 and stored.shape == case_distances.shape
    extras = method.data_targets(patch, torch.from_numpy(stored[(slice(None), *crop)])[None])
    assert torch.equal(extras["sdf"], measured_on_case)


def test_dual_task_network_returns_logits_unless_asked_for_both() -> None:
    net = DualTaskVNet(VNet(num_classes=3, base_width=4, depth=3, dropout=0.2)).eval()
    x = torch.randn(1, 1, 8, 16, 16)
    logits = net(x)
    assert isinstance(logits, torch.Tensor) and logits.shape == (1, 3, 8, 16, 16)
    both_logits, sdf = net(x, dual=True)
    assert torch.equal(both_logits, logits)
    assert sdf.shape == (1, 2, 8, 16, 16) and float(sdf.detach().abs().max()) <= 1.0
    assert isinstance(build_network(net.config), VNet)  # the exported config rebuilds a plain V-Net


# -- masked pseudo-label losses -----------------------------------------------------------------
def test_masked_losses_use_only_selected_voxels() -> None:
    logits = torch.randn(2, 3, 4, 5, 6, requires_grad=True)
    target = torch.randint(0, 3, (2, 4, 5, 6))
    mask = torch.zeros(2, 4, 5, 6, dtype=torch.bool)
    mask[0, 1:3] = True
    expected = F.cross_entropy(logits.permute(0, 2, 3, 4, 1)[mask], target[mask])
    assert torch.allclose(masked_cross_entropy(logits, target, mask), expected)
    none = torch.zeros_like(mask)
    assert masked_cross_entropy(logits, target, none).item() == 0.0
    assert masked_dice_loss(logits, target, none).item() == 0.0
    # A perfect, confident prediction has (almost) no Dice loss on the selected voxels.
    perfect = 50.0 * F.one_hot(target, 3).movedim(-1, 1).float()
    assert masked_dice_loss(perfect, target, mask).item() < 1e-3


def test_xor_regulariser_counts_only_disagreeing_confident_voxels() -> None:
    pseudo = torch.zeros(1, 2, 2, 2, dtype=torch.long)
    logits = torch.zeros(1, 2, 2, 2, 2)
    logits[:, 0] = 10.0  # the auxiliary predicts class 0 everywhere...
    logits[0, :, 0, 0, 0] = torch.tensor([-10.0, 10.0])  # ...except one voxel
    mask = torch.ones(1, 2, 2, 2, dtype=torch.bool)
    loss, fraction = xor_regulariser(logits, pseudo, mask)
    assert fraction == pytest.approx(1 / 8)
    assert loss.item() == pytest.approx(1.0, abs=1e-6)  # |p - onehot| = (1, 1) there, class mean 1
    mask[0, 0, 0, 0] = False
    loss, fraction = xor_regulariser(logits, pseudo, mask)
    assert fraction == 0.0 and loss.item() == 0.0


# -- paper 004: entropy filter, KL weighting, CR ---------------------------------------------
def test_entropy_filter_ignores_exactly_voxels_above_the_percentile_in_both() -> None:
    generator = torch.Generator().manual_seed(3)
    entropy_a = torch.rand(2, 4, 5, 5, generator=generator)
    entropy_b = torch.rand(2, 4, 5, 5, generator=generator)
    keep = entropy_filter_mask(entropy_a, entropy_b, 70.0)
    threshold_a, threshold_b = entropy_threshold(entropy_a, 70.0), entropy_threshold(entropy_b, 70.0)
    # The threshold is the 70th percentile: 70% of the values are at or below it.
    assert (entropy_a <= threshold_a).float().mean().item() == pytest.approx(0.7)
    expected_ignored = (entropy_a > threshold_a) & (entropy_b > threshold_b)
    assert torch.equal(keep, ~expected_ignored)
    assert 0 < int(expected_ignored.sum()) < int((entropy_a > threshold_a).sum())  # "both", not "either"
    # Only in one network: kept.
    ones_only = torch.zeros(1, 1, 1, 10)
    ones_only[..., 9] = 1.0
    assert bool(entropy_filter_mask(ones_only, torch.zeros_like(ones_only), 50.0).all())
    assert not bool(entropy_filter_mask(ones_only, ones_only, 50.0)[..., 9])


def test_kl_weighting_is_plain_cross_entropy_when_the_networks_agree() -> None:
    logits = torch.randn(2, 3, 3, 4, 4)
    pseudo = torch.randint(0, 3, (2, 3, 4, 4))
    divergence, _ = kl_divergences(logits, logits.clone(), 0.5)
    loss = kl_weighted(F.cross_entropy(logits, pseudo, reduction="none"), divergence)
    assert torch.allclose(divergence, torch.zeros_like(divergence), atol=1e-6)
    assert loss.item() == pytest.approx(F.cross_entropy(logits, pseudo).item(), rel=1e-5)
    # Disagreement down-weights the CE and adds the divergence itself.
    other = torch.randn(2, 3, 3, 4, 4)
    divergence, reverse = kl_divergences(logits, other, 0.5)
    ce = F.cross_entropy(logits, pseudo, reduction="none")
    loss = kl_weighted(ce, divergence)
    # The divergence checked against torch's own KL, not against the function's formula.
    expected = F.kl_div(
        F.log_softmax(other / 0.5, dim=1), F.log_softmax(logits / 0.5, dim=1), reduction="none", log_target=True
    ).sum(dim=1)
    assert torch.allclose(divergence, expected, atol=1e-5)
    assert torch.allclose(reverse, kl_divergences(other, logits, 0.5)[0], atol=1e-6)  # the other direction
    assert bool((divergence > 0).any())
    assert loss.item() == pytest.approx(((-divergence).exp() * ce).mean().item() + divergence.mean().item(), rel=1e-5)


def test_consistency_regularisation_needs_disagreement_and_one_confident_network() -> None:
    a = torch.tensor([0.9, 0.55, 0.9, 0.55]).view(1, 1, 1, 1, 4)
    b = torch.tensor([0.2, 0.45, 0.8, 0.2]).view(1, 1, 1, 1, 4)
    pa, pb = torch.cat([a, 1 - a], dim=1), torch.cat([b, 1 - b], dim=1)
    # Voxel 0: disagree, both confident -> counted; 1: disagree, neither above 0.6 -> not;
    # 2: agree -> not; 3: disagree, only b confident (0.8 on class 1) -> counted.
    expected = (((pa - pb) ** 2).mean(dim=1)[..., [0, 3]]).mean()
    assert disagreement_consistency(pa, pb, 0.6).item() == pytest.approx(expected.item(), rel=1e-5)


# -- prototypes (papers 003 and 004) ---------------------------------------------------------------
def test_prototypes_are_the_mean_of_reliable_features() -> None:
    features = torch.randn(2, 5, 3, 4, 4)
    labels = torch.randint(0, 3, (2, 3, 4, 4))
    reliable = torch.rand(2, 3, 4, 4) > 0.4
    flat = features.movedim(1, -1)
    prototypes, present = class_prototypes(flat[reliable], labels[reliable], 4)
    assert present.tolist() == [True, True, True, False]
    for c in range(3):
        chosen = flat[reliable & (labels == c)]
        assert torch.allclose(prototypes[c], chosen.mean(dim=0), atol=1e-6)
    assert torch.all(prototypes[3] == 0)


def test_contrastive_loss_pulls_uncertain_voxels_to_their_prototype() -> None:
    labels = torch.tensor([0, 0, 1, 1, 0, 1]).view(1, 1, 1, 6)
    reliable = torch.tensor([True, True, True, True, False, False]).view(1, 1, 1, 6)
    base = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    aligned = torch.cat([base, torch.tensor([[1.0, 0.0], [0.0, 1.0]])]).t().reshape(1, 2, 1, 1, 6)
    swapped = torch.cat([base, torch.tensor([[0.0, 1.0], [1.0, 0.0]])]).t().reshape(1, 2, 1, 1, 6)
    good, logs = prototype_contrastive_loss(aligned, labels, reliable, 2, temperature=0.1)
    bad, _ = prototype_contrastive_loss(swapped, labels, reliable, 2, temperature=0.1)
    assert logs["prototypes"] == 2 and logs["separation"] == pytest.approx(0.0, abs=1e-6)
    assert good.item() < 1e-3 < bad.item()
    # Gradients reach the uncertain voxels; with one class only there is nothing to contrast.
    features = swapped.clone().requires_grad_(True)
    prototype_contrastive_loss(features, labels, reliable, 2)[0].backward()
    assert features.grad is not None and float(features.grad[..., 4:].abs().sum()) > 0
    single, _ = prototype_contrastive_loss(aligned, torch.zeros_like(labels), reliable, 2)
    assert single.item() == 0.0


# -- networks ----------------------------------------------------------------------------------------
def test_deformable_conv_with_zero_offsets_is_a_plain_conv3d() -> None:
    deformable = DeformConv3d(3, 5, 3)
    plain = torch.nn.Conv3d(3, 5, 3, padding=1)
    with torch.no_grad():
        plain.weight.copy_(deformable.weight)
        plain.bias.copy_(deformable.bias)
    for shape in ((2, 3, 4, 5, 6), (1, 3, 1, 5, 6)):
        x = torch.randn(*shape)
        assert torch.allclose(deformable(x), plain(x), atol=1e-5)
    # A learned offset of one voxel along x samples the neighbour (interior voxels).
    with torch.no_grad():
        deformable.offset.bias[2::3] = 1.0
    x = torch.randn(1, 3, 4, 5, 6)
    shifted = F.pad(x[..., 1:], (0, 1))
    assert torch.allclose(deformable(x)[..., 1:], plain(shifted)[..., 1:], atol=1e-5)
    deformable(x).sum().backward()
    assert float(deformable.offset.weight.grad.abs().sum()) > 0  # offsets are learned


def test_multicure_and_the_networks_rebuild_from_their_config() -> None:
    block = MultiCURE(4)
    z = torch.randn(2, 4, 4, 8, 8)
    uncertainty = (torch.rand(2, 1, 4, 8, 8) > 0.5).float()
    assert block(z, uncertainty).shape == z.shape
    assert block(z[:1], uncertainty[:1, :, :2, :4, :4]).shape == z[:1].shape  # coarser maps are pooled
    x = torch.randn(1, 1, 8, 16, 16)
    for net in (
        ResNet3dSegmenter(num_classes=3, base_width=4, depth=3, dropout=0.2, blocks=(1, 2)),
        CureResNet3d(num_classes=3, base_width=4, depth=3, dropout=0.2, blocks=(1, 2)),
    ):
        rebuilt = build_network(net.config)
        assert type(rebuilt) is type(net) and rebuilt.config == net.config
        rebuilt.load_state_dict(net.state_dict())
        assert net.eval()(x).shape == (1, 3, 8, 16, 16)


# -- the three methods through the training loop -----------------------------------------------------
@pytest.fixture(scope="module")
def paper_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_project(tmp_path_factory.mktemp("papers") / "project")


@pytest.mark.parametrize("name", NEW_METHODS)
def test_two_iterations_in_the_loop_then_predict(name: str, paper_project: Path, tmp_path: Path) -> None:
    assert name in available_methods()
    method = build_method(name, tiny_config().network_config(3))
    assert set(method.describe()["settings"]) == set(type(method).Settings.names())
    settings = {"aux_blocks": [1, 1]} if name == "curecl" else {"resnet_blocks": [1, 1]} if name == "ccedual" else {}
    config = tiny_config(
        method=name, iterations=2, validate_every=2, checkpoint_every=2, log_every=1, method_settings=settings
    )
    result = train(paper_project, config, tmp_path / "run", device="cpu")
    assert result.status == "completed" and result.iterations == 2 and result.model_path is not None

    networks, card = load_checkpoint(tmp_path / "run")
    assert card.method == name and set(networks) == {"model", "student"}
    assert isinstance(networks["model"], VNet) and isinstance(networks["student"], STUDENTS[name])
    assert card.network["name"] == "vnet"
    assert card.extra_networks["student"]["name"] == networks["student"].config["name"]
    records = [r for r in read_log(result.log_path) if r["kind"] == "train"]
    assert records and all(math.isfinite(v) for r in records for v in r.values() if isinstance(v, float))

    rng = np.random.default_rng(1)
    volume = Volume(array=rng.normal(size=(10, 22, 26)).astype(np.float32), spacing=(4.0, 1.0, 1.0))
    predictor = Predictor(networks, card, device="cpu")
    for kind in ("mc_dropout", "disagreement"):
        prediction = predictor.predict(volume, uncertainty=kind, samples=2)
        assert prediction.label.shape == volume.shape and prediction.kind == kind
        assert prediction.uncertainty is not None and prediction.uncertainty.shape == volume.shape
        values = prediction.uncertainty.array.astype(np.float32)
        assert np.isfinite(values).all() and values.min() >= 0.0 and values.max() <= math.log(3) + 1e-2


def test_cce_dual_one_cross_entropy_serves_every_mask_and_weight() -> None:
    from napari_ssl_seg.methods.pseudo_labels import masked_mean

    torch.manual_seed(3)
    logits_a = torch.randn(2, 4, 3, 5, 5, requires_grad=True)
    logits_b = torch.randn(2, 4, 3, 5, 5)
    pseudo_b = logits_b.argmax(1)
    confident, keep = torch.rand(2, 3, 5, 5) > 0.4, torch.rand(2, 3, 5, 5) > 0.3
    divergence = kl_divergences(logits_a, logits_b, 0.5)[0]
    # The form before sharing: each term its own cross-entropy.
    separate = (
        masked_cross_entropy(logits_a, pseudo_b, confident)
        + masked_cross_entropy(logits_a, pseudo_b, keep)
        + (torch.exp(-divergence) * F.cross_entropy(logits_a, pseudo_b, reduction="none")).mean()
        + divergence.mean()
    )
    (grad_separate,) = torch.autograd.grad(separate, logits_a, retain_graph=True)
    ce = F.cross_entropy(logits_a, pseudo_b, reduction="none")
    shared = masked_mean(ce, confident) + masked_mean(ce, keep) + kl_weighted(ce, divergence)
    (grad_shared,) = torch.autograd.grad(shared, logits_a)
    assert torch.allclose(separate, shared, atol=1e-6)
    assert torch.allclose(grad_separate, grad_shared, atol=1e-6)
    assert masked_mean(ce, torch.zeros_like(keep)).item() == 0.0
