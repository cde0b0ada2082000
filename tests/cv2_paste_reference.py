"""The paste-back as it was done with OpenCV/numpy before it moved to torch (restorer_core.restore.
composite): the oracle the torch path is tested against. Same geometry (mask_shape, source_roi,
the faces.align warps), OpenCV for the feather, resize, colour fix and blend."""

from __future__ import annotations

import cv2
import numpy as np

from restorer_core.faces.align import landmarks_in_crop, source_roi, warp_affine
from restorer_core.io.imageio import dtype_max
from restorer_core.restore.color import apply_color_fix
from restorer_core.restore.paste_mask import PasteConfig, mask_shape

_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def face_mask_cv2(crop_size, config=PasteConfig(), landmarks=None, crop=None) -> np.ndarray:
    shape, feather = mask_shape(crop_size, config, landmarks, crop)
    if feather > 0:
        k = 2 * feather + 1
        shape = cv2.GaussianBlur(shape, (k, k), sigmaX=feather / 2.0, borderType=cv2.BORDER_CONSTANT)
    return np.clip(shape, 0.0, 1.0).astype(np.float32)


def _prepare_restored(face, config) -> np.ndarray:
    restored = np.asarray(face.restored, dtype=np.float32)
    s = face.crop_size
    if restored.shape[:2] != (s, s):
        interp = cv2.INTER_AREA if restored.shape[0] > s else cv2.INTER_CUBIC
        restored = cv2.resize(restored, (s, s), interpolation=interp)
    restored = np.clip(restored, 0.0, 1.0)
    return apply_color_fix(restored, face.crop.astype(np.float32), config.color_fix).astype(np.float32)


def paste_faces_cv2(original_pixels, faces, config=PasteConfig()):
    image = np.asarray(original_pixels)
    peak = dtype_max(image.dtype)
    h, w = image.shape[:2]
    out = image.copy()
    total = np.zeros((h, w), dtype=np.float32)
    for face in faces:
        if face.restored is None or face.info.get("strength") == 0.0:
            continue
        restored = _prepare_restored(face, config)
        s = face.crop_size
        weights = face_mask_cv2(s, config, landmarks_in_crop(face), crop=restored) * np.float32(config.strength)
        x0, y0, x1, y1 = source_roi(face.matrix, (s, s), (h, w))
        if x1 <= x0 or y1 <= y0:
            continue
        to_roi = face.inverse.copy()
        to_roi[:, 2] -= (x0, y0)
        size = (x1 - x0, y1 - y0)
        alpha = warp_affine(weights, to_roi, size, border="constant")
        if not np.any(alpha > 0):
            continue
        face_px = warp_affine(restored, to_roi, size, border="replicate")
        region = out[y0:y1, x0:x1]
        region_f = region.astype(np.float32) / np.float32(peak)
        a = alpha[..., None]
        if image.ndim == 2:
            blended = region_f * (1.0 - alpha) + (face_px @ _LUMA) * alpha
        elif image.shape[2] == 1:
            blended = region_f * (1.0 - a) + (face_px @ _LUMA)[..., None] * a
        else:
            blended = region_f.copy()
            blended[..., :3] = region_f[..., :3] * (1.0 - a) + face_px * a
        if image.dtype.kind == "f":
            new = blended.astype(image.dtype)
        else:
            new = np.clip(np.rint(blended * np.float32(peak)), 0, peak).astype(image.dtype)
        touched = alpha > 0
        if image.ndim == 3:
            touched3 = np.broadcast_to(touched[..., None], region.shape).copy()
            if image.shape[2] == 4:
                touched3[..., 3] = False
            np.copyto(region, new, where=touched3)
        else:
            np.copyto(region, new, where=touched)
        t = total[y0:y1, x0:x1]
        t[...] = 1.0 - (1.0 - t) * (1.0 - alpha)
    return out, total
