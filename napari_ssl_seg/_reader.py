"""napari reader contribution: every supported format, with real geometry."""

from __future__ import annotations

from collections.abc import Callable

from napari_ssl_seg.errors import InputError
from napari_ssl_seg.io import is_supported_path, read_volume
from napari_ssl_seg.io.read import case_stem
from napari_ssl_seg.layers import LayerData, looks_like_labels, volume_to_layer_data

#: napari's "read fine, nothing to add" sentinel: the refusal was already shown as a notification.
NO_LAYERS = [(None,)]


def napari_get_reader(path: str | list[str]) -> Callable[[str | list[str]], list[LayerData]] | None:
    paths = [path] if isinstance(path, str) else list(path)
    if not paths or not all(is_supported_path(p) for p in paths):
        return None
    return read_layers_or_notify


def read_layers_or_notify(path: str | list[str]) -> list[LayerData]:
    """What napari calls: a file we cannot read becomes one error notification, not a traceback."""
    try:
        return read_layers(path)
    except InputError as exc:
        from napari.utils.notifications import show_error

        show_error(f"napari-ssl-seg: {exc}")
        return NO_LAYERS


def read_layers(path: str | list[str]) -> list[LayerData]:
    """Layer data of each path; raises :class:`InputError` (one line) for a file it cannot read."""
    paths = [path] if isinstance(path, str) else list(path)
    layers = []
    for item in paths:
        volume = read_volume(item)
        if volume.notes:
            from napari.utils.notifications import show_warning

            for note in volume.notes:
                show_warning(note)
        layers.append(volume_to_layer_data(volume, name=case_stem(item), as_labels=looks_like_labels(item, volume)))
    return layers
