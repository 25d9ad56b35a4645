"""The overlays let the anatomy show, and an uncertain region is marked and framed (rendered under xvfb)."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import unlabeled_case

from napari_ssl_seg.widgets.assistant import dock_assistant
from napari_ssl_seg.widgets.overlays import LARGE_CLASS_ALPHA, SMALL_CLASS_ALPHA, class_fill_alpha
from napari_ssl_seg.widgets.region_view import MIN_FIELD_OF_VIEW_MM, field_of_view
from napari_ssl_seg.widgets.viewer_sessions import session_for

pytestmark = pytest.mark.gui


def test_large_classes_get_the_light_fill_and_absent_ones_none():
    counts = np.array([700, 250, 40, 0, 10])  # background, a large class, two small, one absent
    alphas = class_fill_alpha(counts, int(counts.sum()))
    assert alphas == {1: LARGE_CLASS_ALPHA, 2: SMALL_CLASS_ALPHA, 4: SMALL_CLASS_ALPHA}
    assert LARGE_CLASS_ALPHA < SMALL_CLASS_ALPHA


def test_the_view_frames_a_few_region_widths_within_the_scan():
    assert field_of_view(np.array([5.0, 5.0]), np.array([300.0, 300.0])) == MIN_FIELD_OF_VIEW_MM
    assert field_of_view(np.array([40.0, 20.0]), np.array([300.0, 300.0])) == pytest.approx(160.0)
    assert field_of_view(np.array([200.0, 20.0]), np.array([300.0, 250.0])) == pytest.approx(300.0)


def _only_visible(viewer, *shown) -> None:
    for layer in viewer.layers:
        layer.visible = any(layer is other for other in shown)


def _camera(viewer):
    return viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera


def _canvas(viewer) -> np.ndarray:
    return viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(int)


@pytest.fixture
def open_case(make_napari_viewer, project_root):
    viewer = make_napari_viewer(show=True)
    dock_assistant(viewer, project_root)
    session = session_for(viewer)
    case = unlabeled_case(project_root)
    session.open_case(case)
    return viewer, session, case


def test_uncertainty_is_transparent_below_its_threshold_and_the_anatomy_shows_through_above(open_case):
    viewer, session, case = open_case
    image_layer = next(layer for layer in viewer.layers if layer.name == case)
    shape = session.label_layer.data.shape
    entropy = np.zeros(shape, dtype=np.float32)
    entropy[...] = 0.4  # below the default threshold (half of ln C) everywhere
    image = session.project.read_image(case)
    session.threshold = 0.5
    session.show_prediction(
        case, image.with_array(np.zeros(shape, np.uint8), label_names=None), image.with_array(entropy)
    )
    overlay = session.uncertainty_layer
    assert overlay.blending != "additive"
    _only_visible(viewer, image_layer)
    viewer.reset_view()
    anatomy = _canvas(viewer)
    _only_visible(viewer, image_layer, overlay)
    assert np.array_equal(_canvas(viewer), anatomy), "the overlay tints voxels below its threshold"

    # At the highest entropy the overlay is seen, and the anatomy's contrast still shows through it.
    overlay.data = np.full(shape, overlay.contrast_limits[1], dtype=np.float32)
    covered = _canvas(viewer)
    assert np.abs(covered - anatomy).sum(axis=-1).mean() > 5, "the overlay drew nothing"
    body = anatomy.mean(axis=-1)
    dark, bright = body <= np.percentile(body, 20), body >= np.percentile(body, 95)
    assert bright.any() and dark.any()
    seen = covered.mean(axis=-1)
    assert seen[bright].mean() - seen[dark].mean() > 0.2 * (body[bright].mean() - body[dark].mean())
    assert covered[bright].min() < 250, "bright anatomy is washed out to white"


def test_a_large_class_is_filled_lighter_than_a_small_one_and_outlines_are_one_click(open_case, qtbot):
    viewer, session, case = open_case
    shape = session.label_layer.data.shape
    label = np.zeros(shape, np.uint8)
    label[:, : shape[1] // 2, :] = 1  # half the volume
    label[1:3, -6:-2, -6:-2] = 2  # a few voxels
    image = session.project.read_image(case)
    session.show_prediction(case, image.with_array(label, label_names=None), None)
    layer = session.label_layer
    alpha_large, alpha_small = (float(np.asarray(layer.colormap.map(value)).reshape(-1)[3]) for value in (1, 2))
    assert alpha_large < alpha_small and layer.contour == 0
    label_dock = next(
        widget for widget in viewer.window.dock_widgets.values() if type(widget).__name__ == "LabelWidget"
    )
    label_dock.outline.setChecked(True)
    assert layer.contour > 0 and session.label_contours
    other = unlabeled_case_other(session, case)
    if other is not None:
        session.open_case(other)
        assert session.label_layer.contour > 0, "the next case forgot the outline choice"


def unlabeled_case_other(session, case: str) -> str | None:
    return next((c.name for c in session.project.cases() if c.name != case and not c.is_labeled), None)


def test_the_current_uncertain_region_is_marked_and_framed_and_the_label_stays_selected(open_case):
    viewer, session, case = open_case
    shape = session.label_layer.data.shape
    entropy = np.zeros(shape, dtype=np.float32)
    z = shape[0] // 2
    entropy[z - 1 : z + 2, 10:14, 20:24] = 2.0
    image = session.project.read_image(case)
    viewer.layers.selection.active = session.label_layer
    viewer.reset_view()
    whole_scan_zoom = _camera(viewer).zoom
    session.threshold = 0.5
    session.show_prediction(
        case, image.with_array(np.zeros(shape, np.uint8), label_names=None), image.with_array(entropy)
    )
    assert session.region_index == 0
    markers = [layer for layer in viewer.layers if layer.name.endswith("uncertain region")]
    assert len(markers) == 1 and len(markers[0].data) == 1
    centre = np.asarray(session.uncertainty_layer.data_to_world(session.regions[0].centre))
    np.testing.assert_allclose(markers[0].data_to_world(markers[0].data[0]), centre, atol=1e-6)
    steps = [step for _start, _stop, step in viewer.dims.range]
    np.testing.assert_allclose(steps[-3:], session.uncertainty_layer.scale[-3:])  # the slider keeps its steps
    np.testing.assert_allclose(_camera(viewer).center[-2:], centre[-2:], atol=1e-3)
    assert _camera(viewer).zoom > 1.5 * whole_scan_zoom, "the view did not zoom in on a small region"
    span = float(np.min(viewer.canvas.size)) / _camera(viewer).zoom
    assert span >= MIN_FIELD_OF_VIEW_MM - 1e-6, "the region fills the view without context"
    assert viewer.layers.selection.active is session.label_layer, "the marker took the annotator's layer"
    # Leaving the case removes its marker with its other layers.
    session.close_case()
    assert not [layer for layer in viewer.layers if layer.name.endswith("uncertain region")]
