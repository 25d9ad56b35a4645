"""Broken, tampered and hostile model checkpoints, made from a valid tiny one.

The hostile ones are pickles whose unpickling would create a marker file: a test that finds the
marker absent after the refusal has proved that nothing was unpickled.
"""

from __future__ import annotations

import json
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from napari_ssl_seg.io.atomic import sha256_file


class Payload:
    """Unpickling this opens (creates) ``marker`` for writing: the side effect a refusal must prevent."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.marker, "w"))


def _copy_pair(weights: Path, folder: Path, stem: str) -> tuple[Path, Path]:
    target_weights, target_card = folder / f"{stem}.safetensors", folder / f"{stem}.json"
    shutil.copyfile(weights, target_weights)
    shutil.copyfile(weights.with_suffix(".json"), target_card)
    return target_weights, target_card


def _edit_card(card: Path, change: Callable[[dict[str, Any]], None]) -> None:
    data = json.loads(card.read_text())
    change(data)
    card.write_text(json.dumps(data))


def pickle_checkpoints(folder: Path, marker: Path) -> dict[str, Path]:
    """Pickles under the names users share them by; each would create ``marker`` if unpickled."""
    folder.mkdir(parents=True, exist_ok=True)
    payload = {"state_dict": Payload(marker)}
    raw = pickle.dumps(payload, protocol=2)
    cases = {}
    for name in ("model.pt", "model.pth", "model.ckpt"):
        cases[f"pickle {name}"] = folder / name
        cases[f"pickle {name}"].write_bytes(raw)
    renamed = folder / "renamed.safetensors"
    renamed.write_bytes(raw)
    (folder / "renamed.json").write_text("{}")
    cases["pickle renamed .safetensors"] = renamed
    zipped = folder / "zipped.safetensors"
    torch.save(payload, zipped)  # torch's zip container, pickle inside
    (folder / "zipped.json").write_text("{}")
    cases["torch.save zip renamed .safetensors"] = zipped
    card_pickle = folder / "cardpickle.json"
    card_pickle.write_bytes(raw)
    (folder / "cardpickle.safetensors").write_bytes(raw)
    cases["pickle as the .json card"] = card_pickle
    return cases


def broken_checkpoints(weights: Path, folder: Path) -> dict[str, Path]:
    """Every way a shared checkpoint arrives damaged; ``weights`` is a valid tiny model."""
    folder.mkdir(parents=True, exist_ok=True)
    cases: dict[str, Path] = {}

    def pair(stem: str) -> tuple[Path, Path]:
        return _copy_pair(weights, folder, stem)

    w, c = pair("nocard")
    c.unlink()
    cases["weights without card"] = w
    w, c = pair("noweights")
    w.unlink()
    cases["card without weights"] = c
    w, c = pair("truncated")
    w.write_bytes(w.read_bytes()[:200])
    cases["truncated weights"] = w
    w, c = pair("truncated_nohash")
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    _edit_card(c, lambda d: d.update(weights_sha256=None))
    cases["truncated weights, card without hash"] = w
    w, c = pair("flipped")
    data = bytearray(w.read_bytes())
    data[-5] ^= 0x10  # one bit of one weight: only the hash can tell
    w.write_bytes(bytes(data))
    cases["bit-flipped weights"] = w
    w, c = pair("flipped_header")
    data = bytearray(w.read_bytes())
    data[20] ^= 0x22  # inside the JSON header of the safetensors file
    w.write_bytes(bytes(data))
    _edit_card(c, lambda d: d.update(weights_sha256=None))
    cases["bit-flipped safetensors header"] = w
    w, c = pair("badjson")
    c.write_text(c.read_text()[:-40])
    cases["truncated card"] = w
    w, c = pair("listcard")
    c.write_text("[1, 2, 3]")
    cases["card is a JSON list"] = w
    edits: dict[str, Callable[[dict[str, Any]], None]] = {
        "unknown method": lambda d: d.update(method="alchemy"),
        "unknown network": lambda d: d.update(network={"name": "transformer9000"}),
        "newer format version": lambda d: d.update(format_version=99),
        "absurd patch size": lambda d: d.update(patch_size=[100000, 100000, 100000]),
        "zero patch size": lambda d: d.update(patch_size=[0, 8, 8]),
        "negative spacing": lambda d: d.update(spacing=[-1, 1, 1]),
        "classes not an object": lambda d: d.update(classes=["a", "b"]),
        "class ids not numbers": lambda d: d.update(classes={"bg": "x"}),
        "unknown intensity kind": lambda d: d.update(intensity={"kind": "vibes"}),
        "zero classes": lambda d: d["network"].update(num_classes=0),
        "depth 1 network": lambda d: d["network"].update(depth=1),
        "card/weights shape mismatch": lambda d: d["network"].update(num_classes=5),
        "unknown card field": lambda d: d.update(patient="x"),
    }
    for index, (name, change) in enumerate(edits.items()):
        w, c = pair(f"edit{index}")
        _edit_card(c, change)
        cases[f"card: {name}"] = w
    empty = folder / "empty_dir"
    empty.mkdir()
    cases["empty folder as model"] = empty
    return cases


def rehash(card: Path) -> None:
    """Make a card vouch for its (edited) weights again."""
    _edit_card(card, lambda d: d.update(weights_sha256=sha256_file(card.with_suffix(".safetensors"))))
