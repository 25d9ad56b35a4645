"""A 3D deformable convolution (Dai et al. 2017, DCNv1) built from ``grid_sample``.

PyTorch has no 3D deformable convolution (torchvision's ``deform_conv2d`` is 2D only), and paper
003's MultiCURE module needs a 3x3x3 one. This module builds it from standard operations:

1. a plain ``Conv3d`` predicts, for every output voxel and every one of the k^3 kernel taps, an
   offset (dz, dy, dx) in voxels; it starts at zero, so an untrained layer is an ordinary conv;
2. the input is sampled at ``p + p_k + offset`` for each tap with trilinear interpolation
   (``torch.nn.functional.grid_sample`` with ``mode="bilinear"`` on a 5-D input), zero outside
   the volume, exactly the zero padding of ``Conv3d``;
3. the k^3 sampled copies are stacked along channels and reduced by a 1x1x1 convolution whose
   weights are the (out, in, k, k, k) kernel, so the layer holds the same weights as ``Conv3d``.

Only stride 1 and dilation 1 are supported (all MultiCURE needs). ``align_corners=False`` maps
voxel index i to the normalised coordinate (2 i + 1) / size - 1, which stays defined for a
size-1 axis. Cost: the stacked samples take k^3 times the input's memory (27x for 3x3x3), which
is why MultiCURE uses it once, at one level.
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DeformConv3d"]


class DeformConv3d(nn.Module):
    """Deformable 3D convolution with learned per-voxel, per-tap offsets (stride 1, 'same' padding)."""

    taps: torch.Tensor  # a buffer: the (k^3, 3) kernel offsets of the taps

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, *, bias: bool = True) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd and positive, got {kernel_size}")
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        self.padding = kernel_size // 2
        taps = kernel_size**3
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.offset = nn.Conv3d(in_channels, 3 * taps, kernel_size, padding=self.padding)
        # Tap displacements in (z, y, x) order, row-major like the flattened Conv3d kernel.
        grid = list(itertools.product(range(kernel_size), repeat=3))
        self.register_buffer("taps", torch.tensor(grid, dtype=torch.float32) - self.padding, persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Conv3d's own initialisation for the kernel; zero offsets so training starts from a plain conv.
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.in_channels * self.kernel_size**3
            bound = 1 / math.sqrt(fan_in)
            nn.init.uniform_(self.bias, -bound, bound)
        nn.init.zeros_(self.offset.weight)
        if self.offset.bias is not None:
            nn.init.zeros_(self.offset.bias)

    def sample(self, x: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        """Input values at every tap's displaced position: (N, C * k^3, z, y, x), channel-major.

        ``offsets`` is (N, 3 k^3, z, y, x), grouped per tap as (dz, dy, dx) in voxels.
        """
        n, _, depth, height, width = x.shape
        taps = self.taps.shape[0]
        offsets = offsets.view(n, taps, 3, depth, height, width)
        positions = []
        for axis, size in enumerate((depth, height, width)):
            base = torch.arange(size, device=x.device, dtype=offsets.dtype)
            shape = [1, 1, 1, 1, 1]
            shape[2 + axis] = size
            position = base.view(shape) + self.taps[:, axis].to(offsets.dtype).view(1, taps, 1, 1, 1)
            position = position + offsets[:, :, axis]
            # Voxel index -> grid_sample's [-1, 1] coordinate (align_corners=False convention).
            positions.append((2.0 * position + 1.0) / size - 1.0)
        # grid_sample wants (x, y, z) order in the last axis; taps are stacked along depth.
        grid = torch.stack(positions[::-1], dim=-1).reshape(n, taps * depth, height, width, 3)
        sampled = F.grid_sample(x, grid.to(x.dtype), mode="bilinear", padding_mode="zeros", align_corners=False)
        return sampled.view(n, x.shape[1] * taps, depth, height, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sampled = self.sample(x, self.offset(x))
        weight = self.weight.reshape(self.out_channels, -1, 1, 1, 1)
        return F.conv3d(sampled, weight.to(sampled.dtype), None if self.bias is None else self.bias.to(sampled.dtype))
