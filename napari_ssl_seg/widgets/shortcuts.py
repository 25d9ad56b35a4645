"""Keyboard shortcuts for the frequent actions, bound on the viewer once per session.

Shift-letter keys: napari's layer tools use the bare letters (brush, fill, erase...), so the
annotator's hands stay on the same keys they already know.
"""

from __future__ import annotations

from typing import Any

from napari_ssl_seg.widgets.background import report_errors
from napari_ssl_seg.widgets.session import AssistSession

__all__ = ["SHORTCUTS", "install_shortcuts"]

SHORTCUTS = {
    "Shift-N": "open the next most uncertain case",
    "Shift-S": "save the label as a new version",
    "Shift-U": "show or hide the uncertainty overlay",
    "Shift-R": "go to the next uncertain region",
}


def _toggle_overlay(session: AssistSession) -> None:
    layer = session.uncertainty_layer
    if layer is not None:
        layer.visible = not layer.visible


def install_shortcuts(viewer: Any, session: AssistSession) -> None:
    actions = {
        "Shift-N": session.open_next_case,
        "Shift-S": lambda: session.save_label(session.author),
        "Shift-U": lambda: _toggle_overlay(session),
        "Shift-R": session.goto_region,
    }
    for key, action in actions.items():
        guarded = report_errors(action)
        viewer.bind_key(key, lambda _viewer, run=guarded: run(), overwrite=True)
