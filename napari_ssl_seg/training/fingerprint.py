"""A project's dataset fingerprint: what its scans and labels are like, the facts a plan is made of.

nnU-Net's lesson is that a recipe has to follow the data (its spacing, size, intensities and
classes) rather than a preset tuned on one scan. Geometry comes from the store's records (every
case, nothing read); intensities and class sizes need voxels, so they come from at most
:data:`MAX_SAMPLED_CASES` labeled training cases, read one at a time, and each case's sample is
cached in the project under its label version: a 50-case project of full-size CTs is planned in
seconds, and planned again instantly.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from napari_ssl_seg.errors import InputError
from napari_ssl_seg.intensity import CT_EVIDENCE_HU
from napari_ssl_seg.io.orientation import CANONICAL, reorientation
from napari_ssl_seg.store.project import Project
from napari_ssl_seg.training.resolution import class_surfaces_mm2

__all__ = ["MAX_SAMPLED_CASES", "CaseGeometry", "ClassSize", "DatasetFingerprint", "fingerprint_project"]

#: Labeled cases read for intensities and class sizes (evenly spread over the sorted names).
MAX_SAMPLED_CASES = 8
#: Foreground voxels kept per sampled case (nnU-Net samples 10,000 over the dataset).
SAMPLES_PER_CASE = 2000
CACHE_SETTING = "fingerprint_cache"


@dataclass(frozen=True)
class CaseGeometry:
    """One case as the network will see it: in the canonical orientation, (z, y, x)."""

    name: str
    split: str
    labeled: bool
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]

    @property
    def extent_mm(self) -> tuple[float, float, float]:
        return tuple(float(n * s) for n, s in zip(self.shape, self.spacing, strict=True))  # type: ignore[return-value]


@dataclass(frozen=True)
class ClassSize:
    """A foreground class: its name, its share of the sampled cases' voxels, its median volume, its thickness."""

    label: int
    name: str
    voxel_fraction: float
    median_volume_ml: float
    cases_present: int
    #: Mean thickness 2 V / A over the sampled cases (training/resolution.py); None when absent.
    thickness_mm: float | None = None


@dataclass(frozen=True)
class DatasetFingerprint:
    orientation: str
    cases: tuple[CaseGeometry, ...]
    modality: str
    #: Foreground intensity statistics over the sampled cases (nnU-Net's percentiles 0.5 and 99.5).
    foreground_intensity: dict[str, float]
    #: Mean share of voxels that are not exactly zero (a skull-stripped MRI has a zero background).
    nonzero_fraction: float
    classes: tuple[ClassSize, ...]
    sampled_cases: tuple[str, ...]

    @property
    def spacings(self) -> np.ndarray:
        return np.asarray([case.spacing for case in self.cases], dtype=float)

    @property
    def median_spacing(self) -> tuple[float, float, float]:
        return tuple(float(v) for v in np.median(self.spacings, axis=0))  # type: ignore[return-value]

    @property
    def median_extent_mm(self) -> tuple[float, float, float]:
        extents = np.asarray([case.extent_mm for case in self.cases], dtype=float)
        return tuple(float(v) for v in np.median(extents, axis=0))  # type: ignore[return-value]

    @property
    def median_shape(self) -> tuple[int, int, int]:
        shapes = np.asarray([case.shape for case in self.cases], dtype=float)
        return tuple(round(v) for v in np.median(shapes, axis=0))  # type: ignore[return-value]

    @property
    def is_ct(self) -> bool:
        return self.modality == "CT"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["summary"] = {
            "cases": len(self.cases),
            "labeled": sum(case.labeled for case in self.cases),
            "median_spacing": list(self.median_spacing),
            "median_shape": list(self.median_shape),
            "median_extent_mm": list(self.median_extent_mm),
        }
        return data


def _even_choice(names: Sequence[str], count: int) -> list[str]:
    if len(names) <= count:
        return list(names)
    picks = np.linspace(0, len(names) - 1, count).round().astype(int)
    return [names[i] for i in sorted(set(picks.tolist()))]


def _case_sample(project: Project, name: str, version: int) -> dict[str, Any]:
    """Foreground intensities (a seeded sample), class voxel counts and the zero share of one case."""
    image = project.read_image(name)
    label = np.asarray(project.read_label(name, version).array)
    if label.shape != image.shape:
        raise InputError(f"case {name!r}: label shape {label.shape} differs from image shape {image.shape}")
    values = np.asarray(image.array)
    # Slab by slab: no full-size int64 temporary (bincount widens its input), and no sort (np.unique would).
    top = int(label.max(initial=0))
    counts = np.zeros(top + 1, dtype=np.int64)
    for start in range(0, label.shape[0], 16):
        counts += np.bincount(label[start : start + 16].ravel(), minlength=top + 1)
    foreground_voxels = int(counts[1:].sum())
    # The seed is the case's name, so a plan never depends on the order cases were sampled in.
    rng = np.random.default_rng(zlib.crc32(name.encode("utf-8")))
    flat_label, flat_values = label.reshape(-1), values.reshape(-1)
    share = foreground_voxels / max(label.size, 1)
    if foreground_voxels > SAMPLES_PER_CASE and share > 0.01:
        # Uniform voxels, kept where they are foreground: a uniform foreground sample without
        # listing the foreground's indices (hundreds of MB for a full-size CT).
        candidates = rng.integers(0, label.size, size=int(SAMPLES_PER_CASE / share * 1.5) + 64)
        picked = candidates[flat_label[candidates] > 0][:SAMPLES_PER_CASE]
    else:
        picked = np.flatnonzero(flat_label)
        if picked.size > SAMPLES_PER_CASE:
            picked = rng.choice(picked, SAMPLES_PER_CASE, replace=False)
    foreground = flat_values[picked].astype(np.float64)
    foreground = foreground[np.isfinite(foreground)]
    surfaces = class_surfaces_mm2(label, image.spacing, top + 1)
    return {
        "intensities": [float(f"{v:.5g}") for v in foreground],
        "class_voxels": {str(c): int(n) for c, n in enumerate(counts) if c and n},
        "class_surface_mm2": {str(c): float(f"{surfaces[c]:.6g}") for c, n in enumerate(counts) if c and n},
        "voxels": int(label.size),
        "voxel_ml": float(np.prod(image.spacing)) / 1000.0,
        "nonzero_fraction": float(np.count_nonzero(values) / max(values.size, 1)),
        "minimum": float(np.nanmin(values)) if values.size else 0.0,
    }


