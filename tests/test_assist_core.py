"""The GUI's core helpers without Qt: uncertain regions, the case table, the edit clock."""

from __future__ import annotations

import math

import numpy as np
import pytest

from napari_ssl_seg.active.effort import EditClock
from napari_ssl_seg.active.queue import CaseRow, next_case
from napari_ssl_seg.active.regions import default_threshold, uncertain_regions
from napari_ssl_seg.errors import InputError


def test_regions_are_ranked_by_summed_entropy_not_peak() -> None:
    entropy = np.zeros((20, 20, 20), dtype=np.float32)
    entropy[2, 2, 2] = 2.0  # one very uncertain voxel
    entropy[10:14, 10:14, 10:14] = 0.8  # 64 moderately uncertain voxels
    entropy[2:4, 15:17, 15:17] = 0.9  # 8 voxels
    regions = uncertain_regions(entropy, 0.5, spacing=(2.0, 1.0, 1.0))
    assert [r.voxels for r in regions] == [64, 8, 1]
    assert regions[0].summed_entropy == pytest.approx(64 * 0.8, rel=1e-5)
    assert regions[0].centre == pytest.approx((11.5, 11.5, 11.5))
    assert regions[0].bbox_start == (10, 10, 10) and regions[0].bbox_stop == (14, 14, 14)
    assert regions[0].volume_ml == pytest.approx(64 * 2.0 / 1000)
    assert [r.rank for r in regions] == [1, 2, 3]
    assert [r.voxels for r in uncertain_regions(entropy, 0.5, min_voxels=2)] == [64, 8]
    assert len(uncertain_regions(entropy, 0.5, limit=1)) == 1


def test_region_centre_is_weighted_towards_the_doubt() -> None:
    entropy = np.zeros((1, 1, 10), dtype=np.float32)
    entropy[0, 0, 0:4] = [0.6, 0.6, 0.6, 1.8]
    (region,) = uncertain_regions(entropy, 0.5)
    assert region.centre[2] == pytest.approx((0 * 0.6 + 1 * 0.6 + 2 * 0.6 + 3 * 1.8) / 3.6)


def test_regions_ignore_nan_and_refuse_2d_maps() -> None:
    entropy = np.full((3, 3, 3), np.nan, dtype=np.float32)
    assert uncertain_regions(entropy, 0.1) == []
    with pytest.raises(InputError):
        uncertain_regions(np.zeros((3, 3)), 0.1)
    assert default_threshold(2) == pytest.approx(0.5 * math.log(2))


def test_edit_clock_counts_active_time_only() -> None:
    now = [100.0]
    clock = EditClock(idle_cutoff=30.0, clock=lambda: now[0])
    assert not clock.dirty
    now[0] += 2
    clock.edit()  # the first edit counts the time since the case opened: 2 s of looking, not a flat 30 s
    now[0] += 5
    clock.edit()
    now[0] += 600  # a coffee break counts as the cutoff, not ten minutes
    clock.edit()
    assert clock.seconds == pytest.approx(2 + 5 + 30) and clock.edits == 3 and clock.dirty
    clock.reset()
    assert clock.seconds == 0 and not clock.dirty
    now[0] += 400  # opened, then left alone: the first edit counts at most the cutoff
    clock.edit()
    assert clock.seconds == pytest.approx(30)


def test_next_case_skips_the_open_case_and_non_queued_rows() -> None:
    rows = [
        CaseRow("a", "train", "predicted", 0.9, None, None),
        CaseRow("b", "train", "unlabeled", 0.5, None, None),
        CaseRow("c", "train", "labeled", None, "x", "t"),
        CaseRow("d", "test", "labeled", None, "x", "t"),
    ]
    assert next_case(rows) == "a"
    assert next_case(rows, current="a") == "b"
    assert next_case(rows[2:]) is None
