"""Detect -> order -> select -> align, for single images and for video frames.

A face's `face_index` is its left-to-right rank in the image (by box centre x, then y), so
"face 0" means the same thing in the UI, in selection and in the output. For video, indices
follow people from frame to frame: faces are matched to the previous frames' boxes (IoU, or
centre distance for fast motion), so a face keeps its index while it stays in view.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np

from .align import align_face
from .detect.base import FaceDetector
from .records import AlignedFace, DetectedFace
from .select import FaceSelection, select_faces
from .tracks import TrackConfig, match_to_tracks
from ..threads import ThreadMap

SimilarityFn = Callable[[list[AlignedFace]], Sequence[float]]
_THREADS = ThreadMap("detect")  # long-lived, so each keeps its own detector instance


@dataclass
class SkippedFace:
    detection: DetectedFace
    face_index: int
    reason: str
    image_index: int = 0


@dataclass
class LocateReport:
    """Faces chosen for restoration and those left out, with why."""

    faces: list[AlignedFace] = field(default_factory=list)
    skipped: list[SkippedFace] = field(default_factory=list)


def box_centre(box: np.ndarray) -> tuple[float, float]:
    return float(box[0] + box[2]) / 2.0, float(box[1] + box[3]) / 2.0


def sort_left_to_right(faces: Sequence[DetectedFace]) -> list[DetectedFace]:
    """Order by box centre x, then y (stable for exact ties)."""
    return sorted(faces, key=lambda f: box_centre(f.box))


def _select_and_align(
    image: np.ndarray,
    ordered: Sequence[DetectedFace],
    indices: Sequence[int],
    crop_size: int,
    selection: Optional[FaceSelection],
    image_index: int,
    similarity_fn: Optional[SimilarityFn],
) -> LocateReport:
    needs_crops_first = selection is not None and selection.mode == "similar"
    if needs_crops_first:
        if similarity_fn is None:
            raise ValueError(
                "selection mode 'similar' needs a similarity function (an identity embedder "
                "compared with the reference); choose another mode or provide one."
            )
        aligned = [align_face(image, d, crop_size, image_index, i) for d, i in zip(ordered, indices)]
        scores = list(similarity_fn(aligned)) if aligned else []
        result = select_faces(aligned, selection, scores)
        skipped = [SkippedFace(f.detection, f.face_index, r, image_index) for f, r in result.skipped]
        return LocateReport(list(result.kept), skipped)

    stubs = [_IndexedDetection(d, i) for d, i in zip(ordered, indices)]
    result = select_faces(stubs, selection)
    faces = [align_face(image, s.detection, crop_size, image_index, s.face_index) for s in result.kept]
    skipped = [SkippedFace(s.detection, s.face_index, r, image_index) for s, r in result.skipped]
    return LocateReport(faces, skipped)


@dataclass
class _IndexedDetection:
    """A detection carrying its rank, so selection sees the same index the user sees."""

    detection: DetectedFace
    face_index: int

    @property
    def box(self) -> np.ndarray:
        return self.detection.box


def locate_faces_report(
    image_rgb_uint8: np.ndarray,
    detector: FaceDetector,
    crop_size: int = 512,
    selection: Optional[FaceSelection] = None,
    image_index: int = 0,
    similarity_fn: Optional[SimilarityFn] = None,
    detections: Optional[Sequence[DetectedFace]] = None,
) -> LocateReport:
    """locate_faces, also returning the faces that were not selected and why. detections: the
    image's detections when they were found already (a batched detector), else the detector runs."""
    found = detections if detections is not None else detector.detect(image_rgb_uint8)
    ordered = sort_left_to_right(found)
    return _select_and_align(
        image_rgb_uint8, ordered, range(len(ordered)), crop_size, selection, image_index,
        similarity_fn,
    )


def locate_faces(
    image_rgb_uint8: np.ndarray,
    detector: FaceDetector,
    crop_size: int = 512,
    selection: Optional[FaceSelection] = None,
    image_index: int = 0,
    similarity_fn: Optional[SimilarityFn] = None,
) -> list[AlignedFace]:
    """Detect, order left to right, select and align the faces of one image."""
    return locate_faces_report(
        image_rgb_uint8, detector, crop_size, selection, image_index, similarity_fn
    ).faces


# ----------------------------------------------------------------------------- video


def detect_all(images: Sequence[np.ndarray], detector: FaceDetector, workers: int = 1) -> Optional[list]:
    """Every image's detections, batched where the detector batches (detect_batch), side by side on
    `workers` threads where it is thread-safe; None: detect one image at a time, in order."""
    batch = getattr(detector, "detect_batch", None)
    if batch is not None and len(images) > 1:
        return list(batch(images))
    if workers > 1 and getattr(detector, "thread_safe", False):
        return _THREADS.map(detector.detect, images, workers)
    return None


