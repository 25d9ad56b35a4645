"""Uncertainty-guided semi-supervised segmentation of 3D medical images, for napari."""

from __future__ import annotations

__version__ = "0.1.0"
