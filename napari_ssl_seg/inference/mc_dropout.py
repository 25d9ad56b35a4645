"""Monte Carlo dropout done cheaply: the deterministic part once, only the stochastic part T times.

MC dropout (Gal & Ghahramani) estimates a network's uncertainty from T forward passes with the
dropout layers active. Two details decide whether it is right and fast:

* **Only the dropout layers sample.** BatchNorm must stay in eval mode, or each pass normalises
  with the statistics of its own window, and worse, updates the running statistics (a scorer that
  calls ``model.train()`` does both). :func:`dropout_sampling` switches exactly the dropout modules.
* **Nothing before the first dropout layer is random.** In the papers' V-Net that is the whole
  encoder (about half the compute), so :func:`sample_softmax` runs :meth:`VNet.encode` once and
  repeats only the decoder, with the T passes stacked along the batch axis (each copy draws its
  own dropout masks, so stacked copies are independent samples). Networks without the
  encode/decode split fall back to T stacked full passes.

Scopes: ``"decoder"`` (both dropout layers sample: the papers' MC dropout) and ``"classifier"``
(only the dropout before the 1x1x1 classifier samples; the bottleneck dropout is off). The second is
the documented fast mode: everything but a 1x1x1 convolution runs once, so its cost is close to a
plain prediction, at the price of a narrower, last-layer-only uncertainty estimate.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

__all__ = [
    "SCOPES",
    "default_chunk",
    "dropout_modules",
    "dropout_sampling",
    "entropy",
    "mc_dropout_moments",
    "mutual_information",
    "sample_softmax",
]

SCOPES = ("decoder", "classifier")
_EPS = 1e-8


def dropout_modules(network: nn.Module) -> list[nn.Module]:
    """Every dropout layer of ``network`` (any dimensionality)."""
    return [module for module in network.modules() if isinstance(module, nn.modules.dropout._DropoutNd)]


@contextmanager
def dropout_sampling(network: nn.Module, *, only: list[nn.Module] | None = None) -> Iterator[nn.Module]:
    """Eval mode for everything (BatchNorm included), train mode for the dropout layers.

    ``only`` restricts sampling to the given dropout layers. Every module's previous mode is
    restored on exit, whatever happens inside.
    """
    previous = {module: module.training for module in network.modules()}
    try:
        network.eval()
        for module in dropout_modules(network) if only is None else only:
            module.train()
        yield network
    finally:
        for module, training in previous.items():
            module.training = training


def _has_split(network: nn.Module) -> bool:
    return all(hasattr(network, name) for name in ("encode", "decode_features", "classify"))


def _repeat_batch(tensor: torch.Tensor, times: int) -> torch.Tensor:
    # Sample-major: [x_0..x_N-1, x_0..x_N-1, ...], so row k*N + n is sample k of item n.
    if times == 1:
        return tensor  # the CPU's one pass per call: no copy of every full-resolution skip
    repeated = tensor.repeat(times, *([1] * (tensor.ndim - 1)))
    if tensor.ndim == 5 and not tensor.is_contiguous() and tensor.is_contiguous(memory_format=torch.channels_last_3d):
        # repeat() returns the standard layout; the decoder would convert every skip back, per pass.
        repeated = repeated.contiguous(memory_format=torch.channels_last_3d)
    return repeated


def default_chunk(device: torch.device, samples: int) -> int:
    """MC passes stacked per decoder call: all of them on CUDA (it fills the GPU), one elsewhere.

    On the CPU, stacking costs more than it saves: 8 passes of the ``quick`` teacher's decoder on
    2 patches took 351 ms stacked and 147 ms one at a time (2 cores; memory traffic of the 8x
    larger activations), which made training's MC-dropout teachers the slowest part of UA-MT.
    """
    return samples if device.type == "cuda" else 1


def sample_softmax(
    network: nn.Module,
    x: torch.Tensor,
    samples: int,
    *,
    scope: str = "decoder",
    chunk: int | None = None,
    features: Any = None,
) -> Iterator[torch.Tensor]:
    """Yield softmax probabilities of ``samples`` stochastic passes, ``chunk`` passes at a time.

    Each yielded tensor has shape (k, N, C, *spatial) with k <= ``chunk`` (default:
    :func:`default_chunk`).
    Must be called inside :func:`dropout_sampling` (or with the dropout layers otherwise active);
    gradients follow the caller's autograd mode. ``features``: ``network.encode(x)`` when the caller
    has it already (a teacher whose deterministic pass needs it too), so the encoder runs once.
    """
    if samples < 1:
        raise ValueError(f"samples must be at least 1, got {samples}")
    if scope not in SCOPES:
        raise ValueError(f"unknown MC-dropout scope {scope!r} (known: {', '.join(SCOPES)})")
    chunk = default_chunk(x.device, samples) if chunk is None else max(1, min(chunk, samples))
    batch = x.shape[0]
    if not _has_split(network):
        for start in range(0, samples, chunk):
            k = min(chunk, samples - start)
            logits = network(_repeat_batch(x, k))
            yield torch.softmax(logits, dim=1, dtype=torch.float32).unflatten(0, (k, batch))
        return
    if features is None:
        features = network.encode(x)
    if scope == "classifier":
        bottleneck_dropout = getattr(network, "bottleneck_dropout", None)
        was_training = bottleneck_dropout.training if bottleneck_dropout is not None else False
        if bottleneck_dropout is not None:
            bottleneck_dropout.eval()
        try:
            decoded = network.decode_features(features)
        finally:
            if bottleneck_dropout is not None:
                bottleneck_dropout.train(was_training)
        yield from _sample_classifier(network, decoded, samples, chunk)
        return
    for start in range(0, samples, chunk):
        k = min(chunk, samples - start)
        repeated = type(features)(
            tuple(_repeat_batch(skip, k) for skip in features.skips), _repeat_batch(features.bottleneck, k)
        )
        logits = network.classify(network.decode_features(repeated))
        yield torch.softmax(logits, dim=1, dtype=torch.float32).unflatten(0, (k, batch))


def _sample_classifier(network: nn.Module, decoded: torch.Tensor, samples: int, chunk: int) -> Iterator[torch.Tensor]:
    """The "classifier" scope: channel dropout then a 1x1x1 convolution, T times.

    Channel dropout followed by a 1x1x1 convolution is linear in the features, so instead of
    copying the full-resolution features T times (what ``classify`` on a repeated batch would
    do) the T channel masks are folded into T copies of the tiny weight matrix: the same
    Dropout3d distribution (keep with 1 - p, scale by 1 / (1 - p)) at about 5% of a plain pass.
    Other layer types take the generic path.
    """
    dropout = getattr(network, "final_dropout", None)
    classifier = getattr(network, "classifier", None)
    foldable = (
        isinstance(classifier, nn.Conv3d)
        and classifier.kernel_size == (1, 1, 1)
        and classifier.groups == 1
        and isinstance(dropout, nn.Dropout3d | nn.Identity)
    )
    batch, channels = decoded.shape[:2]
    if not foldable:
        for start in range(0, samples, chunk):
            k = min(chunk, samples - start)
            logits = network.classify(_repeat_batch(decoded, k))
            yield torch.softmax(logits, dim=1, dtype=torch.float32).unflatten(0, (k, batch))
        return
    keep = 1.0 - dropout.p if isinstance(dropout, nn.Dropout3d) and dropout.training else 1.0
    weight = classifier.weight.flatten(1)  # (classes, channels)
    bias = classifier.bias if classifier.bias is not None else torch.zeros(weight.shape[0], device=weight.device)
    flat = decoded.flatten(2)  # (N, channels, voxels)
    for start in range(0, samples, chunk):
        k = min(chunk, samples - start)
        mask = torch.ones(k, batch, channels, device=decoded.device, dtype=decoded.dtype)
        if keep < 1.0:
            mask = torch.bernoulli(mask * keep) / keep
        masked_weight = weight[None, None] * mask[:, :, None, :]  # (k, N, classes, channels)
        logits = torch.einsum("knoc,ncv->knov", masked_weight, flat) + bias[None, None, :, None]
        yield torch.softmax(logits, dim=2, dtype=torch.float32).unflatten(3, decoded.shape[2:])


def entropy(probabilities: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Shannon entropy (nats) along ``dim``: 0 for a one-hot vector, ln C for a uniform one."""
    p = probabilities.float()
    return -(p * torch.log(p.clamp_min(_EPS))).sum(dim=dim)


