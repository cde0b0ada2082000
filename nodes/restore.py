"""One-Step Restore (FACES -> restored FACES) and Restore Faces (IMAGE -> restored IMAGE, all in one)."""

from __future__ import annotations

from typing import Any, Optional

from ..restorer_core.paste import PasteConfig
from ..restorer_core.pipeline import RestoreOptions
from . import comfy_bridge as cb
from . import ops
from .detect import detector_inputs, selection_inputs
from .paste import paste_inputs
from .similarity import similarity_fn
from .types import FACE_RESTORER, FACES, REF_BANK, FaceRestorerHandle, FaceSet

CATEGORY = "face restore/one-step"


def restore_inputs() -> dict:
    return {
        "mode": (list(ops.MODES), {"default": "auto",
                 "tooltip": "auto: references when a bank is connected and the model was trained with "
                            "them, plus the visual prompt when the model has one. references / "
                            "visual_prompt / both / none force a conditioning."}),
        "max_refs": ("INT", {"default": 4, "min": 1, "max": 16,
                     "tooltip": "Reference faces used from the bank (the largest ones)."}),
        "strength": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.05,
                     "tooltip": "0 keeps the input face, 1 uses the restored face."}),
        "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": True,
                 "tooltip": "Noise seed for restorers that sample noise (set the control to fixed for "
                            "repeatable results)."}),
        "batch_size": ("INT", {"default": 8, "min": 1, "max": 64,
                       "tooltip": "Faces restored per forward pass (lower it on out-of-memory errors)."}),
    }


def make_options(mode: str, max_refs: int, strength: float, seed: int, batch_size: int,
                 paste: Optional[PasteConfig] = None) -> RestoreOptions:
    opts = RestoreOptions(mode=mode, max_refs=int(max_refs), strength=float(strength), seed=int(seed),
                          batch_size=int(batch_size), cache_dir=cb.cache_dir())
    if paste is not None:
        opts.paste = paste
    return opts


class OneStepRestore:
    """Restores detected faces in one network pass each, optionally guided by a reference bank."""

    CATEGORY = CATEGORY
    FUNCTION = "restore"
    RETURN_TYPES = (FACES, "IMAGE", "STRING")
    RETURN_NAMES = ("faces", "restored_crops", "report")
    DESCRIPTION = ("Restore the faces from Detect Faces. With a reference bank the restorer borrows detail "
                   "from the person's reference photos (its keys/values are computed once and cached).")

    @classmethod
    def INPUT_TYPES(cls):
        required = {"restorer": (FACE_RESTORER,), "faces": (FACES,)}
        required.update(restore_inputs())
        return {"required": required, "optional": {"reference_bank": (REF_BANK,)}}

    def restore(self, restorer: FaceRestorerHandle, faces: FaceSet, mode: str, max_refs: int,
                strength: float, seed: int, batch_size: int, reference_bank: Optional[Any] = None):
        options = make_options(mode, max_refs, strength, seed, batch_size)
        out, lines = ops.restore(restorer, faces, reference_bank, options)
        return (out, out.crops_tensor(restored=True), "\n".join(lines))


class RestoreFaces:
    """Detect, restore and paste back in one node (same steps as the three split nodes)."""

    CATEGORY = CATEGORY
    FUNCTION = "run"
    RETURN_TYPES = ("IMAGE", "MASK", "STRING")
    RETURN_NAMES = ("image", "mask", "report")
    DESCRIPTION = ("Restore every selected face of an image batch and paste it back. Images without a "
                   "face pass through unchanged.")

    @classmethod
    def INPUT_TYPES(cls):
        required = {"image": ("IMAGE",), "restorer": (FACE_RESTORER,)}
        required.update(restore_inputs())
        required.update(detector_inputs())
        required.update(selection_inputs())
        required.update(paste_inputs())
        return {"required": required, "optional": {"reference_bank": (REF_BANK,)}}

    def run(self, image, restorer: FaceRestorerHandle, mode: str, max_refs: int, strength: float, seed: int,
            batch_size: int, detector: str, detector_model: str, threshold: float, selection: str,
            max_faces: int, face_indices: str, min_face_size: int, similarity_threshold: float,
            color_fix: str, mask_shape: str, feather: float, erosion: float,
            reference_bank: Optional[Any] = None):
        options = make_options(mode, max_refs, strength, seed, batch_size)
        paste_cfg = PasteConfig(mask=mask_shape, erosion=float(erosion), feather=float(feather), color_fix=color_fix)
        det = ops.get_detector(detector, detector_model, threshold)
        sel = ops.make_selection(selection, max_faces, face_indices, min_face_size, similarity_threshold)
        sim = similarity_fn(reference_bank) if selection == "similar" else None
        crop_size = max(restorer.resolution, 512)  # as Detect Faces' default: paste-back at >= 512 px
        faces = ops.detect(image, det, sel, crop_size, track=True, similarity_fn=sim)
        lines = ops.describe_faces(faces)
        restored, restore_lines = ops.restore(restorer, faces, reference_bank, options)
        out, mask, paste_lines = ops.paste(image, restored, paste_cfg)
        report = "\n".join(lines + restore_lines + paste_lines)
        return (out, mask, report)
