"""The annotation-assist docks in a real napari viewer (under xvfb): the whole loop a user sees."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import SAMPLE_DIR
from helpers import unlabeled_case
from napari.utils.notifications import notification_manager

from napari_ssl_seg.store import Project
from napari_ssl_seg.store.models import active_model
from napari_ssl_seg.training.batchnorm import statistics_summary
from napari_ssl_seg.training.runlog import read_log
from napari_ssl_seg.widgets.assistant import dock_assistant
from napari_ssl_seg.widgets.viewer_sessions import session_for

pytestmark = pytest.mark.gui


def errors_shown() -> list[str]:
    return [str(record.message) for record in notification_manager.records if record.severity == "error"]


def test_predict_shows_editable_labels_and_uncertainty_in_source_geometry(make_napari_viewer, qtbot, project_root):
    viewer = make_napari_viewer()
    docks = dock_assistant(viewer, project_root)
    table = docks["Project"].table
    with Project.open(project_root) as project:
        assert table.rowCount() == len(project.cases())
        case = unlabeled_case(project_root)
        spacing = project.case(case).spacing
    row = next(r for r in range(table.rowCount()) if table.item(r, 0).text() == case)
    docks["Project"].open_row(row)
    session = session_for(viewer)
    assert session.case == case and session.label_layer is not None
    with qtbot.waitSignal(session.prediction_shown, timeout=120_000):
        worker = docks["Teacher"].predict()
    assert not worker.is_running or qtbot.waitUntil(lambda: not worker.is_running, timeout=10_000) is None
    labels, uncertainty = session.label_layer, session.uncertainty_layer
    assert labels._type_string == "labels" and labels.editable
    np.testing.assert_allclose(labels.scale, spacing)
    np.testing.assert_allclose(uncertainty.scale, spacing)
    assert uncertainty.blending == "translucent" and uncertainty.data.shape == labels.data.shape
    assert float(uncertainty.data.max()) > 0
    # The table now shows the case as predicted with a score, and the regions dock lists regions.
    rows = {table.item(r, 0).text(): table.item(r, 2).text() for r in range(table.rowCount())}
    assert rows[case] == "predicted"
    docks["Teacher"].threshold.setValue(0.0)
    assert docks["Uncertain regions"].region_list.count() == len(session.regions) >= 1


def test_saved_label_is_a_new_version_with_effort_and_restorable(make_napari_viewer, project_root):
    viewer = make_napari_viewer()
    docks = dock_assistant(viewer, project_root)
    session = session_for(viewer)
    case = unlabeled_case(project_root)
    session.open_case(case)
    layer = session.label_layer
    before = np.asarray(layer.data).copy()
    layer.paint((before.shape[0] // 2, 5, 5), 1, refresh=True)
    assert session.clock.dirty
    docks["Label"].author.setText("dr_test")
    first = docks["Label"].save()
    layer.paint((before.shape[0] // 2, 20, 20), 2, refresh=True)
    second = docks["Label"].save()
    with Project.open(project_root) as project:
        versions = project.label_versions(case)
        assert [v.version for v in versions] == [first.version, second.version] == [1, 2]
        assert versions[0].author == "dr_test" and versions[0].edit_seconds > 0
        assert versions[1].changed_voxels >= 1
        assert (project_root / versions[1].path).is_file()
        saved = project.read_label(case).array
    np.testing.assert_array_equal(saved, np.asarray(layer.data))
    assert docks["Label"].table.rowCount() == 2
    # Undo back to version 1: a third version with version 1's content.
    restored = session.restore_version(1, "dr_test")
    with Project.open(project_root) as project:
        assert restored.version == 3
        np.testing.assert_array_equal(project.read_label(case, 3).array, project.read_label(case, 1).array)


def test_leaving_a_case_with_unsaved_edits_asks_first(make_napari_viewer, project_root):
    viewer = make_napari_viewer()
    docks = dock_assistant(viewer, project_root)
    session = session_for(viewer)
    with Project.open(project_root) as project:
        first, second = [c.name for c in project.cases()][:2]
    session.open_case(first)
    session.label_layer.paint((1, 3, 3), 1, refresh=True)
    docks["Label"].ask_leave = lambda _case: "cancel"
    assert session.open_case(second) is False and session.case == first
    docks["Label"].ask_leave = lambda _case: "save"
    assert session.open_case(second) is True and session.case == second
    with Project.open(project_root) as project:
        assert project.label_versions(first)[-1].kind == "annotation"


def test_next_region_moves_the_slice_to_the_most_uncertain_place(make_napari_viewer, project_root):
    viewer = make_napari_viewer()
    dock_assistant(viewer, project_root)
    session = session_for(viewer)
    case = unlabeled_case(project_root)
    session.open_case(case)
    image = session.label_layer
    entropy = np.zeros(image.data.shape, dtype=np.float32)
    small, big = (2, 4, 4), (image.data.shape[0] - 3, 20, 24)
    entropy[small[0] - 1 : small[0] + 2, 3:6, 3:6] = 0.9  # 27 voxels
    entropy[big[0] - 1 : big[0] + 2, 18:23, 22:27] = 0.9  # 75 voxels: more summed entropy
    with Project.open(project_root) as project:
        volume = project.read_image(case).with_array(entropy, label_names=None)
    session.threshold = 0.5
    session.show_prediction(case, volume.with_array(np.asarray(image.data), label_names=None), volume)
    assert len(session.regions) == 2 and session.region_index == 0
    expected_world = image.data_to_world(session.regions[0].centre)
    np.testing.assert_allclose(viewer.dims.point[0], expected_world[0], atol=1e-3)
    assert abs(session.regions[0].centre[0] - big[0]) < 1e-6
    session.goto_region()
    np.testing.assert_allclose(viewer.dims.point[0], image.data_to_world(session.regions[1].centre)[0], atol=1e-3)


def test_overlay_renders_where_the_uncertainty_is_high(make_napari_viewer, project_root):
    viewer = make_napari_viewer(show=True)
    dock_assistant(viewer, project_root)
    session = session_for(viewer)
    case = unlabeled_case(project_root)
    session.open_case(case)
    shape = session.label_layer.data.shape
    entropy = np.zeros(shape, dtype=np.float32)
    entropy[:, : shape[1] // 2, :] = 1.5  # the top half of every slice is maximally uncertain
    with Project.open(project_root) as project:
        volume = project.read_image(case).with_array(entropy, label_names=None)
    for layer in list(viewer.layers):
        layer.visible = layer is session.uncertainty_layer
    session.show_prediction(case, volume.with_array(np.zeros(shape, np.uint8), label_names=None), volume)
    for layer in viewer.layers:
        layer.visible = layer is session.uncertainty_layer
    viewer.reset_view()

    def bright_rows() -> set[int]:
        picture = viewer.screenshot(canvas_only=True, flash=False)
        brightness = picture[..., :3].astype(float).mean(axis=-1)
        # Entropy 1.5 of ln 8 through inferno at 70% opacity: an orange of mean channel about 70.
        return set(np.flatnonzero(brightness.max(axis=1) > 40).tolist())

    first_half = bright_rows()
    # The direction may flip y on screen, so compare with the other half instead of assuming "top".
    session.uncertainty_layer.data = np.ascontiguousarray(entropy[:, ::-1, :])
    second_half = bright_rows()
    assert first_half and second_half, "the overlay drew nothing"
    assert len(first_half & second_half) <= 2, "the bright rows do not follow the uncertain voxels"


def test_bad_project_folder_is_a_notification_not_a_crash(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    docks = dock_assistant(viewer)
    (tmp_path / "not_a_project").mkdir()
    count = len(errors_shown())
    docks["Project"].path_edit.setText(str(tmp_path / "not_a_project"))
    docks["Project"].path_edit.returnPressed.emit()
    shown = errors_shown()[count:]
    assert len(shown) == 1 and "\n" not in shown[0]
    assert session_for(viewer).project is None


def test_an_unreadable_cached_prediction_opens_the_case_with_a_warning(make_napari_viewer, project_root):
    from napari_ssl_seg.store.ranking_cache import prediction_paths

    viewer = make_napari_viewer()
    dock_assistant(viewer, project_root)
    session = session_for(viewer)
    case = unlabeled_case(project_root)
    with Project.open(project_root) as project:
        label_path = prediction_paths(project, active_model(project).name, case)[0]
    label_path.parent.mkdir(parents=True, exist_ok=True)
    label_path.write_bytes(b"NRRD0004\ntype: uint8\ndimension: 3\n")  # a write cut short by a crash
    errors, records = len(errors_shown()), len(notification_manager.records)
    assert session.open_case(case) is True and session.case == case
    assert not np.asarray(session.label_layer.data).any()
    assert errors_shown()[errors:] == []
    warned = [str(r.message) for r in notification_manager.records[records:] if r.severity == "warning"]
    assert len(warned) == 1 and case in warned[0] and "unreadable" in warned[0]


@pytest.fixture(scope="module")
def trained_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from helpers import tiny_trained_project

    return tiny_trained_project(tmp_path_factory.mktemp("gui_retrain"))


def active_name(root: Path) -> str:
    with Project.open(root) as project:
        return active_model(project).name


def test_one_click_retrain_finishes_and_promotes_only_a_teacher_as_good(make_napari_viewer, qtbot, trained_root):
    from helpers import TINY

    before = active_name(trained_root)
    viewer = make_napari_viewer()
    docks = dock_assistant(viewer, trained_root)
    retrain = docks["Retrain"]
    retrain.iterations.setValue(2)
    job = retrain.start(overrides=[*TINY, "batchnorm_batches=2"])
    assert job.pid != os.getpid() and retrain.cancel_button.isEnabled()
    assert session_for(viewer).in_training  # the snapshot's cases show as "in training"
    assert retrain.busy
    qtbot.waitUntil(lambda: retrain.outcome is not None, timeout=180_000)
    outcome = retrain.outcome
    # The validation ran in a child process; the rule must still hold.
    assert outcome.old_version == before and outcome.new_version not in (None, before)
    assert outcome.promoted == (outcome.new_dice >= outcome.old_dice)
    assert active_name(trained_root) == (outcome.new_version if outcome.promoted else before)
    assert retrain.bar.value() == 2 and len(retrain.curves.points[0]) >= 1
    # The run's end-of-run BatchNorm step is reported with the outcome, as its log recorded it.
    step = next(record for record in read_log(job.out_dir / "log.jsonl") if record["kind"] == "batchnorm")
    assert retrain.statistics_note == statistics_summary(step) != ""
    assert retrain.statistics_note in retrain.status.text(), retrain.status.text()
    assert retrain.start_button.isEnabled() and not session_for(viewer).in_training
    assert docks["Teacher"].versions.count() == 2  # the old teacher stays for rollback
    qtbot.waitUntil(lambda: not retrain.busy, timeout=180_000)  # the re-rank child included
    assert retrain.reranking is None or retrain.reranking.reported
    if outcome.promoted:
        assert retrain.reranking is not None and retrain.reranking.reported


def test_killed_retrain_leaves_the_gui_and_the_old_teacher_intact(make_napari_viewer, qtbot, trained_root):
    from helpers import TINY

    before = active_name(trained_root)
    viewer = make_napari_viewer()
    docks = dock_assistant(viewer, trained_root)
    retrain = docks["Retrain"]
    retrain.iterations.setValue(100_000)
    count = len(errors_shown())
    job = retrain.start(overrides=TINY)
    qtbot.waitUntil(lambda: job.progress[0] >= 1, timeout=120_000)
    job.kill()
    qtbot.waitUntil(lambda: retrain.start_button.isEnabled(), timeout=30_000)
    assert job.state == "failed" and "failed" in retrain.status.text()
    assert any("retrain failed" in message for message in errors_shown()[count:])
    assert active_name(trained_root) == before and not session_for(viewer).in_training
    assert docks["Project"].table.rowCount() > 0  # the GUI still works


def test_shortcuts_toggle_the_overlay_and_open_the_next_case(make_napari_viewer, project_root):
    from napari_ssl_seg.widgets.shortcuts import SHORTCUTS

    viewer = make_napari_viewer()
    dock_assistant(viewer, project_root)
    session = session_for(viewer)
    bound = {str(key): action for key, action in viewer.keymap.items()}

    def press(key: str) -> None:
        bound[key.replace("-", "+")](viewer)

    assert {key.replace("-", "+") for key in SHORTCUTS} <= set(bound)
    press("Shift-N")
    first = session.case
    assert first == unlabeled_case(project_root)
    volume = session.label_layer
    entropy = np.full(volume.data.shape, 1.0, dtype=np.float32)
    with Project.open(project_root) as project:
        image = project.read_image(first)
    label = image.with_array(np.asarray(volume.data), label_names=None)
    session.show_prediction(first, label, image.with_array(entropy))
    assert session.uncertainty_layer.visible
    press("Shift-U")
    assert not session.uncertainty_layer.visible
    session.label_layer.paint((1, 2, 2), 1, refresh=True)
    press("Shift-S")
    with Project.open(project_root) as project:
        assert project.case(first).is_labeled
    press("Shift-N")
    assert session.case not in (None, first)


def test_import_a_folder_through_the_project_dock(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    docks = dock_assistant(viewer)
    images = tmp_path / "incoming"
    images.mkdir()
    for name in ("brain1_image.nrrd", "brain1_label.nrrd", "breast1_image.nrrd", "breast1_label.nrrd"):
        shutil.copy(SAMPLE_DIR / name, images / name)
    worker = docks["Project"].import_project(str(tmp_path / "imported"), str(images), str(images))
    qtbot.waitUntil(lambda: session_for(viewer).project is not None, timeout=120_000)
    assert not worker.is_running or qtbot.waitUntil(lambda: not worker.is_running) is None
    assert docks["Project"].table.rowCount() == 2


def test_correcting_a_prediction_records_the_effort_and_the_project_dock_shows_it(make_napari_viewer, project_root):
    viewer = make_napari_viewer()
    docks = dock_assistant(viewer, project_root)
    session = session_for(viewer)
    case = unlabeled_case(project_root)
    session.open_case(case)
    shape = session.label_layer.data.shape
    predicted = np.zeros(shape, dtype=np.uint8)
    predicted[1:3, 4:14, 4:14] = 1  # 200 voxels
    with Project.open(project_root) as project:
        teacher = active_model(project)
        volume = project.read_image(case).with_array(predicted, label_names=None)
    session.show_prediction(case, volume, None)
    layer = session.label_layer
    corrected = np.asarray(layer.data).copy()
    corrected[1, 4:14, 4:9] = 0  # 50 false voxels erased
    corrected[3, 4:14, 4:7] = 1  # 30 missed voxels painted
    layer.data = corrected
    first = docks["Label"].save()
    assert first.started_from == teacher.name
    assert first.changed_voxels == 80 and first.foreground_voxels == 180
    corrected[3, 4:14, 7] = 1  # a second pass: 10 more, counted against version 1
    layer.data = corrected
    second = docks["Label"].save()
    assert second.started_from is None and second.changed_voxels == 10 and second.foreground_voxels == 190
    table = docks["Project"].table
    docks["Project"].refresh()
    row = next(r for r in range(table.rowCount()) if table.item(r, 0).text() == case)
    column = [table.horizontalHeaderItem(c).text() for c in range(table.columnCount())].index("corrected")
    assert table.item(row, column).text() == f"{100 * 90 / 190:.1f}%"


@pytest.mark.parametrize(
    ("button", "choice", "empty_saved"),
    [("Save", "save", True), ("Discard", "discard", None), ("Cancel", "cancel", False)],
)
def test_the_label_docks_questions_return_the_button_the_user_clicked(
    make_napari_viewer, project_root, button, choice, empty_saved
):
    # The real dialogs, answered by a click: the wrappers tests replace elsewhere must read the binding's
    # answer right (PyQt6 answers with enum members where PyQt5 answered with ints).
    from qtpy.QtCore import QTimer
    from qtpy.QtWidgets import QApplication, QMessageBox

    viewer = make_napari_viewer()
    label_dock = dock_assistant(viewer, project_root)["Label"]
    clicked: list[str] = []

    def click_when_shown() -> None:
        box = QApplication.activeModalWidget()
        if not isinstance(box, QMessageBox):
            QTimer.singleShot(20, click_when_shown)
            return
        box.button(getattr(QMessageBox, button)).click()
        clicked.append(button)

    QTimer.singleShot(0, click_when_shown)
    assert label_dock._ask_leave_dialog("case_000") == choice
    if empty_saved is not None:
        QTimer.singleShot(0, click_when_shown)
        assert label_dock._confirm_empty_dialog("case_000") is empty_saved
    assert clicked and set(clicked) == {button}
