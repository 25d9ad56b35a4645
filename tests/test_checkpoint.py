"""Checkpoints: safetensors + JSON model card round trips; pickles are never unpickled."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
import torch

from napari_ssl_seg.errors import InputError
from napari_ssl_seg.networks import ModelCard, VNet, build_network, load_checkpoint, save_checkpoint
from napari_ssl_seg.networks.checkpoint import save_card

PICKLE_MESSAGE = "is a pickle checkpoint; napari-ssl-seg only loads safetensors weights with a JSON model card"
X = torch.randn(1, 1, 16, 16, 16, generator=torch.Generator().manual_seed(1))


def make_net(**kwargs) -> VNet:
    torch.manual_seed(0)
    net = VNet(**{"base_width": 4, **kwargs})
    # non-trivial BN statistics, so buffers are part of the round trip
    net.train()
    with torch.no_grad():
        net(torch.randn(2, 1, 16, 16, 16))
    return net.eval()


def make_card(**kwargs) -> ModelCard:
    base = {
        "method": "ugcemt",
        "network": {"name": "vnet", "base_width": 4},
        "patch_size": (16, 16, 16),
        "intensity": {"kind": "ct_window", "window": [-1000, 1000]},
        "spacing": (2.5, 0.8, 0.8),
        "classes": {0: "background", 1: "liver"},
        "training": {"data": "cohort-a", "label_versions": {"case1": 3}, "command": "napari-ssl-seg train", "seed": 7},
        "metrics": {"val_dice": 0.81},
        "parent": None,
    }
    base.update(kwargs)
    return ModelCard(**base)


class Marker:
    """Unpickling this creates a marker file: proof that pickle code ran."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_round_trip_float32_identical(tmp_path: Path):
    net = make_net()
    weights, card_path = save_checkpoint(tmp_path / "m1", {"model": net}, make_card())
    assert weights == tmp_path / "m1.safetensors" and card_path == tmp_path / "m1.json"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".partial-")]
    for path in (weights, card_path, tmp_path / "m1"):
        networks, _ = load_checkpoint(path)
        loaded = networks["model"]
        assert not loaded.training
        with torch.no_grad():
            assert torch.equal(loaded(X), net(X))


def test_round_trip_half_is_close_and_float32(tmp_path: Path):
    net = make_net()
    weights, _ = save_checkpoint(tmp_path / "h", {"model": net}, make_card(), half=True)
    full, _ = save_checkpoint(tmp_path / "f", {"model": net}, make_card())
    assert weights.stat().st_size < 0.6 * full.stat().st_size
    networks, card = load_checkpoint(weights)
    assert card.weights_dtype == "float16"
    loaded = networks["model"]
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    with torch.no_grad():
        reference = net(X)
        assert torch.allclose(loaded(X), reference, atol=1e-2 * float(reference.abs().max()))


def test_card_round_trip_and_extra_network(tmp_path: Path):
    teacher, student = make_net(), make_net(residual=False)
    card = make_card(
        extra_networks={"student": {"name": "vnet", "base_width": 4, "residual": False}}, parent="ugcemt-v1"
    )
    _, card_path = save_checkpoint(tmp_path, {"model": teacher, "student": student}, card)
    assert card_path == tmp_path / "model.json"
    networks, loaded = load_checkpoint(card_path)
    assert set(networks) == {"model", "student"}
    with torch.no_grad():
        assert torch.equal(networks["student"](X), student(X))
    # saved cards hold the full config; everything else comes back as given
    assert loaded.network == teacher.config
    assert loaded.extra_networks == {"student": student.config}
    for name in ("method", "patch_size", "intensity", "spacing", "classes", "training", "metrics", "parent"):
        assert getattr(loaded, name) == getattr(card, name), name
    assert loaded.classes == {0: "background", 1: "liver"}
    assert loaded.created_at == card.created_at and loaded.created_at.endswith("Z")
    assert loaded.format_version == 1 and loaded.weights_sha256 is not None
    assert card.weights_sha256 is None  # the caller's card is not modified


def test_pickle_file_refused_without_unpickling(tmp_path: Path):
    marker = tmp_path / "unpickled-marker"
    payload = pickle.dumps(Marker(str(marker)))
    assert payload[:1] == b"\x80"
    for name in ("evil.safetensors", "evil.json", "evil.pt", "evil.bin"):
        path = tmp_path / name
        path.write_bytes(payload)
        with pytest.raises(InputError, match=PICKLE_MESSAGE):
            load_checkpoint(path)
    # a genuine pair whose weights were swapped for the pickle is refused too
    save_checkpoint(tmp_path / "pair", {"model": make_net()}, make_card())
    (tmp_path / "pair.safetensors").write_bytes(payload)
    with pytest.raises(InputError, match=PICKLE_MESSAGE):
        load_checkpoint(tmp_path / "pair.json")
    assert not marker.exists()
    # the payload is live: unpickling it does create the marker
    pickle.loads(payload).close()
    assert marker.exists()


def test_torch_zip_and_pickle_suffixes_refused(tmp_path: Path):
    zipped = tmp_path / "model.safetensors"
    torch.save({"w": torch.zeros(2)}, zipped)  # torch's zip format
    assert zipped.read_bytes()[:4] == b"PK\x03\x04"
    with pytest.raises(InputError, match=PICKLE_MESSAGE):
        load_checkpoint(zipped)
    for suffix in (".pt", ".pth", ".ckpt", ".pkl"):
        with pytest.raises(InputError, match=PICKLE_MESSAGE):
            load_checkpoint(tmp_path / f"missing{suffix}")  # refused by name, even before reading


