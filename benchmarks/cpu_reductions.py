"""Two PyTorch CPU kernels the training losses avoid, timed against the form they use instead.

    .venv/bin/python benchmarks/cpu_reductions.py [--threads 2] [--repeats 10]

* the class argmax: ``argmax(dim)`` against ``max(dim).indices`` (``runtime/class_ids.py``) over
  the class axis of a ``quick`` training batch's scores and of one window of the papers' recipe;
* cross-entropy over voxels x classes: the (M, K) rows form against the (1, K, M) columns form the
  prototype loss uses (``methods/prototypes.py``), for the voxels of a ``quick`` batch.

Each pair is timed in the same process, median of ``--repeats``, and printed with its ratio; the
results of each pair are checked to be the same.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F


def _milliseconds(function: Callable[[], object], repeats: int) -> float:
    function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, median of {args.repeats}")
    print(f"{'what':<46} {'slow form ms':>12} {'used form ms':>12} {'ratio':>6}")
    for shape in ((4, 8, 16, 64, 64), (1, 8, 80, 112, 112)):
        scores = torch.randn(*shape, generator=generator)
        assert torch.equal(scores.argmax(dim=1), scores.max(dim=1).indices)
        slow = _milliseconds(lambda scores=scores: scores.argmax(dim=1), args.repeats)
        fast = _milliseconds(lambda scores=scores: scores.max(dim=1).indices, args.repeats)
        print(f"{'argmax vs max().indices ' + str(shape):<46} {slow:>12.2f} {fast:>12.2f} {slow / fast:>6.1f}")
    voxels, classes = 4 * 16 * 64 * 64, 8
    rows = torch.randn(voxels, classes, generator=generator)
    columns = rows.t().contiguous()[None]
    labels = torch.randint(0, classes, (voxels,), generator=generator)
    same = F.cross_entropy(rows, labels, reduction="none")
    assert torch.allclose(same, F.cross_entropy(columns, labels[None], reduction="none")[0], atol=1e-6)
    slow = _milliseconds(lambda: F.cross_entropy(rows, labels, reduction="none"), args.repeats)
    fast = _milliseconds(lambda: F.cross_entropy(columns, labels[None], reduction="none"), args.repeats)
    what = f"cross-entropy ({voxels}, {classes}) vs (1, {classes}, {voxels})"
    print(f"{what:<46} {slow:>12.2f} {fast:>12.2f} {slow / fast:>6.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
