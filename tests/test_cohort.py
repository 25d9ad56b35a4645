"""The synthetic cohort: deterministic, varied, and physically where the base says it is."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from napari_ssl_seg.cohort.field_of_view import draw_crop
from napari_ssl_seg.cohort.generator import (
    CT_WINDOW_HU,
    DEFAULT_RANGES,
    CohortCase,
    _generate_case,
    _prepare_base,
    generate_case,
    generate_cohort,
)
from napari_ssl_seg.errors import InputError
from napari_ssl_seg.io import Volume, geometry_mismatch, read_volume

SAMPLE_DIR = Path(__file__).parents[1] / "sample_data"
LUNGS = (5, 6)  # right and left lung in Segmentation.seg.nrrd

# Every effect that moves or changes voxel values switched off; only the
# field-of-view crop and the spacing change remain, upsampling only so that no
# anti-aliasing blur enters. The result must then be the base resampled onto
# the case's declared grid, which an independent resampler (SimpleITK) checks.
GEOMETRY_ONLY = replace(
    DEFAULT_RANGES,
    in_plane_deg=0.0,
    tilt_deg=0.0,
    scale=0.0,
    elastic_magnitude=(0.0, 0.0),
    in_plane_factor=(0.75, 0.95),
    through_plane_factor=(0.8, 0.95),
    gamma=(1.0, 1.0),
    bias_coeff=0.0,
    noise_std=0.0,
)


@pytest.fixture(scope="module")
def base() -> tuple[Volume, Volume]:
    return read_volume(SAMPLE_DIR / "CTChest4.nrrd"), read_volume(SAMPLE_DIR / "Segmentation.seg.nrrd")


@pytest.fixture(scope="module")
def cohort(base) -> list[CohortCase]:
    return list(generate_cohort(*base, cases=6, seed=11))


def to_sitk(volume: Volume, array: np.ndarray | None = None) -> sitk.Image:
    image = sitk.GetImageFromArray(volume.array if array is None else array)
    image.SetSpacing(volume.spacing[::-1])
    image.SetOrigin(volume.origin)
    image.SetDirection(np.ravel(volume.direction))
    return image


def lps_points(volume: Volume, mask: np.ndarray) -> np.ndarray:
    """LPS millimetres of the voxels in ``mask``: origin + direction @ (spacing * index), in (x, y, z)."""
    index_xyz = np.argwhere(mask)[:, ::-1].astype(float)
    spacing_xyz = np.asarray(volume.spacing[::-1])
    return np.asarray(volume.origin) + (index_xyz * spacing_xyz) @ np.asarray(volume.direction).T


def base_index_of(volume: Volume, base: Volume) -> np.ndarray:
    """Continuous base index (x, y, z) of every voxel centre of ``volume``, shaped [z, y, x, 3]."""
    points = lps_points(volume, np.ones(volume.shape, dtype=bool))
    # Inverse of lps_points for the base: the direction is orthonormal, so its inverse is its transpose.
    index = (points - np.asarray(base.origin)) @ np.asarray(base.direction) / np.asarray(base.spacing[::-1])
    return index.reshape(*volume.shape, 3)


def assert_same_case(a: CohortCase, b: CohortCase) -> None:
    assert a.name == b.name
    for va, vb in ((a.image, b.image), (a.label, b.label)):
        assert va.array.dtype == vb.array.dtype
        np.testing.assert_array_equal(va.array, vb.array)
        assert (va.spacing, va.origin, va.direction, va.notes) == (vb.spacing, vb.origin, vb.direction, vb.notes)


def test_case_depends_only_on_seed_and_index(base, cohort):
    # Alone, out of order, and as part of a cohort of another length: bit-identical.
    alone = generate_case(*base, seed=11, index=4)
    assert_same_case(alone, cohort[4])
    assert_same_case(generate_case(*base, seed=11, index=1), cohort[1])
    shorter = list(generate_cohort(*base, cases=2, seed=11))
    assert_same_case(shorter[1], cohort[1])


def test_other_index_or_seed_gives_another_case(base, cohort):
    other_seed = generate_case(*base, seed=12, index=0)
    for case in (cohort[1], other_seed):
        assert case.image.shape != cohort[0].image.shape or not np.array_equal(case.image.array, cohort[0].image.array)
        assert case.image.spacing != cohort[0].image.spacing


def test_image_and_label_share_one_grid(base, cohort):
    base_image, base_label = base
    base_values = set(np.unique(base_label.array).tolist())
    for case in cohort:
        assert re.fullmatch(r"case_\d{3}", case.name)
        assert geometry_mismatch(case.image, case.label) is None
        assert case.image.spacing == case.label.spacing and case.image.origin == case.label.origin
        assert case.image.direction == base_image.direction == case.label.direction
        assert case.label.array.dtype == np.uint8
        assert case.image.array.dtype == np.int16  # CT stays in integer HU
        assert case.label.label_names == base_label.label_names
        assert set(np.unique(case.label.array).tolist()) == base_values  # every class survives, none invented
        low, high = case.image.value_range()
        assert CT_WINDOW_HU[0] <= low and high <= CT_WINDOW_HU[1]
        # Still CT: air outside the body, soft tissue and lung where labeled.
        assert low == CT_WINDOW_HU[0]
        assert -950 < np.median(case.image.array[np.isin(case.label.array, LUNGS)]) < -500
        assert -200 < np.median(case.image.array[case.label.array == 7]) < 200


def test_cases_vary_in_grid(cohort):
    assert len({case.image.shape for case in cohort}) == len(cohort)
    spacings = np.array([case.image.spacing for case in cohort])
    assert np.ptp(spacings[:, 0]) > 1.0 and np.ptp(spacings[:, 2]) > 0.3  # millimetres across 6 cases


def test_lungs_deformed_but_where_the_base_has_them(base, cohort):
    """Compared in physical space: shape clearly changed, position plausibly kept.

    The case label is resampled onto the base grid through both geometries, so
    a wrong origin, spacing or direction shows as a low overlap.
    """
    _, base_label = base
    reference = to_sitk(base_label)
    for case in cohort:
        onto_base = sitk.GetArrayFromImage(
            sitk.Resample(to_sitk(case.label), reference, sitk.Transform(), sitk.sitkNearestNeighbor, 255)
        )
        in_view = onto_base != 255
        base_lungs = np.isin(base_label.array, LUNGS) & in_view
        case_lungs = np.isin(onto_base, LUNGS)
        dice = 2 * np.sum(base_lungs & case_lungs) / (base_lungs.sum() + case_lungs.sum())
        assert 0.55 < dice < 0.93, f"{case.name}: lung Dice with the base {dice:.3f}"


def test_lung_centroid_stays_near_the_base(base, cohort):
    _, base_label = base
    base_centroid = lps_points(base_label, np.isin(base_label.array, LUNGS)).mean(axis=0)
    for case in cohort:
        centroid = lps_points(case.label, np.isin(case.label.array, LUNGS)).mean(axis=0)
        assert np.linalg.norm(centroid - base_centroid) < 40.0, case.name


def oblique_base() -> tuple[Volume, Volume]:
    """A small non-CT volume with an oblique direction and non-square pixels."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(3)
    smooth = gaussian_filter(rng.normal(size=(10, 24, 28)), 2.0)
    image = (200 + 100 * smooth / smooth.std()).astype(np.float32)
    labels = np.digitize(smooth, np.quantile(smooth, [0.5, 0.8])).astype(np.uint8)
    c, s = np.cos(0.3), np.sin(0.3)
    direction = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]) @ np.array([[1, 0, 0], [0, c, s], [0, -s, c]])
    geometry = {"spacing": (2.5, 0.8, 0.7), "origin": (-12.5, 30.25, 101.0), "direction": direction}
    return Volume(array=image, **geometry), Volume(array=labels, label_names={1: "a", 2: "b"}, **geometry)


