"""The JSON run report: per image, which faces were found, restored or skipped (and why),
timings and the output path; per run, the settings, model, reference bank and totals."""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

from .atomic import write_text_atomic

REPORT_FORMAT = "onestep-face-restore/report/1"

# image statuses
RESTORED = "restored"      # at least one face restored and pasted back
UNCHANGED = "unchanged"    # no face restored (none found, selected, or all kept): copied through as is
FAILED = "failed"          # could not be read, restored or written
CANCELLED = "cancelled"    # the run stopped before this image was written
DONE = "done"              # an earlier run already wrote this input's output (resume); kept as is
PENDING = "pending"

# face statuses besides "restored" and "skipped"
KEPT = "kept"              # left exactly as it was: strength 0 (automatic: already sharp), not pasted


def _round(value: Optional[float], digits: int = 4) -> Optional[float]:
    return None if value is None else round(float(value), digits)


@dataclass
class FaceRecord:
    """One detected face: left-to-right index, box [x0, y0, x1, y1], detector score, size in
    px, status ("restored" | "kept" | "skipped"), the reason when kept or skipped, and identity similarity to
    the reference bank before/after restoration when an identity embedder is available, and the
    restoration strength used (the automatic one, or the manual value)."""

    index: int
    box: list
    score: float
    size: float
    status: str = "pending"
    reason: str = ""
    similarity_before: Optional[float] = None
    similarity_after: Optional[float] = None
    strength: Optional[float] = None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["box"] = [round(float(v), 1) for v in self.box]
        d["score"] = _round(self.score)
        d["size"] = round(float(self.size), 1)
        d["similarity_before"] = _round(self.similarity_before)
        d["similarity_after"] = _round(self.similarity_after)
        d["strength"] = _round(self.strength, 3)
        return d


@dataclass
class ImageRecord:
    """One input image and what happened to it. timings: seconds per stage."""

    input: str
    output: Optional[str] = None
    status: str = PENDING
    width: int = 0
    height: int = 0
    faces: list = field(default_factory=list)
    error: str = ""
    note: str = ""
    timings: dict = field(default_factory=dict)
    saved_faces: list = field(default_factory=list)
    input_sha256: str = ""
    rotation: int = 0  # degrees the image was turned (counter-clockwise) for detection

    @property
    def faces_found(self) -> int:
        return len(self.faces)

    @property
    def faces_restored(self) -> int:
        return sum(1 for f in self.faces if f.status == "restored")

    @property
    def faces_kept(self) -> int:
        return sum(1 for f in self.faces if f.status == KEPT)

    @property
    def faces_skipped(self) -> int:
        return sum(1 for f in self.faces if f.status == "skipped")

    def add_time(self, stage: str, seconds: float) -> None:
        self.timings[stage] = self.timings.get(stage, 0.0) + float(seconds)

    def to_dict(self) -> dict:
        return {
            "input": self.input,
            "output": self.output,
            "status": self.status,
            "width": self.width,
            "height": self.height,
            "faces_found": self.faces_found,
            "faces_restored": self.faces_restored,
            "faces_kept": self.faces_kept,
            "faces_skipped": self.faces_skipped,
            "faces": [f.to_dict() for f in sorted(self.faces, key=lambda f: f.index)],
            "error": self.error,
            "note": self.note,
            "timings": {k: round(v, 4) for k, v in self.timings.items()},
            "saved_faces": list(self.saved_faces),
            "input_sha256": self.input_sha256,
            "rotation": self.rotation,
        }


@dataclass
class RunReport:
    """A whole run: status "ok" | "failed" (some image failed) | "cancelled" | "running"."""

    command: str = "restore"
    settings: dict = field(default_factory=dict)
    model: dict = field(default_factory=dict)
    bank: Optional[dict] = None
    reference_cache: Optional[dict] = None
    identity: dict = field(default_factory=dict)
    images: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    skipped_inputs: list = field(default_factory=list)  # {"input", "reason"}: files not taken as inputs
    settings_digest: str = ""
    status: str = "running"
    started: float = field(default_factory=time.time)
    finished: Optional[float] = None

    def totals(self) -> dict:
        by_status: dict = {}
        for im in self.images:
            by_status[im.status] = by_status.get(im.status, 0) + 1
        return {
            "images": len(self.images),
            "images_restored": by_status.get(RESTORED, 0),
            "images_unchanged": by_status.get(UNCHANGED, 0),
            "images_failed": by_status.get(FAILED, 0),
            "images_cancelled": by_status.get(CANCELLED, 0),
            "images_done_before": by_status.get(DONE, 0),
            "faces_found": sum(im.faces_found for im in self.images),
            "faces_restored": sum(im.faces_restored for im in self.images),
            "faces_kept": sum(im.faces_kept for im in self.images),
            "faces_skipped": sum(im.faces_skipped for im in self.images),
            "seconds": round((self.finished or time.time()) - self.started, 3),
        }

    def note(self, line: str) -> None:
        """Add a run-level note once."""
        if line not in self.notes:
            self.notes.append(line)

    def finish(self, status: Optional[str] = None) -> None:
        """Set the final status (from the images unless given) and the end time."""
        if status is None:
            status = "failed" if any(im.status == FAILED for im in self.images) else "ok"
        self.status = status
        self.finished = time.time()

    def to_dict(self) -> dict:
        return {
            "format": REPORT_FORMAT,
            "command": self.command,
            "status": self.status,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(self.started)),
            "finished": (time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(self.finished))
                         if self.finished else None),
            "settings": self.settings,
            "settings_digest": self.settings_digest,
            "model": self.model,
            "bank": self.bank,
            "reference_cache": self.reference_cache,
            "identity": self.identity,
            "totals": self.totals(),
            "notes": list(self.notes),
            "skipped_inputs": list(self.skipped_inputs),
            "images": [im.to_dict() for im in self.images],
        }


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):  # numpy / torch scalars
        return value.item()
    if isinstance(value, (set, tuple)):
        return list(value)
    return str(value)


def write_report(report: Union[RunReport, dict], path: Union[str, os.PathLike], overwrite: bool = False) -> Path:
    """Write the report as JSON atomically; refuses to replace an existing file unless asked."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; choose another report name")
    data = report.to_dict() if isinstance(report, RunReport) else report
    return write_text_atomic(path, json.dumps(data, indent=2, default=_jsonable) + "\n", overwrite)
