"""What the dock widgets of one viewer share: the open project, the open case and its layers.

Each dock widget is a thin view on this session; the session itself is a thin layer over the core
(store, inference, active). It lives on the GUI thread: background work opens its own
:class:`Project` (SQLite connections stay on the thread that made them) and reports back
through Qt signals.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from napari.utils.notifications import show_info, show_warning
from qtpy.QtCore import QObject, Signal

from napari_ssl_seg.active.effort import EditClock
from napari_ssl_seg.active.queue import CaseRow, case_table, next_case
from napari_ssl_seg.active.regions import UncertainRegion, default_threshold, entropy_histogram
from napari_ssl_seg.active.strategies import DEFAULT_STRATEGY
from napari_ssl_seg.errors import InputError
from napari_ssl_seg.io import Volume
from napari_ssl_seg.layers import volume_to_layer_data
from napari_ssl_seg.networks import ModelCard
from napari_ssl_seg.store import Project
from napari_ssl_seg.store.models import ModelVersion, active_model, version_card
from napari_ssl_seg.store.ranking_cache import prediction_paths, read_cached
from napari_ssl_seg.store.records import LabelVersion
from napari_ssl_seg.widgets.background import in_event_loop_turns
from napari_ssl_seg.widgets.overlays import UNCERTAINTY_BLENDING, style_label_layer, uncertainty_colormap
from napari_ssl_seg.widgets.region_view import MARKER_SUFFIX, find_uncertain_regions, place_marker, show_region

__all__ = ["CASE_TAG", "AssistSession"]


#: Layer-metadata key marking the layers of the open case (removed together when it closes).
CASE_TAG = "napari_ssl_seg_case"


class AssistSession(QObject):
    """The open project and case of one viewer, with the layers that show them."""

    project_changed = Signal()
    case_opened = Signal(str)
    prediction_shown = Signal(str)
    model_changed = Signal()
    labels_saved = Signal(str)
    regions_changed = Signal()
    #: Emitted before a case is left; a slot may set ``session.leave_vetoed = True`` to stay.
    leaving_case = Signal(str)

    def __init__(self, viewer: Any) -> None:
        super().__init__()
        self._viewer_ref = weakref.ref(viewer)
        self.project: Project | None = None
        self.case: str | None = None
        self.strategy = DEFAULT_STRATEGY
        self.in_training: set[str] = set()
        self.clock = EditClock()
        self.leave_vetoed = False
        self.regions: list[UncertainRegion] = []
        self.region_index = -1
        self.threshold: float | None = None
        #: (counts, edges) of the open case's entropy map, for the Teacher dock's plot.
        self.histogram: tuple[np.ndarray, np.ndarray] | None = None
        #: Who saves labels; the Label dock's author field keeps it current.
        self.author: str | None = None
        #: Draw the labels as outlines (the Label dock's check box), else filled by class size.
        self.label_contours = False
        self._entropy: Volume | None = None
        self._label_layer: Any = None
        #: (teacher, its predicted labels) while the label layer holds an unsaved prediction: the
        #: first save records the voxels corrected from it (the annotation effort).
        self._started_from: tuple[str, np.ndarray] | None = None
        self._card_of: tuple[str | None, ModelCard | None] = (None, None)

    @property
    def viewer(self) -> Any:
        return self._viewer_ref()

    # -- project ---------------------------------------------------------------
    @property
    def root(self) -> Path | None:
        return None if self.project is None else self.project.root

    def require_project(self) -> Project:
        if self.project is None:
            raise InputError("open or create a project first")
        return self.project

    def open_project(self, root: Path | str, *, create: bool = False) -> Project:
        project = Project.create(root) if create else Project.open(root)
        if not self.confirm_leave():
            project.close()
            raise InputError("kept the open case: it has unsaved edits")
        self.close_case()
        if self.project is not None:
            self.project.close()
        self.project = project
        self.project_changed.emit()
        self.model_changed.emit()
        return project

    def rows(self) -> list[CaseRow]:
        return case_table(self.require_project(), self.strategy, in_training=self.in_training)

    def active_model(self) -> ModelVersion | None:
        return None if self.project is None else active_model(self.project)

    def active_card(self) -> ModelCard | None:
        """The active teacher's model card (None without a teacher)."""
        model = self.active_model()
        if model is None:
            return None
        # The card is read once per model version, not on every overlay or threshold change.
        if self._card_of[0] != model.name:
            self._card_of = (model.name, version_card(self.require_project(), model))
        return self._card_of[1]

    def active_network(self) -> dict[str, Any]:
        """The active teacher's network settings from its card ({} without a teacher)."""
        card = self.active_card()
        return {} if card is None else dict(card.network)

    def num_classes(self) -> int:
        card = self.active_card()
        return max(2, len(self.require_project().label_names()) + 1) if card is None else card.num_classes

    def open_next_case(self) -> str | None:
        """Open the most uncertain queued case other than the open one; None when the queue is empty."""
        name = next_case(self.rows(), self.case)
        if name is None:
            show_info("the queue is empty: every training case is labeled")
        else:
            self.open_case(name)
        return name

    # -- case --------------------------------------------------------------------
    def confirm_leave(self) -> bool:
        """Ask the listeners (the Label widget's warning) whether the open case may be left."""
        if self.case is None or not self.clock.dirty:
            return True
        self.leave_vetoed = False
        self.leaving_case.emit(self.case)
        return not self.leave_vetoed

    def close_case(self) -> None:
        viewer = self.viewer
        if self.case is not None and viewer is not None:
            for layer in list(viewer.layers):
                if layer.metadata.get(CASE_TAG) == self.case:
                    viewer.layers.remove(layer)
        self.case = None
        self._label_layer = None
        self._started_from = None
        self._entropy = None
        self.histogram = None
        self.regions = []
        self.region_index = -1
        self.clock.reset()
        self.regions_changed.emit()

    def open_case(self, name: str) -> bool:
        """Show case ``name``: image, its latest label (or the active teacher's cached prediction), entropy.

        Returns False when the annotator chose to stay on the current case.
        """
        project = self.require_project()
        record = project.case(name)
        if name == self.case:
            return True
        if not self.confirm_leave():
            return False
        image = project.read_image(name)
        self.close_case()
        self.case = name
        viewer = self.viewer
        data, kwargs, _ = volume_to_layer_data(image, name=name, as_labels=False)
        kwargs["metadata"][CASE_TAG] = name
        viewer.add_image(data, **kwargs)
        model = self.active_model()
        label_path, entropy_path = prediction_paths(project, model.name, name) if model else (None, None)
        predicted_by = None
        if record.is_labeled:
            label = project.read_label(name)  # the annotator's work: the cached prediction is not read
        else:
            label = self._read_cache(name, label_path)
            if label is None:
                label = image.with_array(np.zeros(image.shape, dtype=np.uint8), label_names=None)
            elif model is not None:
                predicted_by = model.name
        self._show_label(label, predicted_by=predicted_by)
        entropy = self._read_cache(name, entropy_path)
        if entropy is not None:
            self._show_entropy(entropy)
        viewer.reset_view()
        self.case_opened.emit(name)
        if self.regions:
            self.goto_region(0)
        return True

    @staticmethod
    def _read_cache(name: str, path: Path | None) -> Volume | None:
        """A cached map of the open case; an unreadable one is reported, not raised."""
        if path is None:
            return None
        cached = read_cached(path)
        if cached is None and path.is_file():
            show_warning(f"{name}: its cached prediction is unreadable; 'Predict this case' redoes it")
        return cached

    def show_prediction(
        self,
        name: str,
        label: Volume,
        entropy: Volume | None,
        *,
        regions: list[UncertainRegion] | None = None,
        histogram: tuple[np.ndarray, np.ndarray] | None = None,
        staged: bool = False,
    ) -> None:
        """Put a fresh prediction of the open case on screen (the label stays editable).

        ``regions`` and ``histogram``, computed by the worker that predicted, keep that work off
        the GUI thread; without them they are computed here. ``staged``: update the label, the
        entropy layer and the view in separate turns of the event loop, so no single one of them
        holds the GUI (each re-slices the layers), as the Teacher dock does.
        """
        if name != self.case:
            return  # the annotator moved on while the network ran
        steps: list[Callable[[], None]] = []
        if self.project is not None and not self.project.case(name).is_labeled:
            model = self.active_model()
            steps.append(lambda: self._show_label(label, predicted_by=model.name if model else "unregistered"))
        if entropy is not None:
            steps.append(lambda: self._show_entropy(entropy, regions=regions, histogram=histogram))
            # The marker layer is new GL state (a shader to compile): a turn of its own, before the view moves.
            steps.append(lambda: self._place_marker(0) if self.regions else None)
            steps.append(lambda: self.goto_region(0) if self.regions else None)
        steps.append(lambda: self.prediction_shown.emit(name))
        if not staged:
            for step in steps:
                step()
            return

        # Another case may open between two steps: then the rest is dropped.
        in_event_loop_turns(steps, still_wanted=lambda: self.case == name)

    def _show_label(self, label: Volume, *, predicted_by: str | None = None) -> None:
        viewer = self.viewer
        array = np.asarray(label.array).astype(np.uint8, copy=True)
        # A copy: the layer's own array is painted in place.
        self._started_from = None if predicted_by is None else (predicted_by, array.copy())
        existing = self._label_layer
        if existing is not None and existing in viewer.layers:
            if existing.data.shape == array.shape:
                # New data in the same layer: far cheaper for the GUI thread than a new layer.
                existing.data = array
                style_label_layer(existing, contour=self.label_contours)
                self.clock.reset()
                return
            viewer.layers.remove(existing)
        _data, kwargs, _ = volume_to_layer_data(label, name=f"{self.case} label", as_labels=True)
        kwargs["metadata"][CASE_TAG] = self.case
        layer = viewer.add_labels(array, **kwargs)
        style_label_layer(layer, contour=self.label_contours)
        layer.events.paint.connect(lambda _event: self.clock.edit())
        self._label_layer = layer
        self.clock.reset()

    @property
    def label_layer(self) -> Any:
        return self._label_layer

    @property
    def uncertainty_layer(self) -> Any:
        viewer = self.viewer
        name = f"{self.case} uncertainty"
        return viewer.layers[name] if self.case is not None and name in viewer.layers else None

    def _show_entropy(
        self,
        entropy: Volume,
        *,
        regions: list[UncertainRegion] | None = None,
        histogram: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> None:
        viewer = self.viewer
        self._entropy = entropy
        top = math.log(self.num_classes())
        if self.threshold is None:
            self.threshold = default_threshold(self.num_classes())
        array = np.asarray(entropy.array, dtype=np.float32)
        previous = self.uncertainty_layer
        if previous is not None and previous.data.shape == array.shape:
            previous.data = array
            previous.contrast_limits = [self.threshold, top]
        else:
            if previous is not None:
                viewer.layers.remove(previous)
            _data, kwargs, _ = volume_to_layer_data(entropy, name=f"{self.case} uncertainty", as_labels=False)
            kwargs["metadata"][CASE_TAG] = self.case
            kwargs.update(
                colormap=uncertainty_colormap(),
                blending=UNCERTAINTY_BLENDING,
                opacity=0.7,
                contrast_limits=[self.threshold, top],
            )
            selected = viewer.layers.selection.active
            viewer.add_image(array, **kwargs)
            if selected is not None and selected in viewer.layers:
                viewer.layers.selection.active = selected  # the annotator keeps painting on the label
        self.histogram = histogram if histogram is not None else entropy_histogram(array, top)
        if regions is None:
            self.find_regions()
        else:
            self.regions = regions
            self.region_index = -1
            self.regions_changed.emit()

    @property
    def entropy(self) -> Volume | None:
        return self._entropy

    # -- uncertain regions ----------------------------------------------------------
    def set_threshold(self, value: float) -> None:
        self.threshold = float(value)
        layer = self.uncertainty_layer
        if layer is not None:
            high = max(layer.contrast_limits[1], self.threshold + 1e-3)
            layer.contrast_limits = [self.threshold, high]
        self.find_regions()

    def find_regions(self) -> list[UncertainRegion]:
        if self._entropy is None:
            self.regions = []
        else:
            threshold = self.threshold if self.threshold is not None else default_threshold(self.num_classes())
            self.regions = find_uncertain_regions(self._entropy, threshold)
        self.region_index = -1
        self.regions_changed.emit()
        return self.regions

    def goto_region(self, index: int | None = None) -> UncertainRegion | None:
        """Take the view to region ``index`` (default: the next one, cycling): slice, marker and zoom."""
        if not self.regions:
            return None
        self.region_index = (self.region_index + 1 if index is None else index) % len(self.regions)
        region = self.regions[self.region_index]
        layer = self.uncertainty_layer or self._label_layer
        show_region(self.viewer, layer, region, tag={CASE_TAG: self.case}, name=f"{self.case} {MARKER_SUFFIX}")
        return region

    def _place_marker(self, index: int) -> None:
        layer = self.uncertainty_layer or self._label_layer
        place_marker(
            self.viewer, layer, self.regions[index], tag={CASE_TAG: self.case}, name=f"{self.case} {MARKER_SUFFIX}"
        )

    # -- labels ---------------------------------------------------------------------
    def save_label(self, author: str | None) -> LabelVersion:
        project = self.require_project()
        if self.case is None or self._label_layer is None:
            raise InputError("open a case before saving a label")
        array = np.asarray(self._label_layer.data)
        seconds = self.clock.seconds if self.clock.dirty else None
        version = project.save_label(
            self.case, array, author=author or None, edit_seconds=seconds, started_from=self._started_from
        )
        self._started_from = None  # later saves count against this version
        self.clock.reset()
        self.labels_saved.emit(self.case)
        show_info(f"saved {self.case} label version {version.version}")
        return version

    def restore_version(self, version: int, author: str | None) -> LabelVersion:
        """Undo back to ``version``: its content becomes a new version, so no history is lost."""
        project = self.require_project()
        if self.case is None:
            raise InputError("open a case first")
        old = project.read_label(self.case, version)
        saved = project.save_label(self.case, old.array, author=author or None)
        self._started_from = None
        self._label_layer.data = np.asarray(old.array).astype(np.uint8, copy=True)
        self.clock.reset()
        self.labels_saved.emit(self.case)
        return saved
