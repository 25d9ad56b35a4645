"""A training child shares the CPU cores with the process that started it while that process computes.

A retrain runs in a child process with one compute thread per core; the GUI process meanwhile predicts a
case or ranks the project on one thread (``widgets/background.py``). Three compute threads on two cores
do not share the cores as three: the child's OpenMP team (libgomp) spins at every barrier waiting for a
member that is off its core, and measured on the 2-core CPU (the ``quick`` V-Net's training step, a probe
recorded in docs/benchmarks.md) the training fell from 13.4 to 2.6 iterations/s beside a one-thread
job, which itself ran at 6.9; with the training on one thread too, both ran at 9.1-9.2. Bursts of GUI
work (a quarter of a core) cost the two-thread team much less (10.3 it/s against 7.9 on one thread),
so the child keeps every core until real compute starts beside it, and gets them back when that ends. While
both compute they split the cores: the child takes half (rounded down, at least one), the starting process's
work the rest (:func:`compute_threads`); on two cores, one each.

The signal is a file: the starting process names it in the child's environment (:data:`ENVIRONMENT`)
and holds it while it computes (:func:`computing`); the child looks for it before every iteration
(:class:`CoreShare`, one ``stat`` call) and sets its thread count. A file, because the child must not
depend on the parent staying alive: a parent that dies while computing leaves the file, and the child
then finishes on half its threads: slower, never wrong. Thread counts change the order of floating-point sums, so
a run that shared its cores is not bit-identical to one that did not.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import torch

__all__ = ["ENVIRONMENT", "CoreShare", "compute_threads", "computing", "share_with", "stop_sharing_with"]

#: The variable that names a child's signal file.
ENVIRONMENT = "NAPARI_SSL_SEG_SHARE_FILE"

_lock = threading.Lock()
_computing = 0
_children: set[Path] = set()


def _raise(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.touch()


def _lower(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink(missing_ok=True)


def compute_threads(cores: int) -> int:
    """Threads for work in the starting process: one core left for its GUI thread, and the half a child keeps."""
    with _lock:
        sharing = bool(_children)
    return max(1, cores - max(1, cores // 2) if sharing else cores - 1)


def share_with(path: Path) -> None:
    """Signal through ``path`` from now on (a child was started with it in its environment)."""
    with _lock:
        _children.add(path)
        if _computing:
            _raise(path)


def stop_sharing_with(path: Path) -> None:
    """The child of ``path`` has ended: stop signalling and remove the file."""
    with _lock:
        _children.discard(path)
    _lower(path)


@contextlib.contextmanager
def computing() -> Iterator[None]:
    """While any thread of this process is inside, every child started with :func:`share_with` shares the cores."""
    global _computing
    with _lock:
        _computing += 1
        if _computing == 1:
            for path in _children:
                _raise(path)
    try:
        yield
    finally:
        with _lock:
            _computing -= 1
            if _computing == 0:
                for path in _children:
                    _lower(path)


class CoreShare:
    """In the child: half its threads (rounded down, at least one) while the signal file exists, all otherwise."""

    def __init__(self, path: Path | None, threads: int | None = None) -> None:
        self.path = path
        self.threads = threads or torch.get_num_threads()
        self.current = self.threads

    @classmethod
    def from_environment(cls) -> CoreShare:
        named = os.environ.get(ENVIRONMENT)
        return cls(Path(named) if named else None)

    def __enter__(self) -> CoreShare:
        return self

    def __exit__(self, *exc: object) -> None:
        """Every thread back (a run in this same process leaves the count as it found it)."""
        if self.current != self.threads:
            torch.set_num_threads(self.threads)
            self.current = self.threads

    def update(self) -> int:
        """Set this process's compute threads from the signal; returns the count now in force."""
        if self.path is None:
            return self.current
        wanted = max(1, self.threads // 2) if self.path.exists() else self.threads
        if wanted != self.current:
            torch.set_num_threads(wanted)
            self.current = wanted
        return self.current
