"""Augmentation keeps what anatomy depends on: left stays left when classes are one side of a pair."""

from __future__ import annotations

import numpy as np
import torch

from napari_ssl_seg.training.sampler import build_augmentation, has_lateral_classes


def test_classes_naming_a_side_are_detected() -> None:
    assert has_lateral_classes({5: "right lung", 6: "left lung"})
    assert has_lateral_classes({1: "Kidney_Left"})
    assert has_lateral_classes({1: "left atrium"})  # conservative: any side word keeps sides apart
    assert not has_lateral_classes({1: "ribs", 2: "thoracic vertebral column", 7: "tissue"})
    assert not has_lateral_classes({0: "background", 1: "ribs"})


def test_classes_without_names_keep_their_sides() -> None:
    # What a label map read from NIfTI gives the loop: the class may well be one side of a pair.
    assert has_lateral_classes({0: "background", 1: "class 1", 2: "class 2"})
    assert has_lateral_classes({0: "background", 1: "ribs", 2: "class 2"})


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


def _sampler_with_small_structure(fraction: float):
    from napari_ssl_seg.training.data import CaseData
    from napari_ssl_seg.training.sampler import TwoStreamSampler

    image = np.zeros((8, 64, 64), dtype=np.float32)
    label = np.zeros((8, 64, 64), dtype=np.uint8)
    label[3:5, 50:54, 50:54] = 1  # 32 of 32768 voxels: a random 4x16x16 crop rarely reaches it
    label[:, :8, :8] = 2
    case = CaseData(name="c", image=image, label=label, spacing=(1.0, 1.0, 1.0))
    return TwoStreamSampler(
        [case],
        [],
        patch_size=(4, 16, 16),
        batch_labeled=2,
        batch_unlabeled=0,
        seed=0,
        lateral=False,
        foreground_fraction=fraction,
        num_classes=3,
    )


def _share_with_class(sampler, value: int, iterations: int = 60) -> float:
    hits = [bool((target == value).any()) for i in range(iterations) for target in sampler.batch(i)[1]]
    return sum(hits) / len(hits)


def test_foreground_oversampling_centres_patches_on_rare_classes() -> None:
    plain = _share_with_class(_sampler_with_small_structure(0.0), 1)
    always = _share_with_class(_sampler_with_small_structure(1.0), 1)
    # Uniform over the present foreground classes: about half the forced patches hold the small one.
    assert always > 0.35
    assert plain < 0.2
    assert always > plain + 0.2


def test_foreground_oversampling_off_draws_the_same_patches_as_before() -> None:
    first = _sampler_with_small_structure(0.0).batch(5)
    again = _sampler_with_small_structure(0.0).batch(5)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])


def test_foreground_oversampling_needs_a_class_count() -> None:
    import pytest

    from napari_ssl_seg.errors import InputError
    from napari_ssl_seg.training.data import CaseData
    from napari_ssl_seg.training.sampler import TwoStreamSampler

    case = CaseData(
        name="c",
        image=np.zeros((4, 16, 16), np.float32),
        label=np.zeros((4, 16, 16), np.uint8),
        spacing=(1.0, 1.0, 1.0),
    )
    with pytest.raises(InputError, match="class count"):
        TwoStreamSampler(
            [case], [], patch_size=(4, 16, 16), batch_labeled=1, batch_unlabeled=0, seed=0, foreground_fraction=0.5
        )


def test_intensity_changes_touch_the_image_only_and_leave_the_crops_a_seed_draws() -> None:
    rng = np.random.default_rng(0)
    image = rng.random((6, 20, 20), dtype=np.float32)
    label = (np.arange(6 * 20 * 20) % 251).reshape(6, 20, 20).astype(np.int64)  # each voxel says where it came from
    data = {"image": torch.from_numpy(image)[None], "label": torch.from_numpy(label)[None]}
    plain = build_augmentation((4, 8, 8), lateral=False)
    changed = build_augmentation((4, 8, 8), lateral=False, intensity=True)
    altered = 0
    for seed in range(40):
        plain.set_random_state(seed=seed)
        changed.set_random_state(seed=seed)
        before, after = plain(dict(data)), changed(dict(data))
        assert torch.equal(torch.as_tensor(before["label"]), torch.as_tensor(after["label"]))
        old, new = torch.as_tensor(before["image"]), torch.as_tensor(after["image"])
        altered += not torch.allclose(old, new)
        # Brightness, contrast and gamma are monotonic: no voxel overtakes a brighter one (ties where clipped).
        in_old_order = new.flatten()[old.flatten().argsort()]
        assert bool((in_old_order[1:] >= in_old_order[:-1] - 1e-5).all())
    # p 0.15, 0.15 and 0.3: about half the patches change; none of them is a geometric change.
    assert 8 <= altered <= 32
