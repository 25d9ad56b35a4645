"""Annotation effort with the shipped teachers: voxels to correct in a prediction against labeling from scratch.

Run: .venv/bin/python benchmarks/correction_effort.py [--models models/chest_ct_ucmt.safetensors,...]
     [--real DIR] [--out build/correction_effort] [--json benchmarks/results/correction_effort.json]
     [--label-interpolation nearest|linear]

For each teacher, every case with a reference is predicted (plain prediction, the label map an
annotator opens) and compared with its reference (``evaluation/correction.py``): the voxels whose
class differs (what correcting costs) against the reference's foreground voxels (what labeling from
scratch paints), and the same in axial slices touched. The target (issue 23) is at most 10% of the
voxels.

- **demo test**: the 2 test cases of the demo cohort (``make-cohort --cases 12 --seed 0``), which
  no teacher trained or validated on;
- **unseen 1 / 2**: the 8 labeled training cases of cohorts with seeds 1 and 2 (deformations of the
  same patient that no model saw, as in the README's teacher table);
- **real** (``--real DIR`` holding ``lung1_image.nrrd`` and ``lung2_image.nrrd``, two chest CTs of other
  patients from the pyradiomics 3.0.1 source archive, fetched as ``benchmarks/real_ct.py`` says): the
  lungs only, against the Hounsfield-unit lung reference of ``real_ct.py`` (it includes the main
  bronchi, so it measures whether correcting the lungs is small work, not a radiologist's contour).
  The other structures have no reference on those scans and are left out (both maps keep only lungs).

``--label-interpolation linear`` generates the cohorts with labels that follow the image (``make-cohort
--label-interpolation``; the recorded figures used the default, ``nearest``, whose labels alias the ribs and spine).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from real_ct import class_of, lps_array, lung_reference, predict_lps
from ssl_accuracy import cohort_project

from napari_ssl_seg.cohort.label_sampling import LABEL_INTERPOLATIONS
from napari_ssl_seg.evaluation.correction import correction_effort
from napari_ssl_seg.inference.predictor import Predictor
from napari_ssl_seg.runtime.allocator import keep_freed_memory
from napari_ssl_seg.store import Project

SETS = {"demo test": (0, None, "test"), "unseen 1": (1, 8, "train"), "unseen 2": (2, 8, "train")}


def cohort_cases(
    out: Path, seed: int, labeled: int | None, split: str, label_interpolation: str = "nearest"
) -> list[tuple[str, Any, np.ndarray]]:
    folder = f"cohort_seed{seed}" if label_interpolation == "nearest" else f"cohort_seed{seed}_{label_interpolation}"
    root = cohort_project(out / folder, 12, seed, labeled, label_interpolation=label_interpolation)
    with Project.open(root) as project:
        return [
            (case.name, project.read_image(case.name), np.asarray(project.read_label(case.name).array))
            for case in project.cases()
            if case.split == split and case.is_labeled
        ]


def where_the_changes_are(prediction: np.ndarray, reference: np.ndarray, names: dict[int, str]) -> dict[str, Any]:
    """Why the effort is what it is: the changed voxels by reference class, and how many lie on a
    reference boundary (a voxel with a 6-neighbour of another class: a contour one voxel off)."""
    changed = prediction != reference
    edge = np.zeros(reference.shape, dtype=bool)
    for axis in range(3):
        step = np.diff(reference, axis=axis) != 0
        before = [slice(None)] * 3
        after = [slice(None)] * 3
        before[axis], after[axis] = slice(0, -1), slice(1, None)
        edge[tuple(before)] |= step
        edge[tuple(after)] |= step
    total = max(int(changed.sum()), 1)
    by_class = {
        names.get(int(value), str(value)): round(int((changed & (reference == value)).sum()) / total, 3)
        for value in np.unique(reference)
    }
    return {"on_boundary": round(int((changed & edge).sum()) / total, 3), "by_reference_class": by_class}


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    changed = sum(row["changed_voxels"] for row in rows)
    scratch = sum(row["scratch_voxels"] for row in rows)
    ratios = [row["voxel_ratio"] for row in rows if row["voxel_ratio"] is not None]
    slices = [row["slice_ratio"] for row in rows if row["slice_ratio"] is not None]
    return {
        "cases": len(rows),
        "voxel_ratio_pooled": changed / scratch if scratch else None,
        "voxel_ratio_mean": float(np.mean(ratios)) if ratios else None,
        "voxel_ratio_max": float(np.max(ratios)) if ratios else None,
        "slice_ratio_mean": float(np.mean(slices)) if slices else None,
        "cases_within_10_percent": sum(ratio <= 0.10 for ratio in ratios),
        "on_boundary_mean": float(np.mean([row["on_boundary"] for row in rows if "on_boundary" in row] or [np.nan])),
    }


def _cohort_row(predictor: Predictor, name: str, image: Any, reference: np.ndarray) -> dict[str, Any]:
    predicted = np.asarray(predictor.predict(image, uncertainty="none", name=name).label.array)
    names = {0: "background", **predictor.card.classes}
    return {
        "case": name,
        **correction_effort(predicted, reference).as_dict(),
        **where_the_changes_are(predicted, reference, names),
    }


def real_rows(predictor: Predictor, data: Path, work: Path) -> list[dict[str, Any]]:
    import SimpleITK as sitk

    classes = predictor.card.classes
    right, left = class_of(classes, "right lung"), class_of(classes, "left lung")
    rows = []
    for name in ("lung1", "lung2"):
        path = work / f"{name}_LPS.nrrd"
        sitk.WriteImage(sitk.DICOMOrient(sitk.ReadImage(str(data / f"{name}_image.nrrd")), "LPS"), str(path))
        reference_right, reference_left = lung_reference(lps_array(path))
        reference = np.zeros(reference_right.shape, np.uint8)
        reference[reference_right], reference[reference_left] = right, left
        predicted = predict_lps(predictor, path, work)
        lungs_only = np.where(np.isin(predicted, (right, left)), predicted, 0).astype(np.uint8)
        names = {0: "background", right: "right lung", left: "left lung"}
        rows.append(
            {
                "case": name,
                **correction_effort(lungs_only, reference).as_dict(),
                **where_the_changes_are(lungs_only, reference, names),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="models/chest_ct_ucmt.safetensors,models/chest_ct_ugcemt.safetensors")
    parser.add_argument("--real", type=Path, help="folder with lung1_image.nrrd and lung2_image.nrrd")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=Path("build/correction_effort"))
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/correction_effort.json"))
    parser.add_argument("--label-interpolation", choices=LABEL_INTERPOLATIONS, default="nearest")
    args = parser.parse_args()
    keep_freed_memory()
    cases = {label: cohort_cases(args.out, *spec, args.label_interpolation) for label, spec in SETS.items()}
    results: dict[str, dict[str, Any]] = {}
    header = f"{'teacher':<22} {'cases':<11} {'n':>3} {'voxels pooled':>14} {'mean':>7} {'max':>7} {'slices':>7}"
    print(f"{header} {'<=10%':>6} {'on a boundary':>14}")
    for model in args.models.split(","):
        predictor = Predictor.from_checkpoint(model, device=args.device)
        teacher = Path(model).stem
        results[teacher] = {}
        sets: dict[str, list[dict[str, Any]]] = {}
        for label, entries in cases.items():
            sets[label] = [_cohort_row(predictor, name, image, reference) for name, image, reference in entries]
        if args.real is not None:
            with tempfile.TemporaryDirectory() as temporary:
                sets["real lungs"] = real_rows(predictor, args.real, Path(temporary))
        for label, rows in sets.items():
            summary = summarise(rows)
            results[teacher][label] = {"summary": summary, "cases": rows}
            print(
                f"{teacher:<22} {label:<11} {summary['cases']:>3} {100 * summary['voxel_ratio_pooled']:>13.1f}% "
                f"{100 * summary['voxel_ratio_mean']:>6.1f}% {100 * summary['voxel_ratio_max']:>6.1f}% "
                f"{100 * summary['slice_ratio_mean']:>6.1f}% {summary['cases_within_10_percent']:>6} "
                f"{100 * summary['on_boundary_mean']:>13.1f}%",
                flush=True,
            )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=1), encoding="utf-8")
    print(f"json {args.json}")


if __name__ == "__main__":
    main()
