"""The one-click retrain: a child process, its events, cancel and kill, and the promotion rule."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import TINY, make_tiny_project, tiny_trained_project

from napari_ssl_seg.cli import main
from napari_ssl_seg.networks import load_checkpoint
from napari_ssl_seg.runtime import core_sharing
from napari_ssl_seg.store import Project
from napari_ssl_seg.store.models import ModelVersion, active_model, model_versions
from napari_ssl_seg.training import job as job_module
from napari_ssl_seg.training import promote as promote_module
from napari_ssl_seg.training.job import SHARE_FILE, RetrainEvent, RetrainJob
from napari_ssl_seg.training.runlog import read_log
from napari_ssl_seg.training.state import resume_paths

LONG = 100_000  # iterations a run never reaches within a test


@pytest.fixture(scope="module")
def project_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_trained_project(tmp_path_factory.mktemp("retrain"))


def _registry(root: Path) -> tuple[ModelVersion, list[ModelVersion]]:
    with Project.open(root) as project:
        active = active_model(project)
        assert active is not None
        return active, model_versions(project)


def _follow(job: RetrainJob, until: Callable[[list[RetrainEvent]], bool] | None = None) -> list[RetrainEvent]:
    """Poll as a Qt timer would, until the process has ended (or ``until`` holds)."""
    events: list[RetrainEvent] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        events += job.poll()
        if any(event.kind == "state" for event in events) or (until is not None and until(events)):
            return events
        time.sleep(0.05)
    job.kill()
    raise AssertionError(f"retrain still {job.state} after 120 s: {events}")


def _scored_by(job: RetrainJob, shift: float, measured: dict[str, float]) -> Callable[..., float]:
    """The real validation Dice, with the new teacher's moved by ``shift`` to force the decision."""
    real = promote_module.validation_dice

    def scored(project: Project, checkpoint: Path | str, **kwargs: object) -> float:
        value = real(project, checkpoint, **kwargs)
        new = Path(checkpoint).parent == job.out_dir
        measured["new" if new else "old"] = value
        return value + shift if new else value

    return scored


