"""napari reader contribution: every supported format, with real geometry.

A DICOM series (a folder, or slice files picked in the file dialog) is read on a worker thread
when a viewer is open: GDCM sorts and decodes every slice, which on a long or compressed series
holds the GUI for seconds. napari calls readers on the GUI thread and has no asynchronous reader
protocol, so the reader returns "nothing to add yet" at once and the worker adds the layer when the
series is read, with a progress bar meanwhile.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from napari_ssl_seg.errors import InputError
from napari_ssl_seg.io import Volume, is_supported_path, read_volume
from napari_ssl_seg.io.read import case_stem
from napari_ssl_seg.layers import LayerData, looks_like_labels, volume_to_layer_data

#: napari's "read fine, nothing to add" sentinel: the refusal was already shown as a notification.
NO_LAYERS = [(None,)]
#: Slice files of a DICOM series; the reader opens the series each belongs to.
DICOM_SLICE_SUFFIXES = (".dcm", ".ima")
#: Series being read, by folder: workers must outlive the call that started them, and napari calls
#: the reader once per picked file, so the other slices of a series being read add nothing.
_in_flight: dict[Path, Any] = {}


def _is_dicom_slice(path: str | Path) -> bool:
    return Path(path).suffix.lower() in DICOM_SLICE_SUFFIXES and Path(path).is_file()


def napari_get_reader(path: str | list[str]) -> Callable[[str | list[str]], list[LayerData]] | None:
    paths = [path] if isinstance(path, str) else list(path)
    if not paths or not all(is_supported_path(p) or _is_dicom_slice(p) for p in paths):
        return None
    return read_layers_or_notify


def read_layers_or_notify(path: str | list[str]) -> list[LayerData]:
    """What napari calls: a file we cannot read becomes one error notification, not a traceback."""
    from napari.utils.notifications import show_error

    paths = [path] if isinstance(path, str) else list(path)
    viewer = _viewer_on_gui_thread()
    if viewer is not None and any(Path(p).is_dir() or _is_dicom_slice(p) for p in paths):
        _read_in_background(viewer, paths)
        return NO_LAYERS
    try:
        return read_layers(paths)
    except InputError as exc:
        show_error(f"napari-ssl-seg: {exc}")
        return NO_LAYERS


def _sources(paths: list[str | Path]) -> list[tuple[Path, Path | None]]:
    """(what to read, the slice file picked) per volume: the slices of one folder are one series."""
    sources: list[tuple[Path, Path | None]] = []
    seen: set[Path] = set()
    for item in map(Path, paths):
        if _is_dicom_slice(item):
            if item.parent not in seen:
                seen.add(item.parent)
                sources.append((item.parent, item))
        else:
            sources.append((item, None))
    return sources


def read_volumes(paths: list[str | Path]) -> list[tuple[Volume, str]]:
    """Each volume with its layer name; raises :class:`InputError` (one line) for one it cannot read."""
    from napari_ssl_seg.io.dicom import read_dicom_series

    volumes = []
    for source, slice_file in _sources(paths):
        if slice_file is None:
            volumes.append((read_volume(source), case_stem(source)))
        else:
            volumes.append((read_dicom_series(source, containing=slice_file), source.name))
    return volumes


def _layer_data(volumes: list[tuple[Volume, str]]) -> list[LayerData]:
    from napari.utils.notifications import show_warning

    layers = []
    for volume, name in volumes:
        for note in volume.notes:
            show_warning(note)
        layers.append(volume_to_layer_data(volume, name=name, as_labels=looks_like_labels(name, volume)))
    return layers


def read_layers(path: str | list[str]) -> list[LayerData]:
    """Layer data of each path, read here and now (the command line, scripts, tests)."""
    return _layer_data(read_volumes([path] if isinstance(path, str) else list(path)))


def _viewer_on_gui_thread() -> Any:
    """The current napari viewer, when this call runs on the GUI thread of a running Qt application."""
    if threading.current_thread() is not threading.main_thread():
        return None
    try:
        import napari
        from qtpy.QtWidgets import QApplication
    except ImportError:
        return None
    if QApplication.instance() is None:
        return None
    return napari.current_viewer()


def _read_in_background(viewer: Any, paths: list[str]) -> Any:
    from napari.qt.threading import create_worker
    from napari.utils.notifications import show_error

    from napari_ssl_seg.widgets.background import start_worker

    keys = {source.resolve() for source, _slice in _sources(paths)}
    if keys and keys <= set(_in_flight):
        return _in_flight[next(iter(keys))]
    names = ", ".join(Path(p).name for p in paths[:3]) + (" …" if len(paths) > 3 else "")
    # _ignore_errors: the refusal is shown by `refused`, not re-raised on the GUI thread.
    worker = create_worker(read_volumes, list(paths), _progress={"desc": f"reading {names}"}, _ignore_errors=True)

    def add(volumes: list[tuple[Volume, str]]) -> None:
        for data, kwargs, kind in _layer_data(volumes):
            getattr(viewer, f"add_{kind}")(data, **kwargs)

    def refused(exc: BaseException) -> None:
        if isinstance(exc, InputError):
            show_error(f"napari-ssl-seg: {exc}")
        else:
            show_error(f"napari-ssl-seg: cannot read {names}: {type(exc).__name__}: {exc}")

    worker.returned.connect(add)
    worker.errored.connect(refused)

    def done() -> None:
        for key in keys:
            if _in_flight.get(key) is worker:
                del _in_flight[key]

    worker.finished.connect(done)
    for key in keys:
        _in_flight[key] = worker
    return start_worker(worker)
