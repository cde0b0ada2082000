"""ComfyUI entry point: registers this pack's nodes. Everything else lives in nodes/ and restorer_core/.

ComfyUI's loader (nodes.load_custom_node) takes a module's NODE_CLASS_MAPPINGS when it is there
and not None, and only otherwise calls its comfy_entrypoint. So exactly one of them is defined:
comfy_entrypoint (V3 node API) where ComfyUI has comfy_api.v0_0_2, the classic mappings on older
ComfyUI. Both serve the same nodes (nodes/spec.py).
"""

import importlib.util

# Served by ComfyUI at /extensions/<this folder>/: web/docs/<node id>.md are the node help pages
# (no JavaScript here, so nothing is loaded into the frontend).
WEB_DIRECTORY = "./web"

if not __package__ or importlib.util.find_spec("comfy") is None:
    # Imported outside ComfyUI: pytest collecting this folder (as a top-level module when the
    # checkout's folder name is not a Python name, e.g. onestep-face-restore), or without comfy.
    NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = {}, {}
    __all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
else:
    from .nodes import classic_mappings, v3_entrypoint

    _entrypoint = v3_entrypoint()
    if _entrypoint is not None:
        comfy_entrypoint = _entrypoint
        __all__ = ["comfy_entrypoint", "WEB_DIRECTORY"]
    else:
        NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = classic_mappings()
        __all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
    del _entrypoint
