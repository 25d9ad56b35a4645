"""Batches drawn ahead in a thread (training/prefetch.py) are the batches drawn on demand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_ssl_seg.methods.sdf import signed_distances
from napari_ssl_seg.training.data import CaseData
from napari_ssl_seg.training.prefetch import BatchPrefetcher
from napari_ssl_seg.training.sampler import TwoStreamSampler


def _sampler() -> TwoStreamSampler:
    rng = np.random.default_rng(0)
    cases = [
        CaseData(
            f"case{index}",
            rng.normal(size=(10, 24, 24)).astype(np.float32),
            rng.integers(0, 3, size=(10, 24, 24)),
            (4.0, 1.0, 1.0),
        )
        for index in range(3)
    ]
    return TwoStreamSampler(
        cases,
        cases[:1],
        patch_size=(4, 8, 8),
        batch_labeled=2,
        batch_unlabeled=1,
        seed=5,
        foreground_fraction=0.5,
        num_classes=3,
        case_target=lambda label: signed_distances(label, 3),
    )


def test_prefetched_batches_equal_batches_drawn_on_demand() -> None:
    plain = _sampler()
    expected = [plain.batch(iteration) for iteration in range(12)]
    # A fresh sampler: its lazily filled caches (class indices, case targets) are built in the prefetch thread.
    with BatchPrefetcher(_sampler().batch, stop=12, depth=3) as prefetcher:
        # 0-4, then a jump as a resumed run makes, then past the end.
        drawn = {iteration: prefetcher.get(iteration) for iteration in (*range(5), *range(8, 12))}
    for iteration, batch in drawn.items():
        assert all(torch.equal(a, b) for a, b in zip(batch, expected[iteration], strict=True)), iteration


def test_a_failing_draw_is_raised_by_the_get_of_its_iteration() -> None:
    def draw(iteration: int) -> int:
        if iteration == 2:
            raise ValueError("bad case")
        return iteration * 10

    with BatchPrefetcher(draw, stop=5) as prefetcher:
        assert prefetcher.get(0) == 0 and prefetcher.get(1) == 10
        with pytest.raises(ValueError, match="bad case"):
            prefetcher.get(2)
        assert prefetcher.get(3) == 30
        assert prefetcher.get(7) == 70  # past stop: drawn on demand


def test_depth_zero_draws_on_the_calling_thread() -> None:
    import threading

    threads = []

    def draw(iteration: int) -> int:
        threads.append(threading.current_thread())
        return iteration

    with BatchPrefetcher(draw, stop=3, depth=0) as prefetcher:
        assert [prefetcher.get(i) for i in range(3)] == [0, 1, 2]
    assert threads == [threading.current_thread()] * 3
    with pytest.raises(ValueError, match="depth"):
        BatchPrefetcher(draw, stop=3, depth=-1)