def test_retrain_runs_in_a_child_and_keeps_the_better_teacher(
    project_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old, before = _registry(project_root)
    job = RetrainJob.start(project_root, iterations=2, overrides=TINY, device="cpu")
    assert job.pid != os.getpid() and job.state == "running" and job.progress == (0, 2)
    assert job.method == "supervised" and job.parent_version == old.name
    assert job.out_dir.parent == project_root / "runs" and job.out_dir.name.startswith("retrain-")
    events = _follow(job, until=lambda seen: any(event.kind == "train" for event in seen))
    # The annotator keeps saving while the child trains; the run's snapshot does not move.
    with Project.open(project_root) as project:
        saved = project.save_label("case_02", project.read_label("case_00").array, author="annotator")
        assert saved.version == 1
    events += _follow(job)
    assert [event.kind for event in events].count("state") == 1 and events[-1].kind == "state"
    assert events[-1].values == {"state": "completed", "error": None, "returncode": 0}
    train_events = [event for event in events if event.kind == "train"]
    assert [event.iteration for event in train_events] == [1, 2] and {event.total for event in events} == {2}
    assert all(event.loss is not None and event.loss > 0 and "it_per_s" in event.values for event in train_events)
    validation = [event for event in events if event.kind == "validation"]
    assert len(validation) == 1 and 0.0 <= validation[0].dice <= 1.0
    assert job.state == "completed" and job.error is None and job.progress == (2, 2) and job.poll() == []
    # The child took its snapshot before the label was saved: case_02 stayed unlabeled for it.
    training = load_checkpoint(job.out_dir / "model.json")[1].training
    assert "case_02" not in training["label_versions"] and training["unlabeled_cases"] == ["case_02"]

    measured: dict[str, float] = {}
    monkeypatch.setattr(promote_module, "validation_dice", _scored_by(job, -1.0, measured))
    outcome = job.finish(project_root)
    assert 0.0 <= measured["old"] <= 1.0 and 0.0 <= measured["new"] <= 1.0
    assert outcome.old_dice == measured["old"] and outcome.new_dice == pytest.approx(measured["new"] - 1.0)
    assert outcome.state == "completed" and not outcome.promoted
    assert outcome.old_version == outcome.active_version == old.name and outcome.new_version
    active, after = _registry(project_root)
    assert active.id == old.id and len(after) == len(before) + 1
    new = next(version for version in after if version.name == outcome.new_version)
    assert not new.is_active and new.parent_id == old.id and new.method == "supervised"
    assert job.finish(project_root) is outcome  # once only: no second registration
    assert json.loads(json.dumps(outcome.as_dict()))["promoted"] is False


def test_killed_retrain_fails_and_changes_nothing(project_root: Path) -> None:
    old, before = _registry(project_root)
    job = RetrainJob.start(project_root, iterations=LONG, overrides=TINY, device="cpu")
    job.kill()
    assert job.wait(30) == "failed"
    assert job.error == "killed by signal 9"
    events = job.poll()
    assert events[-1].kind == "state" and events[-1].values["error"] == "killed by signal 9"
    outcome = job.finish(project_root)
    assert (outcome.state, outcome.new_version, outcome.promoted) == ("failed", None, False)
    assert outcome.active_version == old.name and outcome.error == "killed by signal 9"
    assert _registry(project_root) == (old, before)


def test_cancel_stops_gracefully_and_registers_nothing(project_root: Path) -> None:
    old, before = _registry(project_root)
    # Cancelled before the child could install its handler: nothing ran, still "cancelled".
    early = RetrainJob.start(project_root, iterations=LONG, overrides=TINY, device="cpu")
    early.cancel()
    assert early.wait(30) == "cancelled" and early.error is None

    job = RetrainJob.start(project_root, iterations=LONG, overrides=TINY, device="cpu")
    events = _follow(job, until=lambda seen: any(event.kind == "train" for event in seen))
    job.cancel()
    assert job.cancel_requested
    events += _follow(job)
    assert job.state == "cancelled" and job.error is None
    assert "cancelled" in [event.kind for event in events] and events[-1].values["state"] == "cancelled"
    iteration, total = job.progress
    assert 1 <= iteration < total == LONG
    # The run checkpointed where it stopped (resumable with `train --resume`) and exited normally.
    assert json.loads(resume_paths(job.out_dir)[1].read_text())["iteration"] == iteration
    assert read_log(job.log_path)[-1]["kind"] == "cancelled"
    outcome = job.finish(project_root)
    assert (outcome.state, outcome.new_version, outcome.active_version) == ("cancelled", None, old.name)
    assert _registry(project_root) == (old, before)


def test_retrain_command_prints_the_outcome(
    project_root: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    old, before = _registry(project_root)
    started: list[RetrainJob] = []
    measured: dict[str, float] = {}

    class Recorded(RetrainJob):
        @classmethod
        def start(cls, *args: object, **kwargs: object) -> RetrainJob:
            job = RetrainJob.start(*args, **kwargs)
            started.append(job)
            monkeypatch.setattr(promote_module, "validation_dice", _scored_by(job, +1.0, measured))
            return job

    monkeypatch.setattr(job_module, "RetrainJob", Recorded)
    settings = [f"--set={item}" for item in [*TINY, "batchnorm_batches=2"]]
    out = project_root.parent / "cli-run"
    argv = ["retrain", str(project_root), "--iterations", "2", "--device", "cpu", "--out", str(out), *settings]
    assert main(argv) == 0
    printed = capsys.readouterr()
    assert "retraining" in printed.err and started[0].out_dir == out
    lines = dict(line.split(None, 1) for line in printed.out.splitlines() if line.strip() and " " in line)
    active, after = _registry(project_root)
    assert len(after) == len(before) + 1 and active.id != old.id and active.parent_id == old.id
    assert lines["promoted"] == f"yes: {active.name} is now the active model"
    assert f"(validation Dice {measured['old']:.4f})" in lines["old"] and old.name in lines["old"]
    assert f"{active.name} (validation Dice {measured['new'] + 1.0:.4f})" in lines["new"]
    step = next(record for record in read_log(out / "log.jsonl") if record["kind"] == "batchnorm")
    kept = "kept" if step["adopted"] else "not kept"
    assert lines["BatchNorm"].startswith(f"statistics of {step['cases']} training cases {kept}")


def test_retrain_command_needs_an_active_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = make_tiny_project(tmp_path / "untrained")
    assert main(["retrain", str(root)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "no active model" in err[0]
    assert not any((root / "runs").iterdir())  # nothing was started
    assert main(["retrain", str(tmp_path / "nowhere")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_a_retrain_trains_on_one_core_fewer_while_the_gui_computes(
    project_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # the child's own count, whatever this machine has
    with core_sharing.computing():
        job = RetrainJob.start(project_root, iterations=LONG, overrides=TINY, device="cpu")
        assert (job.out_dir / SHARE_FILE).exists()
        shared = _follow(job, lambda seen: sum(event.kind == "train" for event in seen) >= 2)
    try:
        assert not (job.out_dir / SHARE_FILE).exists()
        threads = [event.values["threads"] for event in shared if event.kind == "train"]
        assert threads and set(threads) == {1}
        back = _follow(job, lambda seen: any(e.kind == "train" and e.values["threads"] == 2 for e in seen))
        assert any(event.kind == "train" and event.values["threads"] == 2 for event in back)
    finally:
        job.cancel()
        job.wait(60)
    assert job.state == "cancelled"
    job.poll()
    with core_sharing.computing():
        assert not (job.out_dir / SHARE_FILE).exists()  # the ended child is no longer signalled
