"""Resume checkpoints: everything needed to continue a run bit for bit, as safetensors + JSON.

``<out>/state/resume.safetensors`` holds tensors: every network's state dict (parameters and
buffers, teachers included), the optimiser's per-parameter tensors (SGD momentum) and the torch
(and CUDA) random states. ``<out>/state/resume.json`` holds the rest: iteration, config, optimiser
hyper-parameters, scheduler and AMP scaler state, numpy and Python random states, the best
validation so far, and the SHA-256 of the tensors file. Both are written atomically, tensors first:
a crash between the two leaves the previous JSON, whose hash no longer matches, and resume refuses
it instead of mixing two iterations. Never pickled.

The sampler needs no state: its generator is seeded from (seed, rank, iteration) every iteration.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from napari_ssl_seg.errors import InputError
from napari_ssl_seg.io.atomic import atomic_output, sha256_file

__all__ = ["load_resume_state", "resume_paths", "save_resume_state"]


def resume_paths(out_dir: Path) -> tuple[Path, Path]:
    folder = Path(out_dir) / "state"
    return folder / "resume.safetensors", folder / "resume.json"


def _random_states() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for index, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{index}"] = state
    kind, keys, position, has_gauss, cached = np.random.get_state()
    version, python_state, gauss = random.getstate()
    info = {
        "numpy": [kind, keys.tolist(), int(position), int(has_gauss), float(cached)],
        "python": [version, list(python_state), gauss],
    }
    return tensors, info


def _restore_random_states(tensors: Mapping[str, torch.Tensor], info: Mapping[str, Any]) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    cuda = sorted((key for key in tensors if key.startswith("rng.cuda.")), key=lambda k: int(k.rsplit(".", 1)[1]))
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([tensors[key] for key in cuda])
    kind, keys, position, has_gauss, cached = info["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), position, has_gauss, cached))
    version, python_state, gauss = info["python"]
    random.setstate((version, tuple(python_state), gauss))


def save_resume_state(
    out_dir: Path,
    *,
    networks: Mapping[str, nn.Module],
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: Any,
    info: Mapping[str, Any],
) -> Path:
    """Write the resume checkpoint; ``info`` (JSON-able: iteration, config, best, ...) is stored as is."""
    weights_path, json_path = resume_paths(out_dir)
    weights_path.parent.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    for name, module in networks.items():
        for key, tensor in module.state_dict().items():
            tensors[f"net.{name}.{key}"] = tensor.detach().to("cpu").clone().contiguous()
    optimizer_state = optimizer.state_dict()
    plain_state: dict[str, dict[str, Any]] = {}
    for index, entries in optimizer_state["state"].items():
        plain_state[str(index)] = {}
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{index}.{key}"] = value.detach().to("cpu").clone().contiguous()
            else:
                plain_state[str(index)][key] = value
    rng_tensors, rng_info = _random_states()
    tensors.update({key: value.clone().contiguous() for key, value in rng_tensors.items()})
    with atomic_output(weights_path) as temporary:
        save_file(tensors, str(temporary))
    document = {
        **info,
        "optimizer": {"param_groups": optimizer_state["param_groups"], "state": plain_state},
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else None,
        "random": rng_info,
        "tensors_sha256": sha256_file(weights_path),
    }
    with atomic_output(json_path) as temporary:
        temporary.write_text(json.dumps(document, allow_nan=False), encoding="utf-8")
    return json_path


def load_resume_state(
    out_dir: Path,
    *,
    networks: Mapping[str, nn.Module],
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: Any,
    device: torch.device,
) -> dict[str, Any]:
    """Restore a checkpoint written by :func:`save_resume_state` in place; return its ``info``."""
    weights_path, json_path = resume_paths(out_dir)
    if not json_path.is_file() or not weights_path.is_file():
        raise InputError(f"nothing to resume in {out_dir} (no state/resume.json); start without --resume")
    try:
        document = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"cannot read resume state {json_path}: {exc}") from None
    if sha256_file(weights_path) != document.get("tensors_sha256"):
        raise InputError(f"resume state in {json_path.parent} is incomplete (tensors and JSON differ)")
    tensors = load_file(str(weights_path), device="cpu")
    for name, module in networks.items():
        prefix = f"net.{name}."
        state = {key[len(prefix) :]: value for key, value in tensors.items() if key.startswith(prefix)}
        try:
            module.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise InputError(f"resume state does not fit network {name!r}: {str(exc).splitlines()[0]}") from None
    saved = document["optimizer"]
    state: dict[int, dict[str, Any]] = {}
    for index, entries in saved["state"].items():
        state[int(index)] = dict(entries)
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value.to(device)
    optimizer.load_state_dict({"state": state, "param_groups": saved["param_groups"]})
    scheduler.load_state_dict(document["scheduler"])
    if scaler is not None and scaler.is_enabled() and document.get("scaler"):
        scaler.load_state_dict(document["scaler"])
    _restore_random_states(tensors, document["random"])
    return document
