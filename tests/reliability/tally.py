"""Counts the reliability suite reports at the end of the run (see ``conftest.py``)."""

from __future__ import annotations

from collections import Counter

TALLY: Counter[str] = Counter()
# Distinct malformed inputs refused cleanly by every interface that was tried on them.
REJECTED: set[str] = set()


def summary_line() -> str | None:
    if not (REJECTED or TALLY):
        return None
    return (
        f"reliability: {len(REJECTED)} malformed inputs rejected cleanly "
        f"({TALLY['checks']} checks through info, init, predict and the napari reader), "
        f"{TALLY['pickles']} hostile pickles refused unexecuted, {TALLY['fuzzed']} fuzzed files handled, "
        f"{TALLY['kills']} kills survived, {TALLY['versions']} label versions verified, "
        f"{TALLY['faults']} disk-full/permission faults contained"
    )
