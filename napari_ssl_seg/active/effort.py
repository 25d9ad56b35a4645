"""Active editing time: the real measure of annotation effort, stored with each label version.

Wall-clock time with a case open overstates effort (coffee, phone calls); the clock counts the gap
between consecutive edits only up to an idle cutoff, so a pause longer than the cutoff adds just
the cutoff. The first edit after opening or saving counts the time since then, capped the same way
(looking at the case before the first stroke is work too; a flat 30 s for it overstated a quick fix).
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["EditClock"]


class EditClock:
    """Accumulates active editing seconds from edit events.

    ``idle_cutoff``: the longest gap between two edits that still counts as work.
    ``clock``: a monotonic time source (injectable for tests).
    """

    def __init__(self, idle_cutoff: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        if idle_cutoff <= 0:
            raise ValueError("idle_cutoff must be positive")
        self.idle_cutoff = idle_cutoff
        self._clock = clock
        self._last = clock()
        self.seconds = 0.0
        self.edits = 0

    def edit(self) -> None:
        """Record one edit (a brush stroke, a fill, an erase)."""
        now = self._clock()
        gap = now - self._last
        self.seconds += min(max(gap, 0.0), self.idle_cutoff)
        self._last = now
        self.edits += 1

    @property
    def dirty(self) -> bool:
        """Whether anything was edited since the last :meth:`reset`."""
        return self.edits > 0

    def reset(self) -> None:
        """Start counting afresh (after a save, or when another case opens)."""
        self._last = self._clock()
        self.seconds = 0.0
        self.edits = 0
