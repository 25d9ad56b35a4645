"""One :class:`AssistSession` per viewer, found by every dock widget of that viewer.

Kept apart from the session itself so the session and the keyboard shortcuts it installs do not
import each other. Each dock registers itself when it opens; when the plugin's last dock is
destroyed, its process-wide GC tuning is undone.
"""

from __future__ import annotations

from typing import Any

from napari_ssl_seg.runtime.gc_pauses import freeze_startup_objects, release_startup_objects
from napari_ssl_seg.widgets.session import AssistSession
from napari_ssl_seg.widgets.shortcuts import install_shortcuts

__all__ = ["open_docks", "session_for"]

_sessions: dict[int, AssistSession] = {}
_open_docks: set[int] = set()  # ids of the live dock widgets, in every viewer


def _unwrapped(viewer: Any) -> Any:
    """The viewer behind napari's ``PublicOnlyProxy``.

    napari hands each dock opened from the Plugins menu a proxy of its own around the one viewer,
    so neither ``id`` nor ``is`` of what a dock receives names the viewer: unwrapped, every dock of
    a viewer finds the same session, whatever order they are opened in.
    """
    inner = getattr(viewer, "__wrapped__", None)
    while inner is not None and inner is not viewer:
        viewer, inner = inner, getattr(inner, "__wrapped__", None)
    return viewer


def session_for(viewer: Any, owner: Any = None) -> AssistSession:
    """The one session of ``viewer`` (made on first use), shared by every dock widget.

    ``owner``, a dock's QWidget, counts as open until its ``destroyed`` signal: while any dock of
    the plugin is open, the start-up heap stays frozen (runtime/gc_pauses.py).
    """
    viewer = _unwrapped(viewer)
    session = _sessions.get(id(viewer))
    if session is None or session.viewer is not viewer:
        session = _sessions[id(viewer)] = AssistSession(viewer)
        install_shortcuts(viewer, session)
    if owner is not None and id(owner) not in _open_docks:
        if not _open_docks:
            # The first dock: napari, torch and the core are imported by now.
            freeze_startup_objects()
        _open_docks.add(id(owner))
        owner.destroyed.connect(lambda *_: _dock_closed(id(owner)))
    return session


def _dock_closed(owner: int) -> None:
    _open_docks.discard(owner)
    if not _open_docks:
        release_startup_objects()


def open_docks() -> int:
    """How many of the plugin's docks are open, in every viewer."""
    return len(_open_docks)
