"""The training loop: configs, sampling, augmentation, a short run, exact resume, cancel, SAM, bad input."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch
from helpers import make_tiny_project, tiny_config
from safetensors.torch import load_file

from napari_ssl_seg.cli.train import add_train_parser
from napari_ssl_seg.errors import InputError
from napari_ssl_seg.methods.base import Batch, StepContext
from napari_ssl_seg.methods.registry import available_methods, build_method, method_class
from napari_ssl_seg.methods.settings import MethodSettings, SAMSettings
from napari_ssl_seg.methods.supervised import SupervisedMethod, SupervisedSettings
from napari_ssl_seg.networks import build_network, load_checkpoint
from napari_ssl_seg.training import TrainConfig, apply_overrides, preset
from napari_ssl_seg.training.data import CaseData
from napari_ssl_seg.training.loop import train
from napari_ssl_seg.training.run_start import copy_init_weights, ramps, untrained_peers
from napari_ssl_seg.training.runlog import read_log
from napari_ssl_seg.training.sampler import TwoStreamSampler
from napari_ssl_seg.training.sharpness_aware import sam_ascent
from napari_ssl_seg.training.state import resume_paths

SHAPE = (10, 22, 26)  # (z, y, x): larger than the tests' patch, a few patches per case


@pytest.fixture(scope="module")
def tiny_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_project(tmp_path_factory.mktemp("tiny") / "project")


# -- config -----------------------------------------------------------------------------------
def test_presets_and_overrides() -> None:
    paper = preset("paper")
    assert paper.patch_size == (80, 112, 112) and paper.base_width == 16 and paper.iterations == 6000
    assert (paper.lr, paper.momentum, paper.weight_decay, paper.lr_step, paper.lr_gamma) == (0.01, 0.9, 1e-4, 2500, 0.1)
    assert (paper.batch_labeled, paper.batch_unlabeled, paper.rampup_iterations) == (2, 2, 6000)
    quick = preset("quick")
    assert quick.patch_size[0] <= 20 and quick.validate() is quick  # fits the cohort's thinnest case
    changed = apply_overrides(
        quick,
        [
            *("lr=0.05", "patch_size=8,32,32", "amp=false", "seed=7"),
            *("method=ucmt", "settings.ema_decay=0.999", "settings.supervised_loss=dice_ce"),
        ],
    )
    assert (changed.lr, changed.patch_size, changed.amp, changed.seed) == (0.05, (8, 32, 32), False, 7)
    assert changed.method_settings == {"ema_decay": 0.999, "supervised_loss": "dice_ce"}
    assert quick.lr == 0.01 and preset("quick").method_settings == {}  # presets are never modified
    assert TrainConfig.from_dict(changed.to_dict()) == changed
    for bad, message in [
        ("lerning_rate=1", "unknown setting 'lerning_rate'"),
        ("lr=fast", "lr='fast'"),
        ("amp=maybe", "expected true or false"),
        ("patch_size=8,30,32", "divisible by 8"),
        ("iterations=0", "at least 1"),
        ("nonsense", "key=value"),
    ]:
        with pytest.raises(InputError, match=message):
            apply_overrides(quick, [bad])
    with pytest.raises(InputError, match="unknown config"):
        preset("huge")


# -- data -------------------------------------------------------------------------------------
def _coded_case(shape: tuple[int, int, int]) -> CaseData:
    # Every voxel holds its own flat index, in the image and the label alike.
    code = np.arange(np.prod(shape)).reshape(shape)
    return CaseData("coded", code.astype(np.float32), code.astype(np.int64), (4.0, 1.0, 1.0))


def test_sampler_is_reproducible_per_iteration_and_rank() -> None:
    case = _coded_case((10, 20, 20))
    make = lambda rank: TwoStreamSampler(  # noqa: E731
        [case], [case], patch_size=(4, 8, 8), batch_labeled=2, batch_unlabeled=2, seed=1, rank=rank
    )
    first, again, other_rank = make(0), make(0), make(1)
    a = first.batch(7)
    b = again.batch(7)
    assert all(torch.equal(p, q) for p, q in zip(a[:3], b[:3], strict=True))
    assert a.case_target is None and b.case_target is None
    assert a[0].shape == (2, 1, 4, 8, 8) and a[1].shape == (2, 4, 8, 8) and a[2].shape == (2, 1, 4, 8, 8)
    assert a[1].dtype == torch.int64
    assert not torch.equal(a[0], first.batch(8)[0])
    assert not torch.equal(a[0], other_rank.batch(7)[0])


def test_augmentation_keeps_image_and_label_aligned_and_slices_in_order() -> None:
    shape = (10, 20, 20)
    sampler = TwoStreamSampler(
        [_coded_case(shape)], [], patch_size=(4, 8, 8), batch_labeled=4, batch_unlabeled=0, seed=3
    )
    plane = shape[1] * shape[2]
    rotated = False
    for iteration in range(12):
        images, targets, unlabeled, case_target = sampler.batch(iteration)
        assert case_target is None  # no method's case target asked for
        assert unlabeled.shape[0] == 0
        assert torch.equal(images[:, 0].long(), targets)
        # Slices stay in order and complete: z is never flipped or rotated into the plane.
        z = targets // plane
        assert torch.all(z[:, 1:] - z[:, :-1] == 1)
        assert torch.all(z.amax(dim=(2, 3)) == z.amin(dim=(2, 3)))
        x_step = targets[:, :, 0, 1] - targets[:, :, 0, 0]
        rotated |= bool((x_step.abs() != 1).any())
    assert rotated  # some patch was rotated or flipped in plane


def test_a_case_target_is_cropped_and_flipped_with_its_patch_and_draws_nothing_more() -> None:
    case = _coded_case((10, 20, 20))
    made: list[str] = []

    def case_target(label: np.ndarray) -> np.ndarray:
        made.append("once")
        return np.stack([label, -label]).astype(np.float32)

    settings = dict(patch_size=(4, 8, 8), batch_labeled=3, batch_unlabeled=2, seed=4)
    settings.update(foreground_fraction=0.5, num_classes=int(case.label.max()) + 1)
    plain = TwoStreamSampler([case], [case], **settings)
    carrying = TwoStreamSampler([case], [case], case_target=case_target, **settings)
    for iteration in range(10):
        images, targets, unlabeled, cropped = carrying.batch(iteration)
        assert cropped is not None and cropped.shape == (3, 2, 4, 8, 8)
        assert torch.equal(cropped[:, 0].long(), targets) and torch.equal(cropped[:, 1].long(), -targets)
        expected = plain.batch(iteration)
        for drawn, same in zip((images, targets, unlabeled), expected[:3], strict=True):
            assert torch.equal(drawn, same)  # the same patches as without it: it takes no random draw
    assert made == ["once"]  # computed once per case, kept for the run


def test_small_cases_are_padded_to_the_patch(tmp_path: Path) -> None:
    root = make_tiny_project(tmp_path / "p", labeled=1, unlabeled=0, shape=(6, 12, 12))
    result = train(root, tiny_config(iterations=2, validate_every=2), tmp_path / "run", device="cpu")
    assert result.status == "completed" and result.model_path is not None


# -- runs -------------------------------------------------------------------------------------
def test_short_supervised_run_writes_a_loadable_model(tiny_project: Path, tmp_path: Path) -> None:
    reports: list[tuple[int, int]] = []
    out = tmp_path / "run"
    result = train(
        tiny_project,
        tiny_config(),
        out,
        device="cpu",
        progress=lambda i, n, logs: reports.append((i, n)),
        command="napari-ssl-seg train tiny",
    )
    assert result.status == "completed" and result.iterations == 6
    assert reports == [(i, 6) for i in range(1, 7)]
    assert (out / "model.safetensors").is_file() and (out / "model.json").is_file()
    networks, card = load_checkpoint(out / "model.json")
    assert set(networks) == {"model"} and card.method == "supervised"
    assert card.classes == {0: "background", 1: "ball", 2: "box"}
    assert card.patch_size == (8, 16, 16) and card.network["base_width"] == 4
    assert card.training["label_versions"] == {"case_00": 1, "case_01": 1}
    assert card.training["unlabeled_cases"] == ["case_02"]
    assert card.training["validation_label_versions"] == {"case_03": 1}
    assert card.training["command"] == "napari-ssl-seg train tiny" and card.training["seed"] == 5
    assert card.metrics["best_iteration"] in (3, 6)
    assert card.metrics["validation_dice"] == result.best_validation_dice
    assert set(card.metrics["per_case_validation_dice"]) == {"case_03"}
    records = read_log(out / "log.jsonl")
    assert [r["iteration"] for r in records if r["kind"] == "validation"] == [3, 6]
    assert [r["iteration"] for r in records if r["kind"] == "train"] == [2, 4, 6]
    best = next(r for r in records if r["kind"] == "validation" and r["iteration"] == card.metrics["best_iteration"])
    # The card carries the clean-up its best validation chose; a clean-up is only ever chosen for a gain.
    assert card.postprocessing == best["postprocessing"] and best["dice"] >= best["raw_dice"]
    assert bool(card.postprocessing) or best["dice"] == best["raw_dice"]
    (start,) = [r for r in records if r["kind"] == "start"]
    assert start["method"] == "supervised" and start["device"] == "cpu" and start["patch_size"] == [8, 16, 16]
    assert start["batch"] == 2 and start["world_size"] == 1 and start["threads"] >= 1 and start["base_width"] == 4
    assert any((out / "tensorboard").glob("events.out.tfevents.*"))
    with pytest.raises(InputError, match="already holds a run"):
        train(tiny_project, tiny_config(), out, device="cpu")
    # Fine-tuning from the exported model: its card becomes the parent.
    tuned = train(
        tiny_project, tiny_config(iterations=1, base_width=8), tmp_path / "tuned", device="cpu", init_model=out
    )
    _, tuned_card = load_checkpoint(tmp_path / "tuned")
    assert tuned_card.parent == card.weights_sha256 and tuned_card.network["base_width"] == 4
    assert tuned.status == "completed"


def _final_state(out: Path) -> dict[str, torch.Tensor]:
    tensors = load_file(str(resume_paths(out)[0]))
    return {key: value for key, value in tensors.items() if key.startswith(("net.", "optimizer."))}


@pytest.mark.parametrize("amp", [False, True])  # True: bfloat16 and channels-last where the CPU has them
def test_exact_resume_matches_an_uninterrupted_run(tiny_project: Path, tmp_path: Path, amp: bool) -> None:
    config = tiny_config(iterations=4, checkpoint_every=100, validate_every=3, amp=amp)
    train(tiny_project, config, tmp_path / "split", device="cpu")
    longer = tiny_config(iterations=8, validate_every=3, amp=amp)
    resumed = train(tiny_project, longer, tmp_path / "split", device="cpu", resume=True)
    straight = train(tiny_project, longer, tmp_path / "straight", device="cpu")
    assert resumed.iterations == straight.iterations == 8
    a, b = _final_state(tmp_path / "split"), _final_state(tmp_path / "straight")
    assert set(a) == set(b) and any(key.startswith("optimizer.") for key in a)
    assert all(torch.equal(a[key], b[key]) for key in a)
    assert resumed.best_iteration == straight.best_iteration
    assert resumed.best_validation_dice == straight.best_validation_dice
    iterations = [r["iteration"] for r in read_log(tmp_path / "split" / "log.jsonl") if r["kind"] == "validation"]
    assert iterations == [3, 4, 6, 8]  # 4 is the first run's final validation; nothing is logged twice
    with pytest.raises(InputError, match="changed setting"):
        train(tiny_project, tiny_config(iterations=9, lr=0.1), tmp_path / "split", device="cpu", resume=True)


def test_should_stop_cancels_with_a_checkpoint(tiny_project: Path, tmp_path: Path) -> None:
    calls = []

    def stop() -> bool:
        calls.append(1)
        return len(calls) > 2

    result = train(tiny_project, tiny_config(), tmp_path / "run", device="cpu", should_stop=stop)
    assert result.status == "cancelled" and result.iterations == 2
    assert json.loads(resume_paths(tmp_path / "run")[1].read_text())["iteration"] == 2
    assert read_log(result.log_path)[-1]["kind"] == "cancelled"


# -- SAM --------------------------------------------------------------------------------------
def test_sam_step_on_one_parameter_by_hand() -> None:
    # loss = w^2 at w = 1: g = 2, ascent to w + rho * g/|g| = 1.05, gradient there 2.1,
    # restore w = 1, SGD(lr 0.1) with the second gradient: 1 - 0.1 * 2.1 = 0.79.
    w = torch.nn.Parameter(torch.tensor([1.0]))
    optimizer = torch.optim.SGD([w], lr=0.1)
    (w**2).sum().backward()
    perturbation = sam_ascent([w], rho=0.05)
    assert torch.allclose(w.detach(), torch.tensor([1.05]))
    optimizer.zero_grad()
    (w**2).sum().backward()
    assert torch.allclose(w.grad, torch.tensor([2.1]))
    perturbation.restore()
    assert torch.equal(w.detach(), torch.tensor([1.0]))
    optimizer.step()
    assert torch.allclose(w.detach(), torch.tensor([0.79]))


def test_sam_uses_the_global_gradient_norm() -> None:
    a, b = torch.nn.Parameter(torch.tensor([3.0])), torch.nn.Parameter(torch.tensor([4.0]))
    a.grad, b.grad = torch.tensor([3.0]), torch.tensor([4.0])  # |g| = 5
    sam_ascent([a, b], rho=0.5)
    assert torch.allclose(a.detach(), torch.tensor([3.3])) and torch.allclose(b.detach(), torch.tensor([4.4]))
    c = torch.nn.Parameter(torch.tensor([1.0]))
    c.grad = torch.tensor([float("nan")])
    perturbation = sam_ascent([c], rho=0.5)  # a non-finite norm: the weights do not move
    assert c.item() == 1.0
    perturbation.restore()
    assert c.item() == 1.0
    d = torch.nn.Parameter(torch.tensor([2.0]))
    d.grad = torch.tensor([0.0])  # a zero norm: no step, and no 0 / 0
    sam_ascent([d], rho=0.5)
    assert d.item() == 2.0


@dataclasses.dataclass(frozen=True)
class SamSupervisedSettings(SupervisedSettings, SAMSettings):
    """Supervised's loss weights and SAM's radius."""


class SamSupervised(SupervisedMethod):
    """The supervised method under SAM, to run the loop's SAM path."""

    optimizer: ClassVar[str] = "sam"
    Settings: ClassVar[type[MethodSettings]] = SamSupervisedSettings


