"""Detect Faces: IMAGE batch -> FACES (aligned crops), a crops preview, a face mask, a report."""

from __future__ import annotations

from typing import Any, Optional

from . import comfy_bridge as cb
from . import ops
from ..restorer_core.faces.temporal import SmoothingConfig
from .identity_check import SELECTIONS, make_selection
from .spec import NodeSpec, Output
from .types import FACES, REF_BANK


def detector_inputs() -> dict:
    """Widgets shared by every node that detects faces."""
    return {
        "detector": (list(ops.DETECTORS), {"default": "yunet",
                     "tooltip": "Face detector. yunet (default): ships with the pack, fast on the CPU, "
                                "finds faces down to ~20 px. scrfd: an insightface .onnx you put in "
                                "models/facedetection (better on tiny or turned faces). facexlib: "
                                "RetinaFace, needs the facexlib package."}),
        "detector_model": ([ops.DEFAULT_DETECTOR_MODEL] + cb.list_models(cb.DETECTOR_FOLDER, cb.DETECTOR_EXTENSIONS),
                           {"default": ops.DEFAULT_DETECTOR_MODEL,
                            "tooltip": f"Weights for the detector from models/{cb.DETECTOR_FOLDER}. default: "
                                       "the detector's own (yunet ships with the pack). Pick a file only for "
                                       "scrfd (which needs one) or to try other weights."}),
        "threshold": ("FLOAT", {"default": 0.7, "min": 0.05, "max": 0.99, "step": 0.01,
                      "tooltip": "Minimum detector confidence (default 0.7). Lower it (0.5) when a blurry "
                                 "or small face is missed; raise it when hands or patterns are taken for "
                                 "faces."}),
    }


def selection_inputs() -> dict:
    return {
        "selection": (list(SELECTIONS), {"default": "all",
                      "tooltip": "Which faces to restore. all (default); largest: the max_faces biggest; "
                                 "index: the faces listed in face_indices (numbered left to right from "
                                 "0, see the report); similar: faces whose identity similarity to the "
                                 "connected reference bank is at least similarity_threshold; "
                                 "same_person: only the faces the identity network takes for the bank's "
                                 "person (its own threshold), so other people are left untouched."}),
        "max_faces": ("INT", {"default": 0, "min": 0, "max": 256,
                      "tooltip": "For largest and similar: keep at most this many faces (default 0: no "
                                 "limit; largest then keeps 1). Ignored by all and index."}),
        "face_indices": ("STRING", {"default": "0", "multiline": False,
                         "tooltip": "For index: the faces to restore, e.g. 0 or 0,2 or 1-3 (numbered left "
                                    "to right from 0; with track_faces a number follows its person through "
                                    "the frames). Default 0. Ignored by the other selections."}),
        "min_face_size": ("INT", {"default": 0, "min": 0, "max": 8192,
                          "tooltip": "Skip faces smaller than this many pixels (larger side of the face "
                                     "box), whatever the selection. Default 0: keep all. Set 24-40 to drop "
                                     "tiny background faces and false detections."}),
        "similarity_threshold": ("FLOAT", {"default": 0.4, "min": -1.0, "max": 1.0, "step": 0.01,
                                 "tooltip": "For similar: the minimum identity similarity (cosine, -1..1) "
                                            "to the reference bank (default 0.4; the shipped identity "
                                            "network calls two photos the same person above ~0.24). Lower "
                                            "it when the person is missed, raise it when others are kept."}),
    }


def smoothing_input() -> tuple:
    return ("BOOLEAN", {"default": False,
                        "tooltip": "For video frames (the batch is a clip, in order): align each face at "
                                   "its landmarks smoothed over the frames, so the restored face does not "
                                   "jitter. Follows real motion, starts afresh on a cut or a new face. "
                                   "With automatic strength, each face's strength also follows its track, "
                                   "so it does not flip between kept and restored from frame to frame. "
                                   "Default off (for unrelated images)."})


DESCRIPTION = ("Detect faces, choose which to restore, and align them onto the restorer's template. "
               "Faces are numbered left to right; with track_faces the numbers follow each person "
               "across the frames of a batch. Connect faces to One-Step Restore, and the same image "
               "to Paste Faces Back.")


def detect_inputs() -> dict:
    """Detect Faces' inputs."""
    required = {"image": ("IMAGE", {"tooltip": "The image, or a batch of images / video frames in "
                                               "order. Images without a face pass through."})}
    required.update(detector_inputs())
    required.update(selection_inputs())
    required["track_faces"] = ("BOOLEAN", {"default": True,
                               "tooltip": "On (default): a face keeps its number from frame to frame (matched by "
                                          "position and size), so index selection follows one person "
                                          "through a clip. Off: numbered left to right in each image "
                                          "(for unrelated images)."})
    required["crop_size"] = ("INT", {"default": 512, "min": 64, "max": 2048, "step": 64,
                             "tooltip": "Size the faces are cut at (default 512). The restorer works at its own "
                                        "size; larger crops keep the input's fine detail for paste-back. "
                                        "Lower it (256) to save memory on big batches."})
    return {"required": required, "optional": {
        "reference_bank": (REF_BANK, {"tooltip": "Optional: photos of the person, needed only by "
                                                 "selections similar and same_person."}),
        "smooth_landmarks": smoothing_input()}}


def detect_faces(image, detector: str, detector_model: str, threshold: float, selection: str,
                 max_faces: int, face_indices: str, min_face_size: int, similarity_threshold: float,
                 track_faces: bool, crop_size: int, reference_bank: Optional[Any] = None,
                 smooth_landmarks: bool = False) -> tuple:
    """Finds, numbers and aligns the faces of an image batch (video frames keep face numbers)."""
    det = ops.get_detector(detector, detector_model, threshold)
    sel, sim = make_selection(selection, max_faces, face_indices, min_face_size, similarity_threshold,
                              reference_bank)
    faces = ops.detect(image, det, sel, int(crop_size), bool(track_faces), sim,
                       smoothing=SmoothingConfig() if smooth_landmarks else None)
    lines = ops.describe_faces(faces)
    if not faces.faces:
        ops.log("no faces found: the images pass through unchanged.")
    return (faces, faces.crops_tensor(), ops.face_box_mask(faces), "\n".join(lines))


DETECT_FACES = NodeSpec(
    "OneStepDetectFaces", "Detect Faces (One-Step)", DESCRIPTION, detect_inputs,
    (Output(FACES, "faces", "The selected faces, aligned (for One-Step Restore and Face Similarity)."),
     Output("IMAGE", "crops", "The aligned face crops as an IMAGE batch (one black crop when no face was "
                              "found), to preview."),
     Output("MASK", "face_mask", "A MASK per image, 1 inside every selected face's detection box."),
     Output("STRING", "report", "Text: faces found per image with their number, size and score, and why "
                                "faces were skipped.")),
    detect_faces, "detect")
