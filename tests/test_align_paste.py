"""Alignment geometry, warping, masks and paste-back (round trips, untouched pixels, big images)."""

from __future__ import annotations

import tracemalloc
from dataclasses import replace

import cv2
import numpy as np
import pytest

from restorer_core.faces.align import (
    FFHQ_TEMPLATE_512,
    align_face,
    invert_affine,
    landmarks_in_crop,
    similarity_transform,
    template_landmarks,
    transform_points,
    warp_affine,
    warp_to_crop,
)
from restorer_core.faces.records import DetectedFace
from restorer_core.faces.locate import locate_faces
from restorer_core.restore.paste import PasteConfig, face_mask, paste_faces


def similarity(scale: float, degrees: float, tx: float, ty: float) -> np.ndarray:
    a = np.radians(degrees)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return np.hstack([scale * rot, [[tx], [ty]]])


def face_at(cx: float, cy: float, size: float, degrees: float = 0.0) -> DetectedFace:
    """A detection whose landmarks are the template, scaled so the crop spans `size` px."""
    centred = FFHQ_TEMPLATE_512 - 256.0
    pts = transform_points(centred, similarity(size / 512.0, degrees, cx, cy))
    half = size * 0.3
    box = np.array([cx - half, cy - half, cx + half, cy + half], np.float32)
    return DetectedFace(box, 0.9, pts.astype(np.float32))


# ----------------------------------------------------------------------------- geometry


def test_template_is_the_ffhq_constants_scaled():
    assert np.allclose(template_landmarks(512)[0], [192.98138, 239.94708])
    assert np.allclose(template_landmarks(256), FFHQ_TEMPLATE_512 / 2)


def test_similarity_fit_recovers_a_known_transform_and_never_reflects():
    rng = np.random.default_rng(3)
    src = rng.uniform(0, 100, (5, 2))
    truth = similarity(1.7, 33.0, 12.0, -40.0)
    fit = similarity_transform(src, transform_points(src, truth))
    assert np.allclose(fit, truth, atol=1e-9)
    assert np.allclose(transform_points(transform_points(src, fit), invert_affine(fit)), src)
    mirrored = src * [-1, 1]
    reflect_fit = similarity_transform(src, mirrored)
    assert np.linalg.det(reflect_fit[:, :2]) > 0


