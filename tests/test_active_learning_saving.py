"""The labeling saving the active-learning benchmark reports: cases a strategy needs for random's Dice or HD95."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from helpers import load_benchmark


def curve(points: list[tuple[int, float, float]]) -> dict[str, Any]:
    return {"curve": [{"labeled": n, "dice_mean": dice, "hd95_mean": hd95} for n, dice, hd95 in points]}


def test_reach_interpolates_upwards_for_dice_and_downwards_for_hd95(monkeypatch: pytest.MonkeyPatch) -> None:
    benchmark = load_benchmark("active_learning", monkeypatch)
    dice = [(2, 0.60), (3, 0.70), (4, 0.80)]
    assert benchmark._interpolate_reach(dice, 0.75) == pytest.approx(3.5)
    assert benchmark._interpolate_reach(dice, 0.55) == 2.0
    assert benchmark._interpolate_reach(dice, 0.90) is None
    hd95 = [(2, 40.0), (3, 30.0), (4, 20.0)]
    assert benchmark._interpolate_reach(hd95, 25.0, lower_is_better=True) == pytest.approx(3.5)
    assert benchmark._interpolate_reach(hd95, 45.0, lower_is_better=True) == 2.0
    assert benchmark._interpolate_reach(hd95, 10.0, lower_is_better=True) is None


def test_saving_at_equal_hd95_counts_the_cases_a_strategy_needs_to_come_down_to_random(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    benchmark = load_benchmark("active_learning", monkeypatch)
    results = {
        "random": curve([(2, 0.6, 40.0), (3, 0.65, 34.0), (4, 0.7, 30.0)]),
        "missing_volume": curve([(2, 0.6, 40.0), (3, 0.7, 30.0), (4, 0.72, 28.0)]),
    }
    rows = {(r["metric"], r["random_cases"]): r for r in benchmark.labeling_savings(results, 2, "hd95")}
    assert set(rows) == {("hd95", 3), ("hd95", 4)}  # nothing to save at the shared initial cases
    assert rows[("hd95", 4)]["cases_needed"] == pytest.approx(3.0)
    assert rows[("hd95", 4)]["ratio"] == pytest.approx(0.75)
    assert rows[("hd95", 4)]["ratio_chosen"] == pytest.approx(0.5)
    assert rows[("hd95", 3)]["cases_needed"] == pytest.approx(2.6)
    dice_rows = {r["random_cases"]: r for r in benchmark.labeling_savings(results, 2, "dice")}
    assert dice_rows[4]["cases_needed"] == pytest.approx(3.0)


def sessions(strategy_by_seed: dict[int, list[tuple[int, float, float | None]]]) -> dict[str, Any]:
    rounds = [
        {"seed": seed, "labeled": n, "test_dice": dice, "test_hd95_mm": hd95}
        for seed, points in strategy_by_seed.items()
        for n, dice, hd95 in points
    ]
    return {"rounds": rounds}


def test_the_paired_comparison_differences_each_seed_against_its_own_random_twin(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    benchmark = load_benchmark("active_learning", monkeypatch)
    results = {
        # Seed 1 starts far higher than seed 0: the means' spreads overlap, the per-seed differences do not.
        "random": sessions(
            {0: [(2, 0.5, 40.0), (3, 0.55, 30.0), (4, 0.6, 20.0)], 1: [(2, 0.7, 20.0), (3, 0.72, 18.0)]}
        ),
        "structure_entropy": sessions(
            {0: [(2, 0.5, 40.0), (3, 0.57, 26.0), (4, 0.61, 22.0)], 1: [(2, 0.7, 20.0), (3, 0.75, None)]}
        ),
    }
    dice = {row["labeled"]: row for row in benchmark.paired_gains(results, 2, "dice")}
    assert set(dice) == {3, 4, None}  # the shared initial count is left out
    assert dice[3]["gain_mean"] == pytest.approx(0.025) and dice[3]["better"] == 2 and dice[3]["seeds"] == 2
    assert dice[4]["seeds"] == 1 and dice[4]["gain_std"] == 0.0  # seed 1 never reached 4 cases
    # Per seed, the mean over its rounds: seed 0 (0.02 + 0.01) / 2, seed 1 0.03.
    assert dice[None]["gain_mean"] == pytest.approx((0.015 + 0.03) / 2)
    hd95 = {row["labeled"]: row for row in benchmark.paired_gains(results, 2, "hd95")}
    # Lower is better: 4 mm saved at 3 cases, 2 mm lost at 4; seed 1's missing distance is not a zero.
    assert hd95[3]["gain_mean"] == pytest.approx(4.0) and hd95[3]["seeds"] == 1
    assert hd95[4]["gain_mean"] == pytest.approx(-2.0) and hd95[4]["better"] == 0


def test_a_stored_session_reads_back_with_its_rounds_and_curve() -> None:
    from napari_ssl_seg.active.simulation_records import RoundRecord, SimulationResult

    def record(seed: int, round_index: int, dice: float, hd95: float | None) -> RoundRecord:
        return RoundRecord(
            seed=seed,
            round=round_index,
            labeled=2 + round_index,
            labeled_cases=[f"case_{i:03d}" for i in range(2 + round_index)],
            picked=[] if round_index == 0 else [f"case_{10 + round_index:03d}"],
            picked_scores=[] if round_index == 0 else [0.4],
            test_dice=dice,
            validation_dice=None,
            model="m.safetensors",
            train_seconds=1.0,
            rank_seconds=0.5,
            promoted=round_index > 0,
            teacher="m.safetensors",
            corrected_voxels=[] if round_index == 0 else [30],
            scratch_voxels=[] if round_index == 0 else [300],
            test_hd95_mm=hd95,
        )

    original = SimulationResult(
        "structure_entropy", "supervised", Path("work"), {"seeds": [0, 1]},
        [record(0, 0, 0.6, 20.0), record(0, 1, 0.7, None), record(1, 0, 0.5, 30.0), record(1, 1, 0.6, 24.0)],
    )  # fmt: skip
    stored = json.loads(json.dumps(original.as_dict()))  # as result.json holds it
    again = SimulationResult.from_dict(stored)
    assert again.records == original.records
    assert again.as_dict() == stored
    point = {p["labeled"]: p for p in again.curve()}[3]
    assert point["dice_mean"] == pytest.approx(0.65) and point["hd95_mean"] == pytest.approx(24.0)
    assert point["correction_mean"] == pytest.approx(0.1)


def test_a_finished_seed_is_reused_a_cut_short_one_is_not_and_other_settings_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from argparse import Namespace

    from napari_ssl_seg.training.config import TrainConfig

    benchmark = load_benchmark("active_learning", monkeypatch)
    config = TrainConfig()
    teachers = "teachers/seed{seed}/model.safetensors"
    args = Namespace(promotion="validation", initial=2, budget=1, rounds=2, init=teachers)
    settings = {
        "config": config.to_dict(),
        "seeds": [3],
        "promotion": "validation",
        "initial": 2,
        "budget": 1,
        "rounds": 2,
        "init_model": {"3": "teachers/seed3/model.safetensors"},
    }
    done = tmp_path / "result.json"
    assert benchmark._stored_session(done, config, args, 3) is None  # nothing run yet
    done.write_text(json.dumps({"settings": settings, "rounds": [{}, {}]}), encoding="utf-8")
    assert benchmark._stored_session(done, config, args, 3) is None  # stopped after 2 of its 3 rounds
    done.write_text(json.dumps({"settings": settings, "rounds": [{}, {}, {}]}), encoding="utf-8")
    assert benchmark._stored_session(done, config, args, 3)["rounds"] == [{}, {}, {}]
    with pytest.raises(SystemExit, match="other settings"):
        benchmark._stored_session(done, config, Namespace(**{**vars(args), "rounds": 5}), 3)


def test_rescoring_takes_each_rounds_figures_from_its_teacher_under_the_chosen_reference(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rescore = load_benchmark("active_learning_rescore", monkeypatch)

    def rounds(teachers: list[str], dice: list[float]) -> list[dict[str, Any]]:
        return [
            {"seed": 0, "round": i, "labeled": 2 + i, "labeled_cases": [], "picked": [], "picked_scores": [],
             "test_dice": d, "validation_dice": None, "model": t, "train_seconds": 1.0, "rank_seconds": 0.0,
             "promoted": i > 0, "teacher": t, "test_hd95_mm": 20.0}
            for i, (t, d) in enumerate(zip(teachers, dice, strict=True))
        ]  # fmt: skip

    result = {"strategy": "s", "method": "supervised", "work_dir": "w", "settings": {}}
    summary = {
        "strategies": {
            "random": result | {"strategy": "random", "rounds": rounds(["a", "b"], [0.60, 0.70])},
            # A refused fine-tune keeps the teacher: round 1 scores "a" again.
            "structure_entropy": result | {"rounds": rounds(["a", "a"], [0.60, 0.61])},
        }
    }
    scores = {
        "a": {"nearest": {"dice": 0.60, "hd95_mm": 21.0}, "linear": {"dice": 0.64, "hd95_mm": 18.0}},
        "b": {"nearest": {"dice": 0.72, "hd95_mm": 20.0}, "linear": {"dice": 0.75, "hd95_mm": 15.0}},
    }
    assert rescore.teachers([summary]) == ["a", "b"]
    dice, hd95 = rescore.largest_difference(summary, scores)
    assert dice == pytest.approx(0.02) and hd95 == pytest.approx(1.0)
    results = rescore.rescored(summary, scores, "linear")
    assert [r["test_dice"] for r in results["structure_entropy"]["rounds"]] == [0.64, 0.64]
    assert [r["test_hd95_mm"] for r in results["random"]["rounds"]] == [18.0, 15.0]
    curve = {p["labeled"]: p for p in results["random"]["curve"]}
    assert curve[3]["dice_mean"] == pytest.approx(0.75) and curve[3]["hd95_mean"] == pytest.approx(15.0)
    assert summary["strategies"]["random"]["rounds"][1]["test_dice"] == 0.70  # the input is left as recorded
