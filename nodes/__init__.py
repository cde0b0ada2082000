"""ComfyUI nodes for one-step, reference-based face restoration.

Thin shells over restorer_core: each node converts ComfyUI types, calls the core, and reports.
SPECS declares every node once (nodes/spec.py); classic_mappings() serves them on the classic
node API, v3_entrypoint() on the V3 API (comfy_api), and the pack's __init__.py picks one.
"""

from __future__ import annotations

from typing import Callable, Optional

from .bank import BANK_FROM_FOLDER, BANK_FROM_IMAGES
from .classic import classic_mappings as _classic_mappings
from .comfy_bridge import register_model_folders
from .detect import DETECT_FACES
from .loader import LOAD_FACE_RESTORER
from .paste import PASTE_FACES_BACK
from .restore import ONE_STEP_RESTORE, RESTORE_FACES
from .similarity import FACE_SIMILARITY

register_model_folders()

# In this order in the node menu (and in the classic mappings).
SPECS = (LOAD_FACE_RESTORER, DETECT_FACES, BANK_FROM_FOLDER, BANK_FROM_IMAGES, ONE_STEP_RESTORE,
         PASTE_FACES_BACK, RESTORE_FACES, FACE_SIMILARITY)


def classic_mappings() -> tuple[dict, dict]:
    """(NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS) of classic node classes."""
    return _classic_mappings(SPECS)


def v3_entrypoint() -> Optional[Callable]:
    """The pack's `comfy_entrypoint` on ComfyUI's V3 node API, or None when this ComfyUI has no
    comfy_api.v0_0_2 with `io` and `ComfyExtension` (versions before the V3 API)."""
    try:
        from . import v3
    except ImportError as exc:
        if (exc.name or "").split(".")[0] != "comfy_api":
            raise  # a broken install of the pack itself: say so, do not hide it
        return None
    return v3.entrypoint(SPECS)


__all__ = ["SPECS", "classic_mappings", "v3_entrypoint"]
