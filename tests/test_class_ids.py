"""The fast class argmax gives argmax's indices: ties, layouts and axes included."""

from __future__ import annotations

import torch

from napari_ssl_seg.runtime.class_ids import class_ids


def test_class_ids_equal_argmax_in_both_layouts_and_on_ties() -> None:
    generator = torch.Generator().manual_seed(0)
    scores = torch.randn(3, 5, 4, 6, 7, generator=generator)
    channels_last = scores.to(memory_format=torch.channels_last_3d)
    assert torch.equal(class_ids(scores), scores.argmax(dim=1))
    assert torch.equal(class_ids(channels_last), scores.argmax(dim=1))
    assert torch.equal(class_ids(scores[0], 0), scores[0].argmax(dim=0))
    # Rounded scores tie often: the first of the equal classes wins, as with argmax.
    tied = (scores * 2).round().clamp(-1, 1)
    assert bool((tied == tied.amax(dim=1, keepdim=True)).sum(dim=1).gt(1).any())
    assert torch.equal(class_ids(tied), tied.argmax(dim=1))
    assert torch.equal(class_ids(torch.zeros(2, 4, 3)), torch.zeros(2, 3, dtype=torch.long))
