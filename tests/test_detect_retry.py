"""The second detection pass for images where the first finds no face (detect/retry.py)."""

from __future__ import annotations

import numpy as np
import pytest

from restorer_core.faces.detect import create_detector
from restorer_core.faces.detect.base import box_iou
from restorer_core.faces.detect.retry import RetryDetector, _drop_contained
from restorer_core.train.degrade import degrade_fixed


@pytest.fixture(scope="module")
def detectors():
    return create_detector("yunet", retry=False), create_detector("yunet")


def _photo(real_lq_dir, name):
    from restorer_core.io.imageio import load_image

    return load_image(real_lq_dir / "lfw_references" / name.rsplit("_", 1)[0] / f"{name}.jpg").rgb8


def test_x16_blurred_face_missed_by_one_pass_is_found_by_the_second(detectors, real_lq_dir):
    one_pass, retry = detectors
    assert isinstance(retry, RetryDetector) and retry.name == "yunet"
    clean = _photo(real_lq_dir, "Eliane_Karp_0004")
    target = np.asarray(one_pass.detect(clean)[0].box)
    lq = degrade_fixed(clean, 16, 1)
    assert one_pass.detect(lq) == []
    found = retry.detect(lq)
    assert len(found) == 1
    assert box_iou(np.asarray(found[0].box)[None], target[None])[0, 0] > 0.5
    # landmarks come back in image coordinates, inside the box
    lm, box = found[0].landmarks, found[0].box
    assert np.all((lm[:, 0] > box[0]) & (lm[:, 0] < box[2]) & (lm[:, 1] > box[1]) & (lm[:, 1] < box[3]))


def test_photos_with_a_face_and_without_any_are_left_to_the_first_pass(detectors, real_lq_dir):
    one_pass, retry = detectors
    clean = _photo(real_lq_dir, "Jesse_Ventura_0001")
    a, b = one_pass.detect(clean), retry.detect(clean)
    assert len(a) == len(b) >= 1
    for x, y in zip(a, b):
        assert np.array_equal(x.box, y.box) and x.score == y.score
    rng = np.random.default_rng(0)
    plain = np.clip(128 + rng.normal(0, 12, (256, 256, 3)), 0, 255).astype(np.uint8)
    assert retry.detect(plain) == []


def test_candidates_mostly_inside_a_better_one_are_dropped():
    boxes = np.array([[0, 0, 100, 100], [10, 50, 90, 130], [200, 0, 300, 100], [60, 0, 160, 100]], float)
    # 1: its upper 62% lies inside box 0 (a chin); 3: 40% inside box 0 is not "mostly"
    assert _drop_contained(boxes, np.array([0, 1, 2, 3]), 0.4) == [0, 2, 3]
    assert _drop_contained(boxes, np.array([0, 1, 2, 3]), 0.7) == [0, 1, 2, 3]
