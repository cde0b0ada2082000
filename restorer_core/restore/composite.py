"""Paste-back on tensors: restored faces blended into an image where the image tensor lives.

Per face, everything happens inside the region of the image the face's crop covers: the
restored crop is colour-corrected against the original crop, warped back with the inverse
alignment (restorer_core.faces.warp_torch), and blended through a soft mask that is exactly 0
near the crop border (restorer_core.restore.paste_mask, feathered on the device). Faces
are composited one after another, each over the result of the previous ones, so overlaps blend
smoothly. Pixels no mask touches are never written; alpha is never changed.

The image tensor is [H, W] or [H, W, C] (C = 1, 3 or 4) of uint8, uint16 (int32 on devices
without uint16 arithmetic; see device_image), or float; it is changed in place.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np
import torch

from ..faces.align import landmarks_in_crop, source_roi
from ..faces.records import AlignedFace
from ..faces.warp_torch import resize_square, warp_affine
from .color import apply_color_fix
from .paste_mask import PasteConfig, feather_mask, mask_shape

_LUMA = (0.299, 0.587, 0.114)  # Rec. 601, as in PIL's "L"
_PEAKS = {torch.uint8: 255.0, torch.uint16: 65535.0}


def check_layout(shape: tuple) -> None:
    """ValueError unless shape is HxW or HxWx(1|3|4)."""
    if len(shape) not in (2, 3) or (len(shape) == 3 and shape[2] not in (1, 3, 4)):
        raise ValueError(f"expected HxW or HxWx(1|3|4) pixels, got shape {tuple(shape)}")


def device_image(pixels: np.ndarray, device: Any) -> tuple[torch.Tensor, float]:
    """(a copy of the image on `device`, its peak value: 255, 65535 or 1.0). 16-bit images
    travel as int32 (CUDA has no uint16 arithmetic); host_image turns the tensor back."""
    arr = np.asarray(pixels)
    check_layout(arr.shape)
    peak = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}.get(arr.dtype, 1.0)
    if arr.dtype.kind not in "uf" or (arr.dtype.kind == "u" and peak == 1.0):
        raise ValueError(f"expected uint8, uint16 or float pixels, got {arr.dtype}")
    if arr.dtype == np.uint16:
        arr = arr.astype(np.int32)
    return torch.from_numpy(np.ascontiguousarray(arr)).to(device), peak


def host_image(image: torch.Tensor, dtype: np.dtype) -> np.ndarray:
    """A device_image tensor back to a numpy array of `dtype`."""
    return image.cpu().numpy().astype(dtype, copy=False)


def restored_tensor(face: AlignedFace, config: PasteConfig, device: Any) -> torch.Tensor:
    """The face's restored crop at its crop size, colour-fixed against its original crop:
    [3, S, S] float32 on `device`. `.restored` may be an [S', S', 3] array or tensor."""
    restored = torch.as_tensor(face.restored).to(device=device, dtype=torch.float32)
    if restored.dim() != 3 or restored.shape[2] != 3:
        raise ValueError(f"restored face must be [S, S, 3] float, got shape {tuple(restored.shape)}")
    restored = resize_square(restored.permute(2, 0, 1), face.crop_size).clamp(0.0, 1.0)
    if config.color_fix == "none":
        return restored
    crop = torch.as_tensor(np.asarray(face.crop, dtype=np.float32)).to(device).permute(2, 0, 1)
    return apply_color_fix(restored, crop, config.color_fix)


def face_weights(face: AlignedFace, config: PasteConfig, restored: torch.Tensor) -> torch.Tensor:
    """The face's soft blend mask [S, S] times config.strength, on restored's device."""
    crop = restored.permute(1, 2, 0).cpu().numpy() if config.parser is not None else None
    shape, feather = mask_shape(face.crop_size, config, landmarks_in_crop(face), crop=crop)
    weights = feather_mask(torch.from_numpy(shape).to(restored.device), feather)
    return weights * float(config.strength)


def _blend(region: torch.Tensor, face_px: torch.Tensor, alpha: torch.Tensor, peak: float,
           float_out: bool) -> torch.Tensor:
    """New values of an image region [h, w(, C)] with face_px [3, h, w] blended by alpha [h, w];
    rounded to the image's integer levels unless float_out."""
    region_f = region.to(torch.float32) / peak
    if region.dim() == 2 or region.shape[2] == 1:
        luma = torch.tensor(_LUMA, dtype=torch.float32, device=face_px.device)
        face = torch.einsum("chw,c->hw", face_px, luma)
        if region.dim() == 3:
            face, a = face[..., None], alpha[..., None]
        else:
            a = alpha
        blended = region_f * (1.0 - a) + face * a
    else:
        a = alpha[..., None]
        rgb = region_f[..., :3] * (1.0 - a) + face_px.permute(1, 2, 0) * a
        blended = torch.cat([rgb, region_f[..., 3:]], dim=2) if region.shape[2] == 4 else rgb
    if float_out:
        return blended
    return torch.round(blended * peak).clamp_(0.0, peak)


