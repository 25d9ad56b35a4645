"""Teacher dock: the active model, prediction of the open case, the uncertainty overlay's controls.

"Load teacher…" registers a model file (a shipped teacher, a colleague's) and makes it active. A
teacher whose card does not fit the project or the image (classes, CT or not, spacing; see
``inference/fit.py``) is said so in a warning when it is loaded, before a prediction and after it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSlider,
    QVBoxLayout,
    QWidget,
)

from napari_ssl_seg.active.case_prediction import CasePrediction, predict_case
from napari_ssl_seg.active.regions import UncertainRegion, default_threshold, entropy_histogram
from napari_ssl_seg.errors import InputError
from napari_ssl_seg.inference.fit import fit_warnings
from napari_ssl_seg.networks.checkpoint import ModelCard, checkpoint_paths
from napari_ssl_seg.runtime.child_process import ChildCommand
from napari_ssl_seg.store.models import activate_model, model_versions, register_model
from napari_ssl_seg.widgets.background import report_errors, run_in_background
from napari_ssl_seg.widgets.plots import EntropyHistogram
from napari_ssl_seg.widgets.region_view import find_uncertain_regions
from napari_ssl_seg.widgets.session import AssistSession
from napari_ssl_seg.widgets.viewer_sessions import session_for

__all__ = ["TeacherWidget", "adaptation_summary", "predict_for_display"]

ADAPT_POLL_MS = 250


@dataclass
class DisplayedPrediction:
    result: CasePrediction
    regions: list[UncertainRegion]
    histogram: tuple[np.ndarray, np.ndarray] | None


def predict_for_display(
    root: Path, case: str, *, samples: int, threshold: float, top: float, progress: Any = None
) -> DisplayedPrediction:
    """Predict, then find the regions and the histogram too: all of it off the GUI thread.

    In a worker thread, not a child process: a child measured worse in ``benchmarks/gui_latency.py``
    (prediction phase 21.8 s against 3.5 s in a thread, about 6 s of it importing torch and MONAI; longest stall 227 ms,
    and 444 ms beside a retrain, whose process then shared two cores with the child's threads).
    """
    result = predict_case(root, case, samples=samples, progress=progress)
    if result.entropy is None:
        return DisplayedPrediction(result, [], None)
    regions = find_uncertain_regions(result.entropy, threshold)
    return DisplayedPrediction(result, regions, entropy_histogram(result.entropy.array, top))


class TeacherWidget(QWidget):
    """Predict the open case off the GUI thread and tune how its uncertainty is shown."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.session: AssistSession = session_for(napari_viewer, self)
        self.worker: Any = None
        self.model_label = QLabel("no teacher")
        self.model_label.setWordWrap(True)
        self.versions = QComboBox()
        # Version names are long; at their full length the combo box would set the dock's width.
        self.versions.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        self.versions.setMinimumContentsLength(16)
        self.activate_button = QPushButton("Make active (roll back)")
        self.load_button = QPushButton("Load teacher…")
        self.load_button.setToolTip("a model file (.safetensors with its .json card): registered and made active")
        self.adapt_button = QPushButton("Adapt to this project's scans")
        self.adapt_button.setToolTip(
            "re-estimate the teacher's BatchNorm statistics over the project's training scans (no labels needed, "
            "a minute or two on a CPU): a new version, active if it validates at least as well; roll back above"
        )
        self.adapting: ChildCommand | None = None
        self.adapt_timer = QTimer(self)
        self.adapt_timer.setInterval(ADAPT_POLL_MS)
        self.adapt_timer.timeout.connect(self._check_adapting)
        self.shown_warnings: set[str] = set()
        self.samples = QComboBox()
        self.samples.addItems(["4", "8", "16"])
        self.samples.setCurrentText("8")
        self.predict_button = QPushButton("Predict this case")
        self.next_button = QPushButton("Next most uncertain case")
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.show_overlay = QCheckBox("show uncertainty")
        self.show_overlay.setChecked(True)
        self.opacity = QSlider(Qt.Horizontal)
        self.opacity.setRange(0, 100)
        self.opacity.setValue(70)
        self.threshold = QDoubleSpinBox()
        self.threshold.setDecimals(3)
        self.threshold.setSingleStep(0.02)
        self.threshold.setRange(0.0, 5.0)
        self.histogram = EntropyHistogram()

        versions_row = QHBoxLayout()
        versions_row.addWidget(self.versions, 1)
        versions_row.addWidget(self.activate_button)
        form = QFormLayout()
        form.addRow("MC samples", self.samples)
        form.addRow("overlay opacity", self.opacity)
        form.addRow("threshold (nats)", self.threshold)
        layout = QVBoxLayout(self)
        layout.addWidget(self.model_label)
        layout.addLayout(versions_row)
        layout.addWidget(self.load_button)
        layout.addWidget(self.adapt_button)
        layout.addWidget(self.predict_button)
        layout.addWidget(self.next_button)
        layout.addWidget(self.status)
        layout.addWidget(self.show_overlay)
        layout.addLayout(form)
        layout.addWidget(self.histogram)
        layout.addStretch(1)

        self.predict_button.clicked.connect(report_errors(self.predict))
        self.next_button.clicked.connect(report_errors(self.next_case))
        self.activate_button.clicked.connect(report_errors(self.activate_selected))
        self.load_button.clicked.connect(report_errors(self._choose_teacher))
        self.adapt_button.clicked.connect(report_errors(self.adapt))
        self.show_overlay.toggled.connect(self._set_overlay_visible)
        self.opacity.valueChanged.connect(self._set_opacity)
        self.threshold.valueChanged.connect(report_errors(self._set_threshold, arguments=1))
        self.session.model_changed.connect(self.refresh_model)
        self.session.project_changed.connect(self.refresh_model)
        self.session.case_opened.connect(self._case_opened)
        self.session.prediction_shown.connect(self._case_opened)
        self.refresh_model()

    # -- teacher -----------------------------------------------------------------------
    def refresh_model(self, *_args: Any) -> None:
        self.versions.clear()
        self.adapt_button.setEnabled(False)
        project = self.session.project
        if project is None:
            self.model_label.setText("no project open")
            return
        versions = model_versions(project)
        active = next((v for v in versions if v.is_active), None)
        for version in versions:
            dice = "n/a" if version.validation_dice is None else f"{version.validation_dice:.3f}"
            self.versions.addItem(f"{version.name} ({version.method}, Dice {dice})", version.name)
        if active is None:
            self.model_label.setText("no teacher yet: load one (Load teacher…) or train one in the Retrain dock")
            return
        self.versions.setCurrentIndex(self.versions.findData(active.name))
        self.adapt_button.setEnabled(self.adapting is None)
        dice = "n/a" if active.validation_dice is None else f"{active.validation_dice:.3f}"
        self.model_label.setText(
            f"active teacher <b>{active.name}</b><br>{active.method}, {active.created_at[:16]}, validation Dice {dice}"
        )

    def _choose_teacher(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Teacher model", "", "Model (*.safetensors *.json)")
        if path:
            self.load_teacher(path)

    def load_teacher(self, path: str | Path) -> Any:
        """Register the model file at ``path`` in the project and make it the active teacher."""
        project = self.session.require_project()
        version = register_model(project, Path(path), activate=True)
        show_info(
            f"teacher {version.name} ({version.method}) is active; "
            "'Adapt to this project's scans' fits its BatchNorm statistics to your scans, no labels needed"
        )
        self.shown_warnings.clear()
        self._warn(self._fit(self.session.case, read_values=True), self.session.case)
        self.session.model_changed.emit()
        return version

    def _fit(self, case: str | None, *, read_values: bool = False) -> list[str]:
        """What the active teacher's card says against the project and the case (its record; its voxels too
        with ``read_values``, which reads the image: CT or not is then known without a modality tag)."""
        project = self.session.require_project()
        model = self.session.active_model()
        if model is None:
            return []
        card_path = checkpoint_paths(model.checkpoint(project))[1]
        card = ModelCard.from_json(card_path.read_text(encoding="utf-8"), source=str(card_path))
        record = project.case(case) if case is not None else None
        minimum = None
        if record is not None and read_values:
            array = project.read_image(record.name).array
            minimum = float(np.nanmin(array)) if array.size else None
        return fit_warnings(
            card,
            project_classes=project.label_names(),
            modality=record.modality if record is not None else None,
            minimum=minimum,
            spacing=record.spacing if record is not None else None,
        )

    def _warn(self, warnings: list[str], case: str | None = None) -> None:
        for warning in warnings:
            if warning not in self.shown_warnings:
                self.shown_warnings.add(warning)
                show_warning(f"{case}: {warning}" if case else f"teacher: {warning}")

    def activate_selected(self) -> None:
        name = self.versions.currentData()
        if name:
            version = activate_model(self.session.require_project(), name)
            show_info(f"teacher {version.name} is active")
            self.session.model_changed.emit()

    def adapt(self) -> ChildCommand:
        """Adapt the active teacher in a child process (``napari-ssl-seg adapt``): the GUI thread only polls."""
        project = self.session.require_project()
        if self.session.active_model() is None:
            raise InputError("no active teacher to adapt: load one (Load teacher…) or train one in the Retrain dock")
        self.adapting = ChildCommand("napari_ssl_seg.cli", "adapt", str(project.root), "--json")
        self.adapt_button.setEnabled(False)
        self.status.setText("adapting the teacher to this project's scans…")
        self.adapt_timer.start()
        return self.adapting

    def _check_adapting(self) -> None:
        adapting = self.adapting
        if adapting is None or adapting.is_running:
            return
        self.adapt_timer.stop()
        self.adapting = None
        self.refresh_model()
        result, error = adapting.result()
        if error is not None or result is None:
            self.status.setText(f"adapting failed: {error}; the active teacher is unchanged")
            show_error(f"adapting the teacher failed: {error}")
            return
        self.status.setText(adaptation_summary(result))
        show_info(self.status.text())
        self.session.model_changed.emit()

    # -- prediction ----------------------------------------------------------------------
    def predict(self) -> Any:
        root = self.session.require_project().root
        case = self.session.case
        if case is None:
            raise ValueError("open a case first (double-click it in the Project dock)")
        if self.worker is not None and self.worker.is_running:
            show_info("a prediction is already running")
            return self.worker
        self.shown_warnings.clear()
        self._warn(self._fit(case), case)
        self.predict_button.setEnabled(False)
        self.status.setText(f"predicting {case}…")
        classes = self.session.num_classes()
        threshold = self.session.threshold if self.session.threshold is not None else default_threshold(classes)
        self.worker = run_in_background(
            predict_for_display,
            root,
            case,
            samples=int(self.samples.currentText()),
            threshold=threshold,
            top=math.log(classes),
            description=f"predicting {case}",
            on_done=self._predicted,
            on_error=lambda _exc: self._finished(""),
        )
        return self.worker

    def _finished(self, text: str) -> None:
        self.predict_button.setEnabled(True)
        self.status.setText(text)

    def _predicted(self, shown: DisplayedPrediction) -> None:
        result = shown.result
        score = result.scores.get(self.session.strategy)
        scored = "" if score is None else f", {self.session.strategy} {score:.4f}"
        self._finished(f"{result.case}: {result.seconds:.1f} s on {result.device}{scored}")
        self._warn(result.notes, result.case)
        self.session.show_prediction(
            result.case, result.label, result.entropy, regions=shown.regions, histogram=shown.histogram, staged=True
        )

    def next_case(self) -> None:
        self.session.open_next_case()

    # -- overlay ---------------------------------------------------------------------------
    def _case_opened(self, *_args: Any) -> None:
        entropy = self.session.entropy
        top = math.log(self.session.num_classes()) if self.session.project is not None else 1.0
        self.threshold.blockSignals(True)
        self.threshold.setMaximum(top)
        if self.session.threshold is not None:
            self.threshold.setValue(self.session.threshold)
        self.threshold.blockSignals(False)
        layer = self.session.uncertainty_layer
        if layer is not None:
            layer.visible = self.show_overlay.isChecked()
            layer.opacity = self.opacity.value() / 100
        self.histogram.show_values(None if entropy is None else self.session.histogram, self.threshold.value())

    def _set_overlay_visible(self, visible: bool) -> None:
        layer = self.session.uncertainty_layer
        if layer is not None:
            layer.visible = visible

    def _set_opacity(self, value: int) -> None:
        layer = self.session.uncertainty_layer
        if layer is not None:
            layer.opacity = value / 100

    def _set_threshold(self, value: float) -> None:
        self.session.set_threshold(value)
        self._case_opened()


def adaptation_summary(outcome: dict[str, Any]) -> str:
    """One line for ``napari-ssl-seg adapt --json``'s outcome."""
    new, old, cases = outcome["new_version"], outcome["old_version"], outcome["cases"]
    if not outcome.get("validated"):
        return f"{new} is active: adapted to {cases} training scans, not validated (no labeled validation case)"
    scores = f"validation Dice {outcome['new_dice']:.3f} vs {outcome['old_dice']:.3f}"
    if outcome.get("promoted"):
        return f"{new} is active: adapted to {cases} training scans, {scores} ({old} kept for rollback)"
    return f"kept {old}: the teacher adapted to {cases} training scans validated lower ({scores})"
