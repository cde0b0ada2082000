"""Paste Faces Back: IMAGE + restored FACES -> IMAGE with the faces blended in, and the blend MASK."""

from __future__ import annotations

from ..restorer_core.paste import PasteConfig
from . import ops
from .types import FACES, FaceSet

CATEGORY = "face restore/one-step"


def paste_inputs() -> dict:
    return {
        "color_fix": (list(ops.COLOR_FIXES), {"default": "wavelet",
                      "tooltip": "Match the restored face's colours to the original (wavelet keeps its "
                                 "detail; meanstd matches mean and contrast)."}),
        "mask_shape": (list(ops.MASK_SHAPES), {"default": "landmarks",
                       "tooltip": "Blend region: an ellipse fitted to the face's landmarks, a fixed "
                                  "ellipse, or the whole crop."}),
        "feather": ("FLOAT", {"default": 24.0, "min": 0.0, "max": 128.0, "step": 1.0,
                    "tooltip": "Soft edge width (pixels of a 512 px face crop)."}),
        "erosion": ("FLOAT", {"default": 8.0, "min": 0.0, "max": 128.0, "step": 1.0,
                    "tooltip": "Shrink the blend region by this much (pixels of a 512 px face crop)."}),
    }


class PasteFacesBack:
    """Blends restored faces into the images they came from, without seams or colour shifts."""

    CATEGORY = CATEGORY
    FUNCTION = "paste"
    RETURN_TYPES = ("IMAGE", "MASK")
    RETURN_NAMES = ("image", "mask")
    DESCRIPTION = ("Paste restored faces back. Connect the same IMAGE that went into Detect Faces; "
                   "images without restored faces pass through unchanged.")

    @classmethod
    def INPUT_TYPES(cls):
        required = {"image": ("IMAGE",), "faces": (FACES,)}
        required.update(paste_inputs())
        return {"required": required}

    def paste(self, image, faces: FaceSet, color_fix: str, mask_shape: str, feather: float, erosion: float):
        config = PasteConfig(mask=mask_shape, erosion=float(erosion), feather=float(feather), color_fix=color_fix)
        out, mask, lines = ops.paste(image, faces, config)
        for line in lines:
            ops.log(line)
        return (out, mask)
