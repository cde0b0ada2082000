"""Colour fixes: wavelet (low frequencies from the original) and mean/std transfer, numpy and torch."""

from __future__ import annotations

import numpy as np
import pytest

from restorer_core.restore.color import (
    apply_color_fix,
    meanstd_color_fix,
    wavelet_color_fix,
    wavelet_decompose,
)


def _scene(seed: int = 0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:128, 0:128].astype(np.float32) / 128.0
    original = np.stack([0.3 + 0.4 * xx, 0.5 - 0.2 * yy, 0.4 + 0.2 * xx * yy], axis=2)
    texture = rng.normal(0.0, 0.04, (128, 128, 1)).astype(np.float32)
    return original.astype(np.float32), texture


def test_wavelet_fix_takes_colour_from_original_and_detail_from_restored():
    original, texture = _scene()
    restored = np.clip(original * 0.7 + np.array([0.2, -0.1, 0.15], np.float32) + texture, 0, 1)
    fixed = wavelet_color_fix(restored, original)
    inner = (slice(16, -16), slice(16, -16))
    target = original + texture * 1.0
    # colour cast gone: the fix sits on the original's colours...
    assert np.abs((fixed - original)[inner].mean(axis=(0, 1))).max() < 0.01
    assert np.abs((restored - original)[inner].mean(axis=(0, 1))).max() > 0.05
    # ...and the fine texture of the restored image survives
    corr = np.corrcoef((fixed - original)[inner][..., 0].ravel(), texture[inner][..., 0].ravel())[0, 1]
    assert corr > 0.9
    assert np.abs(fixed - target)[inner].mean() < 0.02


def test_decomposition_is_exact_and_low_band_is_smooth():
    board = (np.indices((64, 64)).sum(axis=0) % 2).astype(np.float32)[..., None].repeat(3, 2)
    high, low = wavelet_decompose(board)
    assert np.allclose(high + low, board, atol=1e-5)
    assert np.abs(low - 0.5).max() < 0.02


def test_meanstd_fix_matches_channel_statistics():
    original, _ = _scene(1)
    rng = np.random.default_rng(2)
    restored = rng.uniform(0.2, 0.9, original.shape).astype(np.float32)
    fixed = meanstd_color_fix(restored, original, clip=False)
    assert np.allclose(fixed.mean(axis=(0, 1)), original.mean(axis=(0, 1)), atol=1e-4)
    assert np.allclose(fixed.std(axis=(0, 1)), original.std(axis=(0, 1)), atol=1e-3)


def test_torch_and_numpy_agree():
    torch = pytest.importorskip("torch")
    original, texture = _scene(3)
    restored = np.clip(original * 0.9 + texture + 0.05, 0, 1).astype(np.float32)
    as_t = lambda a: torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))[None]  # noqa: E731
    for fix in (wavelet_color_fix, meanstd_color_fix):
        ref = fix(restored, original)
        got = fix(as_t(restored), as_t(original))
        assert isinstance(got, torch.Tensor) and got.shape == (1, 3, 128, 128)
        assert np.abs(got[0].numpy().transpose(1, 2, 0) - ref).max() < 1e-4
        unbatched = fix(as_t(restored)[0], as_t(original)[0])
        assert torch.allclose(unbatched, got[0], atol=1e-6)


def test_dispatch_and_errors():
    original, texture = _scene(4)
    restored = np.clip(original + texture, 0, 1)
    assert apply_color_fix(restored, original, "none") is restored
    assert np.allclose(apply_color_fix(restored, original, "wavelet"), wavelet_color_fix(restored, original))
    with pytest.raises(ValueError, match="wavelet, meanstd, none"):
        apply_color_fix(restored, original, "histogram")
    with pytest.raises(ValueError, match="shape mismatch"):
        wavelet_color_fix(restored, original[:64])


def test_gpu_blur_form_equals_the_cpu_form_and_the_numpy_blur(monkeypatch):
    """The GPU's dilated convolution, run here on the CPU, equals the shifted sums and cv2 to
    float rounding at every level's radius, borders included; non-CPU tensors take it."""
    torch = pytest.importorskip("torch")
    from restorer_core.restore import color

    original, texture = _scene(5)
    image = np.clip(original + texture, 0, 1).astype(np.float32)
    x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None].repeat(2, 1, 1, 1)
    x[1] = x[1].flip(-1)
    for radius in (1, 2, 4, 8, 16):
        conv, shifted = color._binomial_blur_conv(x, radius), color._binomial_blur_shifted(x, radius)
        assert conv.shape == x.shape and torch.allclose(conv, shifted, atol=2e-6)
        ref = color.wavelet_blur(image, radius)
        assert np.abs(conv[0].numpy().transpose(1, 2, 0) - ref).max() < 2e-6
    assert not torch.allclose(color._binomial_blur_conv(x, 4), color._binomial_blur_conv(x, 2))
    used = []
    monkeypatch.setattr(color, "_binomial_blur_conv", lambda t, r: used.append(t.device.type) or t)
    color._binomial_blur_torch(torch.zeros((1, 3, 8, 8), device="meta"), 2)
    color._binomial_blur_torch(torch.zeros((1, 3, 8, 8)), 2)
    assert used == ["meta"]
