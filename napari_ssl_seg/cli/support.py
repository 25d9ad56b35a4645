"""Small pieces every CLI command shares: progress bars and warnings on stderr."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

__all__ = ["print_notes", "progress_bar"]


def print_notes(notes: Sequence[str]) -> None:
    for note in notes:
        print(f"warning: {note}", file=sys.stderr)


def progress_bar(description: str, unit: str = "case") -> Callable[[int, int, str], None]:
    """A tqdm bar on stderr driven by (done, total, item) callbacks from the core."""
    from tqdm import tqdm

    state: dict[str, tqdm] = {}

    def update(done: int, total: int, item: str) -> None:
        bar = state.get("bar")
        if bar is None:
            bar = state["bar"] = tqdm(total=total, desc=description, unit=unit, file=sys.stderr, leave=True)
        if item:
            bar.set_postfix_str(item, refresh=False)
        # update() honours tqdm's minimum redraw interval; a log file gets a few lines, not thousands.
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    return update


EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130
