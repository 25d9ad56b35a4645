"""Semi-supervised methods: EMA, UMIX, perturbations, schedules, and a 2-iteration smoke test each.

Tiny networks (V-Net base width 4, depth 3) and 16x32x32 patches keep the file to seconds on a CPU.
"""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
from torch import nn

from napari_ssl_seg.errors import InputError
from napari_ssl_seg.methods.base import Batch, SemiSupervisedMethod, StepContext
from napari_ssl_seg.methods.cps import CrossPseudoSupervision
from napari_ssl_seg.methods.ema import ema_coefficient, ema_update
from napari_ssl_seg.methods.losses import dice_ce_loss, dice_loss
from napari_ssl_seg.methods.mt import MeanTeacher
from napari_ssl_seg.methods.uamt import UncertaintyAwareMeanTeacher, uamt_threshold
from napari_ssl_seg.methods.ucmt import UCMT
from napari_ssl_seg.methods.ugcemt import UGCEMT, StudentWithCrossAttention, uncertainty_weight
from napari_ssl_seg.methods.umix import block_grid, plan_umix, umix
from napari_ssl_seg.networks.checkpoint import ModelCard, load_checkpoint, save_checkpoint
from napari_ssl_seg.networks.vnet import VNet
from napari_ssl_seg.training import apply_overrides, preset

NETWORK = {"name": "vnet", "base_width": 4, "depth": 3, "num_classes": 3}
METHODS: list[type[SemiSupervisedMethod]] = [
    MeanTeacher,
    UncertaintyAwareMeanTeacher,
    CrossPseudoSupervision,
    UCMT,
    UGCEMT,
]
TEACHERS = {"mt": ["teacher"], "uamt": ["teacher"], "cps": [], "ucmt": ["teacher"], "ugcemt": ["teacher"]}


@pytest.fixture(autouse=True)
def _small_threads():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(previous)


def make_batch(seed: int = 0) -> Batch:
    generator = torch.Generator().manual_seed(seed)
    target = torch.zeros(1, 16, 32, 32, dtype=torch.int64)
    target[:, 4:12, 8:20, 8:20] = 1
    target[:, 6:10, 22:28, 4:14] = 2
    image = target.unsqueeze(1).float() + 0.3 * torch.randn(1, 1, 16, 32, 32, generator=generator)
    unlabeled = torch.roll(image, shifts=3, dims=-1) + 0.1 * torch.randn(1, 1, 16, 32, 32, generator=generator)
    return Batch(image, target, unlabeled)


# -- EMA -------------------------------------------------------------------------


def _tiny(value: float) -> nn.Module:
    module = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    with torch.no_grad():
        for tensor in (*module.parameters(), module[1].running_mean, module[1].running_var):
            tensor.fill_(value)
        module[1].num_batches_tracked.fill_(int(value))
    return module


def test_ema_coefficient_and_single_student_update() -> None:
    assert ema_coefficient(0, 0.99) == 0.0
    assert ema_coefficient(5, 0.99) == pytest.approx(1 - 1 / 6)
    assert ema_coefficient(10_000, 0.99) == 0.99
    teacher, student = _tiny(1.0), _tiny(3.0)
    a = ema_update(teacher, student, step=0, decay=0.99)
    assert a == 0.0
    assert all(torch.all(p == 3.0) for p in teacher.parameters())  # step 0 is a plain copy
    teacher, student = _tiny(1.0), _tiny(3.0)
    a = ema_update(teacher, student, step=5, decay=0.99)
    expected = a * 1.0 + (1 - a) * 3.0
    for tensor in (*teacher.parameters(), teacher[1].running_mean, teacher[1].running_var):
        assert torch.allclose(tensor, torch.full_like(tensor, expected))
    assert int(teacher[1].num_batches_tracked) == 3  # integer buffers are copied


def test_ema_average_of_students() -> None:
    teacher, first, second = _tiny(1.0), _tiny(2.0), _tiny(6.0)
    a = ema_update(teacher, [first, second], step=1000, decay=0.999)
    assert a == 0.999
    expected = 0.999 * 1.0 + 0.001 * (2.0 + 6.0) / 2
    assert all(torch.allclose(p, torch.full_like(p, expected)) for p in teacher.parameters())
    teacher = _tiny(1.0)
    ema_update(teacher, [first, second], step=1000, decay=0.99, weights=[0.99, 0.01])  # released UCMT code
    expected = 0.99 * 1.0 + 0.01 * (0.99 * 2.0 + 0.01 * 6.0)
    assert all(torch.allclose(p, torch.full_like(p, expected)) for p in teacher.parameters())
    with pytest.raises(ValueError):
        ema_update(teacher, [first, second], step=3, decay=0.99, weights=[0.7, 0.7])


# -- UMIX --------------------------------------------------------------------------


