"""The next iterations' batches drawn in a background thread while the current one trains.

A sampler whose ``batch(iteration)`` depends only on the iteration (``TwoStreamSampler``: its
generator is seeded per seed, rank and iteration) gives the same batches whether they are drawn
ahead or on demand, so prefetching changes timing only (``tests/test_prefetch.py``).

One thread rather than a ``torch.utils.data.DataLoader`` with worker processes: the cases are
already in memory as arrays (worker processes would copy or share them), cropping and flipping a
patch costs milliseconds, and NumPy, SciPy and MONAI's transforms release the GIL for their array
work. What matters on a GPU is that the device never waits for the host: batches are pinned in
the thread, so the copy to the device can be asynchronous.

On a CPU that trains with all its cores the thread does not pay: torch's intra-op threads and the
drawing thread compete for the same cores. Measured on the 2-core development CPU
(``benchmarks/speed_against.py --baseline 23190e3``, the same tree without the thread, two rounds):
supervised 0.70x and 0.83x, UCMT 0.80x. So the loop draws ahead on CUDA only (``depth=0`` draws on
the calling thread, as a plain call would).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Generic, TypeVar

import torch

__all__ = ["BatchPrefetcher"]

Item = TypeVar("Item")


def _pinned(item: object) -> object:
    if isinstance(item, torch.Tensor):
        return item.pin_memory()
    if isinstance(item, tuple):
        return tuple(_pinned(part) for part in item)
    if isinstance(item, dict):
        return {key: _pinned(value) for key, value in item.items()}
    return item


class BatchPrefetcher(Generic[Item]):
    """``get(i)`` returns ``draw(i)``, drawn ``depth`` iterations ahead in one background thread.

    ``depth=0``: no thread, every batch drawn by ``get`` itself. ``stop``: the first iteration
    never drawn ahead (the run's last + 1). ``pin_memory``: page-lock the drawn tensors for
    asynchronous copies to a CUDA device. An exception in ``draw`` is raised by the ``get`` of its
    iteration. Use as a context manager, or call :meth:`close`.
    """

    def __init__(self, draw: Callable[[int], Item], *, stop: int, depth: int = 2, pin_memory: bool = False) -> None:
        if depth < 0:
            raise ValueError(f"depth must not be negative, got {depth}")
        self._draw = draw
        self._stop = int(stop)
        self._depth = depth
        self._pin_memory = pin_memory
        self._pending: dict[int, Future[Item]] = {}
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="batch-prefetch") if depth else None

    def _drawn(self, iteration: int) -> Item:
        item = self._draw(iteration)
        return _pinned(item) if self._pin_memory else item  # type: ignore[return-value]

    def _schedule(self, iteration: int) -> None:
        if self._executor is not None and iteration < self._stop and iteration not in self._pending:
            self._pending[iteration] = self._executor.submit(self._drawn, iteration)

    def get(self, iteration: int) -> Item:
        # Iterations skipped over (a resume, a caller that jumps) are dropped, not kept forever.
        for stale in [key for key in self._pending if key < iteration]:
            self._pending.pop(stale).cancel()
        self._schedule(iteration)
        future = self._pending.pop(iteration, None)
        for ahead in range(iteration + 1, iteration + 1 + self._depth):
            self._schedule(ahead)
        if future is None:  # no thread, or past stop: drawn here, as a plain call would
            return self._drawn(iteration)
        return future.result()

    def close(self) -> None:
        for future in self._pending.values():
            future.cancel()
        self._pending.clear()
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    def __enter__(self) -> BatchPrefetcher[Item]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
