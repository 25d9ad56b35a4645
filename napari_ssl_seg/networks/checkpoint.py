"""Checkpoints: safetensors weights plus a JSON model card, never pickles.

A ``torch.load`` of a ``.pt``/``.pth``/``.ckpt`` file runs arbitrary code hidden in the pickle, and
users of this plugin share models; so weights are only ever stored and read as safetensors, and
everything needed to rebuild and use the network (architecture, patch size, intensity
normalisation, spacing, class names, provenance) lives in a human-readable JSON card beside them.
Loading refuses pickle and zip (``torch.save``) files by name and by content before reading them.

Layout: ``<stem>.safetensors`` holds every network under a prefix (``model.<param>`` for the main
network, ``student.<param>`` for an extra one); ``<stem>.json`` holds the :class:`ModelCard`,
including the SHA-256 of the weights file, so a card never silently pairs with other weights.
The weights are written first, the card last, each atomically: a crash leaves either no card
(the checkpoint is refused as incomplete) or a complete pair.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from napari_ssl_seg.errors import InputError
from napari_ssl_seg.io.atomic import atomic_output, sha256_file
from napari_ssl_seg.io.orientation import check_orientation
from napari_ssl_seg.method_names import METHODS, is_method_name, method_choices
from napari_ssl_seg.networks.multicure import build_cure_resnet3d
from napari_ssl_seg.networks.pickle_guard import PICKLE_SUFFIXES, check_not_pickle, pickle_refusal
from napari_ssl_seg.networks.resnet3d import build_resnet3d
from napari_ssl_seg.networks.vnet import VNet

__all__ = [
    "FORMAT_VERSION",
    "KNOWN_METHODS",
    "MAIN_NETWORK",
    "NETWORK_BUILDERS",
    "ModelCard",
    "build_network",
    "card_timestamp",
    "checkpoint_paths",
    "load_checkpoint",
    "save_card",
    "save_checkpoint",
]

FORMAT_VERSION = 1
LARGEST_COMPONENT = "largest_component"
MAIN_NETWORK = "model"
WEIGHTS_SUFFIX = ".safetensors"
CARD_SUFFIX = ".json"
DEFAULT_STEM = "model"
MAX_PATCH_SIDE = 1024
KNOWN_METHODS = frozenset(METHODS)


def _build_vnet(config: Mapping[str, Any]) -> nn.Module:
    allowed = {"in_channels", "num_classes", "base_width", "depth", "dropout", "residual"}
    unknown = set(config) - allowed - {"name"}
    if unknown:
        raise InputError(f"unknown V-Net setting(s) in model card: {', '.join(sorted(unknown))}")
    try:
        return VNet(**{key: config[key] for key in allowed if key in config})
    except (TypeError, ValueError) as exc:
        raise InputError(f"invalid V-Net settings in model card: {exc}") from None


# name -> builder(config) -> module; other architectures register here.
NETWORK_BUILDERS: dict[str, Callable[[Mapping[str, Any]], nn.Module]] = {
    "vnet": _build_vnet,
    "resnet3d": build_resnet3d,
    "resnet3d_multicure": build_cure_resnet3d,
}


def build_network(config: Mapping[str, Any]) -> nn.Module:
    """Build a freshly initialised network from a model card's ``network`` entry.

    Raises :class:`InputError` for an unknown name or invalid settings (the card came from a file).
    """
    if not isinstance(config, Mapping):
        raise InputError("model card 'network' must be an object with a 'name'")
    name = config.get("name")
    builder = NETWORK_BUILDERS.get(name) if isinstance(name, str) else None
    if builder is None:
        known = ", ".join(sorted(NETWORK_BUILDERS))
        raise InputError(f"unknown network {name!r} in model card (known: {known})")
    return builder(config)


def card_timestamp() -> str:  # now, as a card's ``created_at`` says it
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


@dataclass
class ModelCard:
    """Everything needed to rebuild, use and trace a trained model, stored as JSON.

    ``network`` is the main network's config (see :func:`build_network`); ``extra_networks`` maps
    the names of further networks in the same weights file (e.g. ``"student"``) to their configs.
    ``intensity`` says how to normalise an image before inference, e.g.
    ``{"kind": "ct_window", "window": [-1000, 1000]}`` or ``{"kind": "zscore"}``.
    ``weights_sha256`` and ``weights_dtype`` are filled in by :func:`save_checkpoint`.
    """

    method: str
    network: dict[str, Any]
    patch_size: tuple[int, int, int]
    intensity: dict[str, Any]
    classes: dict[int, str]
    spacing: tuple[float, float, float] | None = None
    #: The patient orientation the network saw (``io.orientation``: "LPS"); None: older cards, voxel order.
    orientation: str | None = None
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    parent: str | None = None
    created_at: str = field(default_factory=card_timestamp)
    format_version: int = FORMAT_VERSION
    extra_networks: dict[str, dict[str, Any]] = field(default_factory=dict)
    weights_sha256: str | None = None
    weights_dtype: str = "float32"
    #: After the argmax, chosen on validation: ``{LARGEST_COMPONENT: [class ids]}`` (inference/components.py).
    postprocessing: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        """Output channels of the main network, background included (cards before the field: binary, 2)."""
        return int(self.network.get("num_classes", 2))

    def to_json(self) -> str:
        """Serialise; class ids become JSON string keys, tuples become lists."""
        data = dataclasses.asdict(self)
        data["classes"] = {str(key): value for key, value in self.classes.items()}
        data["patch_size"] = list(self.patch_size)
        data["spacing"] = None if self.spacing is None else list(self.spacing)
        return json.dumps(data, indent=2, sort_keys=True, allow_nan=False) + "\n"

    @classmethod
    def from_json(cls, text: str, *, source: str = "model card") -> ModelCard:
        """Parse and validate; any problem is an :class:`InputError` naming ``source``."""
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InputError(f"{source} is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise InputError(f"{source} must hold a JSON object")
        names = {f.name for f in dataclasses.fields(cls)}
        required = {
            f.name
            for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        }
        missing = required - set(data)
        if missing:
            raise InputError(f"{source} lacks field(s): {', '.join(sorted(missing))}")
        unknown = set(data) - names
        if unknown:
            raise InputError(f"{source} has unknown field(s): {', '.join(sorted(unknown))}")
        try:
            data["classes"] = {int(key): str(value) for key, value in dict(data["classes"]).items()}
            patch = tuple(int(v) for v in data["patch_size"])
            if len(patch) != 3 or min(patch) < 1 or max(patch) > MAX_PATCH_SIDE:
                # An absurd patch from a corrupt or hostile card would be allocated before any check.
                raise ValueError(f"patch_size must be three integers from 1 to {MAX_PATCH_SIDE} (z, y, x)")
            data["patch_size"] = patch
            if data.get("spacing") is not None:
                spacing = tuple(float(v) for v in data["spacing"])
                if len(spacing) != 3 or not all(math.isfinite(v) and v > 0 for v in spacing):
                    raise ValueError("spacing must be three positive numbers (z, y, x) or null")
                data["spacing"] = spacing
            for key in ("network", "intensity", "training", "metrics", "extra_networks", "postprocessing"):
                if key in data and not isinstance(data[key], dict):
                    raise ValueError(f"{key} must be an object")
            data["format_version"] = int(data.get("format_version", FORMAT_VERSION))
        except (TypeError, ValueError) as exc:
            raise InputError(f"{source} is invalid: {exc}") from None
        card = cls(**data)
        card.validate(source=source)
        return card

    def validate(self, *, source: str = "model card") -> None:
        """Refuse cards this version cannot use (unknown method, network, newer format)."""
        if self.format_version > FORMAT_VERSION:
            raise InputError(
                f"{source} has format version {self.format_version}; this napari-ssl-seg reads up to "
                f"{FORMAT_VERSION}, please upgrade"
            )
        if not is_method_name(self.method):
            raise InputError(f"unknown method {self.method!r} in {source} (known: {method_choices()})")
        for config in (self.network, *self.extra_networks.values()):
            name = config.get("name") if isinstance(config, Mapping) else None
            if name not in NETWORK_BUILDERS:
                raise InputError(f"unknown network {name!r} in {source} (known: {', '.join(sorted(NETWORK_BUILDERS))})")
        if MAIN_NETWORK in self.extra_networks:
            raise InputError(f"{source}: extra network may not be named {MAIN_NETWORK!r}")
        if self.weights_dtype not in ("float32", "float16"):
            raise InputError(f"{source}: weights_dtype must be float32 or float16, got {self.weights_dtype!r}")
        if self.orientation is not None:
            self.orientation = check_orientation(self.orientation, source=f"{source}: orientation")
        self.postprocessing = _checked_postprocessing(self.postprocessing, self.classes, source)


def _checked_postprocessing(entry: Mapping[str, Any], classes: Mapping[int, str], source: str) -> dict[str, Any]:
    """The card's post-processing with class ids as ints; unknown steps or classes are refused."""
    try:
        if unknown := sorted(set(entry) - {LARGEST_COMPONENT}):
            raise ValueError(f"unknown post-processing {', '.join(unknown)} (known: {LARGEST_COMPONENT})")
        ids = sorted({int(value) for value in entry.get(LARGEST_COMPONENT, [])})
        if classes and set(ids) - {int(key) for key in classes}:
            raise ValueError(f"postprocessing.largest_component names class(es) {ids} beyond the card's classes")
    except (TypeError, ValueError) as exc:
        raise InputError(f"{source}: {exc}") from None
    return {LARGEST_COMPONENT: ids} if ids else {}


