"""Where the shipped teachers live (core: no napari): the repo's ``models/`` or the installed copy."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from napari_ssl_seg.errors import InputError

# name -> (weights file, what it is); each has a JSON model card beside it.
SHIPPED_MODELS = {
    "ucmt": ("chest_ct_ucmt.safetensors", "UCMT teacher, 7 chest structures, trained on the sample CT cohort"),
    "ugcemt": ("chest_ct_ugcemt.safetensors", "UG-CEMT teacher, 7 chest structures, trained on the sample CT cohort"),
}


def shipped_models_dir() -> Path:
    """``$NAPARI_SSL_SEG_MODELS``, a source checkout's ``models/``, or the installed copy."""
    first = SHIPPED_MODELS["ucmt"][0]
    candidates = [
        os.environ.get("NAPARI_SSL_SEG_MODELS"),
        Path(__file__).resolve().parents[1] / "models",
        Path(sys.prefix) / "share" / "napari-ssl-seg" / "models",
    ]
    for candidate in candidates:
        if candidate and (Path(candidate) / first).is_file():
            return Path(candidate)
    raise InputError("shipped models not found; set NAPARI_SSL_SEG_MODELS to the models folder")


def shipped_model_path(name: str) -> Path:
    """The weights file of a shipped teacher (``ucmt`` or ``ugcemt``)."""
    if name not in SHIPPED_MODELS:
        raise InputError(f"unknown shipped model {name!r} (known: {', '.join(SHIPPED_MODELS)})")
    return shipped_models_dir() / SHIPPED_MODELS[name][0]