def _cached_samples(project: Project, wanted: Mapping[str, int]) -> dict[str, dict[str, Any]]:
    """Each wanted case's sample, from the project's cache when its label version is unchanged."""
    stored = project.setting(CACHE_SETTING)
    cache: dict[str, Any] = json.loads(stored) if stored else {}
    samples, changed = {}, False
    for name, version in wanted.items():
        key = f"{name}@{version}"
        if key not in cache or "class_surface_mm2" not in cache[key]:  # absent: cached before thickness was
            cache[key] = _case_sample(project, name, version)
            changed = True
        samples[name] = cache[key]
    if changed:
        keep = {f"{name}@{version}" for name, version in wanted.items()}
        project.set_setting(CACHE_SETTING, json.dumps({k: v for k, v in cache.items() if k in keep}))
    return samples


def _modality(project: Project, samples: Mapping[str, Mapping[str, Any]]) -> str:
    stated = {(case.modality or "").upper() for case in project.cases()} - {""}
    if "CT" in stated or any(sample["minimum"] < CT_EVIDENCE_HU for sample in samples.values()):
        return "CT"  # Hounsfield air, whatever the header says
    return "MR" if stated & {"MR", "MRI"} or not stated else sorted(stated)[0]


def fingerprint_project(project: Project, *, orientation: str = CANONICAL) -> DatasetFingerprint:
    """The fingerprint of every case of ``project`` (geometry) and of its labeled training cases.

    Raises :class:`InputError` when the project has no labeled training case to learn intensities
    and classes from.
    """
    records = project.cases()
    if not records:
        raise InputError(f"project {project.root} has no case to plan from")
    cases = []
    for record in records:
        turn = reorientation(record.direction, record.shape, orientation)
        spacing = turn.target_spacing(record.spacing)
        cases.append(CaseGeometry(record.name, record.split, record.is_labeled, turn.target_shape(), spacing))
    labeled = {r.name: int(r.latest_label_version) for r in records if r.split == "train" and r.is_labeled}
    if not labeled:
        raise InputError(f"project {project.root} has no labeled training case; label one before planning")
    chosen = _even_choice(sorted(labeled), MAX_SAMPLED_CASES)
    samples = _cached_samples(project, {name: labeled[name] for name in chosen})
    intensities = np.asarray([v for s in samples.values() for v in s["intensities"]], dtype=np.float64)
    if intensities.size == 0:
        raise InputError(f"the labeled cases of {project.root} hold no foreground voxel to plan intensities from")
    statistics = {
        "percentile_00_5": float(np.percentile(intensities, 0.5)),
        "percentile_99_5": float(np.percentile(intensities, 99.5)),
        "median": float(np.median(intensities)),
        "mean": float(intensities.mean()),
        "std": float(intensities.std()),
    }
    names = project.label_names()
    total_voxels = sum(s["voxels"] for s in samples.values())
    found = sorted({int(k) for s in samples.values() for k in s["class_voxels"]} | {k for k in names if k})
    classes = []
    for value in found:
        counts = [s["class_voxels"].get(str(value), 0) for s in samples.values()]
        volumes = [n * s["voxel_ml"] for n, s in zip(counts, samples.values(), strict=True) if n]
        surface = sum(s["class_surface_mm2"].get(str(value), 0.0) for s in samples.values())
        classes.append(
            ClassSize(
                label=value,
                name=names.get(value, f"class {value}"),
                voxel_fraction=float(sum(counts) / max(total_voxels, 1)),
                median_volume_ml=float(np.median(volumes)) if volumes else 0.0,
                cases_present=sum(1 for n in counts if n),
                thickness_mm=float(2 * 1000 * sum(volumes) / surface) if surface > 0 else None,
            )
        )
    return DatasetFingerprint(
        orientation=orientation,
        cases=tuple(cases),
        modality=_modality(project, samples),
        foreground_intensity=statistics,
        nonzero_fraction=float(np.mean([s["nonzero_fraction"] for s in samples.values()])),
        classes=tuple(classes),
        sampled_cases=tuple(chosen),
    )
