"""Choosing the compute device: CUDA, then Apple MPS, then the CPU, unless the user says which."""

from __future__ import annotations

import torch

from napari_ssl_seg.errors import InputError

__all__ = ["select_device"]


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def select_device(requested: str | None = "auto") -> torch.device:
    """``"auto"`` (or None) picks CUDA, then MPS, then CPU; ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"`` force one.

    Asking for a device this machine lacks is an :class:`InputError` (the user's ``--device``), not
    a silent fallback: a user who asked for the GPU should learn that they are not getting it.
    """
    name = (requested or "auto").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise InputError(f"unknown device {requested!r} (use auto, cpu, cuda, cuda:N or mps)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"device {requested!r} asked for, but no CUDA GPU is available here")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise InputError(f"device {requested!r} asked for, but only {torch.cuda.device_count()} GPU(s) exist")
    elif device.type == "mps":
        if not _mps_available():
            raise InputError("device 'mps' asked for, but Apple MPS is not available here")
    elif device.type != "cpu":
        raise InputError(f"unsupported device {requested!r} (use auto, cpu, cuda, cuda:N or mps)")
    return device
