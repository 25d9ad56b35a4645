"""How the label and uncertainty overlays are drawn, so the anatomy under them stays readable.

Two rules, both from reading real scans through the overlays:

* a class that fills a large share of the volume (body tissue, a cerebrum) is drawn with a light
  fill, small structures with a strong one: a large class at full fill hides the very anatomy the
  annotator checks its border against;
* the uncertainty map is transparent below its threshold and blended *translucently*, not
  additively: additive blending turns bright anatomy (white matter on T1, bone on CT) white even
  where the teacher is sure.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from napari.utils.colormaps import Colormap, DirectLabelColormap

__all__ = [
    "LARGE_CLASS_SHARE",
    "UNCERTAINTY_BLENDING",
    "class_fill_alpha",
    "style_label_layer",
    "uncertainty_colormap",
]

#: A class covering more than this share of the volume's voxels counts as large.
LARGE_CLASS_SHARE = 0.05
LARGE_CLASS_ALPHA = 0.25
SMALL_CLASS_ALPHA = 0.65
UNCERTAINTY_BLENDING = "translucent"


def class_fill_alpha(counts: np.ndarray, total: int) -> dict[int, float]:
    """The fill alpha of each class present (label 0, the background, excluded)."""
    return {
        label: LARGE_CLASS_ALPHA if count > LARGE_CLASS_SHARE * total else SMALL_CLASS_ALPHA
        for label, count in enumerate(np.asarray(counts).tolist())
        if label > 0 and count > 0
    }


def style_label_layer(layer: Any, *, contour: bool = False) -> None:
    """Set the per-class fill of a Labels layer from its current data, or draw outlines only.

    Labels the data does not hold yet (a class painted later) keep the strong default fill.
    """
    data = np.asarray(layer.data)
    counts = np.bincount(data.ravel(), minlength=1) if data.size else np.zeros(1, dtype=np.int64)
    alphas = class_fill_alpha(counts, int(data.size))
    # The layer's own colours, so every class keeps the colour napari gave it.
    base = layer.colormap
    colors: dict[int | None, np.ndarray] = {None: np.array([0.9, 0.9, 0.2, SMALL_CLASS_ALPHA]), 0: np.zeros(4)}
    for label in range(1, max(len(counts), 2) + 8):
        rgba = np.array(base.map(label), dtype=float).reshape(-1)[:4]
        rgba[3] = alphas.get(label, SMALL_CLASS_ALPHA)
        colors[label] = rgba
    layer.colormap = DirectLabelColormap(color_dict=colors)
    layer.opacity = 1.0  # the alpha lives in the colormap, per class
    layer.contour = 1 if contour else 0


def uncertainty_colormap() -> Colormap:
    """Inferno-like, from a faint dark red at the threshold to opaque yellow at the maximum entropy.

    Below the contrast limits' low end (the threshold) the map is fully transparent (``low_color``).
    """
    colors = np.array(
        [
            [0.55, 0.05, 0.25, 0.35],
            [0.85, 0.25, 0.15, 0.65],
            [0.98, 0.60, 0.05, 0.85],
            [0.99, 0.95, 0.40, 0.95],
        ]
    )
    return Colormap(
        colors,
        name="napari_ssl_seg_uncertainty",
        display_name="uncertainty",
        controls=np.linspace(0.0, 1.0, len(colors)),
        low_color=[0.0, 0.0, 0.0, 0.0],
    )
