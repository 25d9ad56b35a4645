"""Teachers on real chest CTs of other patients: lung Dice, the right lung on the right, any voxel order.

Run: .venv/bin/python benchmarks/real_ct.py --data DIR [--models models/chest_ct_ucmt.safetensors,...]

``DIR`` holds ``lung1_image.nrrd`` and ``lung2_image.nrrd``: two chest CTs (512 x 512 x 48 and x 61,
0.57-0.63 mm in plane, 5 mm slices) of two patients other than the CTChest4 patient the cohort is made
from, from the ``data/`` folder of the pyradiomics 3.0.1 source archive on PyPI (fetched as
sample_data/README.md says; not bundled: 30 MB). Any other CT files can be named with ``--ct``.

For each CT and teacher:

- **lung Dice** against a Hounsfield reference: air (below -400 HU) inside the body, the components
  that touch the in-plane border (the air around the patient) removed, the two largest kept, holes
  (vessels) filled slice by slice, and split into sides by their centroids (the patient's right is
  the LPS -x side). It includes the main bronchi, so it is an approximate reference: it measures
  whether a teacher finds the lungs, not a radiologist's contour.
- **sides**: whether the teacher's "right lung" lies on the patient's right (its centroid has the
  smaller LPS x than its "left lung").
- **voxel order**: the CT is written in LPS order (as DICOM-derived files usually are) and in RAS order
  (as NIfTI tools write), both are predicted, the RAS prediction is put back in LPS order
  (SimpleITK ``DICOMOrient``, independent of the package) and compared per structure (Dice).
- **DICOM**: the LPS CT is also stored as a hospital stores it, a DICOM series of one file per slice
  with unsigned values and a rescale intercept of -1024 (``io.dicom.write_dicom_series``), read back
  through the package's series reader, predicted, and compared with the prediction from the file
  (per structure, minimum Dice).

With ``--statistics-batches N`` each teacher is also scored with its BatchNorm statistics re-estimated
over the CTs themselves (N batches of 4 patches, as the product's end-of-run step does over a project's
training cases, ``training/batchnorm.py``): what a retrain on a project that holds these scans, unlabeled,
gives the network's statistics. The CTs are then both the unlabeled data and the test: that is the
product's situation (the scans to be labeled are the unlabeled cases), not a held-out test.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from napari_ssl_seg.inference.predictor import Predictor
from napari_ssl_seg.io import read_volume, write_volume
from napari_ssl_seg.io.dicom import write_dicom_series
from napari_ssl_seg.networks.checkpoint import load_checkpoint, save_checkpoint
from napari_ssl_seg.store import Project
from napari_ssl_seg.training.batchnorm import reestimate_over_cases

AIR_HU = -400.0
JOINED_SHARE = 0.25


def lps_array(path: Path) -> np.ndarray:
    """The file's voxels in LPS order, (z, y, x) with x toward the patient's left."""
    return sitk.GetArrayFromImage(sitk.DICOMOrient(sitk.ReadImage(str(path)), "LPS"))


def lung_reference(hu: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(right, left) lung masks of an LPS-ordered CT, from Hounsfield units alone."""
    air = hu < AIR_HU
    components, count = ndimage.label(air)
    edges = (components[:, 0, :], components[:, -1, :], components[:, :, 0], components[:, :, -1])
    border = np.unique(np.concatenate([edge.ravel() for edge in edges]))
    sizes = ndimage.sum(air, components, index=np.arange(1, count + 1))
    sizes[border[border > 0] - 1] = 0
    largest = np.argsort(sizes)[::-1][:2] + 1
    # A second component under a quarter of the first is gas elsewhere (the stomach): the lungs are one
    # component, joined at the trachea.
    kept = [value for value in largest if sizes[value - 1] > JOINED_SHARE * sizes[largest[0] - 1]]
    lungs = [np.stack([ndimage.binary_fill_holes(plane) for plane in components == value]) for value in kept]
    if len(lungs) == 1:  # split at the middle of the body
        body = ndimage.binary_fill_holes(hu > AIR_HU)
        middle = int(np.round(np.nonzero(body)[2].mean()))
        whole = lungs[0]
        lungs = [whole.copy(), whole.copy()]
        lungs[0][..., middle:] = False
        lungs[1][..., :middle] = False
    lungs.sort(key=lambda mask: np.nonzero(mask)[2].mean())  # smaller x first: the patient's right
    return lungs[0], lungs[1]


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total


def predict_lps(predictor: Predictor, path: Path, work: Path, *, postprocess: bool = True) -> np.ndarray:
    """The teacher's label map of ``path``, written in the file's geometry, read back in LPS order."""
    prediction = predictor.predict(read_volume(path), uncertainty="none", name=path.name, postprocess=postprocess)
    out = work / f"{path.stem}_label.nrrd"
    write_volume(prediction.label, out)
    return lps_array(out)


