"""Label dock: save the corrected Labels layer as a new version, restore any earlier one.

A label map the lab already has becomes a version too: from a file (Attach label file…) or from a
layer already open in the viewer (Use selected layer as label). Either is checked against the
case's geometry (shape, spacing, origin, direction) and the project's classes before it is saved.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from napari.utils.notifications import show_info
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import (
    QCheckBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from napari_ssl_seg.errors import InputError
from napari_ssl_seg.io import Volume, read_volume
from napari_ssl_seg.layers import volume_from_layer
from napari_ssl_seg.store.project import default_author
from napari_ssl_seg.widgets.background import report_errors
from napari_ssl_seg.widgets.session import AssistSession
from napari_ssl_seg.widgets.viewer_sessions import session_for

__all__ = ["LabelWidget"]

VERSION_COLUMNS = ("version", "author", "kind", "saved", "edit s", "changed voxels")


class LabelWidget(QWidget):
    """Versioned saving of the annotator's corrections, with the effort each version took."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.session: AssistSession = session_for(napari_viewer, self)
        self.author = QLineEdit(default_author())
        self.state = QLabel("no case open")
        self.save_button = QPushButton("Save label version")
        self.restore_button = QPushButton("Restore selected version")
        self.restore_button.setToolTip("its content becomes a new version: nothing is ever overwritten")
        self.attach_file_button = QPushButton("Attach label file…")
        self.attach_file_button.setToolTip("a label map of this case (NIfTI, NRRD, MHA, DICOM SEG is not read)")
        self.attach_layer_button = QPushButton("Use selected layer as label")
        self.attach_layer_button.setToolTip("an Image or Labels layer open in the viewer, on this case's grid")
        self.outline = QCheckBox("outline labels")
        self.outline.setToolTip("draw each class as its border only; filled, large classes are drawn lighter")
        self.table = QTableWidget(0, len(VERSION_COLUMNS))
        self.table.setHorizontalHeaderLabels(VERSION_COLUMNS)
        self.table.verticalHeader().setVisible(False)
        self.table.setSelectionBehavior(QTableWidget.SelectRows)
        self.table.setEditTriggers(QTableWidget.NoEditTriggers)
        form = QFormLayout()
        form.addRow("author", self.author)
        form.addRow("", self.outline)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.state)
        layout.addWidget(self.save_button)
        attach = QHBoxLayout()
        attach.addWidget(self.attach_file_button)
        attach.addWidget(self.attach_layer_button)
        layout.addLayout(attach)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.restore_button)
        #: Decides what happens to unsaved edits when the case is left: "save", "discard" or "cancel".
        self.ask_leave = self._ask_leave_dialog
        #: Whether to save a label with no foreground voxel (True: save it); tests answer it.
        self.confirm_empty = self._confirm_empty_dialog
        self.session.author = self.author.text()
        self.author.textChanged.connect(lambda text: setattr(self.session, "author", text.strip() or None))
        self.save_button.clicked.connect(report_errors(self.save))
        self.restore_button.clicked.connect(report_errors(self.restore_selected))
        self.attach_file_button.clicked.connect(report_errors(self._choose_label_file))
        self.attach_layer_button.clicked.connect(report_errors(self.attach_selected_layer))
        self.outline.toggled.connect(report_errors(self.set_outline, arguments=1))
        self.session.case_opened.connect(self.refresh)
        self.session.labels_saved.connect(self.refresh)
        self.session.project_changed.connect(self.refresh)
        self.session.leaving_case.connect(self._leaving)
        # The edit clock has no signal of its own; a slow poll keeps the "unsaved" line honest.
        self.timer = QTimer(self)
        self.timer.setInterval(1000)
        self.timer.timeout.connect(self._update_state)
        self.timer.start()
        self.refresh()

    def set_outline(self, outline: bool) -> None:
        self.session.label_contours = bool(outline)
        layer = self.session.label_layer
        if layer is not None:
            layer.contour = 1 if outline else 0

    def save(self) -> Any:
        """Save the Labels layer; an empty one only after the user confirms (it would mark the case labeled)."""
        layer = self.session.label_layer
        case = self.session.case
        if layer is not None and case is not None and not np.any(layer.data) and not self.confirm_empty(case):
            show_info("not saved: the label is empty")
            return None
        return self.session.save_label(self.author.text().strip() or None)

    def _confirm_empty_dialog(self, case: str) -> bool:
        answer = QMessageBox.question(
            self,
            "Empty label",
            f"The label of {case} has no labeled voxel. Saving it marks {case} as labeled with nothing in it "
            "(training then learns that the case holds only background). Save it anyway?",
            QMessageBox.Save | QMessageBox.Cancel,
            QMessageBox.Cancel,
        )
        return answer == QMessageBox.Save

    def _choose_label_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Label map of this case")
        if path:
            self.attach_file(path)

    def attach_file(self, path: str | Path) -> Any:
        """Save the label map in ``path`` as a new version of the open case."""
        self._require_case()
        return self.attach(read_volume(Path(path)), Path(path).name)

    def attach_selected_layer(self) -> Any:
        """Save the selected layer (Image or Labels, not the case's own label layer) as a new version."""
        self._require_case()
        layer = self.viewer.layers.selection.active
        if layer is None or layer is self.session.label_layer or layer._type_string not in ("image", "labels"):
            raise InputError("select the Image or Labels layer that holds this case's label map in the layer list")
        return self.attach(volume_from_layer(np.asarray(layer.data), layer.as_layer_data_tuple()[1]), layer.name)

    def _require_case(self) -> None:
        self.session.require_project()
        if self.session.case is None or self.session.label_layer is None:
            raise InputError("open a case first: the label map is attached to the open case")

    def attach(self, volume: Volume, source: str) -> Any:
        """Check ``volume`` against the case and the project's classes, save it, show it in the Labels layer."""
        session, case = self.session, self.session.case
        project = session.require_project()
        names = project.label_names()
        values = np.unique(np.asarray(volume.array))
        if names and (unknown := [int(v) for v in values if v != 0 and int(v) not in names]):
            known = ", ".join(f"{k} {v}" for k, v in sorted(names.items()))
            raise InputError(f"{source} has label values {unknown} that are not classes of this project ({known})")
        if not np.any(volume.array) and not self.confirm_empty(case):
            show_info("not attached: the label map is empty")
            return None
        version = project.save_label(case, volume, author=self.author.text().strip() or None, kind="import")
        session.label_layer.data = np.asarray(volume.array).astype(np.uint8, copy=True)
        session.clock.reset()
        session.labels_saved.emit(case)
        show_info(f"{source} attached to {case} as label version {version.version}")
        return version

    def restore_selected(self) -> Any:
        row = self.table.currentRow()
        if row < 0:
            raise ValueError("select the version to restore in the table")
        version = int(self.table.item(row, 0).text())
        return self.session.restore_version(version, self.author.text().strip() or None)

    def _ask_leave_dialog(self, case: str) -> str:
        answer = QMessageBox.question(
            self,
            "Unsaved label edits",
            f"{case} has unsaved edits. Save them as a new label version before leaving?",
            QMessageBox.Save | QMessageBox.Discard | QMessageBox.Cancel,
            QMessageBox.Save,
        )
        return {QMessageBox.Save: "save", QMessageBox.Discard: "discard"}.get(answer, "cancel")

    def _leaving(self, case: str) -> None:
        choice = self.ask_leave(case)
        if choice == "save":
            self.save()
        elif choice != "discard":
            self.session.leave_vetoed = True

    def _update_state(self) -> None:
        if self.session.case is None:
            self.state.setText("no case open")
            return
        clock = self.session.clock
        if clock.dirty:
            edits = f"{clock.edits} strokes, {clock.seconds:.0f} s active"
            self.state.setText(f"{self.session.case}: unsaved edits ({edits})")
        else:
            self.state.setText(f"{self.session.case}: no unsaved edits")

    def refresh(self, *_args: Any) -> None:
        self._update_state()
        project, case = self.session.project, self.session.case
        versions = project.label_versions(case) if project is not None and case is not None else []
        self.table.setRowCount(len(versions))
        for row, version in enumerate(reversed(versions)):
            cells = (
                str(version.version),
                version.author,
                version.kind,
                version.created_at[:19],
                "" if version.edit_seconds is None else f"{version.edit_seconds:.0f}",
                "" if version.changed_voxels is None else str(version.changed_voxels),
            )
            for column, text in enumerate(cells):
                self.table.setItem(row, column, QTableWidgetItem(text))
