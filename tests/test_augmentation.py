"""Augmentation keeps what anatomy depends on: left stays left when classes are one side of a pair."""

from __future__ import annotations

import numpy as np
import torch

from napari_ssl_seg.training.data import build_augmentation, has_lateral_classes


def test_classes_naming_a_side_are_detected() -> None:
    assert has_lateral_classes({5: "right lung", 6: "left lung"})
    assert has_lateral_classes({1: "Kidney_Left"})
    assert has_lateral_classes({1: "left atrium"})  # conservative: any side word keeps sides apart
    assert not has_lateral_classes({1: "ribs", 2: "thoracic vertebral column", 7: "tissue"})


def _x_increases(sample: dict) -> bool:
    image = torch.as_tensor(sample["image"])[0]
    # Along x (last axis) values were the x index: increasing unless mirrored or rotated.
    return bool((image[..., 1:] > image[..., :-1]).all())


def test_without_lateral_augmentation_left_stays_left_and_labels_follow() -> None:
    x = np.broadcast_to(np.arange(16, dtype=np.float32), (4, 16, 16)).copy()
    data = {"image": torch.from_numpy(x)[None], "label": torch.from_numpy((x > 7).astype(np.uint8))[None]}
    kept = build_augmentation((4, 8, 8), lateral=False)
    mirrored = build_augmentation((4, 8, 8), lateral=True)
    kept_results, mirrored_results = [], []
    for seed in range(40):
        kept.set_random_state(seed=seed)
        mirrored.set_random_state(seed=seed)
        out = kept(dict(data))
        kept_results.append(_x_increases(out))
        # The label moves with the image in every case.
        label, image = torch.as_tensor(out["label"])[0], torch.as_tensor(out["image"])[0]
        assert torch.equal(label.bool(), image > 7)
        mirrored_results.append(_x_increases(mirrored(dict(data))))
    assert all(kept_results)
    assert not all(mirrored_results)
