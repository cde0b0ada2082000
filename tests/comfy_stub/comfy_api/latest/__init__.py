"""comfy_api/latest: ComfyExtension and io (IO is the same module), as ComfyUI exports them."""

from __future__ import annotations

from abc import ABC, abstractmethod

from . import _io as io


class ComfyExtension(ABC):
    async def on_load(self) -> None:
        """Called when an extension is loaded."""

    @abstractmethod
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        """Returns a list of nodes that this extension provides."""


IO = io

__all__ = ["ComfyExtension", "io", "IO"]
