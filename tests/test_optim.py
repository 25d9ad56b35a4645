"""The optimiser recipes a TrainConfig names: schedules, Nesterov/AdamW, gradient clipping."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from napari_ssl_seg.errors import InputError
from napari_ssl_seg.training import TrainConfig, apply_overrides, preset
from napari_ssl_seg.training.optim import POLY_EXPONENT, build_optimizer, build_scheduler, clip_gradients


def lrs(config: TrainConfig, steps: int) -> list[float]:
    parameter = nn.Parameter(torch.zeros(3))
    optimizer = build_optimizer([parameter], config)
    scheduler = build_scheduler(optimizer, config)
    seen = []
    for _ in range(steps):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return seen


def test_poly_decays_to_zero_at_the_last_iteration_and_step_keeps_the_papers_steps() -> None:
    poly = apply_overrides(preset("quick"), ["iterations=10", "schedule=poly", "lr=0.01"])
    seen = lrs(poly, 10)
    assert seen[0] == pytest.approx(0.01)
    assert seen[5] == pytest.approx(0.01 * (1 - 5 / 10) ** POLY_EXPONENT)
    assert seen == sorted(seen, reverse=True) and seen[-1] < 0.01 * 0.2
    step = apply_overrides(preset("quick"), ["iterations=10", "lr_step=4", "lr=0.01"])
    assert lrs(step, 10) == pytest.approx([0.01] * 4 + [0.001] * 4 + [0.0001] * 2)


def test_the_named_optimisers_are_built_and_bad_combinations_refused() -> None:
    nnunet = apply_overrides(preset("quick"), ["momentum=0.99", "nesterov=true", "schedule=poly", "grad_clip=12"])
    optimizer = build_optimizer([nn.Parameter(torch.zeros(1))], nnunet)
    assert isinstance(optimizer, torch.optim.SGD)
    assert optimizer.defaults["nesterov"] is True and optimizer.defaults["momentum"] == 0.99
    assert nnunet.grad_clip == 12.0 and TrainConfig.from_dict(nnunet.to_dict()).grad_clip == 12.0
    adamw = apply_overrides(preset("quick"), ["optimizer=adamw", "lr=0.001"])
    assert isinstance(build_optimizer([nn.Parameter(torch.zeros(1))], adamw), torch.optim.AdamW)
    for bad in (["optimizer=adam"], ["schedule=cosine"], ["optimizer=adamw", "nesterov=true"], ["grad_clip=0"]):
        with pytest.raises(InputError):
            apply_overrides(preset("quick"), bad).validate()


def test_clipping_bounds_the_gradient_norm_and_reports_it() -> None:
    parameters = [nn.Parameter(torch.zeros(4)), nn.Parameter(torch.zeros(2))]
    parameters[0].grad = torch.full((4,), 30.0)
    parameters[1].grad = torch.full((2,), -40.0)
    optimizer = torch.optim.SGD(parameters, lr=0.1)
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    before = clip_gradients(parameters, optimizer, scaler, 12.0)
    assert float(before) == pytest.approx((4 * 30.0**2 + 2 * 40.0**2) ** 0.5)
    after = torch.linalg.vector_norm(torch.cat([p.grad for p in parameters]))
    assert float(after) == pytest.approx(12.0, rel=1e-4)


def test_the_loop_runs_the_nnunet_recipe_and_logs_training_seconds(tmp_path) -> None:
    from helpers import make_tiny_project, tiny_config

    from napari_ssl_seg.training.loop import train
    from napari_ssl_seg.training.runlog import read_log

    root = make_tiny_project(tmp_path / "project")
    config = tiny_config(momentum=0.99, nesterov=True, schedule="poly", grad_clip=1e-3, log_every=1)
    train(root, config, tmp_path / "run", device="cpu")
    records = read_log(tmp_path / "run" / "log.jsonl")
    rates = [record["lr"] for record in records if record["kind"] == "train"]
    assert rates == sorted(rates, reverse=True) and rates[-1] < config.lr * 0.3
    seconds = [record["train_seconds"] for record in records if record["kind"] == "validation"]
    assert len(seconds) >= 2 and 0 < seconds[0] < seconds[-1]


def test_warmup_rises_linearly_then_the_schedule_runs_its_full_course() -> None:
    from napari_ssl_seg.training.optim import WARMUP_START

    config = apply_overrides(preset("quick"), ["iterations=20", "schedule=poly", "lr=0.01", "warmup_iterations=5"])
    seen = lrs(config, 20)
    assert seen[0] == pytest.approx(0.01 * WARMUP_START)
    assert seen[:6] == sorted(seen[:6]) and seen[5] == pytest.approx(0.01)
    # The poly decay counts from the end of the warm-up: 15 iterations from 0.01 down to zero.
    assert seen[5 + 5] == pytest.approx(0.01 * (1 - 5 / 15) ** POLY_EXPONENT)
    assert seen[5:] == sorted(seen[5:], reverse=True)
    stepped = apply_overrides(preset("quick"), ["iterations=12", "lr_step=4", "lr=0.01", "warmup_iterations=2"])
    assert lrs(stepped, 12)[2:] == pytest.approx([0.01] * 4 + [0.001] * 4 + [0.0001] * 2)


def test_a_short_run_keeps_a_schedule_after_its_warmup() -> None:
    config = apply_overrides(preset("finetune"), ["iterations=4"])
    assert config.warmup_iterations > 4
    seen = lrs(config, 4)
    assert max(seen) == pytest.approx(config.lr)  # warmed up within the first half, then decayed
    assert seen[-1] < config.lr


def test_the_finetune_preset_is_gentler_than_training_from_scratch() -> None:
    scratch, finetune = preset("quick"), preset("finetune")
    assert finetune.lr <= scratch.lr / 5
    assert finetune.warmup_iterations > 0 and finetune.rampup_iterations == 0
    assert lrs(finetune, finetune.iterations)[-1] < finetune.lr * 0.1


def test_warmup_survives_a_resume(tmp_path) -> None:
    from helpers import make_tiny_project, tiny_config

    from napari_ssl_seg.training.loop import train
    from napari_ssl_seg.training.runlog import read_log

    root = make_tiny_project(tmp_path / "project")
    config = tiny_config(warmup_iterations=3, log_every=1, schedule="poly")
    whole = tmp_path / "whole"
    train(root, config, whole, device="cpu")
    parted = tmp_path / "parted"
    stop_at = {"n": 0}

    def should_stop() -> bool:
        stop_at["n"] += 1
        return stop_at["n"] > 2

    train(root, config, parted, device="cpu", should_stop=should_stop)
    train(root, config, parted, device="cpu", resume=True)

    def rates(run):
        return {r["iteration"]: r["lr"] for r in read_log(run / "log.jsonl") if r["kind"] == "train"}

    assert rates(parted) == pytest.approx(rates(whole))
    assert rates(whole)[1] < rates(whole)[3]
