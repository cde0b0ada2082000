"""Degradation pipeline: determinism, dtype/size contract, and that each step does what it says."""

from __future__ import annotations

import math

import numpy as np
import pytest

from restorer_core.train.degrade import (
    DegradationConfig,
    degrade,
    degrade_fixed,
    degrade_with_info,
    gaussian_kernel,
    motion_kernel,
)


def _face_like(size: int = 64, seed: int = 0) -> np.ndarray:
    """Smooth gradients plus fine texture, uint8 RGB."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    base = np.stack([xx, yy, 0.5 * (xx + yy)], -1)
    texture = rng.random((size, size, 3)) * 0.4
    return np.round(np.clip(0.3 * base + texture + 0.2, 0, 1) * 255).astype(np.uint8)


def test_same_seed_same_output_and_seeds_differ():
    img = _face_like()
    a = degrade(img, np.random.default_rng(123))
    b = degrade(img, np.random.default_rng(123))
    assert np.array_equal(a, b)
    outs = [degrade(img, np.random.default_rng(s)) for s in range(5)]
    assert any(not np.array_equal(outs[0], o) for o in outs[1:])


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_keeps_size_and_dtype(dtype):
    img = _face_like(48)
    if dtype == np.float32:
        img = img.astype(np.float32) / 255.0
    for seed in range(6):
        out = degrade(img, np.random.default_rng(seed))
        assert out.shape == img.shape and out.dtype == img.dtype
        if dtype == np.float32:
            assert out.min() >= 0.0 and out.max() <= 1.0


def test_rejects_non_rgb():
    with pytest.raises(ValueError):
        degrade(np.zeros((16, 16), np.uint8), np.random.default_rng(0))


def test_downsampling_removes_fine_detail():
    # a 1-pixel checkerboard averages to flat grey under x4 area downsampling
    checker = ((np.indices((64, 64)).sum(0) % 2) * 255).astype(np.uint8)
    img = np.repeat(checker[..., None], 3, axis=2)
    only_down = DegradationConfig(blur_prob=0, gaussian_noise_prob=0, poisson_noise_prob=0, jpeg_prob=0,
                                  scale=(4.0, 4.0), down_interpolations=("area",), shuffle_prob=0)
    out, info = degrade_with_info(img, np.random.default_rng(0), only_down)
    assert info["order"] == ("down",)
    assert img.std() > 100 and out.std() < 5


def test_noise_and_jpeg_steps_change_a_flat_image():
    flat = np.full((32, 32, 3), 128, np.uint8)
    noise_only = DegradationConfig(blur_prob=0, downsample_prob=0, gaussian_noise_prob=1, gaussian_sigma=(10, 10),
                                   poisson_noise_prob=0, jpeg_prob=0, shuffle_prob=0)
    out, info = degrade_with_info(flat, np.random.default_rng(0), noise_only)
    assert "gaussian_noise" in info and 5 < out.astype(float).std() < 15
    nothing = DegradationConfig(blur_prob=0, downsample_prob=0, gaussian_noise_prob=0, poisson_noise_prob=0, jpeg_prob=0)
    assert np.array_equal(degrade(flat, np.random.default_rng(0), nothing), flat)


def test_order_is_canonical_unless_shuffled():
    img = _face_like(32)
    all_on = dict(blur_prob=1, downsample_prob=1, gaussian_noise_prob=1, jpeg_prob=1)
    canon = DegradationConfig(shuffle_prob=0.0, **all_on)
    orders = {degrade_with_info(img, np.random.default_rng(s), canon)[1]["order"] for s in range(10)}
    assert orders == {("blur", "down", "noise", "jpeg")}
    shuffled = DegradationConfig(shuffle_prob=1.0, **all_on)
    orders = {degrade_with_info(img, np.random.default_rng(s), shuffled)[1]["order"] for s in range(20)}
    assert len(orders) > 3


def test_degrade_fixed_is_deterministic_and_stronger_at_x8():
    imgs = [_face_like(128, s) for s in range(3)]
    for img in imgs:
        assert np.array_equal(degrade_fixed(img, 4, 7), degrade_fixed(img, 4, 7))
    assert not np.array_equal(degrade_fixed(imgs[0], 4, 1), degrade_fixed(imgs[0], 4, 2))
    err4 = np.mean([np.mean((degrade_fixed(i, 4, 0).astype(float) - i) ** 2) for i in imgs])
    err8 = np.mean([np.mean((degrade_fixed(i, 8, 0).astype(float) - i) ** 2) for i in imgs])
    assert err8 > err4 > 0


def test_kernels_are_normalised_and_shaped():
    iso = gaussian_kernel(2.0, 2.0, 0.0)
    assert math.isclose(float(iso.sum()), 1.0, rel_tol=1e-5)
    assert np.allclose(iso, iso.T, atol=1e-7)
    aniso = gaussian_kernel(3.0, 0.5, 0.0)  # wide along x
    c = aniso.shape[0] // 2
    assert aniso[c, :].sum() > 3 * aniso[:, c].sum()
    rotated = gaussian_kernel(3.0, 0.5, math.pi / 2)  # now wide along y
    assert rotated[:, c].sum() > 3 * rotated[c, :].sum()
    line = motion_kernel(7.0, 0.0)  # horizontal streak
    c = line.shape[0] // 2
    assert math.isclose(float(line.sum()), 1.0, rel_tol=1e-5)
    assert line[c, :].sum() > 0.5 and line[:, c].sum() < 0.5


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_degrade_fixed_small_image_is_the_one_that_gets_upscaled(dtype):
    import cv2

    img = _face_like(128, 5)
    if dtype == np.float32:
        img = img.astype(np.float32) / 255.0
    for scale, seed in ((4, 3), (8, 11)):
        full = degrade_fixed(img, scale, seed)
        small = degrade_fixed(img, scale, seed, upscale=False)
        assert small.shape == (128 // scale, 128 // scale, 3) and small.dtype == img.dtype
        as_float = small.astype(np.float32) / 255.0 if dtype == np.uint8 else small
        up = np.clip(cv2.resize(as_float, (128, 128), interpolation=cv2.INTER_CUBIC), 0.0, 1.0)
        if dtype == np.uint8:
            up = np.round(up * 255.0).astype(np.uint8)
        assert np.array_equal(up, full)
