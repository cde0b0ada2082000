"""Do no harm: the detail estimate, the automatic strength and the manual override."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from tiny_models import tiny_config
from restorer_core.restore.detail import (
    AUTO,
    KEPT_MANUAL,
    KEPT_SHARP,
    DetailConfig,
    band_measures,
    check_strength,
    detail_measure,
    effective_detail,
    estimate_detail,
    native_size,
    structure_measure,
)
from restorer_core.restore.pipeline import FaceRestorePipeline, RestoreOptions
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
    from restorer_core.io.imageio import load_image

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


IDENTITY = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])  # a 128 px crop of a 128 px face


def test_noise_and_blur_are_told_apart_and_both_restore_a_sharp_face():
    """Noise alone keeps `detail` (it is not read as blur) but raises `noise`; blur alone lowers
    `detail` without raising `noise`; either, and both together, restore the face."""
    rng = np.random.default_rng(2)
    sharp = _texture()
    noisy = np.clip(sharp + rng.normal(0, 0.03, (128, 128, 1)), 0, 1).astype(np.float32)
    blurred = cv2.GaussianBlur(sharp, (0, 0), 2.0)
    both = np.clip(cv2.GaussianBlur(sharp, (0, 0), 1.2) + rng.normal(0, 0.03, (128, 128, 1)), 0, 1).astype(np.float32)
    (d_s, n_s), (d_n, n_n), (d_b, n_b) = (band_measures(x, 128) for x in (sharp, noisy, blurred))
    assert d_n > 0.7 * d_s and n_n > 5 * n_s  # noise: detail kept, noise seen
    assert d_b < 0.3 * d_s and n_b < 0.3 * n_n  # blur: detail lost, no noise seen
    assert estimate_detail(sharp, IDENTITY, 128).strength == 0.0
    for degraded in (noisy, blurred, both):
        est = estimate_detail(degraded, IDENTITY, 128)
        assert est.size_term == 0.0 and est.strength == 1.0
    assert estimate_detail(both, IDENTITY, 128).effective < estimate_detail(blurred, IDENTITY, 128).effective


def test_effective_detail_only_discounts_noise_beyond_clean_photos():
    cfg = DetailConfig(noise_free=0.3, noise_weight=2.0)
    assert effective_detail(0.4, 0.25, cfg) == 0.4  # clean photos' noise costs nothing
    assert effective_detail(0.4, 0.4, cfg) == pytest.approx(0.2)
    assert effective_detail(0.4, 0.4, DetailConfig(noise_weight=0.0)) == 0.4
    for bad in (dict(noise_weight=-1.0), dict(noise_free=-0.1), dict(sharp=0.1, blurred=0.2)):
        with pytest.raises(ValueError):
            DetailConfig(**bad)


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


def test_clean_sharp_face_is_kept_exactly(pipeline, clean_photo):
    out, _, report = pipeline.restore_image(clean_photo)
    faces = report["faces"]
    assert faces and all(f["status"] == "kept" and f["reason"] == KEPT_SHARP for f in faces)
    assert all(f["strength"] == 0.0 for f in faces)
    assert report["faces_kept"] == len(faces) and report["faces_restored"] == 0
    assert report["status"] == "unchanged" and "kept" in report["note"]
    np.testing.assert_array_equal(out, clean_photo)  # not even resampled by paste-back
    # the manual override restores the same face fully, which does change it
    full, _, report_full = pipeline.restore_image(clean_photo, options=RestoreOptions(strength=1.0))
    assert [f["strength"] for f in report_full["faces"]] == [1.0] * len(faces)
    assert report_full["faces_restored"] == len(faces) and report_full["status"] == "restored"
    assert np.abs(full.astype(int) - clean_photo.astype(int)).mean() > 0.1
    # a manual 0 keeps it too, with its own reason
    _, _, report_zero = pipeline.restore_image(clean_photo, options=RestoreOptions(strength=0.0))
    assert [f["reason"] for f in report_zero["faces"]] == [KEPT_MANUAL] * len(faces)


def _old_photo(rgb8: np.ndarray, blur: float, noise: float, quality: int, seed: int = 0) -> np.ndarray:
    """Blur and grain at the photo's own resolution, then JPEG: an old scan of a sharp photo."""
    x = cv2.GaussianBlur(rgb8.astype(np.float32), (0, 0), blur) if blur else rgb8.astype(np.float32)
    x = x + np.random.default_rng(seed).normal(0.0, noise, x.shape)
    x = np.clip(x, 0, 255).round().astype(np.uint8)
    if quality:
        ok, buf = cv2.imencode(".jpg", x, [cv2.IMWRITE_JPEG_QUALITY, quality])
        x = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    return x


