"""Image/label folder pairs and Decathlon folders that ``init`` must refuse without creating anything."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from conftest import make_volume

from napari_ssl_seg.io import Volume, write_volume

SHAPE = (6, 8, 10)


def _image(seed: int = 0, **kwargs: object) -> Volume:
    return make_volume(SHAPE, dtype="float32", seed=seed, **kwargs)  # type: ignore[arg-type]


def _label(array: np.ndarray | None = None, **kwargs: object) -> Volume:
    base = make_volume(SHAPE, **kwargs)  # type: ignore[arg-type]
    return base if array is None else base.with_array(array)


def _pair(root: Path, name: str, image: Volume | None, label: Volume | None, *, case: str = "case1") -> tuple:
    images, labels = root / name / "images", root / name / "labels"
    images.mkdir(parents=True)
    labels.mkdir()
    if image is not None:
        write_volume(image, images / f"{case}.nii.gz")
    if label is not None:
        write_volume(label, labels / f"{case}.nii.gz")
    return images, labels


def _decathlon(root: Path, name: str, description: object, *, label: Volume | None = None) -> tuple:
    folder = root / name
    (folder / "imagesTr").mkdir(parents=True)
    (folder / "labelsTr").mkdir()
    write_volume(_image(), folder / "imagesTr" / "la_001.nii.gz")
    write_volume(label or _label(), folder / "labelsTr" / "la_001.nii.gz")
    text = description if isinstance(description, str) else json.dumps(description)
    (folder / "dataset.json").write_text(text)
    return folder, None


def init_cases(root: Path) -> dict[str, tuple[Path, Path | None]]:
    """name -> (--images, --labels or None)."""
    cases: dict[str, tuple[Path, Path | None]] = {}
    cases["label shape differs"] = _pair(root, "shape", _image(), make_volume((6, 8, 9)))
    cases["label spacing differs"] = _pair(root, "spacing", _image(), _label(spacing=(1.0, 1.0, 1.0)))
    cases["label origin differs"] = _pair(root, "origin", _image(), _label(origin=(0.0, 0.0, 0.0)))
    cases["label direction differs"] = _pair(root, "direction", _image(), _label(direction=np.eye(3)))
    cases["label not integer"] = _pair(root, "fraction", _image(), _label(np.full(SHAPE, 0.5, np.float32)))
    cases["label negative"] = _pair(root, "negative", _image(), _label(np.full(SHAPE, -1, np.int16)))
    cases["label above 65535"] = _pair(root, "big", _image(), _label(np.full(SHAPE, 70000, np.int32)))
    cases["label NaN"] = _pair(root, "nan", _image(), _label(np.full(SHAPE, np.nan, np.float32)))
    images, labels = _pair(root, "truncated_label", _image(), _label())
    data = (labels / "case1.nii.gz").read_bytes()
    (labels / "case1.nii.gz").write_bytes(data[: len(data) // 2])
    cases["label truncated"] = (images, labels)
    images, labels = _pair(root, "second_bad", _image(), _label())
    (images / "case2.nii.gz").write_bytes(b"\x1f\x8b\x08 broken")
    cases["second image broken"] = (images, labels)
    images, labels = _pair(root, "same_name", _image(), None)
    write_volume(_image(seed=1), images / "case1.nrrd")
    cases["two images, one case name"] = (images, None)
    images, _ = _pair(root, "no_name", None, None)
    write_volume(_image(), images / "___.nii.gz")
    cases["image name without a usable case name"] = (images, None)
    images, _ = _pair(root, "unsupported", None, None)
    (images / "readme.txt").write_text("no images here")
    cases["no supported images"] = (images, None)
    cases["images folder missing"] = (root / "nowhere", None)
    images, _ = _pair(root, "labels_missing", _image(), None)
    cases["labels folder missing"] = (images, root / "nowhere_labels")
    outside = root / "outside.nii.gz"
    write_volume(_image(seed=5), outside)
    training = [{"image": "imagesTr/la_001.nii.gz", "label": "labelsTr/la_001.nii.gz"}]
    labels_ok = {"0": "background", "1": "atrium", "2": "x", "3": "y"}
    cases["dataset.json truncated"] = _decathlon(root, "dec_trunc", json.dumps({"training": training})[:30])
    cases["dataset.json not an object"] = _decathlon(root, "dec_list", [1, 2])
    cases["dataset.json entry without image"] = _decathlon(root, "dec_noimg", {"training": [{"label": "x"}]})
    cases["dataset.json label not text"] = _decathlon(
        root, "dec_num", {"training": [{"image": "imagesTr/la_001.nii.gz", "label": 7}]}
    )
    cases["dataset.json test entry not a path"] = _decathlon(root, "dec_test", {"training": training, "test": [5]})
    cases["dataset.json path escapes with .."] = _decathlon(
        root, "dec_dotdot", {"training": training, "test": ["../outside.nii.gz"]}
    )
    cases["dataset.json absolute path"] = _decathlon(root, "dec_abs", {"training": training, "test": [str(outside)]})
    cases["dataset.json lists a missing image"] = _decathlon(
        root, "dec_missing", {"training": training, "test": ["imagesTs/gone.nii.gz"]}
    )
    undeclared = _label(np.full(SHAPE, 9, np.uint8))
    cases["label values outside the declared classes"] = _decathlon(
        root, "dec_classes", {"training": training, "labels": labels_ok}, label=undeclared
    )
    return cases