def _edit_card(card_path: Path, **changes) -> None:
    data = json.loads(card_path.read_text())
    data.update(changes)
    card_path.write_text(json.dumps(data))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"method": "magic"}, "unknown method 'magic'"),
        ({"network": {"name": "unet"}}, "unknown network 'unet'"),
        ({"network": {"name": "vnet", "base_width": 4, "wings": 2}}, "unknown V-Net setting"),
        ({"format_version": 99}, "format version 99"),
        ({"patch_size": [16, 16]}, "patch_size"),
    ],
)
def test_bad_card_refused(tmp_path: Path, changes, message):
    _, card_path = save_checkpoint(tmp_path / "m", {"model": make_net()}, make_card())
    _edit_card(card_path, **changes)
    with pytest.raises(InputError, match=message):
        load_checkpoint(card_path)


def test_save_refuses_unknown_method_and_network(tmp_path: Path):
    with pytest.raises(InputError, match="unknown method"):
        save_checkpoint(tmp_path / "m", {"model": make_net()}, make_card(method="magic"))
    with pytest.raises(InputError, match="unknown network"):
        save_checkpoint(tmp_path / "m", {"model": make_net()}, make_card(network={"name": "unet"}))
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(InputError, match="unknown network"):
        build_network({"name": "monai-vnet"})


def test_missing_or_invalid_card_refused(tmp_path: Path):
    weights, card_path = save_checkpoint(tmp_path / "m", {"model": make_net()}, make_card())
    card_path.write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        load_checkpoint(weights)
    os.remove(card_path)
    with pytest.raises(InputError, match=r"model card .* is missing"):
        load_checkpoint(weights)


def test_mismatched_weights_refused(tmp_path: Path):
    _, card_path = save_checkpoint(tmp_path / "m", {"model": make_net()}, make_card())
    # the card now describes a wider network than the weights hold (hash check off to reach the shapes)
    _edit_card(card_path, network={"name": "vnet", "base_width": 8}, weights_sha256=None)
    with pytest.raises(InputError, match=r"do not match network 'model'.*shape"):
        load_checkpoint(card_path)
    _edit_card(card_path, network={"name": "vnet", "base_width": 4, "depth": 4})
    with pytest.raises(InputError, match="unexpected"):
        load_checkpoint(card_path)
    # weights of another training run under this card: the hash tells
    save_checkpoint(
        tmp_path / "b",
        {"model": make_net(num_classes=3)},
        make_card(network={"name": "vnet", "base_width": 4, "num_classes": 3}),
    )
    _, card_m = save_checkpoint(tmp_path / "m2", {"model": make_net()}, make_card())
    (tmp_path / "m2.safetensors").write_bytes((tmp_path / "b.safetensors").read_bytes())
    with pytest.raises(InputError, match="hash differs"):
        load_checkpoint(card_m)
    _edit_card(card_m, weights_sha256=None)
    with pytest.raises(InputError, match="shape"):
        load_checkpoint(card_m)


def test_save_refuses_config_mismatch_and_overwrite(tmp_path: Path):
    with pytest.raises(ValueError, match="card says"):
        save_checkpoint(tmp_path / "m", {"model": make_net()}, make_card(network={"name": "vnet", "base_width": 8}))
    with pytest.raises(ValueError, match="do not match"):
        save_checkpoint(tmp_path / "m", {"model": make_net(), "student": make_net()}, make_card())
    save_checkpoint(tmp_path / "m", {"model": make_net()}, make_card())
    with pytest.raises(InputError, match="refusing to overwrite"):
        save_checkpoint(tmp_path / "m", {"model": make_net()}, make_card())
    save_checkpoint(tmp_path / "m", {"model": make_net()}, make_card(), overwrite=True)
    assert load_checkpoint(tmp_path / "m.json")[1].method == "ugcemt"


def test_a_card_rewritten_alone_describes_the_weights_on_disk(tmp_path: Path):
    net = make_net()
    weights, card_path = save_checkpoint(tmp_path / "m", {"model": net}, make_card())
    before = weights.read_bytes()
    _, card = load_checkpoint(card_path)
    save_card(weights, make_card(metrics={"val_dice": 0.81, "validation_dice": 0.9}))
    networks, rewritten = load_checkpoint(weights)
    assert rewritten.metrics["validation_dice"] == 0.9 and rewritten.weights_sha256 == card.weights_sha256
    assert weights.read_bytes() == before
    with torch.no_grad():
        assert torch.equal(networks["model"](X), net(X))
    with pytest.raises(InputError, match="missing"):
        save_card(tmp_path / "elsewhere", card)
    assert not (tmp_path / "elsewhere.json").exists()


def test_the_card_accepts_every_method_the_registry_builds_and_only_those(tmp_path: Path):
    from napari_ssl_seg.method_names import METHODS
    from napari_ssl_seg.methods.registry import available_methods

    external = "my_lab.methods:FixMatch3D"  # the registry's "package.module:Class" form
    for index, name in enumerate([*available_methods(), external]):
        assert name in METHODS or name == external
        _, card_path = save_checkpoint(tmp_path / f"m{index}", {"model": make_net()}, make_card(method=name))
        assert load_checkpoint(card_path)[1].method == name
    for wrong in ("magic", "my_lab.methods:", ":Class", "a b:C"):
        with pytest.raises(InputError, match="unknown method"):
            save_checkpoint(tmp_path / "bad", {"model": make_net()}, make_card(method=wrong))
