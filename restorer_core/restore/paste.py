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
from .composite import check_layout, device_image, host_image, paste_into
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
    nothing image-sized is allocated at all (for very large photos).
    """
    image = np.asarray(original_pixels)
    check_layout(image.shape)
    if inplace and not image.flags.writeable:
        raise ValueError("inplace paste needs a writeable array; pass inplace=False")
    if device is not None and torch.device(device).type != "cpu":
        tensor, peak = device_image(image, device)
        total = paste_into(tensor, faces, config, return_mask, peak=peak)
        out = image if inplace else np.empty_like(image)
        out[...] = host_image(tensor, image.dtype)
        return out, (total.cpu().numpy() if total is not None else None)
    out = image if inplace else image.copy()
    try:
        target, shared = torch.from_numpy(out), True
    except ValueError:  # strides torch cannot share: work on a copy, write it back
        target, shared = torch.from_numpy(np.ascontiguousarray(out)), False
    total = paste_into(target, faces, config, return_mask)
    if not shared:
        np.copyto(out, target.numpy())
    return out, (total.numpy() if total is not None else None)