def checkpoint_paths(path: Path | str) -> tuple[Path, Path]:
    """``(weights, card)`` for a directory, a stem, or either file of a pair.

    A directory holds ``model.safetensors`` + ``model.json``; otherwise a ``.safetensors`` or
    ``.json`` suffix is replaced and any other name is a stem (dots in it are kept).
    """
    path = Path(path)
    if path.is_dir():
        path = path / DEFAULT_STEM
    elif path.suffix.lower() in (WEIGHTS_SUFFIX, CARD_SUFFIX):
        path = path.with_suffix("")
    return Path(f"{path}{WEIGHTS_SUFFIX}"), Path(f"{path}{CARD_SUFFIX}")


def _network_configs(card: ModelCard) -> dict[str, dict[str, Any]]:
    return {MAIN_NETWORK: card.network, **card.extra_networks}


def save_checkpoint(
    path: Path | str,
    networks: Mapping[str, nn.Module],
    card: ModelCard,
    *,
    half: bool = False,
    overwrite: bool = False,
) -> tuple[Path, Path]:
    """Write ``networks`` as safetensors and ``card`` as JSON; return ``(weights_path, card_path)``.

    ``networks`` must hold the main network under ``"model"`` and one entry per
    ``card.extra_networks`` name. A network with a ``config`` property (e.g. :class:`VNet`) must
    match its card entry, so a card can never describe a different architecture than its weights.
    ``half`` stores floating tensors as float16 (half the size; loaded back as float32). The
    card's ``weights_sha256``/``weights_dtype`` are filled in (on a copy; ``card`` is unchanged).
    """
    card = dataclasses.replace(
        card,
        weights_dtype="float16" if half else "float32",
        weights_sha256=None,
        extra_networks=dict(card.extra_networks),
    )
    card.validate()
    configs = _network_configs(card)
    if set(networks) != set(configs):
        raise ValueError(f"networks {sorted(networks)} do not match the card's networks {sorted(configs)}")
    tensors: dict[str, torch.Tensor] = {}
    for name, module in networks.items():
        own_config = getattr(module, "config", None)
        if isinstance(own_config, Mapping):
            differs = {key: value for key, value in configs[name].items() if own_config.get(key) != value}
            if differs:
                raise ValueError(f"network {name!r} has config {dict(own_config)}, the card says {differs}")
            # The card gets the complete config, defaults included, so it never depends on them.
            if name == MAIN_NETWORK:
                card.network = dict(own_config)
            else:
                card.extra_networks[name] = dict(own_config)
        for key, tensor in module.state_dict().items():
            tensor = tensor.detach().to("cpu")
            if tensor.is_floating_point():
                tensor = tensor.to(torch.float16 if half else torch.float32)
                if not bool(torch.isfinite(tensor).all()):
                    why = " (too large for float16; save without half)" if half else ""
                    raise InputError(f"refusing to save network {name!r}: {key} holds NaN or inf{why}")
            tensors[f"{name}.{key}"] = tensor.contiguous()
    weights_path = checkpoint_paths(path)[0]
    if not weights_path.parent.is_dir():
        raise InputError(f"folder {weights_path.parent} does not exist")
    metadata = {
        "format": "napari-ssl-seg",
        "format_version": str(FORMAT_VERSION),
        "networks": ",".join(sorted(networks)),
    }
    with atomic_output(weights_path, overwrite=overwrite) as temporary:
        save_file(tensors, str(temporary), metadata=metadata)
    return weights_path, save_card(weights_path, card, overwrite=overwrite)


