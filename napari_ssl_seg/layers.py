"""Volume <-> napari layer data, without importing napari (plain tuples and dicts).

The geometry travels in the layer's ``metadata`` under :data:`METADATA_KEY`
so that saving a Labels layer restores the exact origin and direction, even
where napari's own transform only carries scale and translate.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from napari_ssl_seg.io import Volume
from napari_ssl_seg.io.read import case_stem

METADATA_KEY = "napari_ssl_seg"
_LABEL_NAME = re.compile(r"(^|[_\-.])(label|labels|seg|segmentation|mask|gt)([_\-.]|$)", re.IGNORECASE)

LayerData = tuple[np.ndarray, dict[str, Any], str]


def looks_like_labels(path: Path | str, volume: Volume) -> bool:
    """A Slicer segmentation, or an integer map whose file name says label/seg/mask."""
    if volume.source_format == "seg.nrrd" or volume.label_names:
        return True
    integer = np.issubdtype(volume.array.dtype, np.integer) or volume.array.dtype == np.bool_
    return integer and bool(_LABEL_NAME.search(case_stem(path)))


def volume_to_layer_data(volume: Volume, *, name: str, as_labels: bool) -> LayerData:
    kwargs: dict[str, Any] = {
        "name": name,
        "metadata": {METADATA_KEY: geometry_metadata(volume)},
        **volume.napari_layer_kwargs(),
    }
    if as_labels:
        return volume.array, kwargs, "labels"
    low, high = volume.value_range()
    if volume.modality == "CT" or low < -500:
        # A soft-tissue-ish window reads better than the full HU range; the data stays in HU.
        kwargs["contrast_limits"] = [max(low, -1000.0), min(high, 1000.0)]
    kwargs["colormap"] = "gray"
    return volume.array, kwargs, "image"


def geometry_metadata(volume: Volume) -> dict[str, Any]:
    return {
        "spacing": list(volume.spacing),
        "origin": list(volume.origin),
        "direction": [v for row in volume.direction for v in row],
        "label_names": {str(k): v for k, v in (volume.label_names or {}).items()},
        "source_format": volume.source_format,
    }


def volume_from_layer(data: np.ndarray, meta: dict[str, Any]) -> Volume:
    """Rebuild a Volume from layer data; prefer the geometry our reader stored."""
    array = np.asarray(data)
    stored = (meta.get("metadata") or {}).get(METADATA_KEY)
    if stored:
        names = {int(k): v for k, v in stored.get("label_names", {}).items()} or None
        return Volume(
            array=array,
            spacing=tuple(stored["spacing"]),
            origin=tuple(stored["origin"]),
            direction=np.asarray(stored["direction"]).reshape(3, 3),
            source_format="napari",
            label_names=names,
        )
    # A layer made in napari: scale and translate are all there is (axis-aligned LPS assumed).
    scale = meta.get("scale") if meta.get("scale") is not None else [1.0] * array.ndim
    translate = meta.get("translate") if meta.get("translate") is not None else [0.0] * array.ndim
    return Volume(
        array=array,
        spacing=tuple(float(s) for s in scale[-3:]),
        origin=tuple(float(t) for t in translate[-3:][::-1]),
        source_format="napari",
    )
