"""Segmentation metrics (mm distances, empty-mask failures) and uncertainty-quality scores."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from napari_ssl_seg.evaluation.metrics import ClassMetrics, case_metrics, format_table, summarise
from napari_ssl_seg.evaluation.uncertainty_quality import error_detection_auroc, expected_calibration_error, spearman


def cube(shape: tuple[int, int, int] = (14, 14, 14), lo: int = 4, hi: int = 10, label: int = 1) -> np.ndarray:
    out = np.zeros(shape, dtype=np.uint8)
    out[lo:hi, lo:hi, lo:hi] = label
    return out


# --- case_metrics -------------------------------------------------------------------------------


def test_identical_masks_are_perfect() -> None:
    ref = cube()
    m = case_metrics(ref.copy(), ref, (1.0, 1.0, 1.0), [1])[1]
    assert m == ClassMetrics(1.0, 1.0, 0.0, 0.0, "ok")


@pytest.mark.parametrize(("axis", "expected_mm"), [(0, 3.0), (1, 1.0), (2, 1.0)])
def test_hd95_uses_anisotropic_spacing(axis: int, expected_mm: float) -> None:
    # A one-voxel shift moves the surface by one voxel along `axis`: 3 mm along z at spacing (3, 1, 1), 1 mm in-plane.
    ref = cube()
    pred = np.roll(ref, 1, axis=axis)
    m = case_metrics(pred, ref, (3.0, 1.0, 1.0), [1])[1]
    assert m.status == "ok"
    assert m.hd95_mm == pytest.approx(expected_mm)
    assert 0.0 < m.asd_mm <= m.hd95_mm
    # Symmetric ASD: swapping prediction and reference changes nothing.
    assert case_metrics(ref, pred, (3.0, 1.0, 1.0), [1])[1].asd_mm == pytest.approx(m.asd_mm)


def test_distances_scale_with_isotropic_spacing() -> None:
    ref = cube()
    pred = np.roll(ref, 2, axis=2)
    one = case_metrics(pred, ref, (1.0, 1.0, 1.0), [1])[1]
    half = case_metrics(pred, ref, (0.5, 0.5, 0.5), [1])[1]
    assert one.hd95_mm == pytest.approx(2.0)
    assert half.hd95_mm == pytest.approx(1.0)
    assert half.asd_mm == pytest.approx(one.asd_mm / 2)


def test_dice_and_jaccard_of_overlapping_boxes_match_hand_count() -> None:
    ref = np.zeros((10, 10, 10), dtype=np.int16)
    pred = np.zeros_like(ref)
    ref[1:5, 1:6, 1:7] = 1  # 4 * 5 * 6 = 120 voxels
    pred[3:7, 2:6, 1:7] = 1  # 4 * 4 * 6 = 96 voxels
    overlap = 2 * 4 * 6  # [3:5, 2:6, 1:7] = 48 voxels
    m = case_metrics(pred, ref, (1.0, 1.0, 1.0), [1])[1]
    assert m.dice == pytest.approx(2 * overlap / (120 + 96))  # 0.444...
    assert m.jaccard == pytest.approx(overlap / (120 + 96 - overlap))  # 2 / 7


def test_multiclass_classes_are_scored_separately() -> None:
    ref = np.zeros((12, 12, 12), dtype=np.int32)
    ref[1:5, 1:5, 1:5] = 1
    ref[7:11, 7:11, 7:11] = 2
    pred = ref.copy()
    pred[pred == 2] = 0  # class 2 missed entirely
    result = case_metrics(pred, ref, (1.0, 1.0, 1.0), [1, 2, 3])
    assert result[1].status == "ok" and result[1].dice == 1.0
    assert result[2].status == "empty_prediction"
    assert result[3].status == "both_empty"


def test_empty_mask_conventions() -> None:
    ref = cube()
    empty = np.zeros_like(ref)
    spacing = (1.0, 1.0, 1.0)
    missed = case_metrics(empty, ref, spacing, [1])[1]
    assert missed.status == "empty_prediction" and missed.failed
    assert (missed.dice, missed.jaccard) == (0.0, 0.0)
    assert math.isinf(missed.hd95_mm) and math.isinf(missed.asd_mm)

    hallucinated = case_metrics(ref, empty, spacing, [1])[1]
    assert hallucinated.status == "empty_reference" and hallucinated.failed
    assert hallucinated.dice == 0.0 and math.isinf(hallucinated.hd95_mm)

    nothing = case_metrics(empty, empty, spacing, [1])[1]
    assert nothing == ClassMetrics(1.0, 1.0, 0.0, 0.0, "both_empty")
    assert not nothing.failed


@pytest.mark.parametrize(
    ("pred", "ref", "spacing", "classes"),
    [
        (np.zeros((4, 4, 4), np.uint8), np.zeros((4, 4, 5), np.uint8), (1, 1, 1), [1]),
        (np.zeros((4, 4), np.uint8), np.zeros((4, 4), np.uint8), (1, 1, 1), [1]),
        (np.zeros((4, 4, 4), np.float32), np.zeros((4, 4, 4), np.uint8), (1, 1, 1), [1]),
        (np.zeros((4, 4, 4), np.uint8), np.zeros((4, 4, 4), np.uint8), (1, 1), [1]),
        (np.zeros((4, 4, 4), np.uint8), np.zeros((4, 4, 4), np.uint8), (1, 0, 1), [1]),
        (np.zeros((4, 4, 4), np.uint8), np.zeros((4, 4, 4), np.uint8), (1, 1, 1), []),
    ],
)
def test_case_metrics_rejects_bad_input(pred, ref, spacing, classes) -> None:
    with pytest.raises(ValueError):
        case_metrics(pred, ref, spacing, classes)


# --- summarise / format_table -------------------------------------------------------------------


def make_cohort() -> dict[str, dict[int, ClassMetrics]]:
    ref = cube()
    spacing = (1.0, 1.0, 1.0)
    return {
        "case_a": case_metrics(ref.copy(), ref, spacing, [1]),  # perfect
        "case_b": case_metrics(np.roll(ref, 2, axis=2), ref, spacing, [1]),  # HD95 2 mm
        "case_c": case_metrics(np.zeros_like(ref), ref, spacing, [1]),  # failure
    }


def test_summarise_lists_failures_and_keeps_them_out_of_distance_means() -> None:
    per_case = make_cohort()
    summary = summarise(per_case)
    cls = summary["classes"]["1"]
    # Dice over all three cases, the failure counting as 0.
    expected_dice = (1.0 + per_case["case_b"][1].dice + 0.0) / 3
    assert cls["dice_mean"] == pytest.approx(expected_dice)
    # Distances over the two measured cases only: (0 + 2) / 2, not (0 + 2 + 0) / 3 nor infinity.
    assert cls["hd95_mm_mean"] == pytest.approx(1.0)
    assert cls["n_distance"] == 2 and cls["n"] == 3 and cls["n_failures"] == 1
    assert cls["status_counts"]["empty_prediction"] == 1
    assert summary["failures"] == [{"case": "case_c", "class": 1, "status": "empty_prediction"}]
    assert summary["n_failures"] == 1
    assert summary["overall"]["hd95_mm_mean"] == pytest.approx(1.0)
    json.dumps(summary, allow_nan=False)  # no inf / NaN anywhere


def test_summarise_all_failed_gives_null_distance_and_both_empty_is_optional() -> None:
    failed = {"x": {1: ClassMetrics(0.0, 0.0, math.inf, math.inf, "empty_prediction")}}
    summary = summarise(failed)
    assert summary["classes"]["1"]["hd95_mm_mean"] is None
    assert summary["classes"]["1"]["asd_mm_mean"] is None
    json.dumps(summary, allow_nan=False)

    mixed = {
        "x": {1: ClassMetrics(1.0, 1.0, 0.0, 0.0, "both_empty")},
        "y": {1: ClassMetrics(0.8, 0.7, 4.0, 1.0, "ok")},
    }
    assert summarise(mixed)["classes"]["1"]["hd95_mm_mean"] == pytest.approx(4.0)
    assert summarise(mixed, both_empty_in_distance_mean=True)["classes"]["1"]["hd95_mm_mean"] == pytest.approx(2.0)


def test_class_metrics_to_dict_is_json_safe() -> None:
    d = ClassMetrics(0.0, 0.0, math.inf, math.inf, "empty_prediction").to_dict()
    assert d["hd95_mm"] is None and d["status"] == "empty_prediction"
    json.dumps(d, allow_nan=False)


def test_format_table_shows_failures() -> None:
    per_case = make_cohort()
    text = format_table(per_case, summarise(per_case), {1: "left_atrium"})
    assert "left_atrium" in text
    assert "case_c" in text and "inf" in text and "empty_prediction" in text
    assert "failures (1" in text
    assert "distances over 2/3" in text
    rows = [line for line in text.splitlines() if line.startswith("case_")]
    assert len(rows) == 3 and len({len(r.split("  ")[0]) for r in rows}) == 1


# --- uncertainty quality ------------------------------------------------------------------------


def brute_force_auroc(u: np.ndarray, e: np.ndarray) -> float:
    pos, neg = u[e], u[~e]
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return float((greater + 0.5 * ties) / (pos.size * neg.size))


def test_auroc_perfect_and_constant() -> None:
    rng = np.random.default_rng(0)
    error = rng.random((8, 16, 16)) < 0.1
    uncertainty = np.where(error, 0.9, 0.1)
    assert error_detection_auroc(uncertainty, error) == 1.0
    assert error_detection_auroc(-uncertainty, error) == 0.0
    assert error_detection_auroc(np.full(error.shape, 0.3), error) == 0.5


def test_auroc_matches_pairwise_count_with_ties() -> None:
    rng = np.random.default_rng(1)
    u = rng.integers(0, 6, size=400).astype(np.float32)  # many ties
    e = rng.random(400) < (0.1 + 0.1 * u)
    assert error_detection_auroc(u, e) == pytest.approx(brute_force_auroc(u, e.astype(bool)))


def test_auroc_subsampling_is_deterministic_and_close() -> None:
    rng = np.random.default_rng(2)
    u = rng.random(200_000)
    e = rng.random(200_000) < u * 0.3
    full = error_detection_auroc(u, e)
    a = error_detection_auroc(u, e, max_samples=20_000, seed=5)
    assert a == error_detection_auroc(u, e, max_samples=20_000, seed=5)
    assert a == pytest.approx(full, abs=0.02)


def test_auroc_rejects_one_class_and_empty() -> None:
    with pytest.raises(ValueError, match="undefined"):
        error_detection_auroc(np.random.default_rng(0).random(10), np.zeros(10, bool))
    with pytest.raises(ValueError, match="undefined"):
        error_detection_auroc(np.random.default_rng(0).random(10), np.ones(10, bool))
    with pytest.raises(ValueError):
        error_detection_auroc(np.array([]), np.array([], bool))
    with pytest.raises(ValueError):
        error_detection_auroc(np.zeros(4), np.array([0, 1, 2, 0]))
    with pytest.raises(ValueError):
        error_detection_auroc(np.array([0.1, np.nan]), np.array([0, 1]))


def test_ece_zero_when_calibrated_and_positive_when_overconfident() -> None:
    # Bins hold one confidence each, and the fraction correct in each equals that confidence.
    confidence = np.concatenate([np.full(10, 0.6), np.full(20, 0.9), np.full(4, 1.0)])
    correct = np.concatenate([np.arange(10) < 6, np.arange(20) < 18, np.ones(4, bool)])
    assert expected_calibration_error(confidence, correct) == pytest.approx(0.0, abs=1e-12)
    overconfident = np.full(10, 0.95)
    half_right = np.arange(10) < 5
    assert expected_calibration_error(overconfident, half_right) == pytest.approx(0.45)


def test_ece_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        expected_calibration_error(np.array([]), np.array([], bool))
    with pytest.raises(ValueError):
        expected_calibration_error(np.array([1.2]), np.array([True]))
    with pytest.raises(ValueError):
        expected_calibration_error(np.array([0.5]), np.array([True]), bins=0)


def test_spearman() -> None:
    x = np.arange(20, dtype=float)
    assert spearman(x, np.exp(x / 3)) == pytest.approx(1.0)
    assert spearman(x, -(x**3)) == pytest.approx(-1.0)
    with pytest.raises(ValueError):
        spearman(np.array([]), np.array([]))
    with pytest.raises(ValueError):
        spearman(x, np.ones(20))
    with pytest.raises(ValueError):
        spearman(x, x[:5])
