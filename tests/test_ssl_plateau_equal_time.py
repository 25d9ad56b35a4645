"""How many iterations benchmarks/ssl_plateau.py's equal-time control runs: from the paired runs' own rates."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
from helpers import load_benchmark


def write_run(folder: Path, rates: list[float]) -> None:
    folder.mkdir(parents=True)
    records = [{"kind": "train", "iteration": 5 * i, "it_per_s": rate} for i, rate in enumerate(rates, 1)]
    records.append({"kind": "validation", "iteration": 250, "dice": 0.7})  # no rate: not counted
    (folder / "log.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")


def test_a_tagged_variant_is_timed_against_the_tagged_control(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    benchmark = load_benchmark("ssl_plateau", monkeypatch)
    write_run(tmp_path / "labeled2_supervised_seed0", [10.0, 10.0, 10.0])
    write_run(tmp_path / "labeled2_ucmt_seed0", [2.0, 2.0, 2.0])
    write_run(tmp_path / "labeled2_supervised-bn_seed0", [12.0, 13.0, 100.0])  # median 13
    write_run(tmp_path / "labeled2_ucmt-bn_seed0", [1.0, 2.0, 2.0])  # median 2
    untagged = argparse.Namespace(out=tmp_path, labeled=2, iterations=3000, tag=None, rate_ratio=None)
    assert benchmark.equal_time_iterations(untagged, "ucmt", 0) == (15000, pytest.approx(5.0))
    tagged = argparse.Namespace(out=tmp_path, labeled=2, iterations=3000, tag="bn", rate_ratio=None)
    assert benchmark.equal_time_iterations(tagged, "ucmt", 0) == (19500, pytest.approx(6.5))
    assert benchmark.run_name("ucmt", "bn") == "ucmt-bn" and benchmark.run_name("ucmt", None) == "ucmt"


def test_a_given_rate_ratio_replaces_the_runs_rates(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # The method's run folder is gone (no logs at all): the ratio given on the command line decides.
    benchmark = load_benchmark("ssl_plateau", monkeypatch)
    given = argparse.Namespace(out=tmp_path, labeled=2, iterations=3000, tag="bn", rate_ratio=8.47)
    assert benchmark.equal_time_iterations(given, "ucmt", 0) == (25400, pytest.approx(8.47))
    missing = argparse.Namespace(out=tmp_path, labeled=2, iterations=3000, tag="bn", rate_ratio=None)
    with pytest.raises(SystemExit, match="no logged training rates"):
        benchmark.equal_time_iterations(missing, "ucmt", 0)


def test_a_finished_run_is_reused_only_with_the_settings_it_was_trained_with(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from napari_ssl_seg.training.config import apply_overrides, preset

    benchmark = load_benchmark("ssl_plateau", monkeypatch)
    run = tmp_path / "labeled2_ucmt-bn_seed0"
    (run / "state").mkdir(parents=True)
    trained = apply_overrides(preset("finetune"), ["method=ucmt", "seed=0", "iterations=3000", "postprocessing=false"])
    state = {"run": {"config": trained.to_dict(), "parent": None}}
    (run / "state" / "resume.json").write_text(json.dumps(state))
    (run / "result.json").write_text(json.dumps({"dice": 0.76, "iterations": 3000}))
    assert benchmark.finished_result(run, trained, 3000)["dice"] == 0.76
    changed = apply_overrides(trained, ["postprocessing=true"])
    with pytest.raises(SystemExit, match=r"changed setting\(s\) postprocessing"):
        benchmark.finished_result(run, changed, 3000)
    with pytest.raises(SystemExit, match="finished at 3000 iterations, not 6000"):
        benchmark.finished_result(run, apply_overrides(trained, ["iterations=6000"]), 6000)
