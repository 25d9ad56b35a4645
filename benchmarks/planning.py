"""Does the data's plan beat the fixed ``quick`` preset on scans unlike the chest it was tuned on?

Run: .venv/bin/python benchmarks/planning.py [--cohorts chest,chest1mm,brain] [--recipes plan,quick] [--cases 12]
     [--labeled 3] [--seed 3] [--method supervised] [--out build/planning]

Each cohort is ``make-cohort`` from one bundled real volume (``--cases`` cases, ``--labeled`` labeled training cases,
the others unlabeled, 2 validation and 2 test cases for 12):

- ``chest``: the bundled chest CT and its 7-class 3D Slicer segmentation at its native 3.05 x 3.05 x 10 mm;
- ``chest1mm``: the same base resampled to 1 mm isotropic first (image trilinear, label nearest; with
  ``--label-interpolation linear`` each class's mask linearly, the most covered class kept), as a thin-slice CT;
- ``brain``: the bundled brain MRI (pyradiomics ``brain1``, 0.78 x 0.78 x 6.5 mm) with its lesion mask;
- ``mni1mm``: a 1 mm isotropic T1 brain MRI with four lateral classes (left and right grey matter, left and right
  white matter), not bundled: the ICBM 2009a symmetric template as nilearn ships it (``--mni DIR``: the
  ``nilearn/datasets/data`` folder of ``pip download --no-deps nilearn==0.14.1``, unzipped). Its classes are
  the grey and white matter probability maps over 0.5, split at the mid-sagittal plane (MNI x = 0, left of it
  left, right of it right, the plane itself background). The template is symmetric: only a voxel's place
  tells its side. It is the average of 152 people's scans, not one patient's.

Then every recipe trains ``--method`` from scratch on it, each run once, one after the other:

- ``plan``: ``--config plan``, the plan made from the cohort's fingerprint for this machine's CPU
  (training/plan.py; ``napari-ssl-seg plan`` prints it);
- ``quick``: the fixed preset (patch 16x64x64 at the labeled cases' median spacing, width 8, depth 4, a CT window
  of [-1000, 1000] HU or a whole-image z-score).

``--label-interpolation linear`` generates each cohort with labels that follow the image (``make-cohort
--label-interpolation linear``, a separate project; tag its runs apart with ``--tag``).

The exported (best-validation) model of each run is evaluated on the test split: per-class Dice, mean Dice,
HD95 and training minutes are printed as one table and merged into ``--out/results<tag>.json``. ``--fit`` also scores
it on its own labeled training cases: a class low there too is not learnt at all (capacity, loss, schedule),
not a failure to generalise. Runs already in ``--out`` are reused.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from napari_ssl_seg.cohort.cohort_project import build_cohort_project
from napari_ssl_seg.evaluation.evaluate import evaluate_project
from napari_ssl_seg.io import read_volume, write_volume
from napari_ssl_seg.io.sitk_files import volume_from_sitk
from napari_ssl_seg.runtime.allocator import keep_freed_memory
from napari_ssl_seg.store import Project
from napari_ssl_seg.training.budget import BUDGETS
from napari_ssl_seg.training.config import apply_overrides, preset
from napari_ssl_seg.training.loop import train
from napari_ssl_seg.training.plan import plan_project, planned_config

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"
COHORTS: dict[str, tuple[str, str, float | None]] = {
    "chest": ("CTChest4.nrrd", "Segmentation.seg.nrrd", None),
    "chest1mm": ("CTChest4.nrrd", "Segmentation.seg.nrrd", 1.0),
    "brain": ("brain1_image.nrrd", "brain1_label.nrrd", None),
}
MNI_T1 = "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
MNI_CLASSES = {1: "left grey matter", 2: "right grey matter", 3: "left white matter", 4: "right white matter"}


def mni_base(folder: Path, out: Path) -> tuple[Path, Path]:
    """The ICBM 2009a T1 template and its four lateral classes (see the module docstring), written to ``out``."""
    import nibabel as nib

    if not (folder / MNI_T1).is_file():
        raise SystemExit(f"--mni {folder}: no {MNI_T1} there (see the module docstring for how to get it)")
    t1 = nib.load(folder / MNI_T1)
    grey = np.asarray(nib.load(folder / MNI_T1.replace("_t1_", "_gm_")).dataobj, dtype=np.float32) / 255
    white = np.asarray(nib.load(folder / MNI_T1.replace("_t1_", "_wm_")).dataobj, dtype=np.float32) / 255
    x_mm = nib.affines.apply_affine(t1.affine, np.stack(np.indices(t1.shape), -1))[..., 0]
    tissue = np.where((grey >= 0.5) & (grey >= white), 1, np.where((white >= 0.5) & (white > grey), 3, 0))
    # RAS world: x < 0 is the patient's left.
    side = np.where(x_mm < 0, 0, np.where(x_mm > 0, 1, -1))
    label = np.where((tissue > 0) & (side >= 0), tissue + side, 0).astype(np.uint8)
    out.mkdir(parents=True, exist_ok=True)
    image_path = out / "base_image.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(t1.dataobj, dtype=np.int16), t1.affine), image_path)
    label_path = out / "base_label.nii.gz"
    nib.save(nib.Nifti1Image(label, t1.affine), label_path)
    return image_path, label_path


def _resampled(path: Path, spacing_mm: float, out: Path, *, label: bool, linear_label: bool = False) -> Path:
    """``path`` resampled to isotropic ``spacing_mm`` (SimpleITK), written to ``out``; class names kept.

    An image is resampled linearly; a label by its nearest voxel, or with ``linear_label`` each class's mask
    linearly and the most covered class kept (as the generator's ``--label-interpolation linear``).
    """
    source = read_volume(path)

    def resample(array: np.ndarray, interpolator: int) -> sitk.Image:
        image = sitk.GetImageFromArray(np.ascontiguousarray(array))
        image.SetSpacing(tuple(float(v) for v in source.spacing[::-1]))
        image.SetOrigin(tuple(float(v) for v in source.origin))
        image.SetDirection(tuple(float(v) for v in np.asarray(source.direction).ravel()))
        size = [max(1, round(n * s / spacing_mm)) for n, s in zip(image.GetSize(), image.GetSpacing(), strict=True)]
        return sitk.Resample(
            image, size, sitk.Transform(), interpolator, image.GetOrigin(), (spacing_mm,) * 3, image.GetDirection()
        )

    if label and linear_label:
        best: np.ndarray | None = None
        for value in np.unique(source.array):
            mask = resample((source.array == value).astype(np.float32), sitk.sitkLinear)
            covered = sitk.GetArrayFromImage(mask)
            if best is None:
                best, ids = covered, np.full(covered.shape, value, dtype=source.array.dtype)
            else:
                take = covered > best
                best[take], ids[take] = covered[take], value
        moved = sitk.GetImageFromArray(ids)
        moved.CopyInformation(mask)  # the grid every mask was resampled to
    else:
        moved = resample(source.array, sitk.sitkNearestNeighbor if label else sitk.sitkLinear)
    volume = dataclasses.replace(
        volume_from_sitk(moved, path.name, source_format="nifti"), label_names=source.label_names
    )
    return write_volume(volume, out)


def cohort(name: str, args: argparse.Namespace) -> Path:
    interpolation: dict[str, str] = {}
    folder = "project"
    if args.image_interpolation != "linear":
        interpolation["image_interpolation"] = args.image_interpolation
        folder += f"_{args.image_interpolation}"
    if args.label_interpolation != "nearest":
        interpolation["label_interpolation"] = args.label_interpolation
        folder += f"_{args.label_interpolation}_labels"
    root = args.out / name / folder
    if (root / "project.sqlite").is_file():
        return root
    if name == "mni1mm":
        if args.mni is None:
            raise SystemExit("the mni1mm cohort needs --mni DIR (see the module docstring)")
        base, base_label = mni_base(args.mni, args.out / name)
        project = build_cohort_project(
            root, base, base_label, cases=args.cases, seed=args.seed, labeled=args.labeled, **interpolation
        )
        project.set_setting("label_names", json.dumps({str(k): v for k, v in MNI_CLASSES.items()}))
        project.close()
        return root
    image, label, spacing = COHORTS[name]
    base, base_label = SAMPLE / image, SAMPLE / label
    if spacing is not None:
        (args.out / name).mkdir(parents=True, exist_ok=True)
        linear = args.label_interpolation == "linear"
        suffix = "_linear" if linear else ""
        base = _resampled(base, spacing, args.out / name / "base_image.nii.gz", label=False)
        base_label = _resampled(
            base_label, spacing, args.out / name / f"base_label{suffix}.nii.gz", label=True, linear_label=linear
        )
    project = build_cohort_project(
        root, base, base_label, cases=args.cases, seed=args.seed, labeled=args.labeled, **interpolation
    )
    names = read_volume(SAMPLE / label).label_names
    if names:
        project.set_setting("label_names", json.dumps({str(k): v for k, v in sorted(names.items())}))
    project.close()
    return root


def recipe_config(project: Path, recipe: str, args: argparse.Namespace) -> Any:
    overrides = [f"method={args.method}", *args.set]
    if recipe == "plan":
        plan, _ = plan_project(project, device=args.device)
        return apply_overrides(planned_config(plan, preset(BUDGETS[plan.budget].preset)), overrides)
    return apply_overrides(preset(recipe), overrides)


def split_dice(project: Path, model: Path, split: str, device: str) -> tuple[float, dict[str, float]]:
    """Mean and per-class Dice of ``model`` on the labeled cases of ``split``."""
    with Project.open(project) as opened:
        evaluation = evaluate_project(opened, model, split=split, device=device)
    summary = evaluation.summary
    per_class = {
        evaluation.class_names.get(int(k), k): round(float(v["dice_mean"]), 3) for k, v in summary["classes"].items()
    }
    return round(float(summary["overall"]["dice_mean"]), 3), per_class


def with_fit(result: dict[str, Any], project: Path, out: Path, args: argparse.Namespace) -> dict[str, Any]:
    """``result`` with the model's Dice on its own labeled training cases (``--fit``), measured once."""
    if args.fit and "train_dice" not in result:
        result["train_dice"], result["train_per_class_dice"] = split_dice(
            project, out / "model.safetensors", "train", args.device
        )
        (out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def run_one(project: Path, recipe: str, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    result_path = out / "result.json"
    if result_path.is_file():
        return with_fit(json.loads(result_path.read_text()), project, out, args)
    config = recipe_config(project, recipe, args)
    start = time.perf_counter()
    train(project, config, out, device=args.device)
    minutes = (time.perf_counter() - start) / 60
    with Project.open(project) as opened:
        evaluation = evaluate_project(opened, out / "model.safetensors", device=args.device)
    card = json.loads((out / "model.json").read_text())
    summary = evaluation.summary
    per_class = {
        evaluation.class_names.get(int(k), k): round(float(v["dice_mean"]), 3) for k, v in summary["classes"].items()
    }
    result = {
        "recipe": recipe,
        "spacing": card["spacing"],
        "patch_size": card["patch_size"],
        "intensity": card["intensity"],
        "iterations": config.iterations,
        "minutes": round(minutes, 1),
        "test_dice": round(float(summary["overall"]["dice_mean"]), 3),
        "test_hd95_mm": summary["overall"]["hd95_mm_mean"],
        "per_class_dice": per_class,
        "best_validation_dice": card["metrics"]["validation_dice"],
    }
    result_path.write_text(json.dumps(result, indent=2) + "\n")
    return with_fit(result, project, out, args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cohorts", default="chest,chest1mm,brain")
    parser.add_argument("--recipes", default="plan,quick")
    parser.add_argument("--cases", type=int, default=12)
    parser.add_argument("--labeled", type=int, default=3)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--method", default="supervised")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="applied to every recipe")
    parser.add_argument("--out", type=Path, default=Path("build/planning"))
    parser.add_argument("--mni", type=Path, help="nilearn's datasets/data folder, for the mni1mm cohort")
    parser.add_argument("--tag", default="", help="appended to each run's name, to keep runs with other --set apart")
    parser.add_argument(
        "--image-interpolation",
        choices=("linear", "cubic"),
        default="linear",
        help="the cohort generator's (a cubic cohort is a separate project; tag its runs apart with --tag)",
    )
    parser.add_argument(
        "--label-interpolation",
        choices=("nearest", "linear"),
        default="nearest",
        help="how the generator's labels follow the image (a separate project; tag its runs apart with --tag)",
    )
    parser.add_argument(
        "--fit", action="store_true", help="also score each model on its own labeled training cases (under- or overfit)"
    )
    args = parser.parse_args()
    keep_freed_memory()
    results: dict[str, dict[str, Any]] = {}
    for name in args.cohorts.split(","):
        project = cohort(name, args)
        for recipe in args.recipes.split(","):
            key = f"{name}/{recipe}{args.tag}"
            results[key] = run_one(project, recipe, args, args.out / name / f"{recipe}{args.tag}")
            print(json.dumps({key: results[key]}), flush=True)
    # Merged into what earlier calls with this tag wrote: one call per cohort must not drop the others' rows.
    summary_path = args.out / f"results{args.tag}.json"
    earlier = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    summary_path.write_text(json.dumps({**earlier, **results}, indent=2) + "\n")
    print(f"\n{'cohort/recipe':<20} {'spacing mm':<18} {'patch':<12} {'min':>5} {'Dice':>6} {'HD95':>6}  per class")
    for key, r in results.items():
        spacing = "x".join(f"{v:.2g}" for v in r["spacing"])
        patch = "x".join(map(str, r["patch_size"]))
        hd = "n/a" if r["test_hd95_mm"] is None else f"{r['test_hd95_mm']:.1f}"
        classes = ", ".join(f"{k} {v:.2f}" for k, v in r["per_class_dice"].items())
        print(f"{key:<20} {spacing:<18} {patch:<12} {r['minutes']:>5} {r['test_dice']:>6.3f} {hd:>6}  {classes}")
        if "train_dice" in r:
            fit = ", ".join(f"{k} {v:.2f}" for k, v in r["train_per_class_dice"].items())
            print(f"{'  on its training cases':<44} {r['train_dice']:>6.3f} {'':>6}  {fit}")


if __name__ == "__main__":
    main()