@dataclass
class _Track:
    index: int
    box: np.ndarray
    last_seen: int


def locate_faces_batch(
    frames: Sequence[np.ndarray],
    detector: FaceDetector,
    crop_size: int = 512,
    selection: Optional[FaceSelection] = None,
    track: bool = True,
    track_config: Optional[TrackConfig] = None,
    similarity_fn: Optional[SimilarityFn] = None,
    workers: int = 1,
) -> list[list[AlignedFace]]:
    """Faces for each frame; image_index is the frame number.

    track=False: face_index is the left-to-right rank in each frame. track=True: the first
    frame's faces are numbered left to right; later faces inherit the index of the face they
    match in recent frames, and new faces get the next free numbers, left to right.
    A detector with detect_batch (one on the GPU) detects all frames in batches first; else with
    workers > 1 and a thread-safe detector (a DetectorPool) the frames are detected side by side
    first; tracking and alignment then follow the frames in order, so results are the same.
    """
    cfg = track_config or TrackConfig()
    tracks: list[_Track] = []
    next_index = 0
    out: list[list[AlignedFace]] = []
    found = detect_all(frames, detector, workers)
    for frame_no, frame in enumerate(frames):
        ordered = sort_left_to_right(found[frame_no] if found is not None else detector.detect(frame))
        if not track:
            indices = list(range(len(ordered)))
        else:
            tracks = [t for t in tracks if frame_no - t.last_seen <= cfg.max_gap]
            boxes = np.array([d.box for d in ordered], dtype=np.float64).reshape(-1, 4)
            matches = match_to_tracks(boxes, tracks, cfg)
            indices = []
            for pos, det in enumerate(ordered):
                if pos in matches:
                    trk = tracks[matches[pos]]
                    trk.box, trk.last_seen = np.asarray(det.box, dtype=np.float64), frame_no
                    indices.append(trk.index)
                else:
                    tracks.append(_Track(next_index, np.asarray(det.box, dtype=np.float64), frame_no))
                    indices.append(next_index)
                    next_index += 1
        report = _select_and_align(
            frame, ordered, indices, crop_size, selection, frame_no, similarity_fn
        )
        out.append(sorted(report.faces, key=lambda f: f.face_index))
    return out


# ----------------------------------------------------------------------------- full-depth crops


def rgb_float(pixels: np.ndarray) -> np.ndarray:
    """Any image layout -> HxWx3 float32 0..1 (alpha dropped, gray repeated)."""
    from ..io.imageio import to_float01

    arr = np.asarray(pixels)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[..., :3]
    arr = to_float01(arr)
    return np.repeat(arr[..., None], 3, axis=2) if arr.ndim == 2 else arr


def recut_full_depth(pixels: np.ndarray, faces: Sequence[AlignedFace], always: bool = False) -> list[AlignedFace]:
    """The faces cut again at their detections from the image's own pixels (16-bit, float, gray or
    alpha images): detection and selection saw an 8-bit RGB copy. 8-bit RGB images keep their
    crops unless ``always`` (the detections changed, e.g. smoothed over frames)."""
    arr = np.asarray(pixels)
    if not faces or (not always and arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[2] == 3):
        return list(faces)
    rgb = rgb_float(arr)
    out = []
    for f in faces:
        new = align_face(rgb, f.detection, f.crop_size, f.image_index, f.face_index)
        new.info.update(f.info)
        out.append(new)
    return out


def locate_in_images(
    images: Sequence[np.ndarray],
    detector: FaceDetector,
    crop_size: int = 512,
    selection: Optional[FaceSelection] = None,
    track: bool = True,
    similarity_fn: Optional[SimilarityFn] = None,
    smoothing=None,
    workers: int = 1,
) -> list[list[AlignedFace]]:
    """locate_faces_batch on images of any depth and layout: detected on 8-bit RGB copies,
    cropped from the full-depth pixels (recut_full_depth). smoothing: a
    restorer_core.faces.temporal.SmoothingConfig when the images are consecutive frames of a clip: each
    tracked face is aligned at its landmarks smoothed over the frames. workers: see locate_faces_batch."""
    from ..io.imageio import to_rgb8

    arrays = [np.asarray(im) for im in images]
    rgb8 = _THREADS.map(to_rgb8, arrays, workers)  # per-frame conversions side by side too
    found = locate_faces_batch(rgb8, detector, crop_size, selection, track,
                               similarity_fn=similarity_fn, workers=workers)
    if smoothing is not None:
        from .temporal import smooth_frames

        found = smooth_frames(found, smoothing, use_face_index=track)
    always = smoothing is not None
    return _THREADS.map(lambda pair: recut_full_depth(pair[0], pair[1], always=always), list(zip(arrays, found)),
                        workers)
