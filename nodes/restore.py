"""One-Step Restore (FACES -> restored FACES) and Restore Faces (IMAGE -> restored IMAGE, all in one)."""

from __future__ import annotations

from typing import Any, Optional

from ..restorer_core.detail import AUTO
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
                     "tooltip": "0 keeps the input face, 1 uses the restored face. Used when auto_strength "
                                "is off; with it on, each face gets its own strength."}),
        "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": True,
                 "tooltip": "Noise seed for restorers that sample noise (set the control to fixed for "
                            "repeatable results)."}),
        "batch_size": ("INT", {"default": 8, "min": 1, "max": 64,
                       "tooltip": "Faces restored per forward pass (lower it on out-of-memory errors)."}),
    }


def optional_restore_inputs() -> dict:
    """Optional widgets (after the required ones, so saved workflows keep their widget order)."""
    return {"auto_strength": ("BOOLEAN", {"default": True, "label_on": "auto (do no harm)", "label_off": "manual",
                              "tooltip": "On (default): each face's strength comes from the detail it already "
                                         "has at the restorer's resolution: sharp or large faces are left "
                                         "almost (or exactly) as they are, blurred or small ones are fully "
                                         "restored; the report lists each face's strength. Off: the strength "
                                         "value is used for every face."})}


def make_options(mode: str, max_refs: int, strength: float, seed: int, batch_size: int,
                 paste: Optional[PasteConfig] = None, auto_strength: bool = True) -> RestoreOptions:
    opts = RestoreOptions(mode=mode, max_refs=int(max_refs), strength=AUTO if auto_strength else float(strength),
                          seed=int(seed), batch_size=int(batch_size), cache_dir=cb.cache_dir())
    if paste is not None:
        opts.paste = paste
    return opts


def strength_lines(faces: FaceSet) -> list:
    """One report line with the strength each restored face got (and why, for auto)."""
    parts = []
    for f in faces.faces:
        s = f.info.get("strength")
        if s is None:
            continue
        d = f.info.get("detail")
        why = f" (detail {d['detail']:.2f}, {d['native_px']:.0f} px)" if d else ""
        parts.append(f"face {f.image_index}/{f.face_index}: {s:.2f}{why}")
    return ["strength per face (image/face): " + ", ".join(parts)] if parts else []


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
        return {"required": required, "optional": {"reference_bank": (REF_BANK,), **optional_restore_inputs()}}

    def restore(self, restorer: FaceRestorerHandle, faces: FaceSet, mode: str, max_refs: int,
                strength: float, seed: int, batch_size: int, reference_bank: Optional[Any] = None,
                auto_strength: bool = True):
        options = make_options(mode, max_refs, strength, seed, batch_size, auto_strength=auto_strength)
        out, lines = ops.restore(restorer, faces, reference_bank, options)
        lines = lines + strength_lines(out)
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
        return {"required": required, "optional": {"reference_bank": (REF_BANK,), **optional_restore_inputs()}}

    def run(self, image, restorer: FaceRestorerHandle, mode: str, max_refs: int, strength: float, seed: int,
            batch_size: int, detector: str, detector_model: str, threshold: float, selection: str,
            max_faces: int, face_indices: str, min_face_size: int, similarity_threshold: float,
            color_fix: str, mask_shape: str, feather: float, erosion: float,
            reference_bank: Optional[Any] = None, auto_strength: bool = True):
        options = make_options(mode, max_refs, strength, seed, batch_size, auto_strength=auto_strength)
        paste_cfg = PasteConfig(mask=mask_shape, erosion=float(erosion), feather=float(feather), color_fix=color_fix)
        det = ops.get_detector(detector, detector_model, threshold)
        sel = ops.make_selection(selection, max_faces, face_indices, min_face_size, similarity_threshold)
        sim = similarity_fn(reference_bank) if selection == "similar" else None
        crop_size = max(restorer.resolution, 512)  # as Detect Faces' default: paste-back at >= 512 px
        faces = ops.detect(image, det, sel, crop_size, track=True, similarity_fn=sim)
        lines = ops.describe_faces(faces)
        restored, restore_lines = ops.restore(restorer, faces, reference_bank, options)
        out, mask, paste_lines = ops.paste(image, restored, paste_cfg)
        report = "\n".join(lines + restore_lines + strength_lines(restored) + paste_lines)
        return (out, mask, report)
