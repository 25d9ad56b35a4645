"""A DICOM series opens in the viewer without holding the GUI: read on a worker, added when done."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from helpers import write_dicom_series
from napari.utils.notifications import notification_manager
from qtpy.QtCore import QTimer

import napari_ssl_seg._reader as reader_module
from napari_ssl_seg.io import Volume

pytestmark = pytest.mark.gui
PLUGIN = "napari-ssl-seg"


@pytest.fixture
def series(tmp_path: Path) -> Path:
    folder = tmp_path / "MR_series"
    folder.mkdir()
    array = np.arange(12 * 32 * 40, dtype=np.int16).reshape(12, 32, 40) % 1000
    write_dicom_series(Volume(array=array, spacing=(4.0, 0.9, 0.8), origin=(10.0, -5.0, 3.0)), folder, modality="MR")
    return folder


def test_the_viewer_keeps_running_while_a_series_is_read_on_a_worker(make_napari_viewer, qtbot, series, monkeypatch):
    viewer = make_napari_viewer()
    release, threads = threading.Event(), []
    real_read = reader_module.read_volumes

    def slow_read(paths):
        threads.append(threading.current_thread())
        assert release.wait(30), "the test never released the read"
        return real_read(paths)

    monkeypatch.setattr(reader_module, "read_volumes", slow_read)
    opened = viewer.open(str(series), plugin=PLUGIN)
    # viewer.open came back while the read is still blocked: the GUI thread is free.
    assert opened == [] and len(viewer.layers) == 0
    qtbot.waitUntil(lambda: bool(threads), timeout=10_000)
    assert threads[0] is not threading.main_thread()
    ticks: list[int] = []
    QTimer.singleShot(10, lambda: ticks.append(1))
    qtbot.waitUntil(lambda: bool(ticks), timeout=5_000)  # the event loop turns during the read
    release.set()
    qtbot.waitUntil(lambda: len(viewer.layers) == 1, timeout=30_000)
    layer = viewer.layers[0]
    assert layer.name == "MR_series" and layer.data.shape == (12, 32, 40)
    np.testing.assert_allclose(layer.scale, (4.0, 0.9, 0.8), rtol=1e-5)


def test_picking_the_slice_files_opens_one_volume_not_one_per_file(make_napari_viewer, qtbot, series):
    viewer = make_napari_viewer()
    files = sorted(str(path) for path in series.glob("*.dcm"))
    assert len(files) == 12
    viewer.open(files, plugin=PLUGIN)
    qtbot.waitUntil(lambda: len(viewer.layers) >= 1, timeout=30_000)
    qtbot.wait(300)  # a second layer would arrive by now
    assert len(viewer.layers) == 1 and viewer.layers[0].data.shape == (12, 32, 40)


def test_an_empty_folder_is_one_error_notification_and_no_layer(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    empty = tmp_path / "empty_series"
    empty.mkdir()
    shown = len(notification_manager.records)
    viewer.open(str(empty), plugin=PLUGIN)

    def errors() -> list[str]:
        return [str(r.message) for r in notification_manager.records[shown:] if r.severity == "error"]

    qtbot.waitUntil(lambda: bool(errors()), timeout=30_000)
    qtbot.wait(200)
    (message,) = errors()
    assert "no DICOM series" in message and "\n" not in message
    assert len(viewer.layers) == 0
