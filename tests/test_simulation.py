"""The active-learning simulation: it wraps training faithfully, picks only pool cases, CLI, uncertainty report."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from helpers import tiny_config
from safetensors.torch import load_file

from napari_ssl_seg.active import simulation as simulation_module
from napari_ssl_seg.active.simulation import FixedOrder, SimulationSettings, simulate
from napari_ssl_seg.cli import main
from napari_ssl_seg.errors import InputError
from napari_ssl_seg.evaluation.evaluate import _uncertainty_report, evaluate_project
from napari_ssl_seg.inference.predictor import Predictor
from napari_ssl_seg.io import Volume
from napari_ssl_seg.store import Project
from napari_ssl_seg.training import TrainConfig
from napari_ssl_seg.training.loop import train

SHAPE = (10, 22, 26)
# case_00..04 train, case_05 validation, case_06 test.
SPLITS = ["train"] * 5 + ["validation", "test"]
# helpers.tiny_config, with every schedule shortened to the simulation's two iterations per round.
SIMULATION_CHANGES = {
    "iterations": 2,
    "lr_step": 2,
    "rampup_iterations": 2,
    "checkpoint_every": 2,
    "validate_every": 2,
    "log_every": 1,
}


def sim_config(**changes: Any) -> TrainConfig:
    return tiny_config(**{**SIMULATION_CHANGES, **changes})


CLI_SETTINGS = [
    f"--set={key}={','.join(map(str, value)) if isinstance(value, list | tuple) else value}"
    for key, value in sim_config().to_dict().items()
    if key in (*SIMULATION_CHANGES, "batch_labeled", "batch_unlabeled", "patch_size", "base_width", "depth", "dropout")
]


def make_project(root: Path, labeled: Iterable[str]) -> Path:
    """Small synthetic cases (a bright ball, a dark box); training cases not in ``labeled`` keep
    their ground truth as a reference label only. The same arrays whatever ``labeled`` is."""
    labeled = set(labeled)
    project = Project.create(root, seed=5, name="tiny")
    project.set_setting("label_names", json.dumps({"1": "ball", "2": "box"}))
    rng = np.random.default_rng(0)
    z, y, x = np.meshgrid(*(np.arange(n) for n in SHAPE), indexing="ij")
    for index, split in enumerate(SPLITS):
        centre = rng.uniform(0.35, 0.65, size=3) * np.asarray(SHAPE)
        label = np.zeros(SHAPE, dtype=np.uint8)
        label[((z - centre[0]) / 3) ** 2 + ((y - centre[1]) / 6) ** 2 + ((x - centre[2]) / 6) ** 2 < 1] = 1
        label[2:5, 2:8, -9:-3] = 2
        image = rng.normal(0, 0.3, size=SHAPE).astype(np.float32) + 2.0 * (label == 1) - 1.5 * (label == 2)
        name = f"case_{index:02d}"
        project.add_case(name, Volume(array=image, spacing=(4.0, 1.0, 1.0)), split=split)
        if split != "train" or name in labeled:
            project.save_label(name, label, author="test")
        else:
            project.save_reference_label(name, label)
    project.close()
    return root


def project_state(root: Path) -> tuple[Any, ...]:
    """Everything a simulation must leave alone: label history, models, files."""
    with Project.open(root) as project:
        versions = [(v.case_name, v.version, v.sha256) for v in project.label_versions()]
        models = project.read("SELECT COUNT(*) FROM model_versions")
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and "sqlite" not in p.name)
    return versions, models, files


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_project(tmp_path_factory.mktemp("sim") / "source", labeled=["case_00", "case_01"])


def same_weights(a: Path, b: Path) -> bool:
    first, second = load_file(str(a)), load_file(str(b))
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def test_fixed_order_reproduces_the_training_it_wraps(source: Path, tmp_path: Path) -> None:
    before = project_state(source)
    settings = SimulationSettings(
        strategy=FixedOrder(("case_03", "case_02")),
        rounds=1,
        initial=["case_00", "case_01"],
        seeds=(3,),
        device="cpu",
        promotion="always",
    )
    result = simulate(source, tmp_path / "work", sim_config(), settings)
    assert [(r.round, r.labeled, r.picked) for r in result.records] == [(0, 2, []), (1, 3, ["case_03"])]
    assert all(r.promoted and r.teacher == r.model for r in result.records)
    assert project_state(source) == before  # the user's project is only read

    # Round 0 is a plain run on the initial labels; round 1 fine-tunes it once case_03 is labeled.
    direct0 = train(source, sim_config(seed=3), tmp_path / "direct0", device="cpu")
    assert same_weights(direct0.model_path, Path(result.records[0].model))
    grown = make_project(tmp_path / "grown", labeled=["case_00", "case_01", "case_03"])
    direct1 = train(grown, sim_config(seed=3), tmp_path / "direct1", init_model=direct0.model_path, device="cpu")
    assert same_weights(direct1.model_path, Path(result.records[1].model))
    with Project.open(grown) as project:
        overall = evaluate_project(project, direct1.model_path, device="cpu").summary["overall"]
    assert overall["dice_mean"] == pytest.approx(result.records[1].test_dice, abs=0)
    # The distance the label-saving ratio is also read at: the teacher's mean test HD95, per round and per curve point.
    assert overall["hd95_mm_mean"] is not None
    assert result.records[1].test_hd95_mm == pytest.approx(overall["hd95_mm_mean"], abs=0)
    assert result.curve()[1]["hd95_mean"] == pytest.approx(overall["hd95_mm_mean"], abs=0)
    # The session's seed, not the config's (None: the project's seed 5), is what every round trains with.
    cards = [json.loads(Path(r.model).with_suffix(".json").read_text()) for r in result.records]
    assert [card["training"]["seed"] for card in cards] == [3, 3]
    # The simulated annotator corrected round 0's teacher's prediction of case_03: its effort is the
    # voxels where that prediction and the ground truth differ, against the ground truth's foreground.
    with Project.open(source) as project:
        image, truth = project.read_image("case_03"), project.read_reference_label("case_03").array
    predicted = Predictor.from_checkpoint(result.records[0].model, device="cpu").predict(image, uncertainty="none")
    first, second = result.records
    assert first.corrected_voxels == [] and first.correction_ratio is None
    assert second.corrected_voxels == [int(np.count_nonzero(predicted.label.array != truth))]
    assert second.scratch_voxels == [int(np.count_nonzero(truth))]
    assert result.curve()[1]["correction_mean"] == pytest.approx(second.corrected_voxels[0] / second.scratch_voxels[0])


def card(model: str) -> dict[str, Any]:
    return json.loads(Path(model).with_suffix(".json").read_text())


def test_a_fine_tune_that_validates_worse_leaves_the_previous_teacher_in_place(
    source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The one-click retrain's rule: round 1's model validates worse, so round 1 keeps (and is
    scored by) round 0's teacher, and round 2 fine-tunes round 0's teacher, not round 1's model.
    Round 2's model ties with round 0's teacher, and a tie promotes."""

    def validation_by_round(project: Project, checkpoint: Path, **_: Any) -> float:
        return 0.3 if Path(checkpoint).parent.name == "round01" else 0.5

    monkeypatch.setattr(simulation_module, "validation_dice", validation_by_round)
    settings = SimulationSettings(
        strategy=FixedOrder(("case_03", "case_02")), rounds=2, initial=["case_00", "case_01"], device="cpu"
    )
    result = simulate(source, tmp_path / "work", sim_config(), settings)
    first, second, third = result.records
    assert (first.promoted, second.promoted, third.promoted) == (True, False, True)
    assert second.teacher == first.model != second.model
    assert second.test_dice == first.test_dice
    assert third.teacher == third.model
    assert card(third.model)["parent"] == card(first.model)["weights_sha256"]
    assert card(second.model)["parent"] == card(first.model)["weights_sha256"]
    with Project.open(Path(third.model).parents[2] / "project") as project:
        dice = evaluate_project(project, Path(third.model), split="test", device="cpu").summary["overall"]
    assert third.test_dice == pytest.approx(dice["dice_mean"], abs=0)


