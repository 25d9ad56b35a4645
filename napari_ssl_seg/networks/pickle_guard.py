"""Refuse pickles by name and by content before anything reads them.

``torch.load`` of a ``.pt``/``.pth``/``.ckpt`` file runs whatever code the pickle holds, and users of this
plugin share model files: a checkpoint is only ever safetensors plus a JSON card (networks/checkpoint.py),
and anything that looks like a pickle or a ``torch.save`` zip is turned away with a one-line error.
"""

from __future__ import annotations

import struct
from pathlib import Path

from napari_ssl_seg.errors import InputError

__all__ = ["PICKLE_SUFFIXES", "check_not_pickle", "pickle_refusal"]

PICKLE_SUFFIXES = frozenset({".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".bin", ".tar"})


def pickle_refusal(path: Path) -> InputError:
    return InputError(
        f"{path} is a pickle checkpoint; napari-ssl-seg only loads safetensors weights with a JSON model card"
    )


def check_not_pickle(path: Path, *, expect_safetensors: bool) -> None:
    """Refuse pickle/zip content by its first bytes, without unpickling anything.

    A safetensors file starts with an 8-byte little-endian header length followed by ``{``; that
    is checked first, because a header length of 128 (mod 256) also starts with ``0x80``.
    """
    try:
        with open(path, "rb") as handle:
            head = handle.read(9)
            size = path.stat().st_size
    except FileNotFoundError:
        raise InputError(f"{path} does not exist") from None
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from None
    if expect_safetensors and len(head) == 9:
        (header_length,) = struct.unpack("<Q", head[:8])
        if 8 + header_length <= size and head[8:9] == b"{":
            return
    if head[:1] == b"\x80" or head[:4] == b"PK\x03\x04":
        raise pickle_refusal(path)
    if expect_safetensors:
        raise InputError(f"{path} is not a safetensors weights file")
