"""Choosing which detected faces to restore, with a reason for every face left out.

Works on DetectedFace or AlignedFace lists that are already in left-to-right order; a face's
index is its `face_index` when it has one (AlignedFace), else its position in the list.
Identity similarity scores are computed elsewhere and passed in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np

SELECTION_MODES = ("all", "largest", "index", "min_size", "similar")


@dataclass(frozen=True)
class FaceSelection:
    """Which faces to keep.

    mode: "all" | "largest" (the `count` biggest) | "index" (the `indices`, left-to-right
    ranks from 0) | "min_size" (faces at least `min_size` px) | "similar" (similarity score
    >= `threshold`, best first, at most `count` if set; with `fallback_best` the best face is
    kept even below the threshold).
    min_size > 0 also drops smaller faces in every other mode.
    """

    mode: str = "all"
    count: Optional[int] = None
    indices: tuple[int, ...] = ()
    min_size: float = 0.0
    threshold: float = 0.4
    fallback_best: bool = False

    def __post_init__(self) -> None:
        if self.mode not in SELECTION_MODES:
            raise ValueError(f"selection mode must be one of {', '.join(SELECTION_MODES)}, got {self.mode!r}")
        if self.count is not None and self.count < 1:
            raise ValueError(f"count must be at least 1 (or None for no limit), got {self.count}")
        if self.min_size < 0:
            raise ValueError(f"min_size must be >= 0 px, got {self.min_size}")
        if any(i < 0 for i in self.indices):
            raise ValueError(f"face indices start at 0, got {self.indices}")
        if self.mode == "index" and not self.indices:
            raise ValueError("mode 'index' needs at least one index, e.g. indices=(0,)")
        object.__setattr__(self, "indices", tuple(int(i) for i in self.indices))


@dataclass
class SelectionResult:
    """kept: the chosen faces in input order; skipped: (face, reason) for the rest."""

    kept: list = field(default_factory=list)
    skipped: list = field(default_factory=list)
    missing_indices: tuple[int, ...] = ()

    @property
    def reasons(self) -> list[str]:
        return [reason for _, reason in self.skipped]


def face_size(face: Any) -> float:
    """Larger side of the face box in pixels (works for DetectedFace and AlignedFace)."""
    box = np.asarray(face.box, dtype=np.float64)
    return float(max(box[2] - box[0], box[3] - box[1]))


def _index_of(face: Any, position: int) -> int:
    return int(getattr(face, "face_index", position))


def select_faces(
    faces: Sequence[Any], selection: Optional[FaceSelection] = None,
    similarity: Optional[Sequence[float]] = None,
) -> SelectionResult:
    """Apply a FaceSelection. AlignedFaces also get info["skip_reason"] / info["similarity"]."""
    sel = selection or FaceSelection()
    faces = list(faces)
    if similarity is not None:
        similarity = [float(s) for s in similarity]
        if len(similarity) != len(faces):
            raise ValueError(f"got {len(similarity)} similarity scores for {len(faces)} faces")
    if sel.mode == "similar" and similarity is None:
        raise ValueError(
            "selection mode 'similar' needs similarity scores: connect a reference/identity "
            "embedder, or choose another mode."
        )
    reasons: dict[int, str] = {}
    candidates = list(range(len(faces)))

    if sel.min_size > 0:
        for pos in candidates:
            size = face_size(faces[pos])
            if size < sel.min_size:
                reasons[pos] = f"too small: {size:.0f} px < min_size {sel.min_size:.0f} px"
        candidates = [p for p in candidates if p not in reasons]

    missing: tuple[int, ...] = ()
    if sel.mode == "index":
        present = {_index_of(faces[p], p) for p in range(len(faces))}
        missing = tuple(i for i in sel.indices if i not in present)
        for pos in candidates:
            if _index_of(faces[pos], pos) not in sel.indices:
                reasons[pos] = f"index {_index_of(faces[pos], pos)} not in selected {list(sel.indices)}"
    elif sel.mode == "largest":
        count = sel.count or 1
        ranked = sorted(candidates, key=lambda p: -face_size(faces[p]))  # stable for ties
        for rank, pos in enumerate(ranked):
            if rank >= count:
                reasons[pos] = f"not among the {count} largest (rank {rank + 1} by size)"
    elif sel.mode == "similar":
        assert similarity is not None
        ranked = sorted(candidates, key=lambda p: -similarity[p])
        passing = [p for p in ranked if similarity[p] >= sel.threshold]
        if not passing and sel.fallback_best and ranked:
            passing = ranked[:1]
        limit = sel.count if sel.count is not None else len(passing)
        chosen = set(passing[:limit])
        for rank, pos in enumerate(ranked):
            if pos in chosen:
                continue
            if similarity[pos] < sel.threshold:
                reasons[pos] = f"similarity {similarity[pos]:.3f} < threshold {sel.threshold:.3f}"
            else:
                reasons[pos] = f"similar, but only the best {limit} are kept (rank {rank + 1})"

    result = SelectionResult(missing_indices=missing)
    for pos, face in enumerate(faces):
        info = getattr(face, "info", None)
        if isinstance(info, dict) and similarity is not None:
            info["similarity"] = similarity[pos]
        if pos in reasons:
            result.skipped.append((face, reasons[pos]))
            if isinstance(info, dict):
                info["skip_reason"] = reasons[pos]
        else:
            result.kept.append(face)
            if isinstance(info, dict):
                info.pop("skip_reason", None)
    return result


_RANGE = re.compile(r"^(\d+)\s*-\s*(\d+)$")


def parse_indices(text: str) -> tuple[int, ...]:
    """UI text -> sorted unique face indices: "0,2" -> (0, 2); "0-2" -> (0, 1, 2); "" -> ()."""
    out: set[int] = set()
    for part in str(text).replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        if part.isdigit():
            out.add(int(part))
            continue
        match = _RANGE.match(part)
        if not match:
            raise ValueError(
                f"cannot read face index '{part}'; use numbers from 0 separated by commas, "
                "with ranges like 1-3 (e.g. '0,2' or '0-2')."
            )
        lo, hi = int(match.group(1)), int(match.group(2))
        if hi < lo:
            raise ValueError(f"face index range '{part}' runs backwards; write it as {hi}-{lo}.")
        if hi - lo > 10000:
            raise ValueError(f"face index range '{part}' is too long.")
        out.update(range(lo, hi + 1))
    return tuple(sorted(out))
