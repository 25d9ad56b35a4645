"""Networks: the papers' V-Net, UG-CEMT's cross-attention, safetensors checkpoints with model cards.

Core code: no Qt or napari imports here.
"""

from napari_ssl_seg.networks.checkpoint import (
    FORMAT_VERSION,
    KNOWN_METHODS,
    MAIN_NETWORK,
    NETWORK_BUILDERS,
    ModelCard,
    build_network,
    checkpoint_paths,
    load_checkpoint,
    save_checkpoint,
)
from napari_ssl_seg.networks.cross_attention import CrossAttention3d, cross_attended_logits
from napari_ssl_seg.networks.vnet import VNet, VNetFeatures, stage_conv_counts

__all__ = [
    "FORMAT_VERSION",
    "KNOWN_METHODS",
    "MAIN_NETWORK",
    "NETWORK_BUILDERS",
    "CrossAttention3d",
    "ModelCard",
    "VNet",
    "VNetFeatures",
    "build_network",
    "checkpoint_paths",
    "cross_attended_logits",
    "load_checkpoint",
    "save_checkpoint",
    "stage_conv_counts",
]