def test_similarity_fit_is_least_squares_under_noise():
    rng = np.random.default_rng(4)
    src = rng.uniform(0, 100, (5, 2))
    dst = transform_points(src, similarity(0.8, -12.0, 5.0, 7.0)) + rng.normal(0, 2.0, (5, 2))
    fit = similarity_transform(src, dst)
    best = np.sum((transform_points(src, fit) - dst) ** 2)
    for _ in range(200):  # no nearby similarity does better
        p = fit + rng.normal(0, 1e-3, (2, 3)) * [[1, 1, 100], [1, 1, 100]]
        p[1, 0], p[1, 1] = -p[0, 1], p[0, 0]  # keep it a similarity
        assert np.sum((transform_points(src, p) - dst) ** 2) >= best - 1e-9


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
@pytest.mark.parametrize("channels", [0, 1, 3, 4])
def test_warp_keeps_dtype_and_channels_and_matches_full_warp(make_image, dtype, channels):
    img = make_image(120, 160, channels=max(channels, 1) if channels != 0 else 0, dtype=dtype)
    if channels == 1:
        img = img[..., :1]
    m = similarity(1.3, 17.0, -30.0, 10.0)
    out = warp_to_crop(img, m, 96)
    assert out.dtype == img.dtype
    assert out.shape == (96, 96) + img.shape[2:]
    full = cv2.warpAffine(img, m, (96, 96), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    full = full.reshape(out.shape)
    tolerance = 1e-5 if dtype == np.float32 else 1
    assert np.abs(out.astype(np.float64) - full.astype(np.float64)).max() <= tolerance


@pytest.mark.parametrize(
    "border,cv_border", [("replicate", cv2.BORDER_REPLICATE), ("reflect", cv2.BORDER_REFLECT_101)]
)
def test_borders_outside_the_image_match_opencv(make_image, border, cv_border):
    img = make_image(80, 100)
    m = similarity(1.0, 25.0, 60.0, 50.0)  # maps the top-left corner into the middle
    out = warp_to_crop(img, m, 128, border=border)
    full = cv2.warpAffine(img, m, (128, 128), flags=cv2.INTER_LINEAR, borderMode=cv_border)
    assert np.abs(out.astype(int) - full.astype(int)).max() <= 1
    assert out.min() > 0  # no black fill


def test_antialias_averages_detail_when_shrinking():
    board = (np.indices((800, 800)).sum(axis=0) % 2 * 255).astype(np.uint8)
    m = similarity(0.1, 7.0, 0.0, 0.0)
    smooth = warp_affine(board, m, (80, 80), antialias=True)
    aliased = warp_affine(board, m, (80, 80), antialias=False)
    assert abs(smooth.mean() - 127.5) < 5 and smooth.std() < 10
    assert aliased.std() > 40


def test_align_face_puts_landmarks_on_the_template(make_image):
    img = make_image(400, 500)
    det = face_at(250, 180, 300, degrees=20.0)
    face = align_face(img, det, 256, image_index=2, face_index=1)
    assert face.crop.shape == (256, 256, 3) and face.crop.dtype == np.float32
    assert 0.0 <= face.crop.min() and face.crop.max() <= 1.0
    assert np.allclose(landmarks_in_crop(face), template_landmarks(256), atol=1e-3)
    assert (face.image_index, face.face_index) == (2, 1)
    # the crop's centre pixel samples the image where the inverse matrix says
    x, y = transform_points([[128, 128]], face.inverse)[0]
    assert np.allclose(face.crop[128, 128] * 255, img[int(round(y)), int(round(x))], atol=3)


# ----------------------------------------------------------------------------- masks


@pytest.mark.parametrize("mode", ["landmarks", "ellipse", "box"])
def test_mask_is_soft_and_zero_near_the_crop_border(mode):
    cfg = PasteConfig(mask=mode, erosion=8, feather=24)
    m = face_mask(512, cfg)
    assert m.dtype == np.float32 and m.shape == (512, 512)
    assert m.min() == 0.0 and m.max() <= 1.0
    assert m[256, 256] == pytest.approx(1.0, abs=1e-4)
    band = 24
    assert not m[:band].any() and not m[-band:].any() and not m[:, :band].any() and not m[:, -band:].any()
    assert ((m > 0.05) & (m < 0.95)).sum() > 1000  # a real feathered edge, not a step


def test_landmark_mask_follows_the_landmarks():
    pts = template_landmarks(512)
    moved = pts + [40.0, 0.0]
    base = face_mask(512, PasteConfig(mask="landmarks"), pts)
    shifted = face_mask(512, PasteConfig(mask="landmarks"), moved)
    xs = np.arange(512)
    cx = lambda m: (m.sum(axis=0) * xs).sum() / m.sum()  # noqa: E731
    assert cx(shifted) - cx(base) == pytest.approx(40.0, abs=3.0)


def test_parser_hook_shapes_the_mask():
    calls = []

    def parser(crop):
        calls.append(crop.shape)
        out = np.zeros(crop.shape[:2], np.float32)
        out[:, :256] = 1.0  # "face" only on the left half
        return out

    m = face_mask(512, PasteConfig(parser=parser), crop=np.zeros((512, 512, 3), np.float32))
    assert calls == [(512, 512, 3)]
    assert m[256, 128] > 0.99 and m[256, 400] == 0.0


# ----------------------------------------------------------------------------- paste


def _round_trip(img, faces_at, config=PasteConfig(color_fix="none")):
    rgb = img[..., :3] if img.ndim == 3 else img
    faces = [align_face(rgb, det, 256, face_index=i) for i, det in enumerate(faces_at)]
    for f in faces:
        f.restored = f.crop.copy()
    return faces, paste_faces(img, faces, config)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
@pytest.mark.parametrize("channels", [0, 3, 4])
def test_pasting_the_unmodified_crop_changes_only_by_interpolation(make_image, dtype, channels):
    img = make_image(300, 400, channels=channels, dtype=dtype, seed=5)
    if channels == 4:
        img[..., 3] = np.arange(400, dtype=img.dtype)[None, :] % (200 if dtype != np.float32 else 2)
    _, (out, mask) = _round_trip(img, [face_at(150, 140, 180, 15.0), face_at(300, 160, 120, -10.0)])
    assert out.dtype == img.dtype and out.shape == img.shape and mask.shape == img.shape[:2]
    peak = 255.0 if dtype == np.uint8 else 65535.0 if dtype == np.uint16 else 1.0
    diff = np.abs(out.astype(np.float64) - img.astype(np.float64)) / peak
    inside = mask > 0.5
    assert inside.sum() > 5000
    assert diff[inside].mean() < 0.01 and diff[inside].max() < 0.08
    outside = mask == 0
    assert outside.sum() > 50000
    assert np.array_equal(out[outside], img[outside])  # bit-identical
    if channels == 4:
        assert np.array_equal(out[..., 3], img[..., 3])  # alpha never changes


def test_mask_is_zero_far_from_faces(make_image):
    img = make_image(300, 600)
    faces, (_, mask) = _round_trip(img, [face_at(120, 150, 150)])
    assert mask.max() > 0.99
    assert not mask[:, 260:].any()  # well past the crop square (x <= 195 + margin)
    assert not mask[:40].any() and not mask[262:].any()


def test_grayscale_gets_the_luma_of_the_restored_face(make_image):
    img = make_image(200, 200, channels=0)
    face = align_face(img, face_at(100, 100, 150), 128)
    face.restored = np.zeros((128, 128, 3), np.float32)
    face.restored[..., 0] = 1.0  # pure red
    out, mask = paste_faces(img, [face], PasteConfig(color_fix="none"))
    assert out.ndim == 2
    centre = mask > 0.999
    assert np.abs(out[centre].astype(int) - round(0.299 * 255)).max() <= 1


def test_overlapping_faces_composite_in_order_without_seams():
    img = np.full((300, 400, 3), 128, np.uint8)
    first, second = face_at(170, 150, 200), face_at(230, 150, 200)
    faces = [align_face(img, d, 128, face_index=i) for i, d in enumerate((first, second))]
    faces[0].restored = np.zeros((128, 128, 3), np.float32) + [1.0, 0.0, 0.0]
    faces[1].restored = np.zeros((128, 128, 3), np.float32) + [0.0, 0.0, 1.0]
    out, mask = paste_faces(img, faces, PasteConfig(color_fix="none"))
    assert out[150, 230].tolist() == [0, 0, 255]  # the later face is on top in the overlap
    assert out[150, 145].tolist() == [255, 0, 0]  # the first face where only it reaches
    row = out[150].astype(int)
    assert np.abs(np.diff(row, axis=0)).max() < 80  # soft transitions, no hard seam
    assert mask[150, 200] == pytest.approx(1.0, abs=1e-4)


def test_strength_zero_and_missing_restorations_leave_the_image_alone(make_image):
    img = make_image(200, 200)
    face = align_face(img, face_at(100, 100, 150), 128)
    face.restored = np.ones((128, 128, 3), np.float32)
    out, mask = paste_faces(img, [face], PasteConfig(strength=0.0))
    assert np.array_equal(out, img) and not mask.any()
    face.restored = None
    out, mask = paste_faces(img, [face])
    assert np.array_equal(out, img) and not mask.any()


def test_restored_face_of_another_size_is_resized(make_image):
    img = make_image(300, 300, seed=9)
    face = align_face(img, face_at(150, 150, 200), 256)
    face.restored = cv2.resize(face.crop, (512, 512), interpolation=cv2.INTER_CUBIC)
    out, mask = paste_faces(img, [face], PasteConfig(color_fix="none"))
    inside = mask > 0.5
    assert np.abs(out[inside].astype(int) - img[inside].astype(int)).mean() < 2.5


def test_wavelet_color_fix_removes_a_colour_cast(make_image):
    img = make_image(300, 300, seed=11)
    face = align_face(img, face_at(150, 150, 200), 256)
    face.restored = np.clip(face.crop * 0.8 + [0.15, 0.0, -0.1], 0, 1).astype(np.float32)
    fixed, mask = paste_faces(img, [face], PasteConfig(color_fix="wavelet"))
    raw, _ = paste_faces(img, [face], PasteConfig(color_fix="none"))
    inside = mask > 0.9
    err_fixed = np.abs(fixed[inside].astype(int) - img[inside].astype(int)).mean()
    err_raw = np.abs(raw[inside].astype(int) - img[inside].astype(int)).mean()
    assert err_raw > 15 and err_fixed < 4


def test_copy_by_default_inplace_and_maskless_on_request(make_image):
    img = make_image(200, 200, seed=2)
    before = img.copy()
    face = align_face(img, face_at(100, 100, 150), 128)
    face.restored = np.clip(face.crop + 0.3, 0, 1).astype(np.float32)
    out, mask = paste_faces(img, [face], PasteConfig(color_fix="none"))
    assert np.array_equal(img, before) and not np.array_equal(out, before)
    same, no_mask = paste_faces(img, [face], PasteConfig(color_fix="none"), inplace=True, return_mask=False)
    assert same is img and no_mask is None
    assert np.array_equal(img, out)


def _shifted(face, dx: int, dy: int):
    """The same aligned face expressed in the coordinates of a window starting at (dx, dy)."""
    matrix = face.matrix.copy()
    matrix[:, 2] += matrix[:, :2] @ [dx, dy]
    inverse = face.inverse.copy()
    inverse[:, 2] -= [dx, dy]
    det = replace(face.detection, box=face.box - [dx, dy, dx, dy], landmarks=face.landmarks - [dx, dy])
    return replace(face, matrix=matrix, inverse=inverse, detection=det)


def test_12000px_image_detects_aligns_and_pastes_within_face_regions(yunet, face_rgb):
    big = np.full((12000, 12000, 3), 200, np.uint8)
    patch = cv2.resize(face_rgb, None, fx=6, fy=6, interpolation=cv2.INTER_CUBIC)  # face ~330 px
    y0, x0 = 7000, 5000
    big[y0 : y0 + patch.shape[0], x0 : x0 + patch.shape[1]] = patch
    faces = locate_faces(big, yunet, crop_size=256)
    assert len(faces) == 1
    ref = yunet.detect(face_rgb)[0]
    expected = ref.box * 6 + [x0, y0, x0, y0]
    assert np.abs(faces[0].box - expected).max() < 0.15 * ref.size * 6
    faces[0].restored = np.clip(faces[0].crop * 0.5 + 0.4, 0, 1).astype(np.float32)
    wy, wx = y0 - 200, x0 - 200
    window = big[wy : wy + 2400, wx : wx + 2400].copy()
    tracemalloc.start()
    try:
        out, mask = paste_faces(big, faces, PasteConfig(color_fix="none"), inplace=True, return_mask=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert out is big and mask is None
    assert peak < 64 * 2**20  # per-face buffers only: nothing image-sized
    # the same paste done on a small window gives exactly the same pixels there
    small_out, small_mask = paste_faces(window, [_shifted(faces[0], wx, wy)], PasteConfig(color_fix="none"))
    assert np.array_equal(big[wy : wy + 2400, wx : wx + 2400], small_out)
    assert (small_mask > 0).sum() > 10000
    assert (np.abs(small_out.astype(np.int16) - window).max(axis=2)[small_mask > 0.5] > 0).mean() > 0.9
    outside = small_mask == 0
    assert np.array_equal(small_out[outside], window[outside])  # bit-identical
    for slab in (big[:wy], big[wy + 2400 :], big[:, :wx], big[:, wx + 2400 :]):
        assert slab.min() == 200 and slab.max() == 200  # the rest of the photo is untouched