@pytest.mark.parametrize("strategy", ["boundary_entropy", "random"])
def test_strategy_picks_each_pool_case_once_and_never_validation_or_test(
    source: Path, tmp_path: Path, strategy: str
) -> None:
    settings = SimulationSettings(strategy=strategy, samples=2, seeds=(0, 1), device="cpu")
    result = simulate(source, tmp_path / "work", sim_config(iterations=1), settings)
    for seed in (0, 1):
        records = [r for r in result.records if r.seed == seed]
        picked = [name for r in records for name in r.picked]
        initial = records[0].labeled_cases
        assert len(picked) == len(set(picked)) == 3  # rounds default: until the pool is used up
        assert set(picked) | set(initial) == {f"case_{i:02d}" for i in range(5)}
        assert not set(picked) & set(initial)
        assert [r.labeled for r in records] == [2, 3, 4, 5]
        if strategy == "boundary_entropy":
            assert all(score is not None for r in records for score in r.picked_scores)
    # The seed changes which cases start labeled (two draws of 2 of 5 might coincide; these do not).
    assert result.records[0].labeled_cases != next(r for r in result.records if r.seed == 1).labeled_cases


def test_fixed_order_skips_validation_test_and_repeated_cases(source: Path, tmp_path: Path) -> None:
    order = FixedOrder(("case_06", "case_05", "case_00", "case_04", "case_04", "case_02"))
    settings = SimulationSettings(strategy=order, rounds=2, initial=["case_00", "case_01"], device="cpu")
    result = simulate(source, tmp_path / "work", sim_config(iterations=1), settings)
    assert [r.picked for r in result.records] == [[], ["case_04"], ["case_02"]]


