"""One-Step Restore (FACES -> restored FACES) and Restore Faces (IMAGE -> restored IMAGE, all in one)."""

from __future__ import annotations

from typing import Any, Optional

from ..restorer_core.restore.detail import AUTO
from ..restorer_core.restore.identity_gate import NO_REFS_STRENGTH
from ..restorer_core.restore.paste import PasteConfig
from ..restorer_core.restore.pipeline import RestoreOptions
from . import comfy_bridge as cb
from . import ops
from ..restorer_core.faces.temporal import SmoothingConfig
from .detect import detector_inputs, selection_inputs, smoothing_input
from .paste import paste_inputs
from .identity_check import check_identity, make_selection
from .spec import NodeSpec, Output
from .types import FACE_RESTORER, FACES, REF_BANK, FaceRestorerHandle, FaceSet

BANK_TOOLTIP = {"tooltip": "Optional: photos of the person (Reference Bank). Connected, the restorer "
                           "borrows their detail and keeps the identity; leave it empty for faces of "
                           "unknown people."}


def restore_inputs() -> dict:
    return {
        "mode": (list(ops.MODES), {"default": "auto",
                 "tooltip": "What steers the restorer. auto (default): the reference bank when one "
                            "is connected, plus the visual prompt when the model has one. references: "
                            "only the bank (needs one). visual_prompt: only the prompt embedded from the "
                            "face itself (no bank). both: bank and prompt. none: neither (a plain "
                            "restorer)."}),
        "max_refs": ("INT", {"default": 4, "min": 1, "max": 16,
                     "tooltip": "How many reference faces of the bank steer each face (the largest "
                            "ones; default 4). More references keep the identity better but cost "
                            "time and memory on big models."}),
        "strength": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.05,
                     "tooltip": "Blend of input and restored face when auto_strength is off (1.0: the "
                                "restored face; 0 keeps the input). With auto_strength on, each face gets "
                                "its own strength."}),
        "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": True,
                 "tooltip": "Noise seed for restorers that add noise (InstantRestore-style); the "
                            "default model adds none, so the seed does not change its faces. Keep the "
                            "control on fixed for repeatable results."}),
        "batch_size": ("INT", {"default": 8, "min": 1, "max": 64,
                       "tooltip": "Faces restored per network pass (default 8). Lower it on "
                              "out-of-memory errors; raise it on a big GPU for long clips."}),
    }


def optional_restore_inputs() -> dict:
    """Optional widgets (after the required ones, so saved workflows keep their widget order)."""
    return {"auto_strength": ("BOOLEAN", {"default": True, "label_on": "auto (do no harm)", "label_off": "manual",
                              "tooltip": "On (default): each face's strength comes from the detail (and the "
                                         "noise) it has at the restorer's resolution: sharp or large faces are "
                                         "kept exactly as they are, blurred, grainy or small ones are fully "
                                         f"restored (without references at {NO_REFS_STRENGTH:g} of that: a full-strength guess "
                                         "moves a blurred face away from its person, and faces too blurred to "
                                         "guess who they are are kept until references are given); the report "
                                         "lists each face's strength. Off: the strength value is used for every face."})}


def no_refs_input() -> dict:
    """The last optional widget (saved workflows keep their order): the no-references policy."""
    return {"keep_identity_without_refs": (
        "BOOLEAN", {"default": True, "label_on": "keep identity", "label_off": "full strength",
                    "tooltip": "Without references and with auto_strength on. keep identity (default): "
                               f"each face's strength is scaled by {NO_REFS_STRENGTH:g}, less for a face with "
                               "little structure left, and a face too blurred to guess who it is is kept as "
                               "it was (at 16x blur every strength tried lowered identity, dlib, training people). full strength: the "
                               "detail measure alone decides, as before; sharper, less like the person. "
                               "With references connected it does nothing."})}


def make_options(mode: str, max_refs: int, strength: float, seed: int, batch_size: int,
                 paste: Optional[PasteConfig] = None, auto_strength: bool = True,
                 keep_identity: bool = True) -> RestoreOptions:
    no_refs = {} if keep_identity else {"no_refs_strength": 1.0, "no_refs_structure_gate": False}
    opts = RestoreOptions(mode=mode, max_refs=int(max_refs), strength=AUTO if auto_strength else float(strength),
                          seed=int(seed), batch_size=int(batch_size), cache_dir=cb.cache_dir(), **no_refs)
    if paste is not None:
        opts.paste = paste
    return opts


def strength_lines(faces: FaceSet) -> list:
    """One report line with the strength each face got (and why, for auto); strength 0 = kept."""
    parts = []
    for f in faces.faces:
        s = f.info.get("strength")
        if s is None:
            continue
        d = f.info.get("detail")
        why = f" (detail {d['detail']:.2f}, noise {d['noise']:.2f}, {d['native_px']:.0f} px)" if d else ""
        kept = f" kept: {f.info['kept']}" if f.info.get("kept") else ""
        parts.append(f"face {f.image_index}/{f.face_index}: {s:.2f}{kept}{why}")
    return ["strength per face (image/face): " + ", ".join(parts)] if parts else []