def mutual_information(mean_probabilities: torch.Tensor, expected_entropy: torch.Tensor) -> torch.Tensor:
    """BALD: entropy of the mean minus the mean of the per-pass entropies (>= 0 up to rounding)."""
    return (entropy(mean_probabilities) - expected_entropy).clamp_min(0.0)


def _sum_passes(values: torch.Tensor) -> torch.Tensor:
    return values[0] if values.shape[0] == 1 else values.sum(dim=0)


def mc_dropout_moments(
    network: nn.Module,
    x: torch.Tensor,
    samples: int,
    *,
    scope: str = "decoder",
    chunk: int | None = None,
    with_expected_entropy: bool = False,
    features: Any = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Mean softmax over ``samples`` MC-dropout passes, and optionally the mean per-pass entropy.

    Returns ``(mean_probabilities (N, C, ...), expected_entropy (N, ...) or None)``. Switches the
    dropout layers on itself (BatchNorm stays in eval) and restores every module's mode after.
    Runs without autograd: this is for inference and for teachers' uncertainty targets.
    ``features`` as for :func:`sample_softmax`.
    """
    total: torch.Tensor | None = None
    expected: torch.Tensor | None = None
    with torch.no_grad(), dropout_sampling(network):
        for probabilities in sample_softmax(network, x, samples, scope=scope, chunk=chunk, features=features):
            # Summed in place, and a single pass (the CPU's chunk) taken as it is: each pass's
            # tensors are fresh, and a sum over one pass would allocate and fill a copy.
            part = _sum_passes(probabilities)
            total = part if total is None else total.add_(part)
            if with_expected_entropy:
                part_entropy = _sum_passes(entropy(probabilities, dim=2))
                expected = part_entropy if expected is None else expected.add_(part_entropy)
    assert total is not None
    mean = total / samples
    return mean, (expected / samples if expected is not None else None)


def max_entropy(num_classes: int) -> float:
    """ln C, the entropy of an even split over ``num_classes`` classes."""
    return math.log(num_classes)
