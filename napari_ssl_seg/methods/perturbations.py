"""Input perturbations the methods apply themselves (the loop's augmentation is shared by all).

* :func:`mean_teacher_noise`: ``x + clamp(0.1 * N(0, 1), -0.2, 0.2)``, the teacher-input noise of
  Mean Teacher / UA-MT (and UG-CEMT's perturbed input x'), one draw per voxel.
* :func:`random_gaussian_blur`: UCMT's student views, per sample: with probability 0.8 a Gaussian
  blur with sigma ~ U(0.1, 2.0) (isotropic, in voxels), otherwise the image unchanged.

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

__all__ = ["gaussian_blur", "host_values", "mean_teacher_noise", "random_gaussian_blur"]


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


def host_values(drawn: torch.Tensor) -> list:
    """The values of random numbers drawn on the host, as Python numbers.

    Reading a CPU tensor waits for no device, so branching on these is free on any device; the
    check keeps a device tensor from ever being read here.
    """
    if drawn.device.type != "cpu":
        raise ValueError("host_values reads host tensors only")
    return drawn.tolist()
