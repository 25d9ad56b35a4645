"""The share of a label gap closed that benchmarks/reference_labels.py reports, under each reference."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from helpers import load_benchmark


def scores(nearest: tuple[float, float], linear: tuple[float, float]) -> dict[str, Any]:
    return {
        reference: {"dice": dice, "hd95_mm": hd95}
        for reference, (dice, hd95) in (("nearest", nearest), ("linear", linear))
    }


def test_the_gap_closed_is_per_seed_under_each_reference_and_skips_seeds_without_both_ends(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    benchmark = load_benchmark("reference_labels", monkeypatch)
    results = {
        "start_s0": scores((0.70, 40.0), (0.72, 40.0)),
        "full_s0": scores((0.80, 10.0), (0.84, 10.0)),
        "ucmt_s0": scores((0.75, 25.0), (0.75, 30.0)),
        "start_s1": scores((0.60, 50.0), (0.60, 50.0)),
        "full_s1": scores((0.80, 10.0), (0.80, 10.0)),
        "ucmt_s1": scores((0.65, 40.0), (0.70, 20.0)),
        "start_s2": scores((0.60, 50.0), (0.60, 50.0)),
        "ucmt_s2": scores((0.99, 1.0), (0.99, 1.0)),  # no full teacher of seed 2: not counted
        "extra_s2": scores((0.99, 1.0), (0.99, 1.0)),  # a group with no seed that has both ends
    }
    shares = benchmark.gap_closed(results, "start", "full")
    assert set(shares) == {"ucmt"}
    nearest, linear = shares["ucmt"]["nearest"], shares["ucmt"]["linear"]
    assert set(nearest["per_seed"]) == {"0", "1"}
    assert nearest["per_seed"]["0"] == pytest.approx({"dice": 0.5, "hd95": 0.5})
    assert nearest["per_seed"]["1"] == pytest.approx({"dice": 0.25, "hd95": 0.25})
    assert linear["per_seed"]["0"] == pytest.approx({"dice": 0.25, "hd95": 1 / 3})
    assert linear["mean"]["dice"] == pytest.approx((0.25 + 0.5) / 2)
    assert nearest["sd"]["hd95"] == pytest.approx(0.1767767, rel=1e-5)


def test_a_seed_without_the_full_teacher_takes_the_other_one_named(monkeypatch: pytest.MonkeyPatch) -> None:
    benchmark = load_benchmark("reference_labels", monkeypatch)
    results = {
        "start_s0": scores((0.70, 40.0), (0.70, 40.0)),
        "full_s0": scores((0.80, 10.0), (0.80, 10.0)),
        "other_s0": scores((0.99, 1.0), (0.99, 1.0)),  # seed 0 has its FULL teacher: this one is not used
        "ucmt_s0": scores((0.75, 25.0), (0.75, 25.0)),
        "start_s1": scores((0.60, 50.0), (0.60, 50.0)),
        "other_s1": scores((0.80, 10.0), (0.80, 10.0)),
        "ucmt_s1": scores((0.65, 40.0), (0.65, 40.0)),
    }
    shares = benchmark.gap_closed(results, "start", ("full", "other"))
    assert set(shares) == {"ucmt"}
    per_seed = shares["ucmt"]["linear"]["per_seed"]
    assert per_seed["0"] == pytest.approx({"dice": 0.5, "hd95": 0.5})
    assert per_seed["1"] == pytest.approx({"dice": 0.25, "hd95": 0.25})


def cleaned_run(raw: tuple[list[float], list[float]], cleaned: tuple[list[float], list[float]]) -> dict[str, Any]:
    """A largest_component.py JSON of one teacher on one test set: per variant, Dice and HD95 per class."""

    def per_class(values: tuple[list[float], list[float]]) -> dict[str, dict[str, float]]:
        return {
            key: {str(c): v for c, v in enumerate(column, 1)}
            for key, column in zip(("dice", "hd95"), values, strict=True)
        }

    variants = {"as predicted": per_class(raw), "chosen classes": per_class(cleaned), "every class": per_class(cleaned)}
    return {"model": "m", "chosen": [1], "validation": [0.5, 0.5], "cohort:test": variants}


def test_the_cleaned_gap_is_read_from_one_json_per_teacher_and_skips_empty_distances(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    benchmark = load_benchmark("largest_component", monkeypatch)
    nan = float("nan")
    runs = {
        "start_s0": cleaned_run(([0.6, 0.8], [60.0, 20.0]), ([0.6, 0.8], [20.0, 20.0])),
        "all_s0": cleaned_run(([0.9, 0.9], [10.0, 10.0]), ([0.9, 0.9], [10.0, 10.0])),
        # class 2 empty in every case: its NaN distance is left out of the mean, as evaluate leaves it out
        "ucmt_s0": cleaned_run(([0.8, 0.8], [30.0, nan]), ([0.8, 0.8], [15.0, nan])),
    }
    for name, run in runs.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(run))
    result = benchmark.cleaned_gap(tmp_path, "start:all", None)
    assert result["test set"] == "cohort:test"
    assert result["means"]["ucmt_s0"]["chosen classes"] == pytest.approx({"dice": 0.8, "hd95_mm": 15.0})
    share = result["shares"]["ucmt"]
    # Dice: (0.8 - 0.7) / (0.9 - 0.7); HD95 as predicted: (40 - 30) / (40 - 10), cleaned: (20 - 15) / (20 - 10)
    assert share["as predicted"]["per_seed"]["0"] == pytest.approx({"dice": 0.5, "hd95": 1 / 3})
    assert share["chosen classes"]["per_seed"]["0"] == pytest.approx({"dice": 0.5, "hd95": 0.5})
    benchmark.plot_cleaned_gap(result, tmp_path / "shares.png")
    assert (tmp_path / "shares.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (tmp_path / "late_s1.json").write_text(json.dumps({"model": "m", "other:test": runs["all_s0"]["cohort:test"]}))
    with pytest.raises(SystemExit, match="did not score"):
        benchmark.cleaned_gap(tmp_path, "start:all", "cohort:test")