def test_bad_settings_fail_before_any_work(source: Path, tmp_path: Path) -> None:
    work = tmp_path / "work"
    for settings in (
        SimulationSettings(budget=4, device="cpu"),  # pool: 5 training cases - 2 initial
        SimulationSettings(budget=2, rounds=2, device="cpu"),
        SimulationSettings(initial=5, device="cpu"),
        SimulationSettings(initial=["case_06"], device="cpu"),
        SimulationSettings(strategy="most_confusing", device="cpu"),
        SimulationSettings(seeds=(1, 1), device="cpu"),
        SimulationSettings(uncertainty="none", device="cpu"),
        SimulationSettings(promotion="sometimes", device="cpu"),
        SimulationSettings(seeds=(0, 1), init_model={0: tmp_path / "start.safetensors"}, device="cpu"),
    ):
        with pytest.raises(InputError):
            simulate(source, work, sim_config(), settings)
    assert not work.exists()


def test_each_seed_fine_tunes_its_own_starting_teacher(source: Path, tmp_path: Path) -> None:
    """Starting teachers per seed (say, each converged on that session's initial cases): round 0 of
    a session fine-tunes its seed's teacher, not another seed's."""
    starts = {
        seed: train(source, sim_config(seed=10 + seed), tmp_path / f"start{seed}", device="cpu").model_path
        for seed in (0, 1)
    }
    assert not same_weights(starts[0], starts[1])
    settings = SimulationSettings(
        strategy=FixedOrder(("case_03",)),
        rounds=1,
        initial=["case_00", "case_01"],
        seeds=(0, 1),
        init_model=starts,
        device="cpu",
        promotion="always",
    )
    result = simulate(source, tmp_path / "work", sim_config(), settings)
    first_rounds = {r.seed: r for r in result.records if r.round == 0}
    for seed, record in first_rounds.items():
        assert card(record.model)["parent"] == card(str(starts[seed]))["weights_sha256"]
    assert json.loads((tmp_path / "work" / "result.json").read_text())["settings"]["init_model"] == {
        str(seed): str(path) for seed, path in starts.items()
    }


