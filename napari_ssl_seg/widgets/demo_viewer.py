"""Open a project case in napari with its geometry (used by the demo)."""

from __future__ import annotations

from pathlib import Path

from napari_ssl_seg.layers import volume_to_layer_data
from napari_ssl_seg.store import Project


def show_case(project_root: Path, case_name: str) -> None:
    import napari

    with Project.open(project_root) as project:
        image = project.read_image(case_name)
        label = project.read_label(case_name) if project.case(case_name).is_labeled else None
    viewer = napari.Viewer(title=f"napari-ssl-seg: {case_name}")
    data, kwargs, _ = volume_to_layer_data(image, name=case_name, as_labels=False)
    viewer.add_image(data, **kwargs)
    if label is not None:
        data, kwargs, _ = volume_to_layer_data(label, name=f"{case_name} label", as_labels=True)
        viewer.add_labels(data, **kwargs)
    napari.run()