def pasted(face: AlignedFace) -> bool:
    """Whether paste-back blends this face in (it has `.restored` and a strength above 0)."""
    return face.restored is not None and face.info.get("strength") != 0.0


def face_roi(face: AlignedFace, image_size: tuple) -> tuple:
    """(x0, y0, x1, y1): the pixels of an image of image_size (h, w) that pasting `face` can change."""
    s = face.crop_size
    return source_roi(face.matrix, (s, s), tuple(image_size))


def faces_window(faces: Sequence[AlignedFace], image_size: tuple) -> Optional[tuple]:
    """The smallest box (x0, y0, x1, y1) holding every pasted face's ROI, or None when no face
    changes a pixel: the part of the image that has to travel to the device."""
    rois = [r for r in (face_roi(f, image_size) for f in faces if pasted(f)) if r[2] > r[0] and r[3] > r[1]]
    if not rois:
        return None
    return min(r[0] for r in rois), min(r[1] for r in rois), max(r[2] for r in rois), max(r[3] for r in rois)


def paste_into(image: torch.Tensor, faces: Sequence[AlignedFace], config: PasteConfig = PasteConfig(),
               return_mask: bool = True, peak: Optional[float] = None,
               origin: tuple = (0, 0), image_size: Optional[tuple] = None) -> Optional[torch.Tensor]:
    """Blend each face's `.restored` into `image` (changed in place) -> the combined blend
    weight [H, W] float32 (1 - prod(1 - w_i)) on the image's device, or None when return_mask
    is False. Faces without `.restored`, and faces at strength 0 (info["strength"]), are skipped.
    peak: the value of full white (default: 255 for uint8, 65535 for uint16, 1 for float; pass
    65535 for a 16-bit image carried as int32).
    origin, image_size: `image` is the window at origin (x, y) of an image of image_size (h, w)
    (default: the whole image); the window must hold every face's ROI (faces_window), and the
    result is the same as pasting into the whole image and cutting the window out."""
    check_layout(tuple(image.shape))
    float_image = image.is_floating_point()
    peak = float(peak if peak is not None else _PEAKS.get(image.dtype, 1.0))
    wh, ww = image.shape[:2]
    h, w = image_size if image_size is not None else (wh, ww)
    ox, oy = (int(v) for v in origin)
    device = image.device
    total = torch.zeros((wh, ww), dtype=torch.float32, device=device) if return_mask else None
    for face in faces:
        if not pasted(face):
            continue
        x0, y0, x1, y1 = face_roi(face, (h, w))
        if x1 <= x0 or y1 <= y0:
            continue
        if x0 < ox or y0 < oy or x1 > ox + ww or y1 > oy + wh:
            raise ValueError(f"face {face.face_index}'s paste region {(x0, y0, x1, y1)} is outside the "
                             f"window at {(ox, oy)} of size {(ww, wh)}; cut the window with faces_window")
        restored = restored_tensor(face, config, device)
        weights = face_weights(face, config, restored)
        to_roi = face.inverse.copy()  # crop -> ROI: crop -> image, then shift by the ROI origin
        to_roi[:, 2] -= (x0, y0)
        size = (x1 - x0, y1 - y0)
        alpha = warp_affine(weights[None], to_roi, size, border="constant")[0]
        touched = alpha > 0  # no early exit on none touched: it would wait for the device per face
        face_px = warp_affine(restored, to_roi, size, border="replicate")
        region = image[y0 - oy:y1 - oy, x0 - ox:x1 - ox]
        new = _blend(region, face_px, alpha, peak, float_image)
        keep = touched if region.dim() == 2 else touched[..., None]
        if region.dim() == 3 and region.shape[2] == 4:
            keep = keep & torch.tensor([True, True, True, False], device=device)  # alpha untouched
        work = region.to(torch.int32) if region.dtype == torch.uint16 else region  # no uint16 ops
        region.copy_(torch.where(keep, new.to(work.dtype), work))
        if total is not None:
            t = total[y0 - oy:y1 - oy, x0 - ox:x1 - ox]
            t.copy_(1.0 - (1.0 - t) * (1.0 - alpha))
    return total
