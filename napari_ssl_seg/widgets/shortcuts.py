"""Keyboard shortcuts for the frequent actions, bound on the viewer once per session.

Shift-letter keys: napari's layer tools use the bare letters (brush, fill, erase...), so the
annotator's hands stay on the same keys they already know.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from napari.utils.notifications import show_warning

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


def _save_unless_empty(session: AssistSession) -> None:
    layer = session.label_layer
    if layer is not None and not np.any(layer.data):
        # A key press is too easy to make by accident for a save that marks the case labeled with nothing.
        show_warning("the label is empty: not saved (the Label dock's Save asks before saving an empty label)")
        return
    session.save_label(session.author)


def install_shortcuts(viewer: Any, session: AssistSession) -> None:
    actions = {
        "Shift-N": session.open_next_case,
        "Shift-S": lambda: _save_unless_empty(session),
        "Shift-U": lambda: _toggle_overlay(session),
        "Shift-R": session.goto_region,
    }
    for key, action in actions.items():
        guarded = report_errors(action)
        viewer.bind_key(key, lambda _viewer, run=guarded: run(), overwrite=True)
