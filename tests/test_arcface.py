"""ArcFace from insightface's recognition models (face_id.arcface_onnx), on a tiny ONNX model in
their layout (tests/tiny_arcface.py: N x 3 x 112 x 112 in, N x 512 out).

The reference is insightface's own pipeline for these files: the original photo aligned with
cv2.warpAffine onto the ArcFace 5-point template from the detector's landmarks (norm_crop),
RGB, (x - 127.5) / 127.5, NCHW; the pack instead warps its FFHQ-aligned crops. Both must give
the same embedding.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from restorer_core.faces.align import align_face, similarity_transform
from restorer_core.errors import CheckpointError, ModelNotFoundError
from restorer_core.face_id.arcface_onnx import SAME_PERSON_THRESHOLD
from restorer_core.face_id.arcface_onnx import ArcFaceOnnx, find_arcface
from restorer_core.face_id.warp import ARCFACE_TEMPLATE_112
from restorer_core.faces.identity import IdentityScorer, embed_faces
from restorer_core.io.imageio import load_image
from tiny_arcface import write_tiny_arcface

from conftest import REPO_ROOT

BLAKE = REPO_ROOT / "example_workflows" / "inputs" / "blake_lively.jpg"


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return write_tiny_arcface(tmp_path_factory.mktemp("insightface") / "models" / "buffalo_l" / "w600k_r50.onnx")


@pytest.fixture(scope="module")
def photo_faces(yunet):
    """The photo, its two detections, and their FFHQ-aligned 512 px crops."""
    rgb = load_image(BLAKE).rgb8
    dets = sorted(yunet.detect(rgb), key=lambda d: d.box[0])
    assert len(dets) == 2
    crops = np.stack([align_face(rgb, d, 512).crop for d in dets])
    return rgb, dets, crops


def insightface_blob(rgb: np.ndarray, landmarks: np.ndarray, order: str = "rgb", normalise: bool = True):
    """insightface's input for one face: norm_crop of the photo, then the blob (1 x 3 x 112 x 112)."""
    matrix = similarity_transform(landmarks.astype(np.float64), ARCFACE_TEMPLATE_112)
    face = cv2.warpAffine(rgb, matrix, (112, 112), borderValue=0.0).astype(np.float32)
    if order == "bgr":
        face = face[..., ::-1]
    x = (face - 127.5) / 127.5 if normalise else face / 255.0
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def test_embeddings_match_insightfaces_own_pipeline(model_path, photo_faces):
    rgb, dets, crops = photo_faces
    net = ArcFaceOnnx(model_path)
    ours = net.embed_hwc(crops)
    assert ours.shape == (2, 512) and np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    for k, det in enumerate(dets):
        def ref(**kw):
            return unit(net.session.run(None, {net.input_name: insightface_blob(rgb, det.landmarks, **kw)})[0][0])

        same = float(ours[k] @ ref())
        # 0.988-0.997 measured: the two resamplings (photo -> crop -> 112 px) differ slightly, and the
        # random 8 px filters of the tiny network are far more sensitive to that than a trained one
        assert same > 0.98, f"face {k}: cosine {same:.4f} to insightface's pipeline"
        # the comparison can fail: channel order or input range wrong give other embeddings (0.36-0.82)
        assert float(ours[k] @ ref(order="bgr")) < same - 0.1
        assert float(ours[k] @ ref(normalise=False)) < same - 0.1
    assert float(ours[0] @ ours[1]) < 0.9  # two different faces, two embeddings


def test_a_fixed_batch_graph_gives_the_same_embeddings(tmp_path, model_path, photo_faces):
    crops = np.concatenate([photo_faces[2], photo_faces[2][:1]])  # 3 faces through a batch-1 graph
    fixed = ArcFaceOnnx(write_tiny_arcface(tmp_path / "glintr100.onnx", batch=1))
    assert fixed.batch == 1
    np.testing.assert_allclose(fixed.embed_hwc(crops), ArcFaceOnnx(model_path).embed_hwc(crops), atol=1e-5)
    assert embed_faces(fixed, crops[:0]).shape == (0, 512)


def test_scorer_takes_arcface_with_its_name_and_threshold(model_path, photo_faces):
    class Bank:
        def __init__(self, crops):
            self.crops = crops

        def bank_hash(self):
            return "b"

        def crops_hwc(self):
            return self.crops

    crops = photo_faces[2]
    net = ArcFaceOnnx(model_path)
    scorer = IdentityScorer(net)
    assert scorer.name == "ArcFace w600k_r50.onnx" and scorer.threshold == SAME_PERSON_THRESHOLD == 0.28
    bank = Bank(crops[1:])
    expected = net.embed_hwc(crops) @ unit(net.embed_hwc(crops[1:]).mean(axis=0))
    np.testing.assert_allclose(scorer.similarity(list(crops), bank), expected, atol=1e-5)
    assert scorer.similarity(list(crops), bank)[1] == pytest.approx(1.0, abs=1e-5)


def test_wrong_layout_missing_file_and_search_order(tmp_path):
    with pytest.raises(CheckpointError, match="expected one input N x 3 x 112 x 112"):
        ArcFaceOnnx(write_tiny_arcface(tmp_path / "big.onnx", size=128))
    with pytest.raises(CheckpointError, match="expected one N x 512 embedding"):
        ArcFaceOnnx(write_tiny_arcface(tmp_path / "small.onnx", dim=256))
    with pytest.raises(ModelNotFoundError, match="w600k_r50.onnx"):
        ArcFaceOnnx(tmp_path / "nothing.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(CheckpointError, match="not a readable ONNX model"):
        ArcFaceOnnx(junk)
    root = tmp_path / "insightface"
    assert find_arcface([root]) is None
    glint = write_tiny_arcface(root / "models" / "antelopev2" / "glintr100.onnx")
    assert find_arcface([tmp_path / "other", root]) == glint
    w600k = write_tiny_arcface(root / "models" / "buffalo_l" / "w600k_r50.onnx")
    assert find_arcface([root]) == w600k  # buffalo_l's first
