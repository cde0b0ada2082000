"""Face detection on real photos (YuNet, SCRFD), edge cases, and backend error messages.

Ground truth below was made by looking at each photo: one (x, y) point near the middle of every
clearly visible face, in the image's own pixels.
"""

from __future__ import annotations

import sys

import cv2
import numpy as np
import pytest

from restorer_core.faces.detect import DetectorModelNotFoundError, box_iou, create_detector
from restorer_core.faces.detect.base import DetectorConfig
from restorer_core.faces.detect.facexlib_backend import FacexlibDetector
from restorer_core.faces.detect.scrfd import resolve_model_file
from restorer_core.errors import DetectorError, ModelNotFoundError
from restorer_core.io.imageio import load_image

FACES = {
    "gfpgan/whole_imgs/Blake_Lively.jpg": [(180, 210), (505, 200)],
    "codeformer/whole_imgs/00.jpg": [(80, 100), (195, 95), (300, 105), (415, 90)],
    "gfpgan/whole_imgs/00.jpg": [(576, 853), (849, 465)],
    "vqfr/whole_imgs/example.jpg": [(100, 125), (400, 130), (665, 120)],
    "gfpgan/whole_imgs/10045.png": [(210, 150), (418, 170), (403, 460)],
    "codeformer/whole_imgs/02.png": [(215, 145), (465, 165), (690, 150), (935, 160)],
    "codeformer/whole_imgs/06.png": [(210, 270), (490, 240)],
}


def _inside(point, box) -> bool:
    return box[0] <= point[0] <= box[2] and box[1] <= point[1] <= box[3]


def _check_faces(faces, truth, min_score):
    confident = [f for f in faces if f.score >= min_score]
    assert len(confident) == len(truth), [(f.box.round(), f.score) for f in faces]
    for point in truth:
        hits = [f for f in confident if _inside(point, f.box)]
        assert len(hits) == 1, f"face at {point}: {len(hits)} boxes"
    for f in confident:
        lm = f.landmarks
        # image-left eye, image-right eye, nose, image-left mouth corner, image-right mouth corner
        assert lm[0, 0] < lm[2, 0] < lm[1, 0]
        assert lm[3, 0] < lm[4, 0]
        assert max(lm[0, 1], lm[1, 1]) < lm[2, 1] < min(lm[3, 1], lm[4, 1])
        assert all(_inside(p, f.box) for p in lm)
        assert 20 <= f.size <= 400


@pytest.fixture(scope="module")
def photos(real_lq_dir):
    return {name: load_image(real_lq_dir / name).rgb8 for name in FACES}


@pytest.fixture(scope="module")
def scrfd(scrfd_model):
    return create_detector("scrfd", scrfd_model)


def test_yunet_finds_every_face_in_real_photos(yunet, photos):
    for name, truth in FACES.items():
        faces = yunet.detect(photos[name])
        assert [f.score for f in faces] == sorted((f.score for f in faces), reverse=True)
        _check_faces(faces, truth, min_score=0.8)


def test_scrfd_finds_the_same_faces_as_yunet(yunet, scrfd, photos):
    for name, truth in FACES.items():
        s_faces = scrfd.detect(photos[name])
        _check_faces(s_faces, truth, min_score=0.6)
        y_faces = [f for f in yunet.detect(photos[name]) if f.score >= 0.8]
        iou = box_iou(np.stack([f.box for f in y_faces]), np.stack([f.box for f in s_faces]))
        assert (iou.max(axis=1) > 0.6).all(), (name, iou.max(axis=1))
        for y, j in zip(y_faces, iou.argmax(axis=1)):
            spread = np.linalg.norm(y.landmarks - s_faces[j].landmarks, axis=1).max()
            assert spread < 0.2 * y.size, (name, spread, y.size)


def test_scrfd_model_folder_resolution(tmp_path, scrfd_model):
    pack = tmp_path / "buffalo_l"
    pack.mkdir()
    (pack / "det_10g.onnx").symlink_to(scrfd_model)
    (pack / "w600k_r50.onnx").write_bytes(b"not a detector")
    assert resolve_model_file(pack).name == "det_10g.onnx"
    detector = create_detector("scrfd", pack)
    assert detector.name == "scrfd"
    odd = tmp_path / "odd"
    odd.mkdir()
    (odd / "a.onnx").write_bytes(b"")
    (odd / "b.onnx").write_bytes(b"")
    with pytest.raises(DetectorModelNotFoundError, match="a.onnx, b.onnx"):
        resolve_model_file(odd)