def save_card(path: Path | str, card: ModelCard, *, overwrite: bool = True) -> Path:
    """Write ``card`` for the weights already at ``path`` (a checkpoint's card changed, its weights not): the
    card's ``weights_sha256`` is set from the file on disk, so it can only describe those weights."""
    weights_path, card_path = checkpoint_paths(path)
    if not weights_path.is_file():
        raise InputError(f"weights {weights_path} are missing: a card is written beside its weights")
    card = dataclasses.replace(card, weights_sha256=sha256_file(weights_path))
    card.validate()
    with atomic_output(card_path, overwrite=overwrite) as temporary:
        temporary.write_text(card.to_json(), encoding="utf-8")
    return card_path


def _load_state(module: nn.Module, state: dict[str, torch.Tensor], name: str, source: Path) -> None:
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        raise InputError(f"weights in {source} do not match network {name!r} of the model card: {'; '.join(parts)}")
    for key, tensor in state.items():
        if tuple(tensor.shape) != tuple(expected[key].shape):
            raise InputError(
                f"weights in {source} do not match network {name!r} of the model card: {key} has shape "
                f"{tuple(tensor.shape)}, expected {tuple(expected[key].shape)}"
            )
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise InputError(f"weights in {source} hold NaN or inf ({name}.{key})")
    converted = {key: tensor.to(expected[key].dtype) for key, tensor in state.items()}
    module.load_state_dict(converted, strict=True)


