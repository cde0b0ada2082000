"""Stand-in for the parts of comfy/utils.py used here: ProgressBar and common_upscale."""

from __future__ import annotations

import torch

PROGRESS_BAR_ENABLED = True
PROGRESS_BAR_HOOK = None


def set_progress_bar_enabled(enabled):
    global PROGRESS_BAR_ENABLED
    PROGRESS_BAR_ENABLED = enabled


def set_progress_bar_global_hook(function):
    global PROGRESS_BAR_HOOK
    PROGRESS_BAR_HOOK = function


class ProgressBar:
    def __init__(self, total, node_id=None):
        self.total = total
        self.current = 0
        self.hook = PROGRESS_BAR_HOOK
        self.node_id = node_id

    def update_absolute(self, value, total=None, preview=None):
        if total is not None:
            self.total = total
        if value > self.total:
            value = self.total
        self.current = value
        if self.hook is not None:
            self.hook(self.current, self.total, preview, node_id=self.node_id)

    def update(self, value):
        self.update_absolute(self.current + value)


def common_upscale(samples, width, height, upscale_method, crop):
    """Resize [B, C, H, W] to height x width; crop "center" first keeps the aspect ratio.

    ComfyUI supports more methods (bislerp, lanczos, area); the stand-in takes bilinear,
    bicubic and nearest-exact, which is what ImageBatch uses (bilinear).
    """
    if crop == "center":
        old_width, old_height = samples.shape[-1], samples.shape[-2]
        old_aspect = old_width / old_height
        new_aspect = width / height
        x = y = 0
        if old_aspect > new_aspect:
            x = round((old_width - old_width * (new_aspect / old_aspect)) / 2)
        elif old_aspect < new_aspect:
            y = round((old_height - old_height * (old_aspect / new_aspect)) / 2)
        s = samples.narrow(-2, y, old_height - y * 2).narrow(-1, x, old_width - x * 2)
    else:
        s = samples
    if upscale_method not in ("bilinear", "bicubic", "nearest-exact"):
        raise NotImplementedError(f"the stand-in has no {upscale_method!r} upscale")
    return torch.nn.functional.interpolate(s, size=(height, width), mode=upscale_method)
