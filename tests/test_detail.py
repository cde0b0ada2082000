"""Do no harm: the detail estimate, the automatic strength and the manual override."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from tiny_models import tiny_config
from restorer_core.detail import (
    AUTO,
    DetailConfig,
    check_strength,
    detail_measure,
    estimate_detail,
    native_size,
)
from restorer_core.pipeline import FaceRestorePipeline, RestoreOptions
from restorer_core.train.degrade import degrade_fixed


@pytest.fixture(scope="module")
def pipeline():
    from restorer_core.models.restorer import OneStepRestorer

    torch.manual_seed(0)
    model = OneStepRestorer(tiny_config(noisy=True)).eval()
    model.config.resolution = 128  # the shipped model's native resolution, which sets the analysis scale
    return FaceRestorePipeline(model, speed="eager")


@pytest.fixture(scope="module")
def clean_photo(real_lq_dir: Path) -> np.ndarray:
    """A clean, sharp LFW photo (250 px, face ~140 px)."""
    from restorer_core.imageio import load_image

    return load_image(real_lq_dir / "lfw_references" / "Michael_Chang" / "Michael_Chang_0005.jpg").rgb8


def _lab(rgb8: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb8.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)


def _delta_e(a: np.ndarray, b: np.ndarray) -> float:
    """Mean CIE76 colour difference of two RGB8 images."""
    return float(np.linalg.norm(_lab(a) - _lab(b), axis=-1).mean())


# ----------------------------------------------------------------------------- the measure


def _texture(size: int = 128, seed: int = 0) -> np.ndarray:
    """A sharp synthetic 'face': random edges (rectangles) on grey, float RGB."""
    rng = np.random.default_rng(seed)
    img = np.full((size, size, 3), 0.5, np.float32)
    for _ in range(60):
        x, y = rng.integers(0, size - 8, 2)
        w, h = rng.integers(3, 20, 2)
        img[y:y + h, x:x + w] = rng.uniform(0.1, 0.9)
    return img


def test_blur_lowers_detail_and_contrast_does_not_change_it():
    sharp = _texture()
    blurred = cv2.GaussianBlur(sharp, (0, 0), 2.0)
    d_sharp, d_blur = detail_measure(sharp, 128), detail_measure(blurred, 128)
    assert d_blur < 0.5 * d_sharp
    dim = 0.25 + 0.3 * sharp  # lower contrast, other brightness
    assert detail_measure(dim, 128) == pytest.approx(d_sharp, rel=1e-3)


def test_noise_on_a_blurred_face_is_not_counted_as_detail():
    rng = np.random.default_rng(1)
    sharp = _texture()
    blurred = cv2.GaussianBlur(sharp, (0, 0), 2.0)
    grain = rng.normal(0, 0.03, (128, 128, 1)).astype(np.float32)
    noisy = np.clip(blurred + grain, 0, 1)
    d_sharp, d_blur, d_noisy = (detail_measure(x, 128) for x in (sharp, blurred, noisy))
    assert d_noisy < 0.5 * d_sharp and d_noisy < d_blur + 0.1
    raw = DetailConfig(discount_noise=False)
    assert detail_measure(noisy, 128, raw) > 2.0 * detail_measure(blurred, 128, raw)  # what the discount removes


def test_native_size_and_small_faces_get_full_strength():
    crop = _texture(512)
    zoom = np.array([[4.0, 0.0, 0.0], [0.0, 4.0, 0.0]])  # 128 image px -> 512 crop px
    assert native_size(512, zoom) == pytest.approx(128.0)
    big = estimate_detail(crop, zoom, resolution=128)
    assert big.size_term == 0.0 and big.analysis_px == 128
    small = estimate_detail(crop, zoom * 8.0, resolution=128)  # the same crop from a 16 px face
    assert small.native_px == pytest.approx(16.0) and small.size_term == 1.0 and small.strength == 1.0


def test_strength_setting_is_checked():
    assert check_strength("auto") == AUTO and check_strength(" Auto ") == AUTO
    assert check_strength("0.25") == 0.25 and check_strength(1) == 1.0
    for bad in ("sharp", 1.5, -0.1, "2"):
        with pytest.raises(ValueError, match="auto"):
            check_strength(bad)
    with pytest.raises(ValueError, match="auto"):
        RestoreOptions(strength="full")
    assert RestoreOptions().strength == AUTO


# ----------------------------------------------------------------------------- through the pipeline


def test_clean_sharp_face_comes_out_as_it_went_in(pipeline, clean_photo):
    out, _, report = pipeline.restore_image(clean_photo)
    faces = report["faces"]
    assert faces and all(f["status"] == "restored" for f in faces)
    assert max(f["strength"] for f in faces) <= 0.05
    diff = np.abs(out.astype(int) - clean_photo.astype(int))
    assert diff.max() <= 2 and diff.mean() < 0.05
    assert _delta_e(out, clean_photo) < 0.1
    # the manual override restores the same face fully, which does change it
    full, _, report_full = pipeline.restore_image(clean_photo, options=RestoreOptions(strength=1.0))
    assert [f["strength"] for f in report_full["faces"]] == [1.0] * len(faces)
    assert np.abs(full.astype(int) - clean_photo.astype(int)).mean() > 10 * diff.mean() + 0.1


def test_degraded_face_gets_full_strength(pipeline, clean_photo):
    lq = degrade_fixed(clean_photo, 8, seed=3)
    faces, _ = pipeline.locate(lq, RestoreOptions())
    assert faces
    restored = pipeline.restore_faces(faces, options=RestoreOptions())
    for face in restored:
        assert face.info["strength"] >= 0.9
        assert face.info["detail"]["sharpness_term"] >= 0.9
    # x8 degraded vs clean: the estimate tells them apart on the same face
    clean_faces, _ = pipeline.locate(clean_photo, RestoreOptions())
    d_clean = estimate_detail(clean_faces[0].crop, clean_faces[0].matrix, 128).detail
    assert restored[0].info["detail"]["detail"] < 0.5 * d_clean


def test_manual_strength_blends_exactly(pipeline, clean_photo):
    faces, _ = pipeline.locate(clean_photo, RestoreOptions())
    full = pipeline.restore_faces(faces, options=RestoreOptions(strength=1.0))
    half = pipeline.restore_faces(faces, options=RestoreOptions(strength=0.5))
    for f, h, src in zip(full, half, faces):
        assert h.info["strength"] == 0.5 and "detail" not in h.info
        np.testing.assert_allclose(h.restored, src.crop + 0.5 * (f.restored - src.crop), atol=1e-5)


# ----------------------------------------------------------------------------- command line


def test_cli_strength_auto_by_default_number_overrides_bad_value_is_usage_error(model_file, real_lq_dir,
                                                                                 tmp_path, capsys):
    import json

    from restorer_core.cli import main

    src = real_lq_dir / "lfw_references" / "Michael_Chang" / "Michael_Chang_0005.jpg"
    strengths = {}
    for name, extra in (("auto", []), ("manual", ["--strength", "0.3"])):
        report = tmp_path / f"{name}.json"
        assert main(["restore", str(src), "--out", str(tmp_path / name), "--model", str(model_file), "--quiet",
                     "--report", str(report), *extra]) == 0
        strengths[name] = [f["strength"] for f in json.loads(report.read_text())["images"][0]["faces"]]
    assert strengths["manual"] and set(strengths["manual"]) == {0.3}
    assert len(strengths["auto"]) == len(strengths["manual"]) and max(strengths["auto"]) <= 0.05
    assert main(["restore", str(src), "--out", str(tmp_path / "bad"), "--model", str(model_file),
                 "--strength", "strong"]) == 2
    assert "--strength must be 'auto' or a number" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