def load_checkpoint(path: Path | str) -> tuple[dict[str, nn.Module], ModelCard]:
    """Load a checkpoint from its ``.safetensors`` or ``.json`` path (or stem or folder).

    Returns ``({"model": net, ...extra networks}, card)`` with float32 networks on the CPU in eval
    mode. Never unpickles: pickle-style names and pickle/zip content are refused with
    :class:`InputError`, as are a missing or invalid card, unknown method or network, weights that
    differ from the card's hash, and weights that do not fit the network.
    """
    given = Path(path)
    if given.suffix.lower() in PICKLE_SUFFIXES:
        raise pickle_refusal(given)
    if given.is_file():
        check_not_pickle(given, expect_safetensors=given.suffix.lower() == WEIGHTS_SUFFIX)
    weights_path, card_path = checkpoint_paths(given)
    if not card_path.is_file():
        raise InputError(f"model card {card_path} is missing; a checkpoint is a .safetensors file with its .json card")
    if not weights_path.is_file():
        raise InputError(f"weights {weights_path} are missing for model card {card_path}")
    check_not_pickle(card_path, expect_safetensors=False)
    check_not_pickle(weights_path, expect_safetensors=True)
    try:
        text = card_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read model card {card_path}: {exc}") from None
    card = ModelCard.from_json(text, source=f"model card {card_path}")
    if card.weights_sha256 is not None and sha256_file(weights_path) != card.weights_sha256:
        raise InputError(
            f"weights {weights_path} are not the ones model card {card_path} was written for (hash differs)"
        )
    try:
        flat = load_file(str(weights_path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise InputError(f"cannot read weights {weights_path}: {exc}") from None
    grouped: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in flat.items():
        prefix, _, rest = key.partition(".")
        grouped.setdefault(prefix, {})[rest] = tensor
    configs = _network_configs(card)
    stray = sorted(set(grouped) - set(configs))
    if stray:
        raise InputError(
            f"weights in {weights_path} hold network(s) {', '.join(stray)} not described by the model card"
        )
    networks: dict[str, nn.Module] = {}
    for name, config in configs.items():
        module = build_network(config)
        _load_state(module, grouped.get(name, {}), name, weights_path)
        networks[name] = module.float().eval()
    return networks, card
