"""How large each structure usually is in a project: the reference the ``missing_volume`` score needs.

The expected volume of a structure is the median, over the project's labeled training and
validation cases, of its volume in mm^3 (voxel count x voxel volume). The median, because one
partly labeled case (an annotator still at work) must not drag the reference down. Test cases
never contribute: the test split is for measuring, and a score tuned on it would measure itself.

Label versions never change once saved (a new save is a new version), so each version's volumes
are computed once per process and cached by (project, case, version).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from napari_ssl_seg.inference.case_scores import structure_volumes
from napari_ssl_seg.store import Project

__all__ = ["REFERENCE_SPLITS", "reference_volumes"]

REFERENCE_SPLITS = ("train", "validation")

_cache: dict[tuple[str, str, int], dict[int, float]] = {}


def _label_volumes(project: Project, case: str, version: int) -> dict[int, float]:
    key = (str(project.root), case, version)
    if key not in _cache:
        label = project.read_label(case, version)
        _cache[key] = structure_volumes(label.array, label.spacing)
    return _cache[key]


def reference_volumes(project: Project, exclude: Iterable[str] = ()) -> dict[int, float]:
    """{class: median mm^3} over the labeled train and validation cases not in ``exclude``; {} if none.

    A class absent from a case counts as volume 0 there; classes whose median is 0 are left out
    (a structure most cases lack has no expected size).
    """
    skip = set(exclude)
    per_case = [
        _label_volumes(project, case.name, case.latest_label_version)
        for case in project.cases()
        if case.split in REFERENCE_SPLITS and case.latest_label_version is not None and case.name not in skip
    ]
    if not per_case:
        return {}
    classes = sorted(set().union(*per_case))
    medians = {k: float(np.median([volumes.get(k, 0.0) for volumes in per_case])) for k in classes}
    return {k: v for k, v in medians.items() if v > 0}
