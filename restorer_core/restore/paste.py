"""Pasting restored faces back into the original image without seams or colour shifts.

Per face, everything happens inside the region of the image the face's crop covers: the
restored crop is colour-corrected against the original crop, warped back with the inverse
alignment, and blended through a soft mask that is exactly 0 near the crop border. Faces are
composited one after another, each over the result of the previous ones, so overlaps blend
smoothly. Pixels no mask touches are returned bit-identical; alpha is never changed.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np
import torch

from ..faces.records import AlignedFace
from .composite import check_layout, device_image, faces_window, host_image, paste_into
from .paste_mask import PasteConfig, face_mask, feather_mask, mask_shape  # noqa: F401 (this module's API too)


# ----------------------------------------------------------------------------- paste


def paste_faces(
    original_pixels: np.ndarray,
    faces: Sequence[AlignedFace],
    config: PasteConfig = PasteConfig(),
    inplace: bool = False,
    return_mask: bool = True,
    device: Any = None,
) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """Blend each face's `.restored` into the image (restorer_core.restore.composite does the
    work, on `device`: default the CPU; the pipeline passes the restorer's device).

    original_pixels: uint8/uint16/float, HxW, HxWx1, HxWx3 or HxWx4 (alpha kept as is).
    Faces without `.restored`, and faces restored with strength 0 (info["strength"]: left exactly
    as they are, not even resampled), are skipped. Returns (pixels like the input, mask HxW float32:
    the combined blend weight 1 - prod(1 - w_i), or None when return_mask is False).
    inplace=True writes into original_pixels instead of a copy; with return_mask=False
    nothing image-sized is allocated at all (for very large photos). On a device only the window
    around the faces travels there and back (paste_window).
    """
    image = np.asarray(original_pixels)
    check_layout(image.shape)
    if inplace and not image.flags.writeable:
        raise ValueError("inplace paste needs a writeable array; pass inplace=False")
    if device is not None and torch.device(device).type != "cpu":
        return paste_window(image, faces, config, inplace, return_mask, device)
    out = image if inplace else image.copy()
    try:
        target, shared = torch.from_numpy(out), True
    except ValueError:  # strides torch cannot share: work on a copy, write it back
        target, shared = torch.from_numpy(np.ascontiguousarray(out)), False
    total = paste_into(target, faces, config, return_mask)
    if not shared:
        np.copyto(out, target.numpy())
    return out, (total.numpy() if total is not None else None)


def paste_window(image: np.ndarray, faces: Sequence[AlignedFace], config: PasteConfig, inplace: bool,
                 return_mask: bool, device: Any) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """paste_faces on `device`, moving only the window around the pasted faces (composite.faces_window)
    there and back, not the whole image: a 1080p video frame with one face moves about a quarter
    of its pixels. Same pixels and mask as pasting the whole image."""
    h, w = image.shape[:2]
    out = image if inplace else image.copy()
    mask = np.zeros((h, w), np.float32) if return_mask else None
    window = faces_window(faces, (h, w))
    if window is None:
        return out, mask
    x0, y0, x1, y1 = window
    tensor, peak = device_image(image[y0:y1, x0:x1], device)
    total = paste_into(tensor, faces, config, return_mask, peak=peak, origin=(x0, y0), image_size=(h, w))
    out[y0:y1, x0:x1] = host_image(tensor, image.dtype)
    if mask is not None:
        mask[y0:y1, x0:x1] = total.cpu().numpy()
    return out, mask


def paste_frame(frame: torch.Tensor, faces: Sequence[AlignedFace], config: PasteConfig = PasteConfig(),
                device: Any = None) -> torch.Tensor:
    """paste_faces for a float image tensor [H, W, C] in 0..1 (a frame of a ComfyUI IMAGE batch),
    changed in place: only the window around the faces goes to `device` (default: the frame's)
    and back, and no numpy copy of the frame is made. -> the mask [H, W] float32 on the frame's
    device. Same pixels as paste_faces on the frame as a float32 array."""
    if not frame.is_floating_point():
        raise ValueError(f"paste_frame takes a float image tensor in 0..1, got {frame.dtype}")
    h, w = frame.shape[:2]
    mask = torch.zeros((h, w), dtype=torch.float32, device=frame.device)
    window = faces_window(faces, (h, w))
    if window is None:
        return mask
    x0, y0, x1, y1 = window
    part = frame[y0:y1, x0:x1].to(device=device if device is not None else frame.device, dtype=torch.float32)
    total = paste_into(part, faces, config, True, peak=1.0, origin=(x0, y0), image_size=(h, w))
    frame[y0:y1, x0:x1] = part.to(frame.device, frame.dtype)
    mask[y0:y1, x0:x1] = total.to(frame.device)
    return mask
