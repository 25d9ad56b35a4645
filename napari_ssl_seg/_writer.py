"""napari writer contribution: Labels layers to NIfTI, NRRD or MHA with their geometry."""

from __future__ import annotations

from typing import Any

from napari_ssl_seg.io import write_volume
from napari_ssl_seg.layers import volume_from_layer


def write_labels(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    volume = volume_from_layer(data, meta)
    return [str(write_volume(volume, path))]
