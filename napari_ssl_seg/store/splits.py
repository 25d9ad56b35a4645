"""Which split a case is in: set by hand, or a validation case chosen once enough cases are labeled.

Training selects its model on the labeled validation cases and never looks at the test split, so
a lab that imported a folder (every case in ``train``) and labeled two cases cannot train until
one of them validates. :func:`assign_validation` makes that choice the way a careful user would:
about one labeled case in five, at least one, never leaving training without a labeled case, drawn
with the project's seed so the same project always gets the same choice.
"""

from __future__ import annotations

import numpy as np

from napari_ssl_seg.store.project import SPLITS, Project, ProjectError

__all__ = ["VALIDATION_SHARE", "assign_validation", "set_split"]

VALIDATION_SHARE = 0.2


def set_split(project: Project, name: str, split: str) -> None:
    """Move case ``name`` to ``split`` (train, validation or test); its labels are untouched."""
    if split not in SPLITS:
        raise ProjectError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    if not project.cases(name):
        raise ProjectError(f"project {project.root} has no case {name!r}")
    with project.transaction() as connection:
        connection.execute("UPDATE cases SET split = ? WHERE name = ?", (split, name))


def assign_validation(project: Project) -> list[str]:
    """Move labeled training cases to validation when no labeled validation case exists; returns them.

    Nothing moves when a labeled validation case exists already, or when fewer than two training
    cases are labeled (one must stay to train on).
    """
    cases = project.cases()
    if any(case.split == "validation" and case.is_labeled for case in cases):
        return []
    labeled = sorted(case.name for case in cases if case.split == "train" and case.is_labeled)
    if len(labeled) < 2:
        return []
    count = min(len(labeled) - 1, max(1, round(len(labeled) * VALIDATION_SHARE)))
    rng = np.random.default_rng([project.seed, 0x5A1])
    chosen = sorted(labeled[int(index)] for index in rng.choice(len(labeled), size=count, replace=False))
    for name in chosen:
        set_split(project, name, "validation")
    return chosen
