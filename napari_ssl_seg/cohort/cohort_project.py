"""Turn a generated cohort into a project: cases, splits, labels and withheld references."""

from __future__ import annotations

import json
from pathlib import Path

from napari_ssl_seg.cohort.generator import IMAGE_INTERPOLATIONS, generate_cohort
from napari_ssl_seg.cohort.label_sampling import LABEL_INTERPOLATIONS
from napari_ssl_seg.errors import InputError
from napari_ssl_seg.io import geometry_mismatch, read_volume
from napari_ssl_seg.progress import CaseProgress
from napari_ssl_seg.store import Project
from napari_ssl_seg.store.importer import assign_splits
from napari_ssl_seg.store.new_project import build_project

MAX_CASES = 1000


def build_cohort_project(
    out: Path,
    base: Path,
    base_label: Path,
    *,
    cases: int,
    seed: int,
    labeled: int | None = None,
    progress: CaseProgress | None = None,
    image_interpolation: str = "linear",
    label_interpolation: str = "nearest",
) -> Project:
    """Generate ``cases`` deformed copies of a labeled base volume into a new project at ``out``.

    Validation and test cases are always labeled (they are what a model is
    judged on). With ``labeled``, only that many training cases carry a label;
    the others are the unlabeled pool, and their ground truth is kept as a
    withheld reference for simulated labeling and uncertainty evaluation.
    ``image_interpolation`` is how the anatomy step samples the image, ``label_interpolation`` how the
    label follows it (cohort/generator.py).
    """
    if not 1 <= cases <= MAX_CASES:
        raise InputError(f"--cases must be between 1 and {MAX_CASES}, got {cases}")
    if image_interpolation not in IMAGE_INTERPOLATIONS:
        raise InputError(f"--image-interpolation must be one of {', '.join(IMAGE_INTERPOLATIONS)}")
    if label_interpolation not in LABEL_INTERPOLATIONS:
        raise InputError(f"--label-interpolation must be one of {', '.join(LABEL_INTERPOLATIONS)}")
    image = read_volume(base)
    label = read_volume(base_label)
    if mismatch := geometry_mismatch(image, label):
        raise InputError(f"{base_label.name}: label geometry does not match {base.name}: {mismatch}")
    names = [f"case_{index:03d}" for index in range(cases)]
    splits = assign_splits(names, seed)
    train = [name for name in names if splits[name] == "train"]
    if labeled is not None and not 0 <= labeled <= len(train):
        raise InputError(f"--labeled must be between 0 and the {len(train)} training cases, got {labeled}")
    labeled_train = set(train if labeled is None else train[:labeled])
    recipe = {"base": base.name, "base_label": base_label.name, "cases": cases}
    if image_interpolation != "linear":  # projects made before the option keep their record
        recipe["image_interpolation"] = image_interpolation
    recipe["label_interpolation"] = label_interpolation  # absent: made before the option, "nearest"
    cohort = generate_cohort(
        image,
        label,
        cases=cases,
        seed=seed,
        image_interpolation=image_interpolation,
        label_interpolation=label_interpolation,
    )

    def fill(project: Project) -> None:
        project.set_setting("cohort", json.dumps(recipe))
        if label.label_names:
            names = {str(k): v for k, v in sorted(label.label_names.items())}
            project.set_setting("label_names", json.dumps(names))
        for index, case in enumerate(cohort):
            if progress:
                progress(index, cases, case.name)
            project.add_case(case.name, case.image, split=splits[case.name])
            if splits[case.name] != "train" or case.name in labeled_train:
                project.save_label(case.name, case.label.array, author="cohort-generator", kind="import")
            else:
                project.save_reference_label(case.name, case.label.array)
        if progress:
            progress(cases, cases, "done")

    # Filled aside and moved into place: an interrupted generation leaves no project that looks complete.
    return build_project(out, fill, seed=seed, name=f"cohort from {base.name}")
