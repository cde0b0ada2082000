"""Paste Faces Back: IMAGE + restored FACES -> IMAGE with the faces blended in, and the blend MASK."""

from __future__ import annotations

from ..restorer_core.restore.paste import PasteConfig
from . import ops
from .spec import NodeSpec, Output
from .types import FACES, FaceSet


def paste_inputs() -> dict:
    return {
        "color_fix": (list(ops.COLOR_FIXES), {"default": "wavelet",
                      "tooltip": "Match the restored face's colours to the original. wavelet (default): "
                                 "low-frequency colour from the original, detail from the restored face. "
                                 "meanstd: match mean and contrast (try it on strongly tinted photos). "
                                 "none: the restorer's colours as they are."}),
        "mask_shape": (list(ops.MASK_SHAPES), {"default": "landmarks",
                       "tooltip": "Region blended into the image. landmarks (default): an ellipse fitted "
                                  "to the eyes, nose and mouth. ellipse: a fixed ellipse of the crop (for "
                                  "odd landmarks). box: the whole crop minus a soft border: also restores hair and ears "
                                  "(old photos), may leave a visible edge on textured backgrounds."}),
        "feather": ("FLOAT", {"default": 24.0, "min": 0.0, "max": 128.0, "step": 1.0,
                    "tooltip": "Width of the soft edge, in pixels of a 512 px face crop (default 24). "
                                "Raise it when a seam shows, lower it when the face looks washed out "
                                "at the edge."}),
        "erosion": ("FLOAT", {"default": 8.0, "min": 0.0, "max": 128.0, "step": 1.0,
                    "tooltip": "Shrink the blend region by this many pixels of a 512 px face crop "
                                "(default 8), so hair and background at the edge stay original. Raise "
                                "it when a halo shows around the face."}),
    }


def paste_back_inputs() -> dict:
    required = {"image": ("IMAGE", {"tooltip": "The same image (batch) that went into Detect Faces."}),
                "faces": (FACES, {"tooltip": "Restored faces from One-Step Restore."})}
    required.update(paste_inputs())
    return {"required": required}


def paste_faces_back(image, faces: FaceSet, color_fix: str, mask_shape: str, feather: float,
                     erosion: float) -> tuple:
    """Blends restored faces into the images they came from, without seams or colour shifts."""
    config = PasteConfig(mask=mask_shape, erosion=float(erosion), feather=float(feather), color_fix=color_fix)
    out, mask, lines = ops.paste(image, faces, config)
    for line in lines:
        ops.log(line)
    return (out, mask)


PASTE_FACES_BACK = NodeSpec(
    "OneStepPasteFacesBack", "Paste Faces Back",
    "Paste restored faces back into the images they came from, with a soft mask and a colour fix. Connect "
    "the same IMAGE that went into Detect Faces; pixels outside every face mask are unchanged, images "
    "without restored faces pass through.",
    paste_back_inputs,
    (Output("IMAGE", "image", "The images with the restored faces blended in (same size and batch as the input)."),
     Output("MASK", "mask", "A MASK per image: how much of the restored face went into each pixel (0..1).")),
    paste_faces_back, "paste")
