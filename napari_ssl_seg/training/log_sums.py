"""The training loop's logs, summed where they are computed and read only when a record is written.

A method's logs are 0-d tensors on the training device (``methods/base.LossOutput``). Turning one
into a Python number makes the host wait until the device has run everything queued before it: on
CUDA, a synchronisation per step that leaves the GPU idle while the next batch is prepared. The
sums stay on the device; :meth:`LogSums.means` reads them all in one transfer, at the loop's log,
validation and checkpoint points.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from napari_ssl_seg.errors import InputError

__all__ = ["LogSums"]


class LogSums:
    """Running sums of the per-iteration logs since the last record, and the iterations they cover."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.sums: dict[str, float | torch.Tensor] = {}
        self.count = 0
        self.started = time.perf_counter()

    def add(self, logs: dict[str, float | torch.Tensor]) -> None:
        """Add one iteration's logs (tensors are summed in float32 where they live)."""
        for key, value in logs.items():
            value = value.detach().float() if isinstance(value, torch.Tensor) else value
            self.sums[key] = self.sums[key] + value if key in self.sums else value
        self.count += 1

    @property
    def rate(self) -> float:
        """Iterations per second since the last :meth:`reset`."""
        return self.count / max(time.perf_counter() - self.started, 1e-9)

    def means(self, iteration: int, *, check_losses: bool = True) -> dict[str, float]:
        """The mean of every log since the last reset, as numbers; the sums are kept.

        With ``check_losses``, a non-finite mean of a ``loss`` entry (``loss``, ``step1/loss``)
        raises :class:`InputError`: some iteration since the last record diverged. The loop asks
        before every validation and checkpoint, so diverged weights are never exported or saved.
        """
        names = list(self.sums)
        if not names:
            return {}
        values = torch.stack([torch.as_tensor(self.sums[n], dtype=torch.float32).cpu() for n in names]).tolist()
        means = {name: value / max(self.count, 1) for name, value in zip(names, values, strict=True)}
        for name, value in means.items():
            if check_losses and name.rsplit("/", 1)[-1] == "loss" and not np.isfinite(value):
                raise InputError(f"training diverged: loss is {value} by iteration {iteration} (try a lower lr)")
        return means
