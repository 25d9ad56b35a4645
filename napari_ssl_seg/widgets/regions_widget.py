"""Uncertain-regions dock: where in the open case the teacher doubts, biggest doubt first."""

from __future__ import annotations

from typing import Any

from napari.utils.notifications import show_info
from qtpy.QtWidgets import QLabel, QListWidget, QPushButton, QVBoxLayout, QWidget

from napari_ssl_seg.widgets.background import report_errors
from napari_ssl_seg.widgets.session import AssistSession
from napari_ssl_seg.widgets.viewer_sessions import session_for

__all__ = ["RegionsWidget"]


class RegionsWidget(QWidget):
    """Lists the connected regions of the thresholded entropy map; jumps the view to them."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.session: AssistSession = session_for(napari_viewer, self)
        self.summary = QLabel("open a predicted case to see its uncertain regions")
        self.summary.setWordWrap(True)
        self.region_list = QListWidget()
        self.next_button = QPushButton("Next uncertain region")
        layout = QVBoxLayout(self)
        layout.addWidget(self.summary)
        layout.addWidget(self.next_button)
        layout.addWidget(self.region_list, 1)
        self.next_button.clicked.connect(report_errors(self.next_region))
        self.region_list.currentRowChanged.connect(report_errors(self._goto_row, arguments=1))
        self.session.regions_changed.connect(self.refresh)
        self.refresh()

    def refresh(self) -> None:
        regions = self.session.regions
        self.region_list.blockSignals(True)
        self.region_list.clear()
        self.region_list.addItems([region.describe() for region in regions])
        self.region_list.blockSignals(False)
        if self.session.entropy is None:
            self.summary.setText("open a predicted case to see its uncertain regions")
        else:
            total = sum(region.volume_ml for region in regions)
            threshold = self.session.threshold or 0.0
            self.summary.setText(
                f"{len(regions)} regions above {threshold:.3f} nats ({total:.1f} ml), most summed entropy first"
            )

    def next_region(self) -> None:
        region = self.session.goto_region()
        if region is None:
            show_info("no uncertain region above the threshold in this case")
            return
        self.region_list.blockSignals(True)
        self.region_list.setCurrentRow(self.session.region_index)
        self.region_list.blockSignals(False)

    def _goto_row(self, row: int) -> None:
        if row >= 0:
            self.session.goto_region(row)