def display_name(model: Path) -> str:
    return model.stem if model.stem != "model" else model.parent.name


def class_of(card_classes: dict[int, str], name: str) -> int:
    return next(int(key) for key, value in card_classes.items() if value.lower() == name)


def statistics_over(model: Path, cts: list[Path], batches: int, work: Path, out: Path) -> Path:
    """``out``: a copy of ``model`` whose BatchNorm statistics are re-estimated over ``cts`` (a project of them,
    unlabeled, kept in ``work`` for the next model). ``out`` is the caller's: models of run folders share the stem
    ``model``, so a name made from the stem would let each copy overwrite the one before."""
    root = work / "statistics_project"
    if not root.exists():
        with Project.create(root, seed=0, name="real scans") as project:
            for ct in cts:
                project.add_case(ct.stem, read_volume(ct), split="train", source_file=ct)
    networks, card = load_checkpoint(model)
    with Project.open(root) as project:
        names = [case.name for case in project.cases()]
        reestimate_over_cases(networks["model"], project, names, card, batches=batches, seed=0)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(out, networks, card, overwrite=True)
    return out


def with_statistics(
    models: list[tuple[str, Path]], cts: list[Path], batches: int, work: Path
) -> list[tuple[str, Path]]:
    """``models`` followed by each one's copy with statistics re-estimated over ``cts``, named ``NAME +statistics``."""
    copies = [
        (f"{name} +statistics", statistics_over(model, cts, batches, work, work / f"statistics_{index}" / model.name))
        for index, (name, model) in enumerate(models)
    ]
    return [*models, *copies]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="folder with lung1_image.nrrd and lung2_image.nrrd")
    parser.add_argument("--ct", type=Path, action="append", default=[], help="another CT file; repeatable")
    parser.add_argument("--models", default="models/chest_ct_ucmt.safetensors,models/chest_ct_ugcemt.safetensors")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--statistics-batches", type=int, default=0, help="also score re-estimated statistics")
    args = parser.parse_args()
    cts = list(args.ct)
    if args.data is not None:
        cts += [args.data / "lung1_image.nrrd", args.data / "lung2_image.nrrd"]
    if not cts:
        parser.error("name the CTs: --data DIR or --ct FILE")
    header = (
        f"{'model':<34} {'CT':<12} {'right lung':>10} {'left lung':>9} {'sides':>6} {'LPS vs RAS (min, mean)':>23} "
        f"{'DICOM vs file (min)':>19}"
    )
    print(header)
    print("-" * len(header))
    with tempfile.TemporaryDirectory() as temporary:
        work = Path(temporary)
        stored = {}
        for ct in cts:
            image = sitk.ReadImage(str(ct))
            for code in ("LPS", "RAS"):
                path = work / f"{ct.stem}_{code}.nrrd"
                sitk.WriteImage(sitk.DICOMOrient(image, code), str(path))
                stored[ct, code] = path
            stored[ct, "DICOM"] = work / f"{ct.stem}_dicom"
            write_dicom_series(read_volume(stored[ct, "LPS"]), stored[ct, "DICOM"], modality="CT")
        models = [(display_name(Path(model)), Path(model)) for model in args.models.split(",")]
        if args.statistics_batches:
            models = with_statistics(models, cts, args.statistics_batches, work)
        for name, model in models:
            predictor = Predictor.from_checkpoint(model, device=args.device)
            classes = predictor.card.classes
            right, left = class_of(classes, "right lung"), class_of(classes, "left lung")
            for ct in cts:
                reference_right, reference_left = lung_reference(lps_array(stored[ct, "LPS"]))
                lps = predict_lps(predictor, stored[ct, "LPS"], work)
                ras = predict_lps(predictor, stored[ct, "RAS"], work)
                from_dicom = predict_lps(predictor, stored[ct, "DICOM"], work)
                agreement = [dice(lps == value, ras == value) for value in classes if value != 0]
                dicom_agreement = [dice(lps == value, from_dicom == value) for value in classes if value != 0]
                found_right, found_left = lps == right, lps == left
                on_sides = (
                    bool(found_right.any() and found_left.any())
                    and np.nonzero(found_right)[2].mean() < np.nonzero(found_left)[2].mean()
                )
                print(
                    f"{name:<34} {ct.stem:<12} {dice(found_right, reference_right):10.3f} "
                    f"{dice(found_left, reference_left):9.3f} {'yes' if on_sides else 'NO':>6} "
                    f"{min(agreement):11.3f}, {np.mean(agreement):.3f} {min(dicom_agreement):19.3f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