def test_loop_runs_a_sam_method(tiny_project: Path, tmp_path: Path) -> None:
    result = train(
        tiny_project, tiny_config(method=f"{__name__}:SamSupervised", iterations=2), tmp_path / "r", device="cpu"
    )
    assert result.status == "completed" and result.model_path is not None


# -- registry and bad input -------------------------------------------------------------------
def test_registry() -> None:
    assert "supervised" in available_methods()
    method = build_method("supervised", tiny_config().network_config(3))
    assert method.trainable() == ["model"] and method.export()["model"] is method.networks["model"]
    with pytest.raises(InputError, match="unknown method 'fixmatch'"):
        method_class("fixmatch")
    with pytest.raises(InputError, match="not available in this installation"):
        method_class("napari_ssl_seg.methods.not_written_yet:Nothing")
    with pytest.raises(InputError, match="unknown setting"):
        build_method("supervised", tiny_config().network_config(3), {"lamda_dice": 1})


def test_init_weights_reach_networks_that_wrap_a_vnet() -> None:
    config = tiny_config().network_config(3)
    method = build_method("supervised", config)
    method.networks["wrapped"] = torch.nn.ModuleDict({"vnet": build_network(config), "extra": torch.nn.Linear(2, 2)})
    method.networks["other"] = torch.nn.Linear(3, 3)
    source = build_network(config).state_dict()
    assert copy_init_weights(method, source) == ["model", "wrapped.vnet"]
    for module in (method.networks["model"], method.networks["wrapped"]["vnet"]):
        assert all(torch.equal(value, source[key]) for key, value in module.state_dict().items())


