"""Synthetic training cohorts grown from one real labeled base volume.

Why this exists: the demos and benchmarks need a training set of several
labeled 3D cases, but freely redistributable labeled CT is rare. One real
labeled scan, randomly deformed (anatomy), cropped (field of view), resampled
(scanner resolution) and re-contrasted (scanner and protocol), gives cases that
differ the way patients and scanners differ, while each label map stays
exactly aligned with its image and each grid keeps a physically correct
geometry (spacing, origin, direction), so the cases can be written to NRRD or
NIfTI and overlaid in napari or 3D Slicer like real scans.

The steps of one case, in the order reality applies them:

1. anatomy: MONAI ``Rand3DElasticd`` (rotation, scaling and a smooth elastic
   displacement) on the base grid, one random grid shared by image (linear, or
   a cubic B-spline with ``image_interpolation="cubic"``) and label (nearest, or
   with ``label_interpolation="linear"`` its one-hot maps sampled as the image
   is and the most covered class kept);
2. field of view: ``SpatialCropd`` of 70-100 % of every axis, placed so that no
   labeled structure is cut away completely;
3. resolution: ``Resized`` to a random voxel spacing (anti-aliased image,
   nearest-exact labels, or anti-aliased one-hot maps), the grid's physical
   extent kept;
4. scanner: ``RandAdjustContrastd``, ``RandBiasFieldd`` and
   ``RandGaussianNoised`` on the image only, inside a fixed [0, 1] rescaling of
   the intensity window so that CT comes back in Hounsfield units.

Determinism: every case draws everything from its own ``RandomState`` seeded
by ``SeedSequence([seed, index, attempt])`` and handed to each MONAI transform,
so a case is bit-identical no matter how many cases are generated or in which
order.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from napari_ssl_seg.cohort.field_of_view import draw_crop
from napari_ssl_seg.cohort.label_sampling import LABEL_INTERPOLATIONS, label_channels, label_from_channels
from napari_ssl_seg.errors import InputError
from napari_ssl_seg.io.volume import Volume, geometry_mismatch, validate_volume

# Hounsfield window a CT case is clipped to: air (scanners pad outside the
# reconstruction circle with -3024, which is not tissue) up to the 12-bit top.
CT_WINDOW_HU = (-1024.0, 3071.0)

# A class that vanished (cropped away, squeezed out by the deformation) makes
# the case draw again with the next attempt's seed, at most this many times.
MAX_ATTEMPTS = 4


@dataclass(frozen=True)
class CohortCase:
    """One synthetic case: an image and its label map on the same grid."""

    name: str
    image: Volume
    label: Volume


@dataclass(frozen=True)
class _Ranges:
    """Random ranges of one case, wide enough that cases differ like patients and scanners.

    With the defaults, the lungs of a case overlap the base's lungs with a
    Dice of about 0.73-0.86 in physical space: clearly different, still plausible.

    A separate object (instead of bare constants) lets the tests switch single
    effects off to check geometry exactly.
    """

    # Physical rotation bounds (degrees): in-plane (about the slice axis), and
    # the two out-of-plane tilts (patients lie fairly straight on the table).
    in_plane_deg: float = 15.0
    tilt_deg: float = 5.0
    # Scale factor 1 +- this, independently per axis (patient size and build).
    scale: float = 0.15
    # Elastic field: uniform noise smoothed by a Gaussian of this sigma (voxels)
    # times this magnitude; see the note below the class for the displacement.
    elastic_sigma: tuple[float, float] = (5.0, 7.0)
    elastic_magnitude: tuple[float, float] = (150.0, 300.0)
    # Field of view: fraction of each axis' extent kept.
    crop_fraction: tuple[float, float] = (0.7, 1.0)
    # New spacing = old spacing times these (axis 0 is the slice axis).
    in_plane_factor: tuple[float, float] = (0.75, 1.4)
    through_plane_factor: tuple[float, float] = (0.8, 1.5)
    # Intensity, on the window rescaled to [0, 1]. For CT a gamma of 0.9/1.12
    # moves soft tissue by up to about +150/-150 HU and air and lung much less.
    gamma: tuple[float, float] = (0.9, 1.12)
    # MONAI draws all 20 coefficients of the degree-3 field in [0, c]; with
    # 0.01 the factor stays within about 0.95-1.13 (measured), i.e. soft tissue
    # -50 to +130 HU at the far corners and much less inside: a cupping-like
    # low-frequency shading, not a change of tissue class.
    bias_coeff: float = 0.01
    # Upper bound of the noise standard deviation, as a fraction of the window
    # (0.006 * 4095 HU = 25 HU for CT: a typical low-dose to standard range).
    noise_std: float = 0.006
    # How the deformation samples the image: "linear" averages each sample with its neighbours, which a
    # patient's different anatomy does not do. On the chest CT it takes a third of the ribs' contrast to
    # their surroundings (202 -> 136 HU); "cubic" (a B-spline, SciPy's map_coordinates through MONAI)
    # keeps 180 HU. benchmarks/cohort_contrast.py measures it.
    image_interpolation: str = "linear"
    # How the label follows the image: see cohort/label_sampling.py.
    label_interpolation: str = "nearest"


# Rand3DElastic adds gaussian(uniform(-1, 1) noise) * magnitude to the sampling
# grid. Smoothing white noise of std 0.577 with a normalised 3D Gaussian of
# sigma s leaves a std of at most 0.577 / (2 sqrt(pi) s)^1.5 (less near the
# borders), so sigma 5-7 voxels and magnitude 150-300 displace by about
# 0.8-1.8 voxels (std) and 3-8 voxels at the peak on the 34x128x128 base
# (measured): clearly visible organ-boundary shifts. Folding (negative Jacobian)
# is rare, under 0.1 % of voxels in the few fields that have any.
DEFAULT_RANGES = _Ranges()


@dataclass(frozen=True)
class _Base:
    """The base volume prepared once for many cases."""

    image: Volume
    label: Volume
    intensities: np.ndarray  # float32 [z, y, x], clipped to ``window``
    labels: np.ndarray  # float32 copy of the label map (grid sampling needs float)
    classes: frozenset[int]  # foreground values present in the base label
    window: tuple[float, float]
    is_ct: bool


#: How the anatomy step may sample the image (see ``_Ranges.image_interpolation``).
IMAGE_INTERPOLATIONS = ("linear", "cubic")


def _ranges_for(image_interpolation: str, label_interpolation: str = "nearest") -> _Ranges:
    if image_interpolation not in IMAGE_INTERPOLATIONS:
        raise InputError(
            f"unknown image interpolation {image_interpolation!r} (known: {', '.join(IMAGE_INTERPOLATIONS)})"
        )
    if label_interpolation not in LABEL_INTERPOLATIONS:
        raise InputError(
            f"unknown label interpolation {label_interpolation!r} (known: {', '.join(LABEL_INTERPOLATIONS)})"
        )
    return dataclasses.replace(
        DEFAULT_RANGES, image_interpolation=image_interpolation, label_interpolation=label_interpolation
    )


def generate_case(
    base_image: Volume,
    base_label: Volume,
    *,
    seed: int,
    index: int,
    image_interpolation: str = "linear",
    label_interpolation: str = "nearest",
) -> CohortCase:
    """Case ``index`` of the cohort ``seed``: deterministic in ``(seed, index)`` alone.

    The image keeps CT in Hounsfield units (int16, clipped to
    ``CT_WINDOW_HU``); other modalities stay float32 within the base's value
    range. The label is uint8 on exactly the image's grid, with the base's
    ``label_names``. Raises :class:`InputError` when the base cannot be used.
    """
    _check_seed_index(seed, index)
    ranges = _ranges_for(image_interpolation, label_interpolation)
    return _generate_case(_prepare_base(base_image, base_label), seed=seed, index=index, ranges=ranges)


def generate_cohort(
    base_image: Volume,
    base_label: Volume,
    *,
    cases: int,
    seed: int,
    image_interpolation: str = "linear",
    label_interpolation: str = "nearest",
) -> Iterator[CohortCase]:
    """Cases ``0 .. cases-1`` of the cohort ``seed``, generated lazily one at a time.

    Case ``i`` equals ``generate_case(..., seed=seed, index=i)``, so a cohort
    can be extended or regenerated partially. Inputs are checked here, before
    the first case is requested, so errors surface at the call.
    """
    if isinstance(cases, bool) or not isinstance(cases, int | np.integer) or cases < 0:
        raise InputError(f"number of cases must be a non-negative integer, got {cases!r}")
    _check_seed_index(seed, 0)
    ranges = _ranges_for(image_interpolation, label_interpolation)
    base = _prepare_base(base_image, base_label)
    return (_generate_case(base, seed=seed, index=index, ranges=ranges) for index in range(cases))


def _check_seed_index(seed: int, index: int) -> None:
    for name, value in (("seed", seed), ("case index", index)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
            raise InputError(f"{name} must be a non-negative integer, got {value!r}")


def _is_ct(volume: Volume) -> bool:
    """CT by header, or by content when the format has no modality (NRRD): air below -500 HU."""
    if volume.modality is not None:
        return volume.modality.upper() == "CT"
    return float(np.min(volume.array)) <= -500.0


def _prepare_base(base_image: Volume, base_label: Volume) -> _Base:
    validate_volume(base_image, name="base image")
    validate_volume(base_label, name="base label")
    if mismatch := geometry_mismatch(base_image, base_label):
        raise InputError(f"base label does not match the base image grid: {mismatch}")
    if min(base_image.shape) < 4:
        raise InputError(f"base image is too small to deform and crop: shape {base_image.shape}")
    labels = base_label.array
    if not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == np.bool_):
        raise InputError(f"base label must hold integer label values, got {labels.dtype}")
    values = np.unique(labels)
    if values[0] < 0 or values[-1] > 255:
        raise InputError(f"base label values must lie in 0..255, got {int(values[0])}..{int(values[-1])}")
    is_ct = _is_ct(base_image)
    if is_ct:
        window = CT_WINDOW_HU
    else:
        low, high = base_image.value_range()
        window = (low, high if high > low else low + 1.0)
    intensities = np.clip(base_image.array.astype(np.float32), *window)
    return _Base(
        image=base_image,
        label=base_label,
        intensities=intensities,
        labels=labels.astype(np.float32),
        classes=frozenset(int(v) for v in values if v != 0),
        window=window,
        is_ct=is_ct,
    )


def _case_rng(seed: int, index: int, attempt: int) -> np.random.RandomState:
    # SeedSequence mixes the three numbers into independent streams; MONAI's
    # set_random_state wants the legacy RandomState, which accepts a generator.
    return np.random.RandomState(np.random.MT19937(np.random.SeedSequence([int(seed), int(index), attempt])))


def _generate_case(base: _Base, *, seed: int, index: int, ranges: _Ranges = DEFAULT_RANGES) -> CohortCase:
    best: tuple[int, np.ndarray, np.ndarray, tuple, tuple, tuple[str, ...]] | None = None
    for attempt in range(MAX_ATTEMPTS):
        image, labels, spacing, origin, notes = _synthesise(base, _case_rng(seed, index, attempt), ranges)
        missing = sorted(base.classes - {int(v) for v in np.unique(labels)})
        notes = (f"synthetic cohort case: seed={seed} index={index} attempt={attempt}", *notes)
        if missing:
            notes = (*notes, f"label values missing after the field-of-view crop: {missing}")
        if best is None or len(missing) < best[0]:
            best = (len(missing), image, labels, spacing, origin, notes)
        if not missing:
            break
    assert best is not None
    _, image, labels, spacing, origin, notes = best
    geometry = {"spacing": spacing, "origin": origin, "direction": base.image.direction, "notes": notes}
    return CohortCase(
        name=f"case_{index:03d}",
        image=Volume(array=image, source_format="synthetic", modality=base.image.modality, **geometry),
        label=Volume(
            array=labels,
            source_format="synthetic",
            label_names=dict(base.label.label_names) if base.label.label_names else None,
            **geometry,
        ),
    )


def _voxel_angle(physical_deg: float, ratio: float) -> float:
    """Voxel-space rotation angle (radians) whose physical effect stays within ``physical_deg``.

    MONAI rotates the voxel grid. With spacings ``a`` and ``b`` in the rotation
    plane (``ratio = a / b``), a voxel rotation by t is physically
    ``S R(t) S^-1``, whose off-diagonal terms are ``sin(t) * ratio`` and
    ``sin(t) / ratio``: exact for square pixels, a rotation plus shear
    otherwise. Bounding the larger term by ``sin(physical)`` bounds the
    physical tilt.
    """
    return math.asin(math.sin(math.radians(physical_deg)) / max(ratio, 1.0 / ratio))


def _synthesise(
    base: _Base, rng: np.random.RandomState, ranges: _Ranges
) -> tuple[np.ndarray, np.ndarray, tuple[float, ...], tuple[float, ...], tuple[str, ...]]:
    """One draw of the pipeline: image, labels, spacing (z, y, x), origin (x, y, z), notes."""
    # MONAI is imported here so that importing the package (napari start-up) stays fast.
    import torch
    from monai.transforms import (
        Rand3DElasticd,
        RandAdjustContrastd,
        RandBiasFieldd,
        RandGaussianNoised,
        Resized,
        ScaleIntensityRanged,
        SpatialCropd,
    )

    keys = ("image", "label")
    spacing = np.asarray(base.image.spacing, dtype=float)  # (z, y, x)
    direction = base.image.direction_matrix
    origin = np.asarray(base.image.origin, dtype=float)  # (x, y, z)
    values = np.array(sorted({0, *base.classes}))
    linear_labels = ranges.label_interpolation == "linear"
    label = label_channels(base.labels, values, linear=linear_labels)
    data = {"image": torch.from_numpy(base.intensities[None]), "label": torch.from_numpy(label)}

    # 1. Anatomy. rotate_range follows MONAI's create_rotate: angle 0 turns the
    # (y, x) plane (in-plane), angle 1 the (z, x) plane, angle 2 the (z, y) plane.
    sz, sy, sx = spacing
    rotate = (
        _voxel_angle(ranges.in_plane_deg, sy / sx),
        _voxel_angle(ranges.tilt_deg, sz / sx),
        _voxel_angle(ranges.tilt_deg, sz / sy),
    )
    deform = Rand3DElasticd(
        keys=keys,
        sigma_range=ranges.elastic_sigma,
        magnitude_range=ranges.elastic_magnitude,
        prob=1.0,
        rotate_range=rotate,
        scale_range=(ranges.scale,) * 3,
        mode=(
            "bilinear" if ranges.image_interpolation == "linear" else 3,
            "bilinear" if linear_labels else "nearest",
        ),
        # Replicating the edge (air around the body, the end slices in z)
        # looks like a scan; zeros would be water in HU and reflection would
        # mirror anatomy. Image and label pad the same way, so they agree
        # (SciPy, which a spline order goes to, names it "nearest").
        padding_mode=("border" if ranges.image_interpolation == "linear" else "nearest", "border"),
    )
    deform.set_random_state(state=rng)
    data = deform(data)

    # 2. Field of view.
    deformed = label_from_channels(_as_numpy(data["label"]), values, linear=linear_labels)
    start, size = draw_crop(rng, deformed, base.classes, ranges.crop_fraction)
    data = SpatialCropd(keys=keys, roi_start=start.tolist(), roi_end=(start + size).tolist())(data)
    # The new voxel [0, 0, 0] is old voxel ``start``; index -> LPS is
    # origin + direction @ (spacing * index), all in (x, y, z) order.
    origin = origin + direction @ (spacing[::-1] * start[::-1])

    # 3. Resolution. Through-plane is array axis 0 (the slice axis); both
    # in-plane axes share one factor so square pixels stay square.
    factor_z = rng.uniform(*ranges.through_plane_factor)
    factor_xy = rng.uniform(*ranges.in_plane_factor)
    new_size = np.maximum(2, np.rint(size / np.array([factor_z, factor_xy, factor_xy]))).astype(int)
    # The spacing is adjusted to the rounded voxel count so that the physical
    # extent (size * spacing, voxel edge to voxel edge) is kept exactly.
    new_spacing = spacing * size / new_size
    resize = Resized(
        keys=keys,
        spatial_size=new_size.tolist(),
        # Both modes are voxel-centre aligned (align_corners=False; plain
        # "nearest" in torch is not), matching the origin formula below.
        mode=("trilinear", "trilinear" if linear_labels else "nearest-exact"),
        # Thicker slices average; class ids must not, their one-hot maps may.
        anti_aliasing=(True, linear_labels),
    )
    data = resize(data)
    # With extents kept, the first new voxel centre lies half a new voxel from
    # the shared edge, the old one half an old voxel: the origin moves by half
    # the spacing difference along each axis.
    origin = origin + direction @ ((new_spacing - spacing)[::-1] / 2.0)

    # 4. Scanner: on the window rescaled to [0, 1], so that the gamma keeps its
    # end points, the multiplicative bias field leaves air (0) as air, and the
    # map back restores HU.
    low, high = base.window
    scanner = [
        ScaleIntensityRanged(keys="image", a_min=low, a_max=high, b_min=0.0, b_max=1.0, clip=True),
        RandAdjustContrastd(keys="image", prob=1.0, gamma=ranges.gamma),
        RandBiasFieldd(keys="image", prob=1.0, coeff_range=(0.0, ranges.bias_coeff)),
        RandGaussianNoised(keys="image", prob=1.0, std=ranges.noise_std),
        ScaleIntensityRanged(keys="image", a_min=0.0, a_max=1.0, b_min=low, b_max=high, clip=True),
    ]
    for transform in scanner:
        if hasattr(transform, "set_random_state"):
            transform.set_random_state(state=rng)
        data = transform(data)

    image = _as_numpy(data["image"])[0]
    image = np.rint(image).astype(np.int16) if base.is_ct else np.ascontiguousarray(image, dtype=np.float32)
    labels = label_from_channels(_as_numpy(data["label"]), values, linear=linear_labels)
    notes = (
        f"crop start (z, y, x) {start.tolist()} size {size.tolist()} of base shape {list(base.image.shape)}",
        f"spacing (z, y, x) {np.round(new_spacing, 4).tolist()} mm from {np.round(spacing, 4).tolist()} mm",
    )
    return image, labels, tuple(new_spacing.tolist()), tuple(origin.tolist()), notes


def _as_numpy(tensor) -> np.ndarray:
    from monai.utils import convert_to_numpy

    return np.ascontiguousarray(convert_to_numpy(tensor))
