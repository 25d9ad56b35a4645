"""UG-CEMT's cross-attention (CA) between student and teacher features.

Paper 000 (UG-CEMT) never published code; this is the project's interpretation, recorded here:

* **Level: the V-Net bottleneck.** The paper does not say which feature level carries CA. At the
  bottleneck a 112x112x80 patch gives 7x7x5 = 245 tokens (one token per voxel, flattened), so
  full attention is cheap; finer levels would need windowed or pooled attention. The block sits
  between :meth:`VNet.encode` and :meth:`VNet.decode` (see :func:`cross_attended_logits`).
* **Projections:** separate 1x1x1 Q, K, V convolutions on each side. Q and K map to ``key_channels``
  (default ``max(channels // 8, 1)``), V keeps ``channels`` so the output adds to the input.
  ``O_s->t = softmax(Q_s K_t^T / sqrt(d_k)) V_t`` and ``O_t->s = softmax(Q_t K_s^T / sqrt(d_k)) V_s``.
* **Residual with one learnable gamma initialised to 0:** ``X_s' = gamma O_s->t + X_s`` and
  ``X_t' = gamma O_t->s + X_t``. At initialisation the block is the identity, so training starts
  from the plain mean teacher.
* **No gradients on the teacher side:** the teacher's input features are detached (the teacher is
  an EMA of the student and never receives gradients), and the teacher's output ``X_t'`` is
  detached too, so the consistency target stays a target. The CA parameters learn through the
  student side only (``K_t``, ``V_t`` projections included, through ``O_s->t``).
* **Inference: the teacher runs alone with CA disabled** (plain ``teacher(x)``). At inference no
  student exists; feeding the teacher its own features would be self-attention the block was never
  trained for, while with CA disabled the teacher is exactly the network whose EMA weights were
  validated. The CA weights are therefore training state only and are not needed in a
  deployment checkpoint.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from napari_ssl_seg.networks.vnet import VNet

__all__ = ["CrossAttention3d", "cross_attended_logits"]


class CrossAttention3d(nn.Module):
    """Symmetric student/teacher cross-attention over the voxels of a 3D feature map.

    Args:
        channels: feature channels on both sides (the V-Net's ``bottleneck_channels``).
        key_channels: d_k of the Q/K projections; default ``max(channels // 8, 1)``.
        max_tokens: refuse larger feature maps, since the attention matrix grows as tokens**2
            (a guard against running full attention at a fine level by mistake).
    """

    def __init__(self, channels: int, key_channels: int | None = None, *, max_tokens: int = 8192) -> None:
        super().__init__()
        if channels < 1:
            raise ValueError(f"channels must be positive, got {channels}")
        self.channels = channels
        self.key_channels = key_channels if key_channels is not None else max(channels // 8, 1)
        if self.key_channels < 1:
            raise ValueError(f"key_channels must be positive, got {self.key_channels}")
        self.max_tokens = max_tokens
        d_k = self.key_channels
        self.query_s = nn.Conv3d(channels, d_k, kernel_size=1)
        self.key_s = nn.Conv3d(channels, d_k, kernel_size=1)
        self.value_s = nn.Conv3d(channels, channels, kernel_size=1)
        self.query_t = nn.Conv3d(channels, d_k, kernel_size=1)
        self.key_t = nn.Conv3d(channels, d_k, kernel_size=1)
        self.value_t = nn.Conv3d(channels, channels, kernel_size=1)
        self.gamma = nn.Parameter(torch.zeros(1))

    @staticmethod
    def _tokens(x: torch.Tensor) -> torch.Tensor:
        # (N, C, z, y, x) -> (N, tokens, C)
        return x.flatten(2).transpose(1, 2)

    def _attend(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, shape: torch.Size) -> torch.Tensor:
        q, k, v = self._tokens(query), self._tokens(key), self._tokens(value)
        weights = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(self.key_channels), dim=-1)
        return (weights @ v).transpose(1, 2).reshape(shape)

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(X_s', X_t')``; ``X_t'`` carries no gradient and none reaches ``teacher``."""
        if student.shape != teacher.shape or student.ndim != 5:
            raise ValueError(
                f"cross-attention needs equal 5-D student/teacher features, got {tuple(student.shape)} "
                f"and {tuple(teacher.shape)}"
            )
        if student.shape[1] != self.channels:
            raise ValueError(f"cross-attention built for {self.channels} channels, got {student.shape[1]}")
        tokens = math.prod(student.shape[2:])
        if tokens > self.max_tokens:
            raise ValueError(
                f"cross-attention over {tokens} tokens exceeds max_tokens={self.max_tokens}; "
                "use it at the bottleneck or a smaller patch"
            )
        teacher = teacher.detach()
        shape = student.shape
        out_s = self._attend(self.query_s(student), self.key_t(teacher), self.value_t(teacher), shape)
        out_t = self._attend(self.query_t(teacher), self.key_s(student), self.value_s(student), shape)
        student_new = self.gamma * out_s + student
        teacher_new = (self.gamma * out_t + teacher).detach()
        return student_new, teacher_new


def cross_attended_logits(
    student: VNet,
    teacher: VNet,
    block: CrossAttention3d,
    x_student: torch.Tensor,
    x_teacher: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Training-time forward of UG-CEMT: both encoders, CA at the bottleneck, both decoders.

    The teacher's encoder and decoder run without autograd (it is an EMA target); the student's
    logits carry gradients to the student and the CA block. At inference call ``teacher(x)``.
    """
    features_s = student.encode(x_student)
    with torch.no_grad():
        features_t = teacher.encode(x_teacher)
    bottleneck_s, bottleneck_t = block(features_s.bottleneck, features_t.bottleneck)
    logits_s = student.decode(features_s.with_bottleneck(bottleneck_s))
    with torch.no_grad():
        logits_t = teacher.decode(features_t.with_bottleneck(bottleneck_t))
    return logits_s, logits_t
