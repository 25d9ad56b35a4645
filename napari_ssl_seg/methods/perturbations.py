"""Input perturbations the methods apply themselves (the loop's augmentation is shared by all).

* :func:`mean_teacher_noise`: ``x + clamp(0.1 * N(0, 1), -0.2, 0.2)``, the teacher-input noise of
  Mean Teacher / UA-MT (and UG-CEMT's perturbed input x'), one draw per voxel.
* :func:`random_gaussian_blur`: UCMT's student views, per sample: with probability 0.8 a Gaussian
  blur with sigma ~ U(0.1, 2.0) (isotropic, in voxels), otherwise the image unchanged.
* :func:`random_intensity`: a stronger student view (not in the papers; UCMT's
  ``student_intensity``): nnU-Net's brightness, contrast and gamma changes, each with its own
  probability per sample.

Decisions: the blur uses MONAI's separable Gaussian kernels (``gaussian_1d``, truncated at 4 sigma,
as ``GaussianSmooth``) but pads by replicating the border rather than with zeros, so a blurred
patch keeps its intensity level at the edges (zero padding darkens them, which is a perturbation
the paper does not describe). Sigma is in voxels, as in the 2D reference code; randomness comes
from torch's generator so a seeded run repeats.
"""

from __future__ import annotations

import torch
from monai.networks.layers.convutils import gaussian_1d
from monai.networks.layers.simplelayers import separable_filtering

__all__ = ["gaussian_blur", "host_values", "mean_teacher_noise", "random_gaussian_blur", "random_intensity"]


def mean_teacher_noise(x: torch.Tensor, std: float = 0.1, clip: float = 0.2) -> torch.Tensor:
    """``x`` plus Gaussian noise of standard deviation ``std`` clamped to [-clip, clip]."""
    noise = torch.clamp(torch.randn_like(x) * std, -clip, clip)
    return x + noise


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Isotropic Gaussian blur of a (N, C, *spatial) tensor with ``sigma`` in voxels."""
    spatial = x.ndim - 2
    kernel = gaussian_1d(torch.tensor(float(sigma)), truncated=4.0, approx="erf").to(x.device, x.dtype)
    return separable_filtering(x, [kernel] * spatial, mode="replicate")


def random_gaussian_blur(
    x: torch.Tensor,
    sigma_range: tuple[float, float] = (0.1, 2.0),
    prob: float = 0.8,
) -> torch.Tensor:
    """Blur each sample of ``x`` (N, C, *spatial) with probability ``prob``, sigma ~ U(sigma_range)."""
    low, high = sigma_range
    if not 0.0 < low <= high:
        raise ValueError(f"sigma range must satisfy 0 < low <= high, got {sigma_range}")
    apply = host_values(torch.rand(x.shape[0]) < prob)
    sigmas = host_values(low + (high - low) * torch.rand(x.shape[0]))
    # Samples differ in sigma, so each is filtered on its own (batches here hold a few samples).
    views = [
        gaussian_blur(x[index : index + 1], sigmas[index]) if apply[index] else x[index : index + 1]
        for index in range(x.shape[0])
    ]
    return torch.cat(views, dim=0) if views else x.clone()


def random_intensity(x: torch.Tensor, prob: float) -> torch.Tensor:
    """Per sample of ``x`` (N, C, *spatial), each with probability ``prob``: nnU-Net's intensity changes.

    Brightness: x times U(0.75, 1.25). Contrast: (x - mean) times U(0.75, 1.25) plus the mean, clipped
    to the sample's range before the change. Gamma: the sample mapped to [0, 1] over its range, raised
    to U(0.7, 1.5), mapped back, and its mean and standard deviation restored. The ranges are the
    sampler's (``intensity_augmentation``); the same changes as MONAI's ``RandScaleIntensity``,
    ``RandScaleIntensityFixedMean`` and ``RandAdjustContrast``, written on the batch because those draw
    from a NumPy generator per transform, which a run's checkpoint does not carry: drawing from torch's
    generator keeps a resumed run equal to an uninterrupted one, as every other perturbation here.
    """
    if not 0.0 <= prob <= 1.0:
        raise ValueError(f"probability must be in [0, 1], got {prob}")
    count = x.shape[0]
    if prob == 0.0 or count == 0:
        return x
    applied = torch.rand(3, count) < prob
    factors = 0.75 + 0.5 * torch.rand(2, count)
    gammas = 0.7 + 0.8 * torch.rand(count)
    shape = (count,) + (1,) * (x.ndim - 1)

    def per_sample(values: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        return torch.where(keep, torch.ones_like(values), values).to(x.device, x.dtype).reshape(shape)

    dims = tuple(range(1, x.ndim))
    brightness = per_sample(factors[0], ~applied[0])
    contrast = per_sample(factors[1], ~applied[1])
    gamma = per_sample(gammas, ~applied[2])
    out = x * brightness
    low, high = out.amin(dim=dims, keepdim=True), out.amax(dim=dims, keepdim=True)
    mean = out.mean(dim=dims, keepdim=True)
    out = torch.minimum(torch.maximum((out - mean) * contrast + mean, low), high)
    low, high = out.amin(dim=dims, keepdim=True), out.amax(dim=dims, keepdim=True)
    mean, std = out.mean(dim=dims, keepdim=True), out.std(dim=dims, keepdim=True)
    span = (high - low).clamp_min(1e-7)
    curved = ((out - low) / span).clamp_min(0.0) ** gamma * span + low
    curved = (curved - curved.mean(dim=dims, keepdim=True)) / curved.std(dim=dims, keepdim=True).clamp_min(1e-7)
    curved = curved * std + mean
    # Samples whose gamma was not drawn stay exactly as they are (the round trip is not exact in floats).
    return torch.where(applied[2].to(x.device).reshape(shape), curved, out)


def host_values(drawn: torch.Tensor) -> list:
    """The values of random numbers drawn on the host, as Python numbers.

    Reading a CPU tensor waits for no device, so branching on these is free on any device; the
    check keeps a device tensor from ever being read here.
    """
    if drawn.device.type != "cpu":
        raise ValueError("host_values reads host tensors only")
    return drawn.tolist()
