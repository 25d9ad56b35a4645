"""UMIX, UCMT's uncertainty-guided region mix (paper 001, Sec. 3.4), reused by UG-CEMT's step 2.

Given two voxel uncertainty maps U^1 and U^2 of the same samples, the volume is cut into a grid of
blocks, and within each sample:

1. the k blocks with the highest mean U^1 are overwritten by the k blocks with the lowest mean U^2;
2. then the k blocks with the highest mean U^2 are overwritten by the k blocks with the lowest
   mean U^1.

The same block moves go to every tensor given (image, label, pseudo-label), so a moved image block
keeps its own label. Everything is gathered and scattered on a (N, blocks, ...) view: no Python loop
over voxels or samples.

Decisions the paper leaves open (and what the released 3D code does):

* **Grid.** ``blocks_per_side`` blocks along each axis (3D code: 8, i.e. 512 blocks; the 2D paper
  uses regions of 1/r of the image, r = 16). Block size = ``size // blocks_per_side`` per axis,
  clamped to at least 1 voxel for small patches (then fewer blocks fit along that axis). When a
  size is not a multiple of the block size the remainder voxels at the high end of that axis
  belong to no block and are never moved (the released code requires divisible sizes).
* **Order.** The two passes are sequential, as in the released code: where a block is among the
  most uncertain of both maps, the second pass wins. Sources are read before each pass writes;
  a block is never both a source and a target within one pass because k is clamped to
  ``blocks // 2``.
* **Pairing.** The i-th most uncertain block receives the i-th most certain block (the released
  code pairs them in the opposite order within the top k; the set of moved blocks is the same).
* **Ties** in block means are broken by block index (stable sort), so the result is deterministic.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

__all__ = ["UmixPlan", "apply_umix", "block_grid", "block_means", "plan_umix", "umix"]


@dataclass(frozen=True)
class UmixPlan:
    """The block moves of one UMIX: per sample, targets and sources of the two passes, (N, k) each."""

    block_size: tuple[int, ...]
    grid: tuple[int, ...]
    targets_1: torch.Tensor
    sources_1: torch.Tensor
    targets_2: torch.Tensor
    sources_2: torch.Tensor

    @property
    def blocks(self) -> int:
        return math.prod(self.grid)


def block_grid(spatial_shape: Sequence[int], blocks_per_side: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """``(block_size, grid)``: block size per axis (at least 1 voxel) and how many blocks fit."""
    if blocks_per_side < 1:
        raise ValueError(f"blocks_per_side must be at least 1, got {blocks_per_side}")
    if any(size < 1 for size in spatial_shape):
        raise ValueError(f"empty spatial shape {tuple(spatial_shape)}")
    block_size = tuple(max(1, size // blocks_per_side) for size in spatial_shape)
    grid = tuple(size // block for size, block in zip(spatial_shape, block_size, strict=True))
    return block_size, grid


def _to_blocks(x: torch.Tensor, block_size: Sequence[int], grid: Sequence[int]) -> torch.Tensor:
    """(N, C, *spatial) -> (N, blocks, C, *block_size), blocks in C order over the grid."""
    n, c = x.shape[:2]
    spatial = len(block_size)
    covered = x[(slice(None), slice(None), *(slice(0, g * b) for g, b in zip(grid, block_size, strict=True)))]
    split = []
    for g, b in zip(grid, block_size, strict=True):
        split += [g, b]
    view = covered.reshape(n, c, *split)
    # dims: 0 n, 1 c, then (grid_i, block_i) pairs at 2 + 2i and 3 + 2i
    grid_dims = [2 + 2 * i for i in range(spatial)]
    block_dims = [3 + 2 * i for i in range(spatial)]
    return view.permute(0, *grid_dims, 1, *block_dims).reshape(n, -1, c, *block_size)


def _from_blocks(blocks: torch.Tensor, out: torch.Tensor, block_size: Sequence[int], grid: Sequence[int]) -> None:
    """Write (N, blocks, C, *block_size) back into the covered region of ``out`` (N, C, *spatial)."""
    n, _, c = blocks.shape[:3]
    spatial = len(block_size)
    view = blocks.reshape(n, *grid, c, *block_size)
    # from (n, g0, g1, g2, c, b0, b1, b2) to (n, c, g0, b0, g1, b1, g2, b2)
    order = [0, 1 + spatial]
    for i in range(spatial):
        order += [1 + i, 2 + spatial + i]
    restored = view.permute(*order).reshape(n, c, *(g * b for g, b in zip(grid, block_size, strict=True)))
    out[(slice(None), slice(None), *(slice(0, g * b) for g, b in zip(grid, block_size, strict=True)))] = restored


def block_means(uncertainty: torch.Tensor, blocks_per_side: int) -> torch.Tensor:
    """Mean of a (N, *spatial) map over each block of the grid: (N, blocks)."""
    block_size, grid = block_grid(uncertainty.shape[1:], blocks_per_side)
    blocks = _to_blocks(uncertainty.unsqueeze(1).float(), block_size, grid)
    return blocks.flatten(2).mean(dim=2)


def plan_umix(u1: torch.Tensor, u2: torch.Tensor, k: int = 2, blocks_per_side: int = 8) -> UmixPlan:
    """Rank blocks of ``u1`` and ``u2`` (N, *spatial) and return the moves (see the module docstring)."""
    if u1.shape != u2.shape:
        raise ValueError(f"uncertainty maps differ in shape: {tuple(u1.shape)} vs {tuple(u2.shape)}")
    block_size, grid = block_grid(u1.shape[1:], blocks_per_side)
    means_1 = block_means(u1, blocks_per_side)
    means_2 = block_means(u2, blocks_per_side)
    blocks = means_1.shape[1]
    k = max(0, min(int(k), blocks // 2))
    # Descending order: the first k are the most uncertain, the last k (reversed) the most certain.
    order_1 = torch.sort(means_1, dim=1, descending=True, stable=True).indices
    order_2 = torch.sort(means_2, dim=1, descending=True, stable=True).indices
    certain_1 = torch.flip(order_1, dims=[1])[:, :k]
    certain_2 = torch.flip(order_2, dims=[1])[:, :k]
    return UmixPlan(
        block_size=block_size,
        grid=grid,
        targets_1=order_1[:, :k],
        sources_1=certain_2,
        targets_2=order_2[:, :k],
        sources_2=certain_1,
    )


def apply_umix(x: torch.Tensor, plan: UmixPlan) -> torch.Tensor:
    """Apply ``plan`` to ``x`` (N, C, *spatial) or (N, *spatial); returns a new tensor, ``x`` unchanged."""
    squeeze = x.ndim == len(plan.block_size) + 1
    work = x.unsqueeze(1) if squeeze else x
    if work.ndim != len(plan.block_size) + 2:
        raise ValueError(f"tensor of shape {tuple(x.shape)} does not fit a {len(plan.block_size)}-D UMIX plan")
    out = work.clone()
    blocks = _to_blocks(work, plan.block_size, plan.grid).clone()
    rows = torch.arange(blocks.shape[0], device=blocks.device)[:, None]
    for targets, sources in ((plan.targets_1, plan.sources_1), (plan.targets_2, plan.sources_2)):
        targets, sources = targets.to(blocks.device), sources.to(blocks.device)
        # Advanced indexing copies the sources before the write, so a pass never reads its own output.
        blocks[rows, targets] = blocks[rows, sources]
    _from_blocks(blocks, out, plan.block_size, plan.grid)
    return out.squeeze(1) if squeeze else out


def umix(
    tensors: Sequence[torch.Tensor],
    u1: torch.Tensor,
    u2: torch.Tensor,
    k: int = 2,
    blocks_per_side: int = 8,
) -> list[torch.Tensor]:
    """UMIX every tensor in ``tensors`` with the same block moves planned from ``u1`` and ``u2``."""
    plan = plan_umix(u1.detach(), u2.detach(), k, blocks_per_side)
    return [apply_umix(tensor, plan) for tensor in tensors]
