"""Retrain dock: one click retrains the teacher in its own process, with live curves and cancel.

A project with no teacher yet gets "Train first teacher" instead: a method (``supervised`` by
default) trained from scratch with the plan made from the project's own data (training/plan.py),
its budget shown with the time it takes, and any class the plan's spacing cannot resolve named
under the status; if no labeled case validates yet, one labeled case in five moves to the
validation split first (the dock says which; the Project dock moves cases back).

The training process (:class:`napari_ssl_seg.training.job.RetrainJob`) never shares the GUI's
interpreter, so the event loop stays responsive; a 250 ms timer reads its log. When it ends, the
old and new teachers are compared on the validation split off the GUI thread; the new one becomes
active only if it validates at least as well, and the queue is then re-ranked in the background.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import (
    QApplication,
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from napari_ssl_seg.inference.device import select_device
from napari_ssl_seg.methods.registry import available_methods
from napari_ssl_seg.runtime.child_process import ChildCommand
from napari_ssl_seg.store.splits import assign_validation
from napari_ssl_seg.training.batchnorm import statistics_summary
from napari_ssl_seg.training.budget import BUDGETS, estimate_gui_run_seconds, format_duration, project_rates
from napari_ssl_seg.training.config import preset
from napari_ssl_seg.training.job import RetrainJob
from napari_ssl_seg.training.plan import PLAN_WARNING, budget_for_device
from napari_ssl_seg.training.promote import RetrainOutcome
from napari_ssl_seg.widgets.background import in_event_loop_turns, report_errors
from napari_ssl_seg.widgets.plots import TrainingCurves
from napari_ssl_seg.widgets.session import AssistSession
from napari_ssl_seg.widgets.viewer_sessions import session_for

__all__ = ["RetrainWidget", "logged_loss"]

POLL_MS = 250
RETRAIN_ITERATIONS = 100


def logged_loss(values: dict[str, Any]) -> float | None:
    """The loss of a logged training record: ``loss``, or the mean of the steps' (UCMT logs ``step0/loss``...)."""
    if values.get("loss") is not None:
        return float(values["loss"])
    steps = [float(value) for key, value in values.items() if key.endswith("/loss") and value is not None]
    return sum(steps) / len(steps) if steps else None


