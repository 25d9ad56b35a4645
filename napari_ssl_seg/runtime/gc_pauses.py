"""Keep Python's full garbage collections short while the plugin's docks are open in napari.

A full (generation 2) collection walks every container object the process holds. With napari,
torch, MONAI and matplotlib imported that is millions of objects, and ``benchmarks/gui_latency.py``
timed single full collections at 374 ms and 541 ms: the whole interpreter stops meanwhile, so the
GUI thread stalls whichever thread triggered the collection. :func:`freeze_startup_objects` moves
what exists once the plugin is loaded (modules, classes, napari's and torch's own state) into the
permanent generation, which later collections skip.

napari's process is shared with every other plugin, so the freeze is scoped: it is skipped when
something else froze objects already (that owner decides), and :func:`release_startup_objects`
undoes it when the plugin's last dock closes, leaving the collector as the plugin found it.
While frozen, a reference cycle among the frozen objects is not collected; objects made later
(layers, predictions, figures) are collected as before.
"""

from __future__ import annotations

import gc

__all__ = ["freeze_startup_objects", "frozen_by_us", "release_startup_objects"]

_frozen = False


def frozen_by_us() -> bool:
    return _frozen


def freeze_startup_objects() -> bool:
    """Collect once, then freeze every object alive now; True if this call froze them."""
    global _frozen
    if _frozen or gc.get_freeze_count() > 0:
        return False
    _frozen = True
    gc.collect()  # what is garbage now would otherwise be frozen with the rest
    gc.freeze()
    return True


def release_startup_objects() -> bool:
    """Undo :func:`freeze_startup_objects`; True if it had frozen objects."""
    global _frozen
    if not _frozen:
        return False
    _frozen = False
    gc.unfreeze()
    return True
