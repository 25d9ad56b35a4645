"""Keep Python's full garbage collections short in a long-lived process such as napari's.

A full (generation 2) collection walks every container object the process holds. With napari,
torch, MONAI and matplotlib imported that is millions of objects, and ``benchmarks/gui_latency.py``
timed single full collections at 374 ms and 541 ms: the whole interpreter stops meanwhile, so the
GUI thread stalls whichever thread triggered the collection. :func:`freeze_startup_objects` moves
what exists once the plugin is loaded (modules, classes, napari's and torch's own state) into the
permanent generation, which later collections skip.

The price: a reference cycle among those frozen objects is never collected. They are made once at
start-up and live as long as the process, so the cost is bounded; objects made later (layers,
predictions, figures) are collected as before. Freezing happens once per process, before the
first case opens, so no layer or image array is ever frozen.
"""

from __future__ import annotations

import gc

__all__ = ["freeze_startup_objects"]

_frozen = False


def freeze_startup_objects() -> bool:
    """Collect once, then freeze every object alive now; True the first time, False after."""
    global _frozen
    if _frozen:
        return False
    _frozen = True
    gc.collect()  # what is garbage now would otherwise be frozen with the rest
    gc.freeze()
    return True