@pytest.mark.parametrize("which", ["ct", "oblique"])
def test_crop_and_resample_geometry_is_exact(base, which):
    """Without deformation and intensity changes, a case is the base resampled onto its own declared grid."""
    base_image, base_label = base if which == "ct" else oblique_base()
    prepared = _prepare_base(base_image, base_label)
    low, high = prepared.window
    for index in range(3):
        case = _generate_case(prepared, seed=7, index=index, ranges=GEOMETRY_ONLY)
        assert case.image.shape != base_image.shape  # the crop and resample did happen
        grid = to_sitk(case.image)
        clipped = to_sitk(base_image, np.clip(base_image.array, low, high).astype(np.float32))
        expected = sitk.GetArrayFromImage(sitk.Resample(clipped, grid, sitk.Transform(), sitk.sitkLinear, np.nan))
        expected_labels = sitk.GetArrayFromImage(
            sitk.Resample(to_sitk(base_label), grid, sitk.Transform(), sitk.sitkNearestNeighbor, 255)
        )
        assert not np.isnan(expected).any() and not (expected_labels == 255).any()  # grid inside the base
        tolerance = 0.51 if which == "ct" else 1e-3 * (high - low)  # CT is rounded to integer HU
        # The outermost voxel centres lie up to half an old voxel beyond the
        # cropped data, where the crop replicates its edge but SimpleITK still
        # sees the uncropped base; everything inside must agree.
        inner = (slice(1, -1),) * 3
        np.testing.assert_allclose(case.image.array[inner], expected[inner], atol=tolerance, rtol=0)
        # Nearest neighbour is exact except where a voxel centre falls exactly
        # halfway between two base voxels (ties that each library rounds its way).
        halfway = np.abs(base_index_of(case.label, base_label) % 1.0 - 0.5) < 1e-6
        tie = halfway.any(axis=-1)
        assert tie.mean() < 0.1
        np.testing.assert_array_equal(case.label.array[~tie], expected_labels[~tie])


