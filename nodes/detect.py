"""Detect Faces: IMAGE batch -> FACES (aligned crops), a crops preview, a face mask, a report."""

from __future__ import annotations

from typing import Any, Optional

from . import comfy_bridge as cb
from . import ops
from .similarity import similarity_fn
from .types import FACES, REF_BANK

CATEGORY = "face restore/one-step"


def detector_inputs() -> dict:
    """Widgets shared by every node that detects faces."""
    return {
        "detector": (list(ops.DETECTORS), {"default": "yunet",
                     "tooltip": "yunet: shipped, CPU. scrfd: insightface .onnx from models/facedetection. "
                                "facexlib: RetinaFace, needs facexlib installed."}),
        "detector_model": ([ops.DEFAULT_DETECTOR_MODEL] + cb.list_models(cb.DETECTOR_FOLDER, cb.DETECTOR_EXTENSIONS),
                           {"default": ops.DEFAULT_DETECTOR_MODEL,
                            "tooltip": f"Detector weights from models/{cb.DETECTOR_FOLDER} (default: the "
                                       "detector's own; SCRFD needs one)."}),
        "threshold": ("FLOAT", {"default": 0.7, "min": 0.05, "max": 0.99, "step": 0.01,
                      "tooltip": "Minimum detector confidence."}),
    }


def selection_inputs() -> dict:
    return {
        "selection": (list(ops.SELECTIONS), {"default": "all",
                      "tooltip": "all faces; the largest N; the faces at given indices (left to right "
                                 "from 0); or those similar to the reference bank."}),
        "max_faces": ("INT", {"default": 0, "min": 0, "max": 256,
                      "tooltip": "largest / similar: keep at most this many (0: no limit; largest: 1)."}),
        "face_indices": ("STRING", {"default": "0", "multiline": False,
                         "tooltip": "index selection: e.g. 0 or 0,2 or 1-3 (faces numbered left to right)."}),
        "min_face_size": ("INT", {"default": 0, "min": 0, "max": 8192,
                          "tooltip": "Ignore faces smaller than this many pixels (any selection)."}),
        "similarity_threshold": ("FLOAT", {"default": 0.4, "min": -1.0, "max": 1.0, "step": 0.01,
                                 "tooltip": "similar: minimum identity similarity to the bank."}),
    }


class DetectFaces:
    """Finds, numbers and aligns the faces of an image batch (video frames keep face numbers)."""

    CATEGORY = CATEGORY
    FUNCTION = "detect"
    RETURN_TYPES = (FACES, "IMAGE", "MASK", "STRING")
    RETURN_NAMES = ("faces", "crops", "face_mask", "report")
    DESCRIPTION = ("Detect faces, choose which to restore, and align them. Faces are numbered left to "
                   "right; with track_faces the numbers follow each person across the frames of a batch.")

    @classmethod
    def INPUT_TYPES(cls):
        required = {"image": ("IMAGE",)}
        required.update(detector_inputs())
        required.update(selection_inputs())
        required["track_faces"] = ("BOOLEAN", {"default": True,
                                   "tooltip": "Keep each face's number from frame to frame (for clips)."})
        required["crop_size"] = ("INT", {"default": 512, "min": 64, "max": 2048, "step": 64,
                                 "tooltip": "Size the faces are aligned at (the restorer resizes to its own)."})
        return {"required": required, "optional": {"reference_bank": (REF_BANK,)}}

    def detect(self, image, detector: str, detector_model: str, threshold: float, selection: str,
               max_faces: int, face_indices: str, min_face_size: int, similarity_threshold: float,
               track_faces: bool, crop_size: int, reference_bank: Optional[Any] = None):
        det = ops.get_detector(detector, detector_model, threshold)
        sel = ops.make_selection(selection, max_faces, face_indices, min_face_size, similarity_threshold)
        sim = similarity_fn(reference_bank) if selection == "similar" else None
        faces = ops.detect(image, det, sel, int(crop_size), bool(track_faces), sim)
        lines = ops.describe_faces(faces)
        if not faces.faces:
            ops.log("no faces found: the images pass through unchanged.")
        return (faces, faces.crops_tensor(), ops.face_box_mask(faces), "\n".join(lines))
