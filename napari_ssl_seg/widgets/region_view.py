"""Taking the annotator to one uncertain region: its slice, a marker around it, a zoom that frames it.

Moving the slice alone left the annotator searching a 512x512 plane for a region of a few
millimetres; the marker (a frame in the region's slice, sized to the region) and a zoom to a field
of view of a few region widths show at once where to look. The annotator's tool stays on the label
layer: adding the marker does not take the layer selection.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_ssl_seg.active.regions import UncertainRegion, uncertain_regions
from napari_ssl_seg.io import Volume

__all__ = ["MARKER_SUFFIX", "field_of_view", "find_uncertain_regions", "place_marker", "show_region"]

MARKER_SUFFIX = "uncertain region"
#: The view frames this many region widths, but never less than the minimum (mm) nor more than the scan.
CONTEXT_WIDTHS = 4.0
MIN_FIELD_OF_VIEW_MM = 60.0
#: Regions smaller than this many voxels are noise to an annotator; more than the limit are not read.
REGION_MIN_VOXELS = 8
REGION_LIMIT = 200


def find_uncertain_regions(entropy: Volume, threshold: float) -> list[UncertainRegion]:
    """The regions the dock lists (callable from a worker thread: no Qt, no session state)."""
    return uncertain_regions(
        entropy.array, threshold, spacing=entropy.spacing, min_voxels=REGION_MIN_VOXELS, limit=REGION_LIMIT
    )


def _world_box(layer: Any, region: UncertainRegion) -> tuple[np.ndarray, np.ndarray]:
    """The world centre and the world extent (per axis) of the region's voxel bounding box."""
    start = np.asarray(region.bbox_start, dtype=float) - 0.5
    stop = np.asarray(region.bbox_stop, dtype=float) - 0.5
    corners = np.array([[(stop if (bit >> axis) & 1 else start)[axis] for axis in range(3)] for bit in range(8)])
    world = np.array([np.asarray(layer.data_to_world(corner), dtype=float)[-3:] for corner in corners])
    centre = np.asarray(layer.data_to_world(region.centre), dtype=float)[-3:]
    return centre, world.max(axis=0) - world.min(axis=0)


def field_of_view(region_extent: np.ndarray, scene_extent: np.ndarray) -> float:
    """World units the view should span on its narrower canvas side, for a region of this extent."""
    wanted = max(CONTEXT_WIDTHS * float(np.max(region_extent)), MIN_FIELD_OF_VIEW_MM)
    return float(min(wanted, float(np.max(scene_extent))))


def show_region(viewer: Any, layer: Any, region: UncertainRegion, *, tag: dict[str, Any], name: str) -> Any:
    """Slice, marker and zoom at ``region`` of ``layer`` (the uncertainty or label layer); the marker layer."""
    centre, extent = _world_box(layer, region)
    displayed = [axis - (viewer.dims.ndim - 3) for axis in viewer.dims.displayed[-2:]]
    in_plane = extent[displayed] if len(displayed) == 2 else extent
    # The marker first: a new layer changes the dims' ranges, which would move a point already set.
    marker = place_marker(viewer, layer, region, tag=tag, name=name)
    # One call for the three axes: each call re-slices every layer.
    axes = list(range(viewer.dims.ndim - 3, viewer.dims.ndim))
    viewer.dims.set_point(axes, [float(value) for value in centre])

    scene = np.asarray(layer.extent.world[1] - layer.extent.world[0], dtype=float)[-3:]
    fov = field_of_view(in_plane, scene[displayed] if len(displayed) == 2 else scene)
    # napari 0.9 moved the camera to viewer.scene; older releases keep viewer.camera.
    camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera
    camera.center = tuple(float(v) for v in centre)
    if viewer.dims.ndisplay == 2 and fov > 0:
        pixels = float(np.min(viewer.canvas.size)) if hasattr(viewer, "canvas") else 0.0
        if pixels > 0:
            camera.zoom = pixels / fov
    return marker


def place_marker(viewer: Any, layer: Any, region: UncertainRegion, *, tag: dict[str, Any], name: str) -> Any:
    """A square frame around the region's centre, on ``layer``'s grid.

    The marker carries the layer's own transform: a layer on another grid (world millimetres)
    would change the dims' step to its own, and the slider would then move 1 mm per step.
    """
    voxels = np.asarray(region.bbox_stop, dtype=float) - np.asarray(region.bbox_start, dtype=float)
    displayed = [axis - (viewer.dims.ndim - 3) for axis in viewer.dims.displayed[-2:]]
    size = 1.2 * float(np.max(voxels[displayed] if len(displayed) == 2 else voxels)) + 3.0  # voxels
    centre = np.asarray(region.centre, dtype=float)[None, :]
    selected = viewer.layers.selection.active
    if name in viewer.layers:
        marker = viewer.layers[name]
        marker.data = centre
        marker.size = size
        return marker
    transform: dict[str, Any] = {"scale": layer.scale[-3:]}
    if np.allclose(layer.affine.affine_matrix[:3, :3], np.eye(3)):
        transform["translate"] = layer.translate[-3:]
    else:
        transform["affine"] = layer.affine.affine_matrix
        transform["translate"] = layer.translate[-3:]
    marker = viewer.add_points(
        centre,
        name=name,
        size=size,
        symbol="square",
        face_color="transparent",
        border_color="yellow",
        # Of the marker's size: at 0.05 the demo case's frame was about 25 canvas pixels wide and hid the
        # anatomy under it; at 0.015 a 650-pixel marker (the cold-start project's first case) gets 8.
        border_width=0.015,
        opacity=0.9,
        metadata=dict(tag),
        **transform,
    )
    if selected is not None and selected in viewer.layers:
        viewer.layers.selection.active = selected
    return marker
