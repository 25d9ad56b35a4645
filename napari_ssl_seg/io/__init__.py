"""Volume input and output with real geometry (no Qt, no napari).

``read_volume`` and ``write_volume`` are the only entry points the rest of the
package uses; the per-format modules are implementation details.
"""

from __future__ import annotations

from napari_ssl_seg.io.read import SUPPORTED_SUFFIXES, is_supported_path, read_volume
from napari_ssl_seg.io.volume import Volume, geometry_mismatch
from napari_ssl_seg.io.write import LABEL_WRITE_SUFFIXES, write_volume

__all__ = [
    "LABEL_WRITE_SUFFIXES",
    "SUPPORTED_SUFFIXES",
    "Volume",
    "geometry_mismatch",
    "is_supported_path",
    "read_volume",
    "write_volume",
]