def _block_ids(n: int, shape: tuple[int, int, int], block: int) -> torch.Tensor:
    grid = [s // block for s in shape]
    z, y, x = torch.meshgrid(*(torch.arange(s) // block for s in shape), indexing="ij")
    ids = (z * grid[1] + y) * grid[2] + x
    return ids.expand(n, *shape).clone()


def test_umix_moves_exactly_the_k_most_uncertain_and_certain_blocks() -> None:
    n, shape, block, k = 2, (8, 8, 8), 2, 2
    ids = _block_ids(n, shape, block)  # every voxel holds its block index: moves are traceable
    blocks = 64
    generator = torch.Generator().manual_seed(3)
    means_1 = torch.stack([torch.randperm(blocks, generator=generator) for _ in range(n)]).float()
    means_2 = torch.stack([torch.randperm(blocks, generator=generator) for _ in range(n)]).float()
    # Constructed maps: constant within a block, distinct means between blocks.
    u1 = torch.gather(means_1, 1, ids.flatten(1)).view(n, *shape)
    u2 = torch.gather(means_2, 1, ids.flatten(1)).view(n, *shape)
    image = ids.unsqueeze(1).float() * 10.0
    label = ids.clone()
    mixed_image, mixed_label = umix([image, label], u1, u2, k=k, blocks_per_side=4)

    for sample in range(n):
        top_1 = torch.argsort(means_1[sample], descending=True)[:k].tolist()
        top_2 = torch.argsort(means_2[sample], descending=True)[:k].tolist()
        certain_1 = torch.argsort(means_1[sample])[:k].tolist()
        certain_2 = torch.argsort(means_2[sample])[:k].tolist()
        expected = list(range(blocks))
        for target, source in zip(top_1, certain_2, strict=True):
            expected[target] = source
        after_first = list(expected)
        for target, source in zip(top_2, certain_1, strict=True):
            expected[target] = after_first[source]
        content = mixed_label[sample].flatten()[ids[sample].flatten().argsort()].view(blocks, -1)
        assert torch.all(content == content[:, :1]), "a block was split"
        assert content[:, 0].tolist() == expected
        moved = {b for b in range(blocks) if expected[b] != b}
        assert moved <= set(top_1) | set(top_2)
    assert torch.equal(mixed_image.squeeze(1), mixed_label.float() * 10.0)  # identical moves on both
    assert torch.equal(label, ids)  # inputs untouched


def test_umix_small_patches_clamp_blocks_and_leave_remainders() -> None:
    assert block_grid((3, 5, 17), 8) == ((1, 1, 2), (3, 5, 8))
    u1 = torch.rand(1, 3, 5, 17)
    u2 = torch.rand(1, 3, 5, 17)
    x = torch.randn(1, 1, 3, 5, 17)
    plan = plan_umix(u1, u2, k=1000, blocks_per_side=8)
    assert plan.targets_1.shape[1] == plan.blocks // 2  # k clamped
    (mixed,) = umix([x], u1, u2, k=2, blocks_per_side=8)
    assert torch.equal(mixed[..., 16:], x[..., 16:])  # the voxel past the last block never moves


# -- perturbations and schedules -------------------------------------------------


def test_ucmt_student_intensity_perturbs_the_students_views_only() -> None:
    method = UCMT(NETWORK, {"blur_prob": 0.0, "student_intensity": 1.0})
    method.train()
    batch = make_batch()
    seen: dict[str, torch.Tensor] = {}
    for name in ("student1", "student2", "teacher"):
        method.networks[name].register_forward_hook(
            lambda _m, args, _o, name=name: seen.setdefault(name, args[0].detach().clone())
        )
    method.loss(batch, StepContext(0, 10, 0.5, step=0, num_classes=3))
    assert torch.equal(seen["teacher"], batch.all_images)
    assert not torch.equal(seen["student1"], batch.all_images)
    assert not torch.equal(seen["student1"], seen["student2"])  # each student draws its own view
    with pytest.raises(ValueError, match="student_intensity"):
        UCMT(NETWORK, {"student_intensity": 2.0})


def test_uamt_threshold_schedule() -> None:
    ln2, ln3 = math.log(2), math.log(3)
    assert uamt_threshold(0, 6000, 2) == pytest.approx((0.75 + 0.25 * math.exp(-5)) * ln2)
    assert uamt_threshold(6000, 6000, 2) == pytest.approx(ln2)
    assert uamt_threshold(6000, 6000, 3) == pytest.approx(ln3)
    assert uamt_threshold(3000, 6000, 2) == pytest.approx((0.75 + 0.25 * math.exp(-1.25)) * ln2)
    values = [uamt_threshold(t, 100, 3) for t in range(0, 101, 10)]
    assert values == sorted(values)


# -- UG-CEMT pieces ------------------------------------------------------------------


def test_ugcemt_weight_is_one_where_teacher_is_certain() -> None:
    certain = torch.zeros(1, 3, 2, 2, 2)
    certain[:, 1] = 1.0
    assert torch.allclose(uncertainty_weight(certain), torch.ones(1, 2, 2, 2))
    uniform = torch.full((1, 3, 2, 2, 2), 1 / 3)
    assert torch.allclose(uncertainty_weight(uniform), torch.full((1, 2, 2, 2), 1 / 3))


def test_ugcemt_cross_attention_starts_as_identity() -> None:
    method = UGCEMT(NETWORK)
    student = method.networks["student"]
    assert isinstance(student, StudentWithCrossAttention)
    assert method.unwrapped("teacher").residual is False
    student.eval()
    x = make_batch().all_images
    with torch.no_grad():
        teacher_bottleneck = method.networks["teacher"].encode(x + 0.1).bottleneck
        logits, attended_teacher = student(x, teacher_bottleneck)
        assert torch.allclose(logits, student.vnet(x), atol=1e-6)
        assert torch.allclose(attended_teacher, teacher_bottleneck)
    assert not attended_teacher.requires_grad


# -- UCMT's two steps ------------------------------------------------------------------


def test_ucmt_step1_trains_on_the_umix_data_cached_in_step0() -> None:
    method = UCMT(NETWORK, {"blur_prob": 0.0})  # no blur: the students' inputs are the data itself
    method.train()
    batch = make_batch()
    seen: list[torch.Tensor] = []
    method.networks["student1"].register_forward_hook(lambda _m, args, _o: seen.append(args[0].detach().clone()))
    method.loss(batch, StepContext(0, 10, 0.5, step=0, num_classes=3))
    cache = method._cache
    assert cache is not None and cache["iteration"] == 0
    assert torch.equal(seen[-1], batch.all_images)
    assert not torch.equal(cache["images"], batch.all_images)  # some blocks moved
    (expected_labels,) = umix([batch.labeled_target], cache["u1"][:1], cache["u2"][:1], 2, 8)
    assert torch.equal(cache["targets"][:1], expected_labels)
    out = method.loss(batch, StepContext(0, 10, 0.5, step=1, num_classes=3))
    assert torch.equal(seen[-1], cache["images"])
    assert "umix_recomputed" not in out.logs
    # A step 1 without a matching step 0 rebuilds the maps rather than using stale ones.
    out = method.loss(make_batch(seed=5), StepContext(1, 10, 0.5, step=1, num_classes=3))
    assert out.logs["umix_recomputed"] == 1.0


def test_ucmt_supervised_loss_setting_switches_l_s_and_refuses_unknown_names() -> None:
    batch = make_batch()
    labeled = batch.labeled_target
    for name, loss_function in (("dice", dice_loss), ("dice_ce", dice_ce_loss)):
        method = UCMT(NETWORK, {"blur_prob": 0.0, "supervised_loss": name})
        for network in method.networks.values():
            network.eval()  # deterministic forward passes (no dropout, fixed BatchNorm) to recompute L_s
        with torch.no_grad():
            first = method.networks["student1"](batch.all_images)[:1]
            second = method.networks["student2"](batch.all_images)[:1]
            expected = (loss_function(first, labeled) + loss_function(second, labeled)) / 2
            out = method.loss(batch, StepContext(0, 10, 0.0, step=0, num_classes=3))  # rampup 0: L = L_s
        assert float(out.loss) == pytest.approx(float(expected), rel=1e-5)
    with pytest.raises(ValueError, match="supervised_loss"):
        UCMT(NETWORK, {"supervised_loss": "focal"})


# -- smoke test of the loop contract ----------------------------------------------------


def _snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {key: value.detach().clone() for key, value in module.state_dict().items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(a[key], b[key]) for key in a)


@pytest.mark.parametrize("method_class", METHODS, ids=lambda cls: cls.name)
def test_two_iterations_follow_the_loop_contract(method_class: type[SemiSupervisedMethod], tmp_path) -> None:
    method = method_class(NETWORK)
    assert set(method.describe()["settings"]) == set(method_class.Settings.names())
    teachers = TEACHERS[method.name]
    parameters = [p for name in method.trainable() for p in method.networks[name].parameters()]
    optimizer = torch.optim.SGD(parameters, lr=0.01, momentum=0.9, weight_decay=1e-4)
    method.train()
    for name in teachers:
        assert not method.networks[name].training
        assert all(not p.requires_grad for p in method.networks[name].parameters())
    batch = make_batch()
    for iteration in range(2):
        for step in range(method.steps_per_iteration):
            ctx = StepContext(iteration, 2, rampup=0.5, step=step, num_classes=3)
            before = {name: _snapshot(method.networks[name]) for name in teachers}
            out = method.loss(batch, ctx)
            assert torch.isfinite(out.loss)
            assert all(math.isfinite(v) for v in out.logs.values())
            out.loss.backward()
            if method.optimizer == "sam":
                # The loop's second SAM call: same batch and ctx, the teacher side is reused.
                optimizer.zero_grad()
                again = method.loss(batch, ctx)
                assert torch.isfinite(again.loss)
                again.loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            for name in teachers:
                assert all(p.grad is None for p in method.networks[name].parameters())
                assert _same(before[name], _snapshot(method.networks[name])), "teacher changed outside the EMA"
            method.update_teachers(ctx)
            for name in teachers:
                assert not _same(before[name], _snapshot(method.networks[name])), "EMA did not move the teacher"

    exported = method.export()
    assert set(exported) == {"model", "student"}
    assert all(isinstance(module, VNet) for module in exported.values())
    card = ModelCard(
        method=method.name,
        network=exported["model"].config,
        patch_size=(16, 32, 32),
        intensity={"kind": "zscore"},
        classes={0: "background", 1: "a", 2: "b"},
        extra_networks={"student": exported["student"].config},
    )
    save_checkpoint(tmp_path / "model", exported, card)
    loaded, _ = load_checkpoint(tmp_path / "model")
    for name, module in exported.items():
        assert _same(_snapshot(module), _snapshot(loaded[name]))


def test_unknown_setting_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown setting"):
        MeanTeacher(NETWORK, {"consistancy": 0.1})


def test_settings_are_typed_frozen_and_checked_where_built() -> None:
    teacher = MeanTeacher(NETWORK, {"consistency": 1, "ema_decay": 0.9})
    assert teacher.settings.consistency == 1.0 and isinstance(teacher.settings.consistency, float)
    with pytest.raises(dataclasses.FrozenInstanceError):
        teacher.settings.consistency = 0.5  # type: ignore[misc]
    for bad, message in (
        ({"consistency": "0.1"}, "'consistency' must be a number"),
        ({"consistency": True}, "'consistency' must be a number"),
        ({"noise_std": -0.1}, "'noise_std' must be a finite number >= 0"),
        ({"ema_decay": 1.5}, "'ema_decay' must be in"),
    ):
        with pytest.raises(ValueError, match=message):
            MeanTeacher(NETWORK, bad)


def test_settings_round_trip_through_the_model_card_json() -> None:
    method = UCMT(NETWORK, {"umix_k": 3.0, "supervised_loss": "dice_ce"})
    assert method.settings.umix_k == 3 and isinstance(method.settings.umix_k, int)
    card_settings = json.loads(json.dumps(method.describe()["settings"]))
    assert UCMT(NETWORK, card_settings).settings == method.settings
    with pytest.raises(ValueError, match="supervised_loss"):
        UCMT(NETWORK, {"supervised_loss": "focal"})


def test_config_refuses_bad_method_settings_before_training() -> None:
    config = apply_overrides(preset("quick"), ["method=ugcemt", "settings.mc_samples=4"])
    assert config.method_settings == {"mc_samples": 4}
    for override, message in (
        ("settings.mc_samples=0", "mc_samples' must be at least 1"),
        ("settings.mc_sample=4", "unknown setting"),
        ("settings.ca_key_channels=x", "ca_key_channels' must be a whole number"),
    ):
        with pytest.raises(InputError, match=message):
            apply_overrides(preset("quick"), ["method=ugcemt", override])


@pytest.mark.parametrize("name", ["uamt", "ugmcl"])
def test_teachers_encode_once_and_give_the_targets_of_separate_passes(name: str) -> None:
    """The teacher's deterministic pass and its MC-dropout passes share one encoding: the mean
    probabilities and the masked consistency are those of a full pass plus T passes encoding anew."""
    from napari_ssl_seg.inference.mc_dropout import mc_dropout_moments
    from napari_ssl_seg.methods.registry import build_method

    network = {**NETWORK, "dropout": 0.3}
    method = build_method(name, network)
    method.train()
    teacher = method.unwrapped("teacher")
    vnet = getattr(teacher, "vnet", teacher)
    images = torch.randn(2, 1, 16, 32, 32)
    with torch.no_grad():
        torch.manual_seed(5)
        separate_logits = teacher(images) if name == "uamt" else teacher(images, dual=True)[0]
        separate_mean, _ = mc_dropout_moments(vnet, images, 4)
        torch.manual_seed(5)
        features = vnet.encode(images)
        shared_logits = vnet.decode(features) if name == "uamt" else teacher.decode(features, dual=True)[0]
        shared_mean, _ = mc_dropout_moments(vnet, images, 4, features=features)
    assert torch.equal(separate_logits, shared_logits)
    assert torch.equal(separate_mean, shared_mean)
    assert not torch.allclose(shared_mean, torch.softmax(shared_logits, dim=1))  # the passes did sample
