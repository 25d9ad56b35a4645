"""Project dock: open, create or import a project; the case table in work order."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from napari_ssl_seg.active.ranking import score_queue_from_cache
from napari_ssl_seg.active.strategies import STRATEGIES
from napari_ssl_seg.store.splits import set_split
from napari_ssl_seg.widgets.background import report_errors, run_in_background
from napari_ssl_seg.widgets.session import AssistSession
from napari_ssl_seg.widgets.viewer_sessions import session_for

__all__ = ["ProjectWidget"]

COLUMNS = ("case", "split", "status", "score", "corrected", "last author", "labeled at")
CORRECTED_TIP = (
    "voxels the annotators changed from the teacher's prediction, as a share of the voxels labeling the case "
    "from scratch would paint"
)


def _import_project(root: str, images: str, labels: str | None, progress: Any) -> Path:
    from napari_ssl_seg.store.importer import import_into_new_project

    project = import_into_new_project(
        Path(root), Path(images), None if labels is None else Path(labels), progress=progress
    )
    project.close()
    return Path(root)


class ProjectWidget(QWidget):
    """Open/create/import a project and list its cases; double-click opens a case."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.session: AssistSession = session_for(napari_viewer, self)
        self.path_edit = QLineEdit()
        self.path_edit.setPlaceholderText("project folder")
        self.open_button = QPushButton("Open…")
        self.create_button = QPushButton("New…")
        self.import_button = QPushButton("Import folder…")
        self.import_button.setToolTip("a folder of images (and labels paired by name) or a Decathlon dataset")
        self.strategy_box = QComboBox()
        self.strategy_box.addItems(STRATEGIES)
        self.strategy_box.setCurrentText(self.session.strategy)
        self.split_button = QPushButton("Move to validation")
        self.split_button.setToolTip(
            "the selected case: validation cases choose the teacher, training cases teach it; test cases are only "
            "ever evaluated"
        )
        self.summary = QLabel("no project open")
        self.summary.setWordWrap(True)  # else its width sets the dock's minimum
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.horizontalHeaderItem(COLUMNS.index("corrected")).setToolTip(CORRECTED_TIP)
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeToContents)

        buttons = QHBoxLayout()
        for button in (self.open_button, self.create_button, self.import_button):
            buttons.addWidget(button)
        strategy_row = QHBoxLayout()
        strategy_row.addWidget(QLabel("order by"))
        strategy_row.addWidget(self.strategy_box, 1)
        layout = QVBoxLayout(self)
        layout.addWidget(self.path_edit)
        layout.addLayout(buttons)
        layout.addLayout(strategy_row)
        layout.addWidget(self.summary)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.split_button)

        self.path_edit.returnPressed.connect(report_errors(lambda: self.open_project(self.path_edit.text())))
        self.open_button.clicked.connect(report_errors(lambda: self._choose(create=False)))
        self.create_button.clicked.connect(report_errors(lambda: self._choose(create=True)))
        self.import_button.clicked.connect(report_errors(self._choose_import))
        self.strategy_box.currentTextChanged.connect(report_errors(self._set_strategy, arguments=1))
        self.table.cellDoubleClicked.connect(report_errors(self.open_row, arguments=1))
        self.table.itemSelectionChanged.connect(self._show_split_action)
        self.split_button.clicked.connect(report_errors(self.toggle_split))
        for signal in (
            self.session.project_changed,
            self.session.labels_saved,
            self.session.model_changed,
            self.session.prediction_shown,
            self.session.case_opened,
        ):
            signal.connect(self.refresh)
        self.session.project_changed.connect(self.score_queue)
        self.refresh()
        self.score_queue()

    # -- actions -------------------------------------------------------------------
    def _choose(self, *, create: bool) -> None:
        title = "New project folder" if create else "Open project folder"
        folder = QFileDialog.getExistingDirectory(self, title)
        if folder:
            self.open_project(folder, create=create)

    def open_project(self, folder: str | Path, *, create: bool = False) -> None:
        self.session.open_project(Path(folder).expanduser(), create=create)
        self.path_edit.setText(str(self.session.root))

    def _choose_import(self) -> None:
        images = QFileDialog.getExistingDirectory(self, "Folder of images, or a Decathlon dataset")
        if not images:
            return
        root = QFileDialog.getExistingDirectory(self, "Where to create the project (an empty folder)")
        if root:
            # Labels lie beside their images here (paired by name, as `init --images F --labels F` does);
            # a Decathlon folder says where its labels are in its dataset.json.
            decathlon = (Path(images) / "dataset.json").is_file()
            self.import_project(root, images, None if decathlon else images)

    def import_project(self, root: str, images: str, labels: str | None) -> Any:
        """Import in the background; the new project opens when it is done."""
        return run_in_background(
            _import_project,
            root,
            images,
            labels,
            description="importing cases",
            on_done=report_errors(self.open_project, arguments=1),
        )

    def _set_strategy(self, strategy: str) -> None:
        self.session.strategy = strategy
        self.refresh()
        self.score_queue()

    def score_queue(self, *_args: Any) -> Any:
        """Score predicted cases that lack the strategy's score (a project ranked by an earlier version) from
        their cached maps, off the GUI thread; returns the worker, or None when nothing lacks one."""
        if self.session.project is None:
            return None
        try:
            rows = self.session.rows()
        except Exception:  # a damaged project: refresh, on the same signals, says so once
            return None
        if not any(row.queued and row.status == "predicted" and row.score is None for row in rows):
            return None
        return run_in_background(
            score_queue_from_cache,
            self.session.project.root,
            self.session.strategy,
            description="scoring the queue from cached predictions",
            on_done=report_errors(lambda count: self.refresh() if count else None, arguments=1),
        )

    def open_row(self, row: int) -> None:
        item = self.table.item(row, 0)
        if item is not None:
            self.session.open_case(item.text())

    def _selected_case(self) -> tuple[str, str] | None:
        row = self.table.currentRow()
        name, split = self.table.item(row, 0), self.table.item(row, 1)
        return None if name is None or split is None else (name.text(), split.text())

    def _show_split_action(self) -> None:
        selected = self._selected_case() if self.table.currentRow() >= 0 else None
        split = selected[1] if selected else "train"
        self.split_button.setText("Move to training" if split in ("validation", "test") else "Move to validation")

    def toggle_split(self) -> None:
        """Move the selected case between training and validation (a test case moves to training)."""
        selected = self._selected_case() if self.table.currentRow() >= 0 else None
        if selected is None:
            raise ValueError("select a case in the table first")
        name, split = selected
        target = "train" if split in ("validation", "test") else "validation"
        set_split(self.session.require_project(), name, target)
        show_info(f"{name} is now a {'training' if target == 'train' else 'validation'} case")
        self.session.project_changed.emit()

    # -- view ------------------------------------------------------------------------
    def refresh(self, *_args: Any) -> None:
        if self.session.project is None:
            self.summary.setText("no project open")
            self.table.setRowCount(0)
            return
        try:
            rows = self.session.rows()
        except Exception as exc:  # a damaged project must not take the dock down
            show_error(f"cannot list cases: {exc}")
            return
        queued = sum(row.queued for row in rows)
        labeled = sum(row.status == "labeled" for row in rows)
        model = self.session.active_model()
        teacher = f"teacher {model.name}" if model else "no teacher yet"
        hint = "" if self.session.case else " Double-click a case to open it."
        self.summary.setText(f"{len(rows)} cases, {labeled} labeled, {queued} in the queue; {teacher}.{hint}")
        self.table.setRowCount(len(rows))
        for index, row in enumerate(rows):
            score = "" if row.score is None else f"{row.score:.4f}"
            corrected = "" if row.correction is None else f"{100 * row.correction:.1f}%"
            labeled_at = (row.labeled_at or "")[:19]
            cells = (row.name, row.split, row.status, score, corrected, row.author or "", labeled_at)
            for column, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if row.name == self.session.case:
                    font = item.font()
                    font.setBold(True)
                    item.setFont(font)
                if COLUMNS[column] in ("score", "corrected"):
                    item.setTextAlignment(Qt.AlignRight | Qt.AlignVCenter)
                self.table.setItem(index, column, item)
        self._show_split_action()
