"""Image loading/saving: modes, bit depth, orientation, damaged files, no overwriting."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageOps

from restorer_core.errors import ImageReadError
from restorer_core.io.imageio import (
    ImageWriteError,
    from_float01,
    load_image,
    save_image,
    to_float01,
    to_rgb8,
)


def test_grayscale_png_stays_single_channel(tmp_path, make_image):
    gray = make_image(40, 50, channels=0)
    Image.fromarray(gray, mode="L").save(tmp_path / "g.png")
    img = load_image(tmp_path / "g.png")
    assert img.pixels.shape == (40, 50) and img.pixels.dtype == np.uint8
    assert np.array_equal(img.pixels, gray)
    assert img.bit_depth == 8 and img.channels == 1 and img.alpha is None
    rgb = img.rgb8
    assert rgb.shape == (40, 50, 3)
    assert np.array_equal(rgb[..., 0], gray) and np.array_equal(rgb[..., 2], gray)


def test_rgba_png_keeps_alpha(tmp_path, make_image):
    rgba = make_image(30, 20, channels=4)
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "a.png")
    img = load_image(tmp_path / "a.png")
    assert np.array_equal(img.pixels, rgba)
    assert np.array_equal(img.alpha, rgba[..., 3])
    assert np.array_equal(img.rgb8, rgba[..., :3])


@pytest.mark.parametrize("channels", [0, 3, 4])
def test_16bit_png_round_trip_keeps_every_bit(tmp_path, make_image, channels):
    pixels = make_image(33, 47, channels=channels, dtype=np.uint16)
    pixels.flat[::7] = 65535
    pixels.flat[1::11] = 1  # values that 8-bit storage would lose
    path = save_image(tmp_path / "deep.png", pixels)
    img = load_image(path)
    assert img.pixels.dtype == np.uint16 and img.bit_depth == 16
    assert np.array_equal(img.pixels, pixels)
    assert img.rgb8.dtype == np.uint8 and img.rgb8.shape == (33, 47, 3)


def test_palette_png_with_and_without_transparency(tmp_path):
    palette_img = Image.new("P", (8, 6))
    palette_img.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    data = np.zeros((6, 8), dtype=np.uint8)
    data[:, 4:] = 1
    palette_img.putdata(data.ravel().tolist())
    palette_img.save(tmp_path / "p.png")
    img = load_image(tmp_path / "p.png")
    assert img.mode == "P" and img.pixels.shape == (6, 8, 3)
    assert img.pixels[0, 0].tolist() == [10, 20, 30] and img.pixels[0, 7].tolist() == [200, 100, 50]

    palette_img.save(tmp_path / "pt.png", transparency=0)
    img_t = load_image(tmp_path / "pt.png")
    assert img_t.pixels.shape == (6, 8, 4)
    assert img_t.alpha[0, 0] == 0 and img_t.alpha[0, 7] == 255


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    Image.new("CMYK", (16, 12), (0, 255, 255, 0)).save(tmp_path / "c.jpg", quality=95)  # red ink
    img = load_image(tmp_path / "c.jpg")
    assert img.mode == "CMYK" and img.pixels.shape == (12, 16, 3)
    r, g, b = img.pixels[6, 8].astype(int)
    assert r > 200 and g < 60 and b < 60


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_pillow(tmp_path, orientation):
    rng = np.random.default_rng(orientation)
    base = np.kron(rng.integers(0, 256, (3, 5, 3)), np.ones((8, 8, 1))).astype(np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"o{orientation}.jpg"
    Image.fromarray(base).save(path, exif=exif, quality=100)
    with Image.open(path) as im:
        expected = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    img = load_image(path)
    assert img.pixels.shape == expected.shape
    assert np.array_equal(img.pixels, expected)
    upright_tall = orientation in (5, 6, 7, 8)
    assert img.pixels.shape[:2] == ((40, 24) if upright_tall else (24, 40))


def test_truncated_file_raises_clear_error(tmp_path, make_image):
    buf = io.BytesIO()
    Image.fromarray(make_image(64, 64)).save(buf, format="JPEG")
    (tmp_path / "cut.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(ImageReadError, match="truncated or corrupt"):
        load_image(tmp_path / "cut.jpg")
    buf = io.BytesIO()
    Image.fromarray(make_image(64, 64)).save(buf, format="PNG")
    (tmp_path / "cut.png").write_bytes(buf.getvalue()[:200])
    with pytest.raises(ImageReadError, match="truncated or corrupt"):
        load_image(tmp_path / "cut.png")


def test_truncation_is_caught_even_if_the_host_app_allows_it(tmp_path, make_image, monkeypatch):
    from PIL import ImageFile

    buf = io.BytesIO()
    Image.fromarray(make_image(64, 64)).save(buf, format="JPEG")
    (tmp_path / "cut.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(ImageReadError, match="truncated or corrupt"):
        load_image(tmp_path / "cut.jpg")
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # the host's setting is restored


def test_missing_and_unsupported_files(tmp_path):
    with pytest.raises(ImageReadError, match="not found"):
        load_image(tmp_path / "nope.png")
    with pytest.raises(ImageReadError, match="folder"):
        load_image(tmp_path)
    (tmp_path / "notes.png").write_text("this is not an image")
    with pytest.raises(ImageReadError, match="PNG, JPEG"):
        load_image(tmp_path / "notes.png")


def test_save_refuses_to_overwrite(tmp_path, make_image):
    first, second = make_image(10, 10, seed=1), make_image(10, 10, seed=2)
    path = save_image(tmp_path / "out.png", first)
    with pytest.raises(ImageWriteError, match="already exists"):
        save_image(path, second)
    assert np.array_equal(load_image(path).pixels, first)
    save_image(path, second, overwrite=True)
    assert np.array_equal(load_image(path).pixels, second)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]  # no temp files left


def test_save_rejects_what_it_cannot_store(tmp_path, make_image):
    with pytest.raises(ImageWriteError, match="transparency"):
        save_image(tmp_path / "x.jpg", make_image(8, 8, channels=4))
    with pytest.raises(ImageWriteError, match="cannot write"):
        save_image(tmp_path / "x.xyz", make_image(8, 8))
    with pytest.raises(ImageWriteError, match="does not exist"):
        save_image(tmp_path / "missing" / "x.png", make_image(8, 8))
    assert list(tmp_path.iterdir()) == []


def test_save_float_as_8_or_16_bit(tmp_path):
    ramp = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    save_image(tmp_path / "f8.png", ramp)
    save_image(tmp_path / "f16.png", ramp, bit_depth=16)
    assert load_image(tmp_path / "f8.png").pixels.dtype == np.uint8
    deep = load_image(tmp_path / "f16.png").pixels
    assert deep.dtype == np.uint16
    assert np.abs(deep / 65535.0 - ramp).max() < 1e-4


def test_float_conversions_are_lossless_for_integers():
    for dtype, peak in ((np.uint8, 255), (np.uint16, 65535)):
        values = np.arange(peak + 1, dtype=dtype)
        as_float = to_float01(values)
        assert as_float.dtype == np.float32 and as_float.max() == 1.0
        assert np.array_equal(from_float01(as_float, dtype), values)
    assert from_float01(np.array([-0.5, 1.5]), np.uint8).tolist() == [0, 255]


def test_to_rgb8_scales_16bit():
    deep = (np.arange(256, dtype=np.uint16) * 257).reshape(16, 16)
    assert np.array_equal(to_rgb8(deep)[..., 1], np.arange(256, dtype=np.uint8).reshape(16, 16))