def test_crop_keeps_every_class_in_view():
    labels = np.zeros((20, 30, 40), dtype=np.uint8)
    labels[0, 0, 0] = 1  # opposite corners: a 70 % crop anywhere would lose one of them
    labels[-1, -1, -1] = 2
    labels[8:12, 10:20, 15:25] = 3
    for seed in range(30):
        start, size = draw_crop(np.random.RandomState(seed), labels, frozenset({1, 2, 3}), (0.7, 1.0))
        crop = labels[tuple(slice(a, a + n) for a, n in zip(start, size, strict=True))]
        assert set(np.unique(crop).tolist()) == {0, 1, 2, 3}
    middle_only = labels.copy()
    middle_only[middle_only != 3] = 0
    sizes = set()
    for seed in range(30):
        start, size = draw_crop(np.random.RandomState(seed), middle_only, frozenset({3}), (0.7, 1.0))
        assert np.all(size >= np.ceil(0.7 * np.array(labels.shape))) and np.all(start + size <= labels.shape)
        assert 3 in middle_only[tuple(slice(a, a + n) for a, n in zip(start, size, strict=True))]
        sizes.add(tuple(size.tolist()))
    assert len(sizes) > 10  # genuinely random when nothing constrains it


def test_vanished_class_is_redrawn_with_a_derived_seed(monkeypatch):
    image, label = oblique_base()
    labels = label.array.copy()
    labels[5, 12, 14] = 3  # one voxel: the deformation or resampling often loses it
    label = label.with_array(labels, label_names={1: "a", 2: "b", 3: "dot"})
    cases = [generate_case(image, label, seed=0, index=index) for index in range(6)]
    for case in cases:
        assert set(np.unique(case.label.array).tolist()) == {0, 1, 2, 3}, case.label.notes
    assert any("attempt=0" not in case.label.notes[0] for case in cases)  # a redraw happened
    assert_same_case(generate_case(image, label, seed=0, index=5), cases[5])

    # With no second chance the loss is reported, not hidden.
    monkeypatch.setattr("napari_ssl_seg.cohort.generator.MAX_ATTEMPTS", 1)
    single = [generate_case(image, label, seed=0, index=index) for index in range(6)]
    lost = [case for case in single if 3 not in case.label.array]
    assert lost
    for case in lost:
        assert "missing" in case.label.notes[-1] and "[3]" in case.label.notes[-1]


def test_non_ct_base_stays_float_in_its_own_range():
    image = read_volume(SAMPLE_DIR / "breast1_image.nrrd")
    label = read_volume(SAMPLE_DIR / "breast1_label.nrrd")
    case = generate_case(image, label, seed=0, index=3)
    assert case.image.array.dtype == np.float32
    low, high = image.value_range()
    assert low <= float(case.image.array.min()) and float(case.image.array.max()) <= high
    assert set(np.unique(case.label.array).tolist()) == {0, 1}


