"""Temporal smoothing of the 5-point landmarks of tracked faces across video frames.

Restored faces flicker and jitter from frame to frame because each frame's face is aligned from
that frame's landmarks, and detector landmarks wobble by a pixel or two even on a still face.
Here every face is followed from frame to frame (by position and size, or by the tracker's face
numbers when the caller has them) and its landmarks pass through a One-Euro filter (Casiez et
al., CHI 2012): a low-pass filter whose cut-off rises with the speed of the face, so a still face
is held steady and a moving one is followed without lag. A filter starts afresh on a new face,
after a gap, and on a cut (the landmarks jump or the face changes size more than real motion).

Speeds and jumps are measured in face sizes per frame, so the same settings work for a 40 px and
a 400 px face. Alignment then uses the smoothed landmarks; boxes move with them.

The same tracks carry each face's automatic strength (restorer_core.restore.detail) over the frames: a
face whose detail sits near the thresholds would otherwise flip between kept (its input pixels)
and restored from one frame to the next. A higher strength is taken at once, a lower one is
followed slowly, and a restored face is kept again only after several frames that read sharp
(StrengthSmoothing); a new face, a gap or a cut starts afresh. Manual strengths are never changed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Hashable, Optional, Sequence

import numpy as np

from .align import align_face
from .records import AlignedFace, DetectedFace
from .tracks import TrackConfig, match_to_tracks


@dataclass(frozen=True)
class StrengthSmoothing:
    """How a tracked face's automatic strength follows its per-frame value over a clip.

    A higher per-frame strength is taken at once (a face that blurs is restored on that frame); a
    lower one is followed by at most `fall` per frame; a restored face is kept again (strength 0)
    only after `keep_after` frames in a row whose own strength is 0, holding its last strength
    until then. fall=1 with keep_after=0 leaves the per-frame strengths as they are. Lives here,
    not in detail.DetailConfig, because it is about tracks, cuts and frame order, which only this
    module knows; restore/detail.py decides one image's strength.
    """

    fall: float = 0.1
    keep_after: int = 6

    def __post_init__(self) -> None:
        if not 0.0 < self.fall <= 1.0 or self.keep_after < 0:
            raise ValueError(f"need 0 < fall <= 1 and keep_after >= 0, got fall={self.fall}, "
                             f"keep_after={self.keep_after}")


@dataclass(frozen=True)
class SmoothingConfig:
    """One-Euro filter settings, per frame (no frame rate needed).

    min_cutoff: cut-off frequency (cycles per frame) of a still face: lower = steadier, more lag
    on slow motion. beta: how fast the cut-off rises with speed (face sizes per frame): higher =
    follows motion sooner. d_cutoff: cut-off of the speed estimate. cut_jump: a landmark jump
    (mean distance, in face sizes) from the last smoothed position that starts the filter
    afresh; cut_scale: the same for a change of face size (|log ratio|). max_gap: frames a face
    may be missing and keep its filter. track: matching faces frame to frame when the caller
    gives no face numbers. strength: how automatic strengths follow each track (StrengthSmoothing).
    """

    min_cutoff: float = 0.02
    beta: float = 2.0
    d_cutoff: float = 0.1
    cut_jump: float = 0.35
    cut_scale: float = 0.3
    max_gap: int = 1
    track: TrackConfig = field(default_factory=TrackConfig)
    strength: StrengthSmoothing = field(default_factory=StrengthSmoothing)

    def __post_init__(self) -> None:
        if self.min_cutoff <= 0 or self.d_cutoff <= 0 or self.beta < 0:
            raise ValueError("min_cutoff and d_cutoff must be > 0 and beta >= 0")
        if self.cut_jump <= 0 or self.cut_scale <= 0 or self.max_gap < 0:
            raise ValueError("cut_jump and cut_scale must be > 0 and max_gap >= 0")


def smoothing_factor(cutoff: float) -> float:
    """Exponential smoothing weight of a new sample for a cut-off in cycles per frame."""
    r = 2.0 * math.pi * cutoff
    return r / (r + 1.0)


def face_scale(landmarks: np.ndarray) -> float:
    """A face size from its 5 landmarks (eye distance and eyes-to-mouth distance, averaged):
    steadier than the detector's box, and independent of the face's position."""
    pts = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
    eyes = float(np.linalg.norm(pts[1] - pts[0]))
    eyes_mouth = float(np.linalg.norm((pts[0] + pts[1]) / 2 - (pts[3] + pts[4]) / 2))
    return max((eyes + eyes_mouth) / 2.0, 1e-3)


class OneEuroFilter:
    """One-Euro filter on a landmark set [5, 2]; one cut-off for all points, from the face's
    mean landmark speed, so the set moves as one shape."""

    def __init__(self, config: SmoothingConfig, landmarks: np.ndarray):
        self.config = config
        self.value = np.asarray(landmarks, dtype=np.float64).copy()
        self.speed = np.zeros_like(self.value)

    def __call__(self, landmarks: np.ndarray) -> np.ndarray:
        x = np.asarray(landmarks, dtype=np.float64)
        scale = face_scale(x)
        a_d = smoothing_factor(self.config.d_cutoff)
        self.speed = a_d * (x - self.value) + (1.0 - a_d) * self.speed
        speed = float(np.linalg.norm(self.speed, axis=1).mean()) / scale
        a = smoothing_factor(self.config.min_cutoff + self.config.beta * speed)
        self.value = a * x + (1.0 - a) * self.value
        return self.value.copy()


def is_cut(previous: np.ndarray, landmarks: np.ndarray, config: SmoothingConfig) -> bool:
    """True when a face moved or resized more than real motion between two frames."""
    prev_scale, scale = face_scale(previous), face_scale(landmarks)
    jump = float(np.linalg.norm(np.asarray(landmarks) - np.asarray(previous), axis=1).mean()) / prev_scale
    return jump > config.cut_jump or abs(math.log(scale / prev_scale)) > config.cut_scale


@dataclass(frozen=True)
class StrengthState:
    """A track's automatic strength after a frame, and how many frames in a row read strength 0."""

    value: float
    zeros: int


