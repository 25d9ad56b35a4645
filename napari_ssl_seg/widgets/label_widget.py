"""Label dock: save the corrected Labels layer as a new version, restore any earlier one."""

from __future__ import annotations

from typing import Any

from qtpy.QtCore import QTimer
from qtpy.QtWidgets import (
    QFormLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from napari_ssl_seg.store.project import default_author
from napari_ssl_seg.widgets.background import report_errors
from napari_ssl_seg.widgets.session import AssistSession, session_for

__all__ = ["LabelWidget"]

VERSION_COLUMNS = ("version", "author", "kind", "saved", "edit s", "changed voxels")


class LabelWidget(QWidget):
    """Versioned saving of the annotator's corrections, with the effort each version took."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.session: AssistSession = session_for(napari_viewer)
        self.author = QLineEdit(default_author())
        self.state = QLabel("no case open")
        self.save_button = QPushButton("Save label version")
        self.restore_button = QPushButton("Restore selected version")
        self.restore_button.setToolTip("its content becomes a new version: nothing is ever overwritten")
        self.table = QTableWidget(0, len(VERSION_COLUMNS))
        self.table.setHorizontalHeaderLabels(VERSION_COLUMNS)
        self.table.verticalHeader().setVisible(False)
        self.table.setSelectionBehavior(QTableWidget.SelectRows)
        self.table.setEditTriggers(QTableWidget.NoEditTriggers)
        form = QFormLayout()
        form.addRow("author", self.author)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.state)
        layout.addWidget(self.save_button)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.restore_button)
        #: Decides what happens to unsaved edits when the case is left: "save", "discard" or "cancel".
        self.ask_leave = self._ask_leave_dialog
        self.session.author = self.author.text()
        self.author.textChanged.connect(lambda text: setattr(self.session, "author", text.strip() or None))
        self.save_button.clicked.connect(report_errors(self.save))
        self.restore_button.clicked.connect(report_errors(self.restore_selected))
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

    def save(self) -> Any:
        return self.session.save_label(self.author.text().strip() or None)

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
