"""ComfyUI entry point: registers this pack's nodes. Everything else lives in nodes/ and restorer_core/."""

import importlib.util

if not __package__ or importlib.util.find_spec("comfy") is None:
    # Imported outside ComfyUI: pytest collecting this folder (as a top-level module when the
    # checkout's folder name is not a Python name, e.g. onestep-face-restore), or without comfy.
    NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = {}, {}
else:
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

# Served by ComfyUI at /extensions/<this folder>/: web/docs/<node id>.md are the node help pages
# (no JavaScript here, so nothing is loaded into the frontend).
WEB_DIRECTORY = "./web"

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