def test_unusable_inputs_are_input_errors(base):
    base_image, base_label = base
    shifted = Volume(array=base_label.array, spacing=base_label.spacing, origin=(0.0, 0.0, 0.0))
    with pytest.raises(InputError, match="does not match"):
        generate_case(base_image, shifted, seed=0, index=0)
    float_label = base_label.with_array(base_label.array.astype(np.float32))
    with pytest.raises(InputError, match="integer"):
        generate_case(base_image, float_label, seed=0, index=0)
    with pytest.raises(InputError, match="seed"):
        generate_case(base_image, base_label, seed=-1, index=0)
    with pytest.raises(InputError, match="cases"):
        generate_cohort(base_image, base_label, cases=-2, seed=0)  # raised at the call, not at first next()
    assert list(generate_cohort(base_image, base_label, cases=0, seed=0)) == []


def _rib_contrast(case: CohortCase) -> float:
    """Median HU inside the ribs (label 1) minus the median of the one-voxel shell around them."""
    from scipy import ndimage

    ribs = case.label.array == 1
    shell = ndimage.binary_dilation(ribs) & ~ribs
    image = case.image.array.astype(np.float32)
    return float(np.median(image[ribs]) - np.median(image[shell]))


def test_cubic_image_interpolation_keeps_thin_structures_and_changes_nothing_else(base):
    linear = generate_case(*base, seed=11, index=2)
    cubic = generate_case(*base, seed=11, index=2, image_interpolation="cubic")
    # The same draw: the same anatomy, grid and label; only how the image was sampled differs.
    np.testing.assert_array_equal(cubic.label.array, linear.label.array)
    assert (cubic.image.spacing, cubic.image.origin, cubic.image.direction) == (
        linear.image.spacing,
        linear.image.origin,
        linear.image.direction,
    )
    assert cubic.image.array.dtype == np.int16 and not np.array_equal(cubic.image.array, linear.image.array)
    low, high = CT_WINDOW_HU
    assert low <= cubic.image.array.min() and cubic.image.array.max() <= high
    # The ribs, a voxel or two across, stay brighter than what surrounds them.
    assert _rib_contrast(cubic) > _rib_contrast(linear) + 10
    # Large structures keep their intensities: the lungs' median moves by a few HU at most.
    lungs = np.isin(linear.label.array, LUNGS)
    assert abs(float(np.median(cubic.image.array[lungs])) - float(np.median(linear.image.array[lungs]))) < 30
    assert_same_case(cubic, generate_case(*base, seed=11, index=2, image_interpolation="cubic"))
    with pytest.raises(InputError, match="interpolation"):
        generate_case(*base, seed=11, index=2, image_interpolation="quadratic")


def test_linear_label_interpolation_labels_what_the_image_shows_on_the_same_draw(base):
    nearest = generate_case(*base, seed=11, index=2)
    linear = generate_case(*base, seed=11, index=2, label_interpolation="linear")
    # The same draw: the same image on the same grid; only how the label followed it differs.
    np.testing.assert_array_equal(linear.image.array, nearest.image.array)
    assert (linear.label.spacing, linear.label.origin) == (nearest.label.spacing, nearest.label.origin)
    assert linear.label.array.dtype == np.uint8 and linear.label.label_names == nearest.label.label_names
    assert set(np.unique(linear.label.array)) == set(np.unique(base[1].array))
    # Large structures hardly move; a voxel is now the class covering most of it ...
    for value in (*LUNGS, 7):
        a, b = nearest.label.array == value, linear.label.array == value
        assert 2 * np.sum(a & b) / (a.sum() + b.sum()) > 0.93
    # ... so the ribs, one voxel across, are labeled where the image shows bone rather than wherever a
    # sample point fell: brighter against their surroundings than the nearest labels' ribs.
    assert _rib_contrast(linear) > _rib_contrast(nearest) + 5
    assert_same_case(linear, generate_case(*base, seed=11, index=2, label_interpolation="linear"))
    with pytest.raises(InputError, match="label interpolation"):
        generate_case(*base, seed=11, index=2, label_interpolation="cubic")


def test_linear_label_interpolation_refuses_a_base_whose_one_hot_maps_would_not_fit(base, monkeypatch):
    import napari_ssl_seg.cohort.label_sampling as label_sampling

    monkeypatch.setattr(label_sampling, "MAX_ONE_HOT_BYTES", 8 * base[1].array.size * 4 - 1)  # 8 maps of float32
    with pytest.raises(InputError, match=r"linear label interpolation needs .* for the 8 classes"):
        generate_case(*base, seed=11, index=0, label_interpolation="linear")
    assert generate_case(*base, seed=11, index=0).label.array.dtype == np.uint8  # nearest needs no maps
