"""napari reader contribution: every supported format, with real geometry."""

from __future__ import annotations

from collections.abc import Callable

from napari_ssl_seg.io import is_supported_path, read_volume
from napari_ssl_seg.io.read import case_stem
from napari_ssl_seg.layers import LayerData, looks_like_labels, volume_to_layer_data


def napari_get_reader(path: str | list[str]) -> Callable[[str | list[str]], list[LayerData]] | None:
    paths = [path] if isinstance(path, str) else list(path)
    if not paths or not all(is_supported_path(p) for p in paths):
        return None
    return read_layers


def read_layers(path: str | list[str]) -> list[LayerData]:
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
