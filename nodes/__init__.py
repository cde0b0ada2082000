"""ComfyUI nodes (classic API) for one-step, reference-based face restoration.

Thin shells over restorer_core: each node converts ComfyUI types, calls the core, and reports.
"""

from .bank import ReferenceBankFromFolder, ReferenceBankFromImages
from .comfy_bridge import register_model_folders
from .detect import DetectFaces
from .loader import LoadFaceRestorer
from .paste import PasteFacesBack
from .restore import OneStepRestore, RestoreFaces
from .similarity import FaceSimilarity

register_model_folders()

NODE_CLASS_MAPPINGS = {
    "OneStepLoadFaceRestorer": LoadFaceRestorer,
    "OneStepDetectFaces": DetectFaces,
    "OneStepReferenceBank": ReferenceBankFromFolder,
    "OneStepReferenceBankFromImages": ReferenceBankFromImages,
    "OneStepRestore": OneStepRestore,
    "OneStepPasteFacesBack": PasteFacesBack,
    "OneStepRestoreFaces": RestoreFaces,
    "OneStepFaceSimilarity": FaceSimilarity,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "OneStepLoadFaceRestorer": "Load Face Restorer (One-Step)",
    "OneStepDetectFaces": "Detect Faces (One-Step)",
    "OneStepReferenceBank": "Reference Bank (folder)",
    "OneStepReferenceBankFromImages": "Reference Bank From Images",
    "OneStepRestore": "One-Step Restore",
    "OneStepPasteFacesBack": "Paste Faces Back",
    "OneStepRestoreFaces": "Restore Faces (One-Step, all-in-one)",
    "OneStepFaceSimilarity": "Face Similarity",
}

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