def _run_command(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    add_train_parser(parser.add_subparsers())
    args = parser.parse_args(["train", *argv])
    return args.handler(args)


def test_command_refuses_bad_input(tiny_project: Path, tmp_path: Path) -> None:
    no_labels = make_tiny_project(tmp_path / "nolabels", labeled=0, unlabeled=1)
    no_validation = make_tiny_project(tmp_path / "noval", labeled=1, unlabeled=0, validation=0)
    cases = [
        ([str(tmp_path / "missing"), "--method", "supervised"], "does not exist"),
        ([str(tiny_project), "--method", "fixmatch"], "unknown method"),
        ([str(tiny_project), "--method", "supervised", "--set", "bogus=1"], "unknown setting 'bogus'"),
        ([str(tiny_project), "--method", "supervised", "--set", "settings.bogus=1"], "unknown setting"),
        ([str(tiny_project), "--method", "supervised", "--config", "huge"], "unknown config"),
        ([str(no_labels), "--method", "supervised"], "no labeled training case"),
        ([str(no_validation), "--method", "supervised"], "no labeled validation case"),
        ([str(tiny_project), "--method", "supervised", "--resume"], "--resume needs --out"),
    ]
    for argv, message in cases:
        with pytest.raises(InputError, match=message):
            _run_command([*argv, "--out", str(tmp_path / "out")] if "--resume" not in argv else argv)
        assert not (tmp_path / "out" / "model.json").exists()


def test_command_trains_and_prints_a_summary(
    tiny_project: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cli"
    argv = [str(tiny_project), "--method", "supervised", "--out", str(out), "--iterations", "2", "--device", "cpu"]
    assert (
        _run_command([*argv, "--set", "patch_size=8,16,16", "--set", "base_width=4", "--set", "validate_every=2"]) == 0
    )
    printed = capsys.readouterr()
    assert "best validation Dice" in printed.out and str(out / "model.safetensors") in printed.out
    assert "training" in printed.err  # the progress bar


def test_a_peer_the_init_model_does_not_fit_gets_its_coupling_ramped(tiny_project: Path, tmp_path: Path) -> None:
    network = tiny_config().network_config(3)
    cce = build_method("ccedual", network, {"resnet_blocks": [1, 1]})
    config = tiny_config(rampup_iterations=0, iterations=10)
    peers = untrained_peers(cce, ["subnet_b"], config)
    assert peers == {"networks": ["subnet_a"], "rampup_iterations": 10}  # the ResNet starts random
    assert untrained_peers(cce, ["subnet_a", "subnet_b"], config) is None
    ucmt = build_method("ucmt", network)
    assert untrained_peers(ucmt, list(ucmt.networks), config) is None
    # Without peers: the config's ramp (none in the finetune preset) and full coupling.
    assert ramps(0, config, None) == (1.0, 1.0)
    early, late = ramps(1, config, peers), ramps(10, config, peers)
    assert early[0] == early[1] < 0.05 and late == (1.0, 1.0)

    teacher = tmp_path / "teacher"
    train(tiny_project, tiny_config(iterations=2, validate_every=2), teacher, device="cpu")
    tuned = tiny_config(
        method="ccedual", iterations=8, rampup_iterations=0, validate_every=2, log_every=1, checkpoint_every=2
    )
    tuned.method_settings = {"resnet_blocks": [1, 1]}
    calls = iter(range(100))
    # Cancelled after 4 iterations, then resumed: the resumed half must keep the ramp the run began with
    # (its info, not the --init model, says which network started untrained).
    stop_after_four = lambda: next(calls) >= 4  # noqa: E731
    train(tiny_project, tuned, tmp_path / "cce", device="cpu", init_model=teacher, should_stop=stop_after_four)
    records = read_log(tmp_path / "cce" / "log.jsonl")
    notes = [r["message"] for r in records if r["kind"] == "note"]
    assert any("untrained at the start: subnet_a" in note for note in notes)
    assert len([r for r in records if r["kind"] == "train"]) == 4
    train(tiny_project, tuned, tmp_path / "cce", device="cpu", resume=True)
    rampup = [r["rampup"] for r in read_log(tmp_path / "cce" / "log.jsonl") if r["kind"] == "train"]
    # The config alone (no ramp-up, as the finetune preset) would give 1.0 at every iteration.
    assert len(rampup) == 8 and rampup == sorted(rampup) and rampup[0] < 0.1 and rampup[5] < 1.0


def test_cce_dual_weighs_its_consistency_regularisation_by_the_coupling() -> None:
    torch.manual_seed(0)
    method = build_method("ccedual", tiny_config().network_config(3), {"resnet_blocks": [1, 1]})
    for network in method.networks.values():
        network.eval()  # no dropout: both losses from the same outputs
    images = torch.randn(2, 1, 8, 16, 16)
    target = torch.randint(0, 3, (1, 8, 16, 16))
    batch = Batch(labeled_image=images[:1], labeled_target=target, unlabeled_image=images[1:])
    full = method.loss(batch, StepContext(0, 10, 0.0, num_classes=3))
    none = method.loss(batch, StepContext(0, 10, 0.0, num_classes=3, coupling=0.0))
    cr = float(full.logs["consistency_regularisation"])
    assert cr > 0
    weight = method.settings.cr_weight
    assert float(full.loss.detach() - none.loss.detach()) == pytest.approx(weight * cr, rel=1e-4, abs=1e-6)
