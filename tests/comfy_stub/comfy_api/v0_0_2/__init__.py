"""comfy_api/v0_0_2: the pinned API version; as in ComfyUI it re-exports latest's io and ComfyExtension."""

from comfy_api.latest import ComfyExtension, io  # noqa: F401

__all__ = ["ComfyExtension", "io"]
