"""Face selection, index parsing, left-to-right ordering and frame-to-frame face indices."""

from __future__ import annotations

import numpy as np
import pytest

from restorer_core.faces.align import FFHQ_TEMPLATE_512, transform_points
from restorer_core.faces.records import DetectedFace
from restorer_core.io.imageio import load_image
from restorer_core.faces.locate import (
    locate_faces,
    locate_faces_batch,
    locate_faces_report,
    sort_left_to_right,
)
from restorer_core.faces.select import FaceSelection, parse_indices, select_faces


def det(cx: float, cy: float, size: float, score: float = 0.9) -> DetectedFace:
    """A detection of the given box size centred at (cx, cy), landmarks on the template."""
    pts = (FFHQ_TEMPLATE_512 - 256.0) * (size * 1.6 / 512.0) + [cx, cy]
    half = size / 2
    box = np.array([cx - half, cy - half, cx + half, cy + half], np.float32)
    return DetectedFace(box, score, pts.astype(np.float32))


class ScriptedDetector:
    """Returns prepared detections, one list per call."""

    name = "scripted"

    def __init__(self, frames):
        self.frames = list(frames)

    def detect(self, rgb):
        return self.frames.pop(0)


FOUR = [det(100, 100, 40), det(200, 100, 90), det(300, 100, 60), det(400, 100, 20)]


# ----------------------------------------------------------------------------- select


def test_all_keeps_everything():
    result = select_faces(FOUR, FaceSelection())
    assert result.kept == FOUR and result.skipped == []


def test_largest_keeps_the_biggest_in_input_order():
    result = select_faces(FOUR, FaceSelection(mode="largest", count=2))
    assert result.kept == [FOUR[1], FOUR[2]]
    assert [f for f, _ in result.skipped] == [FOUR[0], FOUR[3]]
    assert all("largest" in r for r in result.reasons)
    assert select_faces(FOUR, FaceSelection(mode="largest")).kept == [FOUR[1]]


def test_index_mode_and_missing_indices():
    result = select_faces(FOUR, FaceSelection(mode="index", indices=(0, 2, 7)))
    assert result.kept == [FOUR[0], FOUR[2]]
    assert result.missing_indices == (7,)
    assert "not in selected" in result.reasons[0]


def test_min_size_alone_and_combined():
    result = select_faces(FOUR, FaceSelection(mode="min_size", min_size=50))
    assert result.kept == [FOUR[1], FOUR[2]]
    assert all("too small" in r for r in result.reasons)
    combined = select_faces(FOUR, FaceSelection(mode="index", indices=(0, 1), min_size=50))
    assert combined.kept == [FOUR[1]]
    assert "too small" in dict((id(f), r) for f, r in combined.skipped)[id(FOUR[0])]


def test_similar_threshold_count_and_fallback():
    scores = [0.2, 0.7, 0.5, 0.1]
    result = select_faces(FOUR, FaceSelection(mode="similar", threshold=0.45), scores)
    assert result.kept == [FOUR[1], FOUR[2]]
    assert all("< threshold" in r for r in result.reasons)
    best = select_faces(FOUR, FaceSelection(mode="similar", threshold=0.45, count=1), scores)
    assert best.kept == [FOUR[1]]
    assert any("only the best 1" in r for r in best.reasons)
    none = select_faces(FOUR, FaceSelection(mode="similar", threshold=0.9), scores)
    assert none.kept == []
    fallback = select_faces(FOUR, FaceSelection(mode="similar", threshold=0.9, fallback_best=True), scores)
    assert fallback.kept == [FOUR[1]]


def test_similar_needs_matching_scores():
    with pytest.raises(ValueError, match="similarity scores"):
        select_faces(FOUR, FaceSelection(mode="similar"))
    with pytest.raises(ValueError, match="3 similarity scores for 4 faces"):
        select_faces(FOUR, FaceSelection(mode="similar"), [0.1, 0.2, 0.3])


def test_invalid_selections_are_refused():
    with pytest.raises(ValueError, match="mode"):
        FaceSelection(mode="biggest")
    with pytest.raises(ValueError, match="needs at least one index"):
        FaceSelection(mode="index")
    with pytest.raises(ValueError, match="count"):
        FaceSelection(mode="largest", count=0)


