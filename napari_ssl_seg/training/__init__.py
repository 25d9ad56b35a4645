"""The one training loop: configs (quick, paper), data snapshot and sampling, SAM, torch.distributed.

Core code: no Qt or napari imports. Importing this package does not import torch's heavier parts
until :func:`train` is called through :mod:`napari_ssl_seg.training.loop`.
"""

from napari_ssl_seg.training.config import PRESETS, TrainConfig, apply_overrides, preset

__all__ = ["PRESETS", "TrainConfig", "apply_overrides", "preset"]
