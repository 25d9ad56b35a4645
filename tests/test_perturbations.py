"""The methods' own input perturbations: Mean Teacher's noise, UCMT's blurred and intensity-changed views."""

from __future__ import annotations

import pytest
import torch

from napari_ssl_seg.methods.perturbations import mean_teacher_noise, random_gaussian_blur, random_intensity


def test_mean_teacher_noise_is_clamped() -> None:
    x = torch.zeros(4, 1, 16, 32, 32)
    noise = mean_teacher_noise(x) - x
    assert float(noise.abs().max()) <= 0.2 + 1e-7
    assert float(noise.abs().max()) > 0.19  # 2-sigma values exist and are clipped
    assert 0.08 < float(noise.std()) < 0.1


def test_random_gaussian_blur_per_sample() -> None:
    x = torch.randn(6, 1, 8, 16, 16)
    assert torch.equal(random_gaussian_blur(x, prob=0.0), x)
    blurred = random_gaussian_blur(x, prob=1.0)
    assert blurred.shape == x.shape
    assert all(float(blurred[i].std()) < float(x[i].std()) for i in range(6))


def test_random_intensity_changes_each_drawn_sample_within_its_ranges() -> None:
    x = torch.rand(8, 1, 8, 16, 16) + 0.5
    assert random_intensity(x, 0.0) is x
    torch.manual_seed(3)
    changed = random_intensity(x, 1.0)
    assert changed.shape == x.shape and bool(torch.isfinite(changed).all())
    for index in range(8):
        # Brightness scales by 0.75-1.25; contrast and gamma keep that mean.
        ratio = float(changed[index].mean() / x[index].mean())
        assert 0.74 < ratio < 1.26
        assert not torch.equal(changed[index], x[index])
    torch.manual_seed(3)
    assert torch.equal(random_intensity(x, 1.0), changed)  # torch's generator: a seeded run repeats
    with pytest.raises(ValueError, match="probability"):
        random_intensity(x, 1.5)


def test_random_intensity_draws_each_change_per_sample() -> None:
    x = torch.rand(16, 1, 4, 8, 8) + 0.5
    torch.manual_seed(7)
    applied = torch.rand(3, 16) < 0.5  # brightness, contrast, gamma: the function's own draws, in order
    factors = 0.75 + 0.5 * torch.rand(2, 16)
    torch.manual_seed(7)
    changed = random_intensity(x, 0.5)
    untouched = [i for i in range(16) if not applied[:, i].any()]
    brightness_only = [i for i in range(16) if applied[:, i].tolist() == [True, False, False]]
    assert untouched and brightness_only
    for index in untouched:
        assert torch.equal(changed[index], x[index])
    for index in brightness_only:
        assert torch.allclose(changed[index], x[index] * factors[0, index])
    assert bool(torch.isfinite(random_intensity(torch.zeros(2, 1, 4, 4, 4), 1.0)).all())  # constant patches
