"""How good is an uncertainty map? Error detection (AUROC), calibration (ECE) and rank correlation.

An uncertainty map is only useful for guiding annotation if it is high where the prediction is
wrong. :func:`error_detection_auroc` scores exactly that: the probability that a randomly chosen
misclassified voxel is more uncertain than a randomly chosen correct one (ties count one half).
It is computed from ranks (the Mann-Whitney U statistic), which needs one sort and no thresholds,
so it stays fast and exact on the millions of voxels of a whole volume.

:func:`expected_calibration_error` checks whether the confidence (e.g. the maximum softmax
probability) matches the observed accuracy, and :func:`spearman` compares two per-case or
per-block rankings (e.g. mean uncertainty against Dice).
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from napari_ssl_seg.errors import InputError

__all__ = ["error_detection_auroc", "expected_calibration_error", "spearman"]


def _flat_pair(a: np.ndarray, b: np.ndarray, names: tuple[str, str]) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(a)
    b = np.asarray(b)
    if a.shape != b.shape:
        raise InputError(f"{names[0]} shape {a.shape} differs from {names[1]} shape {b.shape}")
    if a.size == 0:
        raise InputError(f"{names[0]} and {names[1]} are empty")
    return a.reshape(-1), b.reshape(-1)


def _as_binary(values: np.ndarray, name: str) -> np.ndarray:
    if values.dtype == np.bool_:
        return values
    # Accept 0/1 integer or float maps, but nothing else: a soft error map would be silently thresholded.
    if not np.isin(values, (0, 1)).all():
        raise InputError(f"{name} must be binary (bool or 0/1)")
    return values.astype(bool)


def _check_finite(values: np.ndarray, name: str) -> np.ndarray:
    if not np.issubdtype(values.dtype, np.number) and values.dtype != np.bool_:
        raise InputError(f"{name} must be numeric, got dtype {values.dtype}")
    values = values.astype(np.float64, copy=False)
    if not np.isfinite(values).all():
        raise InputError(f"{name} contains NaN or infinite values")
    return values


def error_detection_auroc(
    uncertainty: np.ndarray,
    error: np.ndarray,
    *,
    max_samples: int | None = None,
    seed: int = 0,
) -> float:
    """Area under the ROC curve of ``uncertainty`` as a detector of the voxels where ``error`` is true.

    1.0: every wrong voxel is more uncertain than every correct one; 0.5: no better than chance
    (a constant map scores exactly 0.5, as all pairs tie). ``max_samples`` evaluates a uniform
    random subset of that many voxels, drawn with ``seed`` so the number is reproducible; ``None``
    uses every voxel. Raises :class:`~napari_ssl_seg.errors.InputError` (a ``ValueError``) on empty
    or mismatched input, non-finite uncertainty, or an error map with only one class (the AUROC is
    undefined when there is nothing, or only errors, to detect).
    """
    u, e = _flat_pair(uncertainty, error, ("uncertainty", "error"))
    u = _check_finite(u, "uncertainty")
    e = _as_binary(e, "error")
    if max_samples is not None:
        if max_samples < 2:
            raise InputError(f"max_samples must be at least 2, got {max_samples}")
        if max_samples < u.size:
            picked = np.random.default_rng(seed).choice(u.size, size=max_samples, replace=False)
            u, e = u[picked], e[picked]
    n_pos = int(np.count_nonzero(e))
    n_neg = int(e.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        which = "no misclassified voxels" if n_pos == 0 else "only misclassified voxels"
        raise InputError(f"error map has {which}; the error-detection AUROC is undefined")
    # Tied values share the mean of the ranks they span (1-based), which is what makes a tie count one half.
    distinct, inverse, counts = np.unique(u, return_inverse=True, return_counts=True)
    first_rank = np.cumsum(counts) - counts + 1
    mean_rank = first_rank + (counts - 1) / 2.0
    positives_per_value = np.bincount(inverse.reshape(-1)[e], minlength=distinct.size)
    rank_sum = float(np.dot(positives_per_value, mean_rank))
    u_statistic = rank_sum - n_pos * (n_pos + 1) / 2.0
    return float(u_statistic / (float(n_pos) * float(n_neg)))


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = 15) -> float:
    """Expected calibration error: sum over confidence bins of (bin share) x |accuracy - mean confidence|.

    ``confidence`` lies in [0, 1] (e.g. the maximum softmax probability per voxel) and ``correct``
    says whether that voxel's prediction was right. Bins split [0, 1] into ``bins`` equal intervals,
    each closed on the left, the last one closed on both sides so that a confidence of 1 counts.
    Empty bins contribute nothing. 0 means perfectly calibrated.
    """
    if bins < 1:
        raise InputError(f"bins must be at least 1, got {bins}")
    c, ok = _flat_pair(confidence, correct, ("confidence", "correct"))
    c = _check_finite(c, "confidence")
    ok = _as_binary(ok, "correct")
    if c.min() < 0.0 or c.max() > 1.0:
        raise InputError(f"confidence must lie in [0, 1], got values in [{c.min():.4g}, {c.max():.4g}]")
    index = np.minimum((c * bins).astype(np.int64), bins - 1)
    confidence_sum = np.bincount(index, weights=c, minlength=bins)
    correct_sum = np.bincount(index, weights=ok.astype(np.float64), minlength=bins)
    # |acc_b - conf_b| * n_b / N == |correct_sum_b - confidence_sum_b| / N, which needs no division by empty bins.
    return float(np.abs(correct_sum - confidence_sum).sum() / c.size)


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation of two equally long sequences (via ``scipy.stats.spearmanr``).

    Raises :class:`~napari_ssl_seg.errors.InputError` for fewer than two values, mismatched
    lengths, non-finite values, or a constant input (the correlation is undefined there, and
    SciPy would return NaN with only a warning).
    """
    a, b = _flat_pair(x, y, ("x", "y"))
    a = _check_finite(a, "x")
    b = _check_finite(b, "y")
    if a.size < 2:
        raise InputError("Spearman correlation needs at least two values")
    if np.all(a == a[0]) or np.all(b == b[0]):
        raise InputError("Spearman correlation is undefined for a constant input")
    return float(stats.spearmanr(a, b).statistic)