def test_parse_indices():
    assert parse_indices("0,2") == (0, 2)
    assert parse_indices("0-2") == (0, 1, 2)
    assert parse_indices(" 3, 1-2 ,1;5 ") == (1, 2, 3, 5)
    assert parse_indices("") == ()
    with pytest.raises(ValueError, match="e.g. '0,2'"):
        parse_indices("first")
    with pytest.raises(ValueError, match="backwards"):
        parse_indices("4-2")
    with pytest.raises(ValueError):
        parse_indices("-1")


# ----------------------------------------------------------------------------- locate


def test_left_to_right_order_is_by_centre_then_y():
    a, b, c = det(100, 300, 50), det(100, 100, 50), det(50, 500, 200)
    assert sort_left_to_right([a, b, c]) == [c, b, a]


def test_locate_faces_on_a_real_photo_orders_selects_and_reports(real_lq_dir, yunet):
    rgb = load_image(real_lq_dir / "codeformer" / "whole_imgs" / "00.jpg").rgb8
    faces = locate_faces(rgb, yunet, crop_size=128, image_index=3)
    assert [f.face_index for f in faces] == [0, 1, 2, 3]
    centres = [(f.box[0] + f.box[2]) / 2 for f in faces]
    assert centres == sorted(centres)
    assert all(f.crop.shape == (128, 128, 3) and f.image_index == 3 for f in faces)

    report = locate_faces_report(rgb, yunet, 128, FaceSelection(mode="index", indices=parse_indices("1,3")))
    assert [f.face_index for f in report.faces] == [1, 3]
    assert np.allclose(report.faces[0].box, faces[1].box)
    assert sorted(s.face_index for s in report.skipped) == [0, 2]
    assert all("not in selected" in s.reason for s in report.skipped)

    def similarity_fn(aligned):
        assert [f.face_index for f in aligned] == [0, 1, 2, 3]
        return [0.1, 0.3, 0.8, 0.2]

    sel = FaceSelection(mode="similar", threshold=0.5)
    similar = locate_faces(rgb, yunet, 128, sel, similarity_fn=similarity_fn)
    assert [f.face_index for f in similar] == [2]
    assert similar[0].info["similarity"] == pytest.approx(0.8)


def test_batch_keeps_face_indices_when_people_cross():
    # A walks right, B walks left (a little lower); they cross at frame 5. At frame 7 B is
    # hidden and C arrives; at frame 8 B is back.
    script = [[det(100 + 30 * k, 150, 80), det(400 - 30 * k, 170, 80)] for k in range(7)]
    script.append([det(290, 150, 80), det(520, 150, 60)])
    script.append([det(300, 150, 80), det(215, 170, 80), det(525, 150, 60)])
    frames = [np.full((300, 600, 3), 90, np.uint8)] * len(script)
    tracked = locate_faces_batch(frames, ScriptedDetector(script), crop_size=64)
    centre_x = lambda f: float((f.box[0] + f.box[2]) / 2)  # noqa: E731
    by_index = [{f.face_index: centre_x(f) for f in faces} for faces in tracked]
    assert by_index[0] == {0: 100, 1: 400}
    assert by_index[6] == {0: 280, 1: 220}  # A keeps 0 although it is now on the right
    assert by_index[7] == {0: 290, 2: 520}  # C gets a fresh number
    assert by_index[8] == {0: 300, 1: 215, 2: 525}  # B gets its number back after a gap
    assert [f.image_index for f in tracked[8]] == [8, 8, 8]

    ranks = locate_faces_batch(frames[:7], ScriptedDetector(script[:7]), crop_size=64, track=False)
    assert {f.face_index: centre_x(f) for f in ranks[6]} == {0: 220, 1: 280}


def test_batch_selection_uses_tracked_indices():
    frames = [np.full((300, 600, 3), 90, np.uint8)] * 2
    script = [[det(100, 150, 80), det(400, 150, 80)], [det(380, 150, 80), det(130, 150, 80)]]
    script[1] = [script[1][1], script[1][0]]
    sel = FaceSelection(mode="index", indices=(1,))
    out = locate_faces_batch(frames, ScriptedDetector(script), crop_size=64, selection=sel)
    picked = [[(f.face_index, (f.box[0] + f.box[2]) / 2) for f in faces] for faces in out]
    assert picked == [[(1, 400)], [(1, 380)]]
