"""JPEG writing through OpenCV: the same tables, subsampling and segments Pillow would write."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from PIL import Image, ImageCms, JpegImagePlugin

from restorer_core.io import imageio
from restorer_core.io.imageio import ImageMetadata, load_image, read_output_marker, save_image
from restorer_core.io.jpeg_opencv import encode_jpeg, standard_quality, standard_tables


def _photo(h: int = 96, w: int = 128) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    rng = np.random.default_rng(0)
    smooth = np.stack([x * 255 / w, y * 255 / h, (x + y) * 127 / (w + h)], -1)
    return np.clip(smooth + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)


def _tables(data: bytes) -> list:
    with Image.open(io.BytesIO(data)) as im:
        return [list(im.quantization[k]) for k in sorted(im.quantization)]


@pytest.mark.parametrize("quality", [10, 30, 50, 72, 95, 100])
def test_tables_of_pillow_and_opencv_files_are_recognised(quality):
    buf = io.BytesIO()
    Image.fromarray(_photo()).save(buf, format="JPEG", quality=quality)
    assert standard_quality(_tables(buf.getvalue())) == quality
    ok, enc = cv2.imencode(".jpg", _photo(), [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok and standard_quality(_tables(enc.tobytes())) == quality
    assert standard_tables(quality) == _tables(buf.getvalue())


def test_other_tables_are_not_taken_for_a_quality():
    custom = standard_tables(80)
    custom[0][5] += 1
    assert standard_quality(custom) is None
    assert standard_quality([custom[0][:63]]) is None
    assert standard_quality(None) == 95  # no tables to keep: the pack's quality for new JPEGs
    assert encode_jpeg(_photo(), custom) is None
    assert encode_jpeg(_photo(), standard_tables(80)[:1]) is None  # one (grey) table for a colour image
    assert encode_jpeg(_photo().astype(np.uint16), None) is None


@pytest.mark.parametrize("subsampling", [0, 1, 2])
def test_encoded_file_has_the_tables_sampling_and_pixels_pillow_writes(subsampling):
    pixels = _photo()
    tables = standard_tables(72)
    data = encode_jpeg(pixels, tables, subsampling)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", qtables=tables, subsampling=subsampling)
    with Image.open(io.BytesIO(data)) as ours, Image.open(buf) as pillows:
        assert _tables(data) == tables
        assert JpegImagePlugin.get_sampling(ours) == JpegImagePlugin.get_sampling(pillows) == subsampling
        diff = np.abs(np.asarray(ours, np.int16) - np.asarray(pillows, np.int16))
    assert diff.mean() < 0.5 and diff.max() <= 8  # the same libjpeg maths, up to its DCT variant


def test_grey_pixels_with_one_table():
    grey = _photo()[..., 0]
    data = encode_jpeg(grey, standard_tables(60)[:1])
    with Image.open(io.BytesIO(data)) as im:
        assert im.mode == "L" and len(im.quantization) == 1 and standard_quality(_tables(data)) == 60


def test_save_image_keeps_icc_exif_marker_and_quality_through_opencv(tmp_path, monkeypatch):
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes() * 120  # bytes only: > one APP2 segment
    assert len(icc) > 65533
    exif = Image.Exif()
    exif[0x010F] = "TestCam"
    exif[0x0112] = 1
    src = tmp_path / "cam.jpg"
    Image.fromarray(_photo()).save(src, quality=72, subsampling=0, icc_profile=icc, exif=exif.tobytes())
    loaded = load_image(src)
    pillow_calls = []
    real_save = Image.Image.save
    monkeypatch.setattr(Image.Image, "save", lambda self, *a, **k: pillow_calls.append(k) or real_save(self, *a, **k))
    out = save_image(tmp_path / "cam_restored.jpg", loaded.pixels, metadata=loaded.metadata,
                     marker={"input": "cam.jpg"})
    assert pillow_calls == []  # standard tables: OpenCV wrote it
    with Image.open(out) as res, Image.open(src) as orig:
        assert res.quantization == orig.quantization and JpegImagePlugin.get_sampling(res) == 0
        assert res.info.get("icc_profile") == icc
        assert res.getexif()[0x010F] == "TestCam"
    assert read_output_marker(out) == {"input": "cam.jpg"}
    again = load_image(out)
    assert again.metadata.exif == loaded.metadata.exif and again.metadata.icc_profile == icc


def test_non_standard_tables_still_go_through_pillow(tmp_path):
    custom = standard_tables(85)
    custom[1][0] = 3
    pixels = _photo()
    meta = ImageMetadata(format="JPEG", jpeg_qtables=custom, jpeg_subsampling=2)
    out = save_image(tmp_path / "x.jpg", pixels, metadata=meta, marker={"k": 1})
    assert _tables(out.read_bytes()) == custom and read_output_marker(out) == {"k": 1}


def test_new_jpeg_without_tables_is_quality_95_either_way(tmp_path, monkeypatch):
    pixels = _photo()
    ours = save_image(tmp_path / "a.jpg", pixels)
    monkeypatch.setattr(imageio, "encode_jpeg", lambda *a, **k: None)  # Pillow's path
    pillows = save_image(tmp_path / "b.jpg", pixels)
    assert _tables(ours.read_bytes()) == _tables(pillows.read_bytes()) == standard_tables(95)
    a, b = (np.asarray(Image.open(p), np.int16) for p in (ours, pillows))
    assert np.abs(a - b).mean() < 0.5


@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_jpeg_decode_through_opencv_equals_pillows_pixels(tmp_path, mode, monkeypatch):
    pixels = _photo(90, 70) if mode == "RGB" else _photo(90, 70)[..., 1]
    path = tmp_path / "in.jpg"
    Image.fromarray(pixels).save(path, quality=80, subsampling=2)
    with Image.open(path) as im:
        pillows = np.asarray(im)
    loaded = load_image(path)
    assert loaded.pixels.dtype == np.uint8 and np.array_equal(loaded.pixels, pillows)
    calls = []
    real = imageio._pil_to_array
    monkeypatch.setattr(imageio, "_pil_to_array", lambda *a: calls.append(1) or real(*a))
    load_image(path)
    assert calls == []  # OpenCV decoded it


def test_jpeg_without_its_end_marker_is_left_to_pillow(tmp_path):
    from restorer_core.errors import ImageReadError

    buf = io.BytesIO()
    Image.fromarray(_photo()).save(buf, format="JPEG")
    (tmp_path / "cut.jpg").write_bytes(buf.getvalue()[:-40])
    with pytest.raises(ImageReadError, match="truncated or corrupt"):
        load_image(tmp_path / "cut.jpg")


def test_every_quality_is_found_again_and_the_lookup_cannot_be_corrupted():
    for q in range(1, 101):
        tables = standard_tables(q)
        found = standard_quality(tables)
        assert standard_tables(found) == tables and found >= q  # the highest quality with these tables
        assert standard_quality(tables[:1]) >= q
        tables[0][0] += 1  # a caller editing its copy changes nothing cached
        assert standard_quality(standard_tables(q)) == found
    assert standard_quality([[16] * 63]) is None and standard_quality([["x"] * 64]) is None
