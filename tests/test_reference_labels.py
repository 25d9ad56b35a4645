"""The share of a label gap closed that benchmarks/reference_labels.py reports, under each reference."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_benchmark(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # it imports label_gap and ssl_summary beside it
    spec = importlib.util.spec_from_file_location("reference_labels_benchmark", BENCHMARKS / "reference_labels.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def scores(nearest: tuple[float, float], linear: tuple[float, float]) -> dict[str, Any]:
    return {
        reference: {"dice": dice, "hd95_mm": hd95}
        for reference, (dice, hd95) in (("nearest", nearest), ("linear", linear))
    }


def test_the_gap_closed_is_per_seed_under_each_reference_and_skips_seeds_without_both_ends(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    benchmark = load_benchmark(monkeypatch)
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