def test_no_face_and_tiny_images_give_empty_lists(yunet, scrfd):
    rng = np.random.default_rng(0)
    blank = np.full((480, 640, 3), 128, dtype=np.uint8)
    noise = cv2.GaussianBlur(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8), (9, 9), 3)
    for det in (yunet, scrfd):
        assert det.detect(blank) == []
        assert det.detect(noise) == []
        assert det.detect(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)) == []
        assert det.detect(np.zeros((1, 1, 3), dtype=np.uint8)) == []


def test_downscaled_detection_maps_back_to_full_resolution(face_rgb):
    small = create_detector("yunet", max_side=256).detect(face_rgb)
    assert len(small) == 1
    big_img = cv2.resize(face_rgb, None, fx=4, fy=4, interpolation=cv2.INTER_CUBIC)
    big = create_detector("yunet", max_side=256).detect(big_img)
    assert len(big) == 1
    tol = 0.1 * small[0].size * 4
    assert np.abs(big[0].box - small[0].box * 4).max() < tol
    assert np.abs(big[0].landmarks - small[0].landmarks * 4).max() < tol


def test_wrong_input_is_rejected_with_advice(yunet):
    with pytest.raises(DetectorError, match="to_rgb8"):
        yunet.detect(np.zeros((32, 32), dtype=np.uint8))
    with pytest.raises(DetectorError, match="to_rgb8"):
        yunet.detect(np.zeros((32, 32, 3), dtype=np.float32))


def test_backend_errors_tell_what_to_do(monkeypatch, tmp_path):
    with pytest.raises(DetectorError, match="unknown detector"):
        create_detector("mtcnn")
    with pytest.raises(ModelNotFoundError, match="det_10g"):
        create_detector("scrfd")  # no model given
    with pytest.raises(DetectorModelNotFoundError):
        create_detector("yunet", tmp_path / "missing.onnx")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(DetectorError, match="pip install onnxruntime"):
        create_detector("scrfd", tmp_path / "x.onnx")
    monkeypatch.setitem(sys.modules, "facexlib", None)
    with pytest.raises(DetectorError, match="pip install facexlib"):
        create_detector("facexlib")


class _FakeRetinaFace:
    """Stands in for facexlib's RetinaFace: records its input, returns one fixed row."""

    def __init__(self):
        self.calls = []

    def detect_faces(self, image, conf_threshold=0.8, nms_threshold=0.4):
        self.calls.append((image, conf_threshold, nms_threshold))
        landmarks = [30, 60, 70, 60, 50, 80, 35, 100, 65, 100]
        return np.array([[10, 20, 90, 130, 0.93] + landmarks], dtype=np.float32)


def test_facexlib_adapter_converts_rows_and_scales_back():
    fake = _FakeRetinaFace()
    detector = FacexlibDetector(DetectorConfig(score_threshold=0.7, nms_threshold=0.25, max_side=500), fake)
    rgb = np.zeros((600, 1000, 3), dtype=np.uint8)
    rgb[:, :500, 0] = 255  # red on the left half
    faces = detector.detect(rgb)
    image, conf, nms_thr = fake.calls[0]
    assert image.shape == (300, 500, 3)
    assert image[10, 10, 2] == 255 and image[10, 10, 0] == 0  # the model received BGR
    assert (conf, nms_thr) == (0.7, 0.25)
    assert len(faces) == 1 and faces[0].score == pytest.approx(0.93)
    assert np.allclose(faces[0].box, [20, 40, 180, 260])
    assert np.allclose(faces[0].landmarks[0], [60, 120]) and np.allclose(faces[0].landmarks[4], [130, 200])


def test_cached_detector_is_made_once_per_backend_file_and_threshold():
    """The one detector factory the pipeline and the nodes share: ONNX sessions are made once."""
    from restorer_core.faces.detect import cached_detector

    a = cached_detector("yunet", None, 0.6)
    assert cached_detector("yunet", "", 0.6000001) is a  # same weights, same threshold (rounded)
    b = cached_detector("yunet", None, 0.8)
    assert b is not a and cached_detector("yunet", None, 0.8) is b