def test_uncertainty_report_auroc_is_one_when_entropy_marks_exactly_the_errors() -> None:
    rng = np.random.default_rng(1)
    error = rng.random(5000) < 0.2
    entropy = np.where(error, rng.uniform(0.6, 1.0, error.size), rng.uniform(0.0, 0.5, error.size))
    confidence = np.where(error, 0.4, 0.95)
    dice = {"a": 0.9, "b": 0.7, "c": 0.4, "d": 0.8}
    scores = {name: {"boundary_entropy": 1.0 - value, "top1_entropy": value} for name, value in dice.items()}
    # Pooled in two chunks, as evaluate_project pools one chunk per case.
    pooled = {
        key: [values[:2500], values[2500:]]
        for key, values in (("entropy", entropy), ("error", error), ("confidence", confidence))
    }
    report = _uncertainty_report(pooled, scores, dice)
    assert report["auroc_entropy_vs_error"] == 1.0
    assert report["error_rate"] == pytest.approx(error.mean())
    # Bins: wrong voxels at confidence 0.4 (accuracy 0), right ones at 0.95 (accuracy 1).
    assert report["ece"] == pytest.approx(error.mean() * 0.4 + (1 - error.mean()) * 0.05)
    assert report["spearman_score_vs_1_minus_dice"] == {"boundary_entropy": 1.0, "top1_entropy": -1.0}
    assert report["spearman_cases"] == 4


def test_cli_simulate_json_end_to_end(source: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = project_state(source)
    work = tmp_path / "work"
    argv = ["simulate", str(source), "--strategy", "top1_entropy", "--rounds", "2", "--samples", "2"]
    status = main([*argv, "--device", "cpu", "--work", str(work), "--json", *CLI_SETTINGS])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    result = json.loads(captured.out)
    assert result["strategy"] == "top1_entropy" and result["method"] == "supervised"
    assert [r["labeled"] for r in result["rounds"]] == [2, 3, 4]
    assert [point["labeled"] for point in result["curve"]] == [2, 3, 4]
    assert all(0.0 <= r["test_dice"] <= 1.0 for r in result["rounds"])
    assert json.loads((work / "result.json").read_text())["rounds"] == result["rounds"]
    assert "simulating" in captured.err  # progress goes to stderr, the JSON alone to stdout
    assert project_state(source) == before

    # The table: one row per trained teacher, then the curve.
    argv = ["simulate", str(source), "--strategy", "least_recent", "--rounds", "1", "--device", "cpu"]
    assert main([*argv, "--work", str(tmp_path / "table"), *CLI_SETTINGS]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("strategy  least_recent   method supervised")
    assert [line.split()[:3] for line in lines[2:4]] == [["0", "0", "2"], ["0", "1", "3"]]
    stored = json.loads((tmp_path / "table" / "result.json").read_text())["rounds"]
    hd95 = ["-" if r["test_hd95_mm"] is None else f"{r['test_hd95_mm']:.1f}" for r in stored]
    assert [line.split()[4] for line in lines[2:4]] == hd95
    assert [line.split()[0] for line in lines[-2:]] == ["2", "3"]


@pytest.mark.parametrize(
    "args",
    [
        ["simulate", "{missing}"],
        ["simulate", "{source}", "--budget", "4"],
        ["simulate", "{source}", "--rounds", "4"],
        ["simulate", "{source}", "--seeds", "0"],
    ],
)
def test_cli_simulate_bad_input_exits_2_with_one_error_line(
    source: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    argv = [a.format(missing=tmp_path / "nope", source=source) for a in args]
    assert main([*argv, "--work", str(tmp_path / "work"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
    assert not (tmp_path / "work").exists()


def test_initial_cases_from_the_command_line_are_a_count_or_sorted_names() -> None:
    assert simulation_module.parse_initial(" 3 ") == 3
    assert simulation_module.parse_initial("case_03, case_01,case_03,") == ["case_01", "case_03"]