class RetrainWidget(QWidget):
    """Start, watch and cancel a background retrain; promote the new teacher only if it is better."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.session: AssistSession = session_for(napari_viewer, self)
        self.job: RetrainJob | None = None
        self.outcome: Any = None
        self.statistics_note = ""  # what the run's end-of-run BatchNorm step found (training/batchnorm.py)
        self.finishing: Any = None
        self.reranking: Any = None
        self.finishing_steps = False
        self.method = QComboBox()
        self.method.addItem("same as the active teacher", None)
        for name in available_methods():
            self.method.addItem(name, name)
        self.iterations = QSpinBox()
        self.iterations.setRange(1, 100000)
        self.iterations.setValue(RETRAIN_ITERATIONS)
        self.estimate = QLabel("")
        self.estimate.setWordWrap(True)
        self.cold: bool | None = None  # no teacher yet: the button trains the first one
        self.started_at = 0.0
        self.start_button = QPushButton("Retrain teacher")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.bar = QProgressBar()
        self.bar.setFormat("%v / %m iterations")
        self.status = QLabel("labeled + unlabeled cases, fine-tuned from the active teacher")
        self.status.setWordWrap(True)
        # What the run's plan says its spacing cannot resolve: stays on show while the curves grow.
        self.limits = QLabel("")
        self.limits.setWordWrap(True)
        self.curves = TrainingCurves()
        form = QFormLayout()
        form.addRow("method", self.method)
        form.addRow("iterations", self.iterations)
        form.addRow("", self.estimate)
        buttons = QHBoxLayout()
        buttons.addWidget(self.start_button, 1)
        buttons.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.bar)
        layout.addWidget(self.status)
        layout.addWidget(self.limits)
        layout.addWidget(self.curves, 1)
        self.start_button.clicked.connect(report_errors(self.start))
        self.cancel_button.clicked.connect(report_errors(self.cancel))
        self.method.currentIndexChanged.connect(self._show_estimate)
        self.iterations.valueChanged.connect(self._show_estimate)
        self.session.project_changed.connect(self.refresh_mode)
        self.session.model_changed.connect(self.refresh_mode)
        self.timer = QTimer(self)
        self.timer.setInterval(POLL_MS)
        self.timer.timeout.connect(self.poll)
        self.child_timer = QTimer(self)
        self.child_timer.setInterval(POLL_MS)
        self.child_timer.timeout.connect(self._check_children)
        # A training process must not outlive the viewer that started it.
        application = QApplication.instance()
        if application is not None:
            application.aboutToQuit.connect(self.stop_job)

        self.refresh_mode()

    # -- mode ------------------------------------------------------------------------
    def refresh_mode(self, *_args: Any) -> None:
        """Retrain the active teacher, or train the first one when the project has none."""
        if self.job is not None and self.job.state == "running":
            return
        cold = self.session.project is not None and self.session.active_model() is None
        changed = cold != self.cold
        if changed:
            self.cold = cold
            self.method.setItemText(0, "supervised (no teacher yet)" if cold else "same as the active teacher")
            self.method.setCurrentIndex(0)
            self.iterations.setValue(preset("quick").iterations if cold else RETRAIN_ITERATIONS)
            self.start_button.setText("Train first teacher" if cold else "Retrain teacher")
        # A finished run's outcome stays on show, until another project is open.
        ours = self.job is not None and Path(self.job.project_root) == self.session.root
        if changed and not ours:
            self.status.setText(
                "no teacher yet: trains one from scratch on the labeled cases (and the unlabeled ones, for a "
                "semi-supervised method)"
                if cold
                else "labeled + unlabeled cases, fine-tuned from the active teacher"
            )
        self._show_estimate()

    def _chosen_method(self) -> str | None:
        chosen = self.method.currentData()
        if chosen is None:
            model = self.session.active_model() if self.session.project is not None else None
            return "supervised" if model is None else model.method
        return chosen

    def _show_estimate(self, *_args: Any) -> None:
        method = self._chosen_method()
        project = self.session.project
        cases = project.cases() if project is not None else []
        device = select_device("auto").type
        # A first teacher gets the plan's network; a retrain keeps the active teacher's.
        network = self.session.active_network() if project is not None else {}
        width = int(network.get("base_width", BUDGETS[budget_for_device(device)].base_width))
        # This machine's rate, once the project has a run of the method, as wide, on the device a retrain would use.
        measured = project_rates(project.root, device, base_width=width).get(method) if project else None
        seconds = (
            estimate_gui_run_seconds(
                method,
                self.iterations.value(),
                validate_every=preset("quick" if self.cold else "finetune").validate_every,
                validation_cases=max(1, sum(c.split == "validation" and c.is_labeled for c in cases)),
                ranked_cases=sum(c.split == "train" and not c.is_labeled for c in cases),
                measured=measured,
                base_width=width,
            )
            if method
            else None
        )
        if seconds is None:
            text = f"{method}: no measured time yet; the run shows its own estimate once it starts"
        elif measured is not None:
            text = (
                f"about {format_duration(seconds)}, validation and re-ranking included: {method} ran at "
                f"{measured.it_per_s:.1f} it/s on this machine (run {measured.run})"
            )
        else:
            text = (
                f"about {format_duration(seconds)} on a 2-core CPU, validation and re-ranking included "
                "(measured in this dock), less on a GPU"
            )
        self.estimate.setText(text)

    def stop_job(self) -> None:
        if self.job is not None and self.job.state == "running":
            self.job.cancel()

    # -- control ---------------------------------------------------------------------
    def start(self, overrides: list[str] | None = None) -> RetrainJob:
        """Start a retrain; ``overrides`` (``key=value``) reach the training config (tests shrink it)."""
        project = self.session.require_project()
        if self.job is not None and self.job.state == "running":
            raise ValueError("a retrain is already running")
        model = self.session.active_model()
        if model is None:
            moved = assign_validation(project)
            if moved:
                show_info(
                    f"{', '.join(moved)} moved to the validation split: the teacher is chosen on it "
                    "(the Project dock moves a case back)"
                )
                self.session.project_changed.emit()
        self.session.in_training = {case.name for case in project.cases() if case.is_labeled}
        self.job = RetrainJob.start(
            project.root,
            method=self._chosen_method(),
            init_model="active" if model is not None else None,
            iterations=self.iterations.value(),
            overrides=list(overrides or []),
        )
        self.started_at = time.monotonic()
        self.outcome = None
        self.statistics_note = ""
        self.limits.setText("")
        self.curves.clear()
        self.bar.setRange(0, self.iterations.value())
        self.bar.setValue(0)
        self.start_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.status.setText(f"training in process {self.job.pid}; keep labeling, your saves are safe")
        self.session.project_changed.emit()
        self.timer.start()
        return self.job

    def cancel(self) -> None:
        if self.job is not None and self.job.state == "running":
            self.job.cancel()
            self.status.setText("cancelling: the run saves a checkpoint and stops")

    # -- watching -----------------------------------------------------------------------
    def poll(self) -> None:
        job = self.job
        if job is None:
            return
        try:
            events = job.poll()
        except Exception as exc:  # an unreadable log must not stop the timer's owner, the GUI
            events = []
            show_warning(f"cannot read the training log: {exc}")
        for event in events:
            values = event.values or {}
            loss = logged_loss(values) if event.kind == "train" else None
            if loss is not None:
                self.curves.add_loss(event.iteration, loss)
            elif event.kind == "validation" and values.get("dice") is not None:
                self.curves.add_dice(event.iteration, float(values["dice"]))
            elif event.kind == "note" and str(values.get("message", "")).startswith(PLAN_WARNING):
                self._show_limit(str(values["message"]).removeprefix(PLAN_WARNING))
            elif event.kind == "batchnorm":
                self.statistics_note = statistics_summary(values)
        if events:
            model = self.session.active_model()
            self.curves.redraw(baseline=None if model is None else model.validation_dice)
        done, total = job.progress
        if total:
            self.bar.setRange(0, total)
        self.bar.setValue(done)
        if job.state == "running":
            if done and done == total:  # the last validation and the BatchNorm step (training/batchnorm.py)
                self.bar.setFormat("%v / %m iterations, finishing the run…")
            elif done and total:
                elapsed = time.monotonic() - self.started_at
                left = format_duration(elapsed / done * (total - done))
                self.bar.setFormat(f"%v / %m iterations, about {left} left")
            return
        self.bar.setFormat("%v / %m iterations")
        self.timer.stop()
        self.cancel_button.setEnabled(False)
        if job.state == "completed":
            found = f" ({self.statistics_note})" if self.statistics_note else ""
            self.status.setText(f"training done{found}; comparing the old and new teachers on the validation split…")
            root = self.session.require_project().root
            parent = ["--parent", job.parent_version] if job.parent_version else []
            self.finishing = ChildCommand(
                "napari_ssl_seg.training.promote", str(root), str(job.out_dir), *parent, "--device", job.device
            )
            self.child_timer.start()
        elif job.state == "cancelled":
            self._ended("cancelled; the active teacher is unchanged")
            show_info("retrain cancelled; the active teacher is unchanged")
        else:
            message = job.error or "the training process failed"
            self._ended(f"failed: {message}; the active teacher is unchanged")
            show_error(f"retrain failed: {message}")

    def _show_limit(self, warning: str) -> None:
        show_warning(warning)
        shown = self.limits.text() or "What this run's spacing cannot resolve:"
        self.limits.setText(f"{shown}\n• {warning}")

    def _ended(self, text: str) -> None:
        self.status.setText(text)
        self.start_button.setEnabled(True)
        self.session.in_training = set()
        self.session.project_changed.emit()

    def _finished(self, outcome: Any) -> None:
        self.outcome = outcome
        old = "n/a" if outcome.old_dice is None else f"{outcome.old_dice:.4f}"
        new = "n/a" if outcome.new_dice is None else f"{outcome.new_dice:.4f}"
        if outcome.promoted and outcome.old_version is None:
            text = f"first teacher {outcome.new_version} is active: validation Dice {new}"
        elif outcome.promoted:
            text = f"new teacher {outcome.new_version} is active: validation Dice {new} vs {old} (old one kept)"
        else:
            text = f"kept {outcome.old_version}: the new teacher validated {new} vs {old}"
        if self.statistics_note:
            text += f"; {self.statistics_note}"
        self._ended(text)
        steps = [lambda: show_info(text), self.session.model_changed.emit]
        if outcome.promoted:
            steps.append(self.rerank)
        self.finishing_steps = True
        in_event_loop_turns(steps, done=lambda: setattr(self, "finishing_steps", False))

    @property
    def busy(self) -> bool:
        """A training run, its validation, the promotion's follow-up or a re-rank is under way."""
        # Until the timer has seen the run end, its outcome is not handled yet, however the process stands.
        running = self.timer.isActive() or (self.job is not None and self.job.state == "running")
        reranking = self.reranking is not None and not self.reranking.reported
        return running or self.finishing is not None or self.finishing_steps or reranking

    def rerank(self) -> ChildCommand:
        root = self.session.require_project().root
        self.reranking = ChildCommand(
            "napari_ssl_seg.cli", "rank", str(root), "--strategy", self.session.strategy, "--json"
        )
        self.status.setText(self.status.text() + "; re-ranking the queue…")
        self.child_timer.start()
        return self.reranking

    def _check_children(self) -> None:
        finishing, reranking = self.finishing, self.reranking
        if finishing is not None and not finishing.is_running:
            self.finishing = None
            result, error = finishing.result()
            if error is not None:
                show_error(f"validating the new teacher failed: {error}")
                self._ended("validation of the new teacher failed; the old one stays active")
            else:
                self._finished(RetrainOutcome(**{**result, "out_dir": Path(result["out_dir"])}))
        if reranking is not None and not reranking.is_running and not reranking.reported:
            reranking.reported = True
            result, error = reranking.result()
            if error is not None:
                show_error(f"re-ranking failed: {error}")
            else:
                self.session.model_changed.emit()
                self.status.setText(self.status.text().replace("; re-ranking the queue…", "; queue re-ranked"))
                show_info(f"re-ranked {len(result.get('queue', []))} cases with the new teacher")
        if self.finishing is None and (self.reranking is None or self.reranking.reported):
            self.child_timer.stop()