def next_strength(previous: Optional[StrengthState], strength: float,
                  config: StrengthSmoothing) -> StrengthState:
    """A track's state after a frame whose own automatic strength is `strength` (previous None: the
    track starts here): rise at once, fall by at most config.fall, reach 0 only after
    config.keep_after frames in a row at 0 (StrengthSmoothing)."""
    s = float(strength)
    zeros = ((previous.zeros if previous is not None else 0) + 1) if s <= 0.0 else 0
    if previous is None or s >= previous.value:
        return StrengthState(s, zeros)
    value = max(s, previous.value - config.fall)
    if value <= 0.0 and zeros < config.keep_after:
        value = previous.value  # restored until it has read sharp for keep_after frames
    return StrengthState(value, zeros)


TRACK = "track"  # AlignedFace.info key of a face's FrameTrack


@dataclass(frozen=True)
class FrameTrack:
    """Which track a face of a frame belongs to: its key, the smoother's frame number, and
    whether its track started afresh on this frame (a new face, after a gap, or a cut)."""

    key: Hashable
    frame: int
    start: bool


class StrengthSmoother:
    """Automatic strengths of tracked faces over frames (StrengthSmoothing); faces must come in
    frame order. A frame given again (same frame number) is decided again from the state before it."""

    def __init__(self, config: Optional[StrengthSmoothing] = None, max_gap: int = 1):
        self.config = config or StrengthSmoothing()
        self.max_gap = max_gap
        self._tracks: dict = {}  # key -> (frame, state before it, state after it)

    def __call__(self, track: FrameTrack, strength: float) -> float:
        entry = self._tracks.get(track.key)
        if entry is not None and entry[0] == track.frame:
            previous = entry[1]
        elif entry is None or track.start or entry[0] > track.frame:
            previous = None
        else:
            previous = entry[2]
        state = next_strength(previous, strength, self.config)
        self._tracks[track.key] = (track.frame, previous, state)
        horizon = track.frame - self.max_gap - 1  # an older track can only come back afresh
        self._tracks = {k: e for k, e in self._tracks.items() if e[0] >= horizon}
        return state.value

    def follow(self, face: AlignedFace, strength: float) -> float:
        """The strength for a face: followed over its track when it carries one (info[TRACK])."""
        track = face.info.get(TRACK)
        return strength if track is None else self(track, strength)


def strength_smoother(temporal: Optional["LandmarkSmoother"],
                      faces: Sequence[AlignedFace]) -> Optional[StrengthSmoother]:
    """The smoother for these faces' automatic strengths: the LandmarkSmoother's own (its state
    carries over between calls), else a fresh one with the default StrengthSmoothing when the
    faces were tracked by smooth_frames (a whole clip in one call); None when no face is tracked
    (strengths stay per image)."""
    if temporal is not None:
        return temporal.strengths
    if any(TRACK in f.info for f in faces):
        return StrengthSmoother()
    return None


@dataclass
class _Track:
    key: Hashable
    box: np.ndarray
    last_frame: int
    filter: OneEuroFilter


def smoothed_detection(detection: DetectedFace, landmarks: np.ndarray) -> DetectedFace:
    """The detection with new landmarks; its box moves by the landmarks' mean shift."""
    shift = (np.asarray(landmarks) - np.asarray(detection.landmarks, dtype=np.float64)).mean(axis=0)
    box = np.asarray(detection.box, dtype=np.float64) + np.tile(shift, 2)
    return DetectedFace(box=box.astype(np.asarray(detection.box).dtype), score=detection.score,
                        landmarks=np.asarray(landmarks, dtype=np.asarray(detection.landmarks).dtype))