def identity_lines(handle: FaceRestorerHandle, faces: FaceSet, bank: Any, options) -> list[str]:
    """The identity check, where the bank steers restoration (not for a bank left unused)."""
    if bank is None or not handle.pipeline.uses_references(bank, options):
        return []
    return check_identity(faces, bank)


def one_step_inputs() -> dict:
    required = {"restorer": (FACE_RESTORER, {"tooltip": "From Load Face Restorer."}),
                "faces": (FACES, {"tooltip": "Aligned faces from Detect Faces."})}
    required.update(restore_inputs())
    return {"required": required, "optional": {"reference_bank": (REF_BANK, BANK_TOOLTIP),
                                               **optional_restore_inputs(), **no_refs_input()}}


def one_step_restore(restorer: FaceRestorerHandle, faces: FaceSet, mode: str, max_refs: int,
                     strength: float, seed: int, batch_size: int, reference_bank: Optional[Any] = None,
                     auto_strength: bool = True, keep_identity_without_refs: bool = True) -> tuple:
    """Restores detected faces in one network pass each, optionally guided by a reference bank."""
    options = make_options(mode, max_refs, strength, seed, batch_size, auto_strength=auto_strength,
                           keep_identity=keep_identity_without_refs)
    out, lines = ops.restore(restorer, faces, reference_bank, options)
    lines = lines + strength_lines(out)
    lines += identity_lines(restorer, faces, reference_bank, options)
    return (out, out.crops_tensor(restored=True), "\n".join(lines))


def restore_faces_inputs() -> dict:
    required = {"image": ("IMAGE", {"tooltip": "The image, or a batch of images / video frames in "
                                               "order."}),
                "restorer": (FACE_RESTORER, {"tooltip": "From Load Face Restorer."})}
    required.update(restore_inputs())
    required.update(detector_inputs())
    required.update(selection_inputs())
    required.update(paste_inputs())
    return {"required": required, "optional": {"reference_bank": (REF_BANK, BANK_TOOLTIP),
                                               **optional_restore_inputs(),
                                               "smooth_landmarks": smoothing_input(), **no_refs_input()}}


def restore_faces(image, restorer: FaceRestorerHandle, mode: str, max_refs: int, strength: float, seed: int,
                  batch_size: int, detector: str, detector_model: str, threshold: float, selection: str,
                  max_faces: int, face_indices: str, min_face_size: int, similarity_threshold: float,
                  color_fix: str, mask_shape: str, feather: float, erosion: float,
                  reference_bank: Optional[Any] = None, auto_strength: bool = True,
                  smooth_landmarks: bool = False, keep_identity_without_refs: bool = True) -> tuple:
    """Detect, restore and paste back in one node (same steps as the three split nodes)."""
    options = make_options(mode, max_refs, strength, seed, batch_size, auto_strength=auto_strength,
                           keep_identity=keep_identity_without_refs)
    paste_cfg = PasteConfig(mask=mask_shape, erosion=float(erosion), feather=float(feather), color_fix=color_fix)
    det = ops.get_detector(detector, detector_model, threshold)
    sel, sim = make_selection(selection, max_faces, face_indices, min_face_size, similarity_threshold,
                              reference_bank)
    crop_size = max(restorer.resolution, 512)  # as Detect Faces' default: paste-back at >= 512 px
    faces = ops.detect(image, det, sel, crop_size, track=True, similarity_fn=sim,
                       smoothing=SmoothingConfig() if smooth_landmarks else None)
    lines = ops.describe_faces(faces)
    restored, restore_lines = ops.restore(restorer, faces, reference_bank, options)
    restore_lines += identity_lines(restorer, faces, reference_bank, options)
    out, mask, paste_lines = ops.paste(image, restored, paste_cfg)
    report = "\n".join(lines + restore_lines + strength_lines(restored) + paste_lines)
    return (out, mask, report)


ONE_STEP_RESTORE = NodeSpec(
    "OneStepRestore", "One-Step Restore",
    "Restore the faces from Detect Faces in one network pass each. With a reference bank the restorer "
    "borrows detail from the person's reference photos (their keys/values are computed once and cached "
    "on disk); without one it uses the visual prompt embedded from the face itself.",
    one_step_inputs,
    (Output(FACES, "faces", "The faces with their restored crops, for Paste Faces Back and Face Similarity."),
     Output("IMAGE", "restored_crops", "The restored face crops as an IMAGE batch, to preview."),
     Output("STRING", "report", "Text: faces restored, the model and conditioning used, and the reference "
                                "cache status.")),
    one_step_restore, "restore")

RESTORE_FACES = NodeSpec(
    "OneStepRestoreFaces", "Restore Faces (One-Step, all-in-one)",
    "Detect, restore and paste back in one node: the same steps and results as Detect Faces -> One-Step "
    "Restore -> Paste Faces Back. Images without a face pass through unchanged. Use the split nodes to "
    "preview crops or score identity in between.",
    restore_faces_inputs,
    (Output("IMAGE", "image", "The images with the restored faces blended in (same size and batch as the input)."),
     Output("MASK", "mask", "A MASK per image: how much of the restored face went into each pixel (0..1)."),
     Output("STRING", "report", "Text: faces found and skipped, restoration and paste-back details.")),
    restore_faces, "run")