def _estimates(pipeline, rgb8: np.ndarray) -> list:
    faces, _ = pipeline.locate(rgb8, RestoreOptions())
    assert faces, "no face found"
    return [estimate_detail(f.crop, f.matrix, 128) for f in faces]


def test_real_face_grain_noise_and_blur(pipeline, clean_photo):
    """On a real sharp photo (face ~200 px): heavy noise alone, blur alone and grain + JPEG over a
    blurred face each get full strength; noise alone does not lower `detail` like blur does, and
    blur does not raise `noise`."""
    clean = _estimates(pipeline, clean_photo)[0]
    assert clean.strength == 0.0
    noise = _estimates(pipeline, _old_photo(clean_photo, 0.0, 12.0, 0))[0]
    blur = _estimates(pipeline, _old_photo(clean_photo, 2.5, 0.0, 0))[0]
    grain_blur = _estimates(pipeline, _old_photo(clean_photo, 2.5, 8.0, 50, seed=1))[0]
    for est in (noise, blur, grain_blur):
        assert est.strength >= 0.9 and est.size_term == 0.0
    assert noise.detail > 0.75 * clean.detail and noise.noise > clean.noise + 0.1
    assert blur.detail < 0.5 * clean.detail and blur.noise < clean.noise


def test_readme_family_photo_is_restored_and_large_sharp_faces_are_kept(pipeline, real_lq_dir):
    """The README's first command: the old grainy family scan gets its faces restored; the large,
    sharp Stable Diffusion portrait and a sharp high-resolution photo keep theirs."""
    from restorer_core.io.imageio import load_image

    family = load_image(Path(__file__).resolve().parents[1] / "examples" / "family_10045.png").rgb8
    strengths = [e.strength for e in _estimates(pipeline, family)]
    assert len(strengths) == 3 and min(strengths) >= 0.9
    for name in ("codeformer/whole_imgs/stable_diffusion_00.jpg", "codeformer/whole_imgs/06.png"):
        estimates = _estimates(pipeline, load_image(real_lq_dir / name).rgb8)
        assert [e.strength for e in estimates] == [0.0] * len(estimates)


def test_structure_is_contrast_free_and_falls_with_blur_to_below_the_keep_level_at_16x(pipeline, clean_photo):
    """The no-references gate's reading: a clean face is above STRUCTURE_FULL, a 16x-degraded one
    below STRUCTURE_KEEP (seeds averaged), and it falls with the degradation in between."""
    from restorer_core.restore.identity_gate import STRUCTURE_FULL, STRUCTURE_KEEP

    sharp = _texture(256)
    assert structure_measure(0.25 + 0.3 * sharp) == pytest.approx(structure_measure(sharp), rel=1e-3)
    assert structure_measure(np.full((64, 64, 3), 0.4, np.float32)) == 0.0

    def reading(scale: int) -> float:
        values = []
        for seed in range(3):
            lq = clean_photo if scale == 1 else degrade_fixed(clean_photo, scale, seed=seed)
            faces, _ = pipeline.locate(lq, RestoreOptions())
            values.append(structure_measure(faces[0].crop))
            assert faces[0].crop.shape[0] > 64  # measured at 64 px: a resize, not the crop as it is
        return float(np.mean(values))

    by_scale = {scale: reading(scale) for scale in (1, 4, 8, 16)}
    assert by_scale[1] > STRUCTURE_FULL and by_scale[16] < STRUCTURE_KEEP
    assert by_scale[1] > by_scale[4] > by_scale[8] > by_scale[16]


