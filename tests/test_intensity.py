"""Intensity normalisation: slab-wise results equal MONAI's whole-volume transforms."""

from __future__ import annotations

import numpy as np
import pytest
from monai.transforms import NormalizeIntensity, ScaleIntensityRange

from napari_ssl_seg.errors import InputError
from napari_ssl_seg.intensity import choose_intensity, normalise_intensity


def test_slab_wise_zscore_and_ct_window_equal_monai_on_the_whole_volume() -> None:
    rng = np.random.default_rng(0)
    mri = (rng.normal(size=(37, 20, 9)) * 80 + 400).astype(np.float32)
    expected = np.asarray(NormalizeIntensity(nonzero=False, dtype=np.float32)(mri))
    assert np.allclose(normalise_intensity(mri, {"kind": "zscore"}, slab=5), expected, atol=1e-5)
    ct = rng.uniform(-1500, 2500, size=(23, 8, 8)).astype(np.float32)
    window = ScaleIntensityRange(a_min=-1000, a_max=1000, b_min=0, b_max=1, clip=True)
    expected_ct = np.asarray(window(ct))
    got = normalise_intensity(ct, {"kind": "ct_window", "window": [-1000, 1000]}, slab=4)
    assert np.allclose(got, expected_ct, atol=1e-6) and got.min() == 0 and got.max() == 1
    half = normalise_intensity(ct, {"kind": "ct_window", "window": [-1000, 1000]}, dtype=np.float16)
    assert half.dtype == np.float16 and np.allclose(half, expected_ct, atol=1e-3)
    assert np.all(normalise_intensity(np.full((3, 4, 5), 7.0), {"kind": "zscore"}) == 0)  # constant image


def test_choice_and_validation() -> None:
    assert choose_intensity("CT", np.zeros((2, 2, 2)))["kind"] == "ct_window"
    assert choose_intensity(None, np.full((2, 2, 2), -1000.0))["kind"] == "ct_window"
    assert choose_intensity("MR", np.ones((2, 2, 2)))["kind"] == "zscore"
    with pytest.raises(InputError):
        normalise_intensity(np.ones((2, 2, 2)), {"kind": "gamma"})
    with pytest.raises(InputError):
        normalise_intensity(np.ones((2, 2, 2)), {"kind": "ct_window", "window": [5, 1]})
