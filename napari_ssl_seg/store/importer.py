"""Import a folder pair or a Medical Segmentation Decathlon dataset into a new project.

Everything is read and checked first (readable, 3D, finite, label geometry
equal to its image's); only then is the project created. Bad input therefore
never leaves a half-made project behind.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from napari_ssl_seg.errors import InputError
from napari_ssl_seg.io import Volume, geometry_mismatch, is_supported_path, read_volume
from napari_ssl_seg.io.read import case_stem
from napari_ssl_seg.progress import CaseProgress
from napari_ssl_seg.store.label_arrays import as_label_array
from napari_ssl_seg.store.names import safe_case_name
from napari_ssl_seg.store.new_project import build_project
from napari_ssl_seg.store.project import Project

# Suffixes that name the same case in image and label folders:
# brain1_image.nrrd <-> brain1_label.nrrd, la_003_0000.nii.gz <-> la_003.nii.gz.
_IMAGE_TAG = re.compile(r"([_-](image|img|ct|mr|mri|0000))$", re.IGNORECASE)
_LABEL_TAG = re.compile(r"([_-](label|labels|seg|segmentation|mask|gt))$", re.IGNORECASE)


@dataclass(frozen=True)
class PlannedCase:
    name: str
    image_path: Path
    label_path: Path | None
    image: Volume
    label: Volume | None


def case_key(path: Path, *, is_label: bool) -> str:
    stem = case_stem(path)
    pattern = _LABEL_TAG if is_label else _IMAGE_TAG
    return pattern.sub("", stem)


def discover_folder_pair(images: Path, labels: Path | None) -> list[tuple[Path, Path | None]]:
    """Pair each image (file or DICOM sub-folder) with the label of the same case, if any."""
    if not images.is_dir():
        raise InputError(f"{images}: images folder does not exist")
    image_paths = sorted(p for p in images.iterdir() if not p.name.startswith(".") and is_supported_path(p))
    if not image_paths:
        raise InputError(f"{images}: no supported images (NIfTI, NRRD, MHA/MHD files or DICOM folders)")
    label_by_key: dict[str, Path] = {}
    same_folder = labels is not None and labels.is_dir() and labels.resolve() == images.resolve()
    if labels is not None:
        if not labels.is_dir():
            raise InputError(f"{labels}: labels folder does not exist")
        for path in sorted(labels.iterdir()):
            if not path.is_file() or path.name.startswith(".") or not is_supported_path(path):
                continue
            if same_folder and not _LABEL_TAG.search(case_stem(path)):
                continue  # in a shared folder only names tagged _label/_seg/_mask are labels
            label_by_key[case_key(path, is_label=True)] = path
    pairs = []
    for path in image_paths:
        is_segmentation = path.name.lower().endswith(".seg.nrrd")
        if is_segmentation or (same_folder and _LABEL_TAG.search(case_stem(path))):
            continue
        pairs.append((path, label_by_key.get(case_key(path, is_label=False))))
    return pairs


def discover_decathlon(root: Path) -> tuple[list[tuple[Path, Path | None]], dict[int, str] | None]:
    """Cases listed in a Decathlon ``dataset.json`` (training with labels, test without).

    Every listed path must stay inside ``root``: a downloaded ``dataset.json`` naming
    ``../../home/...`` or ``/etc/...`` must not pull other files into a project.
    """
    source = root / "dataset.json"
    try:
        description = json.loads(source.read_text(encoding="utf-8"))
        if not isinstance(description, dict):
            raise ValueError("the top level is not an object")
        training = description.get("training", [])
        test = description.get("test", [])
        if not isinstance(training, list) or not isinstance(test, list):
            raise ValueError("'training' and 'test' must be lists")
        pairs: list[tuple[Path, Path | None]] = []
        for entry in training:
            if not isinstance(entry, dict) or not isinstance(entry.get("image"), str):
                raise ValueError(f"training entry {entry!r} lacks an 'image' path")
            label = entry.get("label")
            if label is not None and not isinstance(label, str):
                raise ValueError(f"training entry {entry!r} has a non-text 'label'")
            pairs.append((_listed(root, entry["image"]), _listed(root, label) if label else None))
        for entry in test:
            image = entry.get("image") if isinstance(entry, dict) else entry
            if not isinstance(image, str):
                raise ValueError(f"test entry {entry!r} is not an image path")
            pairs.append((_listed(root, image), None))
        label_names = None
        if isinstance(description.get("labels"), dict):
            label_names = {
                int(value): str(name) for value, name in description["labels"].items() if str(value).isdigit()
            }
    except InputError:
        raise
    except (OSError, ValueError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise InputError(f"{source}: not a readable Decathlon description ({exc})") from None
    return pairs, label_names


def _listed(root: Path, relative: str) -> Path:
    candidate = (root / relative).resolve()
    base = root.resolve()
    if Path(relative).is_absolute() or (candidate != base and base not in candidate.parents):
        raise InputError(f"{root / 'dataset.json'}: listed path {relative!r} lies outside the dataset folder")
    return root / relative


def _check_label_values(label: Volume, path: Path, declared: dict[int, str] | None) -> None:
    """Refuse what a project cannot store (negative, above 65535) or the dataset does not declare."""
    as_label_array(label.array, path.name)
    if declared:
        present = {int(value) for value in np.unique(label.array)}
        undeclared = sorted(present - set(declared) - {0})
        if undeclared:
            raise InputError(
                f"{path.name}: label values {undeclared[:10]} are not among the dataset's classes {sorted(declared)}"
            )


def plan_import(images: Path, labels: Path | None) -> list[PlannedCase]:
    """Read and check every case; raise :class:`InputError` on the first unusable one."""
    label_names = None
    if (images / "dataset.json").is_file() and labels is None:
        pairs, label_names = discover_decathlon(images)
    else:
        pairs = discover_folder_pair(images, labels)
    planned: list[PlannedCase] = []
    seen: set[str] = set()
    for image_path, label_path in pairs:
        name = safe_case_name(case_key(image_path, is_label=False))
        if name in seen:
            raise InputError(f"{image_path.name}: two images map to the same case name {name!r}")
        seen.add(name)
        image = read_volume(image_path)
        label = None
        if label_path is not None:
            label = read_volume(label_path)
            if mismatch := geometry_mismatch(image, label):
                raise InputError(
                    f"{label_path.name}: label geometry does not match image {image_path.name}: {mismatch}"
                )
            if not (np.issubdtype(label.array.dtype, np.integer) or label.array.dtype == np.bool_):
                rounded = np.round(label.array)
                if not np.array_equal(rounded, label.array):
                    raise InputError(f"{label_path.name}: label map has non-integer values")
            # Checked now, not when the project saves it: bad input must never leave a half-made project.
            _check_label_values(label, label_path, label_names or label.label_names)
            if label_names and not label.label_names:
                label = replace(label, label_names=label_names)
        planned.append(PlannedCase(name, image_path, label_path, image, label))
    return planned


def assign_splits(names: list[str], seed: int, *, validation: float = 0.2, test: float = 0.2) -> dict[str, str]:
    """Seeded split of the labeled cases; at least one validation and test case once there are 3."""
    order = list(sorted(names))
    np.random.default_rng(seed).shuffle(order)
    count = len(order)
    n_validation = max(1, round(count * validation)) if count >= 3 else 0
    n_test = max(1, round(count * test)) if count >= 3 else 0
    splits = {name: "train" for name in order}
    for name in order[:n_validation]:
        splits[name] = "validation"
    for name in order[n_validation : n_validation + n_test]:
        splits[name] = "test"
    return splits


def import_into_new_project(
    root: Path, images: Path, labels: Path | None = None, *, seed: int = 0, progress: CaseProgress | None = None
) -> Project:
    """Create a project at ``root`` from an image folder (and labels folder), or a Decathlon folder."""
    planned = plan_import(images, labels)
    splits = assign_splits([case.name for case in planned if case.label is not None], seed)
    return build_project(root, lambda project: _fill_project(project, planned, splits, progress), seed=seed)


def _fill_project(
    project: Project, planned: list[PlannedCase], splits: dict[str, str], progress: CaseProgress | None
) -> None:
    names = next(
        (case.label.label_names for case in planned if case.label is not None and case.label.label_names), None
    )
    if names:
        project.set_setting("label_names", json.dumps({str(value): name for value, name in sorted(names.items())}))
    for index, case in enumerate(planned):
        if progress:
            progress(index, len(planned), case.name)
        source_file = case.image_path if case.image_path.is_file() else None
        project.add_case(case.name, case.image, split=splits.get(case.name, "train"), source_file=source_file)
        if case.label is not None:
            project.save_label(case.name, case.label.array, author="import", kind="import")
    if progress:
        progress(len(planned), len(planned), "done")