def test_degraded_face_gets_full_strength(pipeline, clean_photo):
    lq = degrade_fixed(clean_photo, 8, seed=3)
    faces, _ = pipeline.locate(lq, RestoreOptions())
    assert faces
    restored = pipeline.restore_faces(faces, options=RestoreOptions(no_refs_strength=1.0,  # the measure alone
                                                                   no_refs_structure_gate=False))
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


def _restore_side_by_side(model_file, real_lq_dir, tmp_path, capsys, scales: tuple) -> tuple:
    """Copies of one sharp LFW photo side by side (scale 1: as it is, else degraded), restored by
    the CLI without references -> (the pixels in, the summary on stderr, the report)."""
    import json

    from restorer_core.cli import main
    from restorer_core.io.imageio import load_image

    sharp = load_image(real_lq_dir / "lfw_references" / "Michael_Chang" / "Michael_Chang_0005.jpg").rgb8
    seeds = {8: 3, 16: 0}
    row = np.hstack([sharp if s == 1 else degrade_fixed(sharp, s, seed=seeds[s]) for s in scales])
    src = tmp_path / "row.png"
    cv2.imwrite(str(src), cv2.cvtColor(row, cv2.COLOR_RGB2BGR))
    report_path = tmp_path / "report.json"
    assert main(["restore", str(src), "--out", str(tmp_path / "out"), "--model", str(model_file),
                 "--report", str(report_path)]) == 0
    return row, capsys.readouterr().err, json.loads(report_path.read_text())


def test_cli_summary_counts_kept_faces_apart_from_restored(model_file, real_lq_dir, tmp_path, capsys):
    """One photo with a sharp face and an x8-degraded copy of it: one face restored, one kept."""
    pair, err, report = _restore_side_by_side(model_file, real_lq_dir, tmp_path, capsys, (1, 8))
    assert "1 face(s) restored, 1 kept as they were (already sharp)" in err
    image = report["images"][0]
    assert (image["faces_restored"], image["faces_kept"], image["status"]) == (1, 1, "restored")
    assert report["totals"]["faces_kept"] == 1 and report["totals"]["faces_restored"] == 1
    by_index = {f["index"]: f for f in image["faces"]}
    assert by_index[0]["status"] == "kept" and by_index[0]["reason"] == KEPT_SHARP
    assert by_index[0]["strength"] == 0.0 and by_index[1]["status"] == "restored"
    # the kept face's pixels are the input's: only the restored face was pasted
    out = cv2.cvtColor(cv2.imread(image["output"]), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(out[:, :200], pair[:, :200])
    assert np.abs(out[:, 250:].astype(int) - pair[:, 250:].astype(int)).max() > 0


def test_cli_summary_says_why_each_kept_face_was_kept(model_file, real_lq_dir, tmp_path, capsys):
    """Sharp, x8 and x16 copies of one photo side by side, no references: the sharp face is kept as
    already sharp, the x16 one as too blurred to guess who it is; the summary tells them apart."""
    from restorer_core.restore.identity_gate import KEPT_STRUCTURELESS

    _, err, report = _restore_side_by_side(model_file, real_lq_dir, tmp_path, capsys, (1, 8, 16))
    assert ("1 face(s) restored, 2 kept as they were (1 already sharp, "
            "1 too blurred to restore without references: give --refs)") in err
    faces = sorted(report["images"][0]["faces"], key=lambda f: f["box"][0])
    assert [f["status"] for f in faces] == ["kept", "restored", "kept"] and faces[2]["reason"] == KEPT_STRUCTURELESS