class LandmarkSmoother:
    """Smooths the landmarks of every face over consecutive frames (call once per frame, in order).

    State carries over between calls, so frames can come in chunks. A frame seen again (same
    `frame_key`) gets the same result instead of counting as a new frame.
    """

    def __init__(self, config: Optional[SmoothingConfig] = None):
        self.config = config or SmoothingConfig()
        self.frame = -1
        self.tracks: dict = {}
        self._next_key = 0
        self._seen: dict = {}
        self.resets = 0  # filters started afresh on a cut (for reports and tests)
        self.strengths = StrengthSmoother(self.config.strength, self.config.max_gap)

    def smooth(self, detections: Sequence[DetectedFace], keys: Optional[Sequence[Hashable]] = None,
               frame_key: Optional[Hashable] = None) -> list[DetectedFace]:
        """Smoothed detections of one frame, in the given order. keys: the faces' track ids
        (e.g. face numbers from locate's tracking); without them, faces are matched to the last
        frames' faces by position and size."""
        return self.smooth_tracked(detections, keys, frame_key)[0]

    def smooth_tracked(self, detections: Sequence[DetectedFace], keys: Optional[Sequence[Hashable]] = None,
                       frame_key: Optional[Hashable] = None) -> tuple:
        """(smoothed detections, their FrameTracks) of one frame, as `smooth`."""
        if frame_key is not None and frame_key in self._seen:
            out, tracks = self._seen[frame_key]
            return list(out), list(tracks)
        self.frame += 1
        cfg = self.config
        live = {k: t for k, t in self.tracks.items() if self.frame - t.last_frame <= cfg.max_gap + 1}
        self.tracks = live
        if keys is None:
            keys = self._match(detections)
        out, tags = [], []
        for det, key in zip(detections, keys):
            lm = np.asarray(det.landmarks, dtype=np.float64)
            track = self.tracks.get(key)
            fresh = track is None or self.frame - track.last_frame > cfg.max_gap + 1
            if not fresh and is_cut(track.filter.value, lm, cfg):
                fresh = True
                self.resets += 1
            if fresh:
                track = _Track(key, np.asarray(det.box, dtype=np.float64), self.frame, OneEuroFilter(cfg, lm))
                self.tracks[key] = track
                out.append(det)
                tags.append(FrameTrack(key, self.frame, True))
                continue
            new = smoothed_detection(det, track.filter(lm))
            track.box, track.last_frame = np.asarray(det.box, dtype=np.float64), self.frame
            out.append(new)
            tags.append(FrameTrack(key, self.frame, False))
        if frame_key is not None:
            self._seen = {frame_key: (list(out), list(tags))}  # only the last frame can come again (a retry)
        return out, tags

    def _match(self, detections: Sequence[DetectedFace]) -> list:
        tracks = list(self.tracks.values())
        boxes = np.array([d.box for d in detections], dtype=np.float64).reshape(-1, 4)
        matches = match_to_tracks(boxes, tracks, self.config.track)
        keys = []
        for pos in range(len(detections)):
            if pos in matches:
                keys.append(tracks[matches[pos]].key)
            else:
                keys.append(("new", self._next_key))
                self._next_key += 1
        return keys

    def realign(self, faces: Sequence[AlignedFace], image_rgb: np.ndarray, keys: Optional[Sequence] = None,
                frame_key: Optional[Hashable] = None) -> list[AlignedFace]:
        """Aligned faces of one frame re-cut from `image_rgb` (HxWx3, the pixels they came from)
        at their smoothed landmarks; same order, crop sizes and indices. Each carries its
        FrameTrack in info[TRACK] (for the automatic strength, see `strengths`)."""
        smoothed, tags = self.smooth_tracked([f.detection for f in faces], keys, frame_key)
        out = []
        for face, det, tag in zip(faces, smoothed, tags):
            if det is face.detection:
                new = replace(face, info=dict(face.info))
            else:
                new = align_face(image_rgb, det, face.crop_size, face.image_index, face.face_index)
                new.info.update(face.info)
            new.info[TRACK] = tag
            out.append(new)
        return out


def frame_order(paths: Sequence) -> list:
    """Frame files in playing order: by folder as given, then by name with the numbers in it
    compared as numbers (frame_2 before frame_10)."""
    import re
    from pathlib import Path

    folders: dict = {}
    for p in paths:
        folders.setdefault(str(Path(p).parent), len(folders))

    def key(p):
        parts = re.split(r"(\d+)", Path(p).name)
        return (folders[str(Path(p).parent)], [int(t) if t.isdigit() else t.lower() for t in parts])

    return sorted(paths, key=key)


def smooth_frames(frames_faces: Sequence[Sequence[AlignedFace]], config: Optional[SmoothingConfig] = None,
                  use_face_index: bool = True) -> list[list[AlignedFace]]:
    """Faces of consecutive frames with smoothed detections (not re-cut: callers align them).

    use_face_index: the faces carry tracked numbers (locate_faces_batch with track=True), which
    then identify each face's filter; else faces are matched by position and size. Each face
    carries its FrameTrack in info[TRACK], so that restoring the clip's faces in one call
    follows their automatic strengths over the frames (strength_smoother)."""
    smoother = LandmarkSmoother(config)
    out = []
    for faces in frames_faces:
        keys = [f.face_index for f in faces] if use_face_index else None
        dets, tags = smoother.smooth_tracked([f.detection for f in faces], keys)
        out.append([replace(f, detection=d, info={**f.info, TRACK: t}) for f, d, t in zip(faces, dets, tags)])
    return out
