"""What the nodes do, as plain functions: IMAGE <-> numpy, detect, restore, paste.

Each is a thin call into restorer_core plus the ComfyUI plumbing (progress, cancel, the memory
manager). The split nodes call one each; Restore Faces (all-in-one) calls all three, so both
paths give the same result for the same settings.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np
import torch

from ..restorer_core.faces.detect import cached_detector
from ..restorer_core.errors import BankError, CancelledError, DetectorError
from ..restorer_core.io.imageio import to_rgb8
from ..restorer_core.faces.locate import locate_in_images
from ..restorer_core.options import COLOR_FIXES, DETECTORS, MASK_SHAPES, MODES  # noqa: F401 (the nodes' lists)
from ..restorer_core.restore.paste import PasteConfig, paste_frame
from ..restorer_core.restore.pipeline import RestoreOptions
from ..restorer_core.faces.select import FaceSelection, parse_indices
from ..restorer_core.threads import cpu_workers
from . import comfy_bridge as cb
from .types import FaceRestorerHandle, FaceSet

SELECTIONS = ("all", "largest", "index", "similar")  # the node widget's subset of select.SELECTION_MODES
DEFAULT_DETECTOR_MODEL = "default"


def log(message: str) -> None:
    """Console line (ComfyUI shows stdout in its terminal/log window)."""
    print(f"[one-step face restore] {message}")


# ----------------------------------------------------------------------------- images


def image_list(image: torch.Tensor) -> list[np.ndarray]:
    """IMAGE [B, H, W, C] in 0..1 -> B float32 arrays HxWxC (copies, on the CPU)."""
    if not isinstance(image, torch.Tensor) or image.dim() != 4:
        raise ValueError(f"expected an IMAGE batch [B, H, W, C], got {getattr(image, 'shape', type(image))}")
    arr = image.detach().to("cpu", torch.float32).numpy()
    return [np.ascontiguousarray(a) for a in arr]


def rgb8(pixels: np.ndarray) -> np.ndarray:
    return to_rgb8(pixels)


def to_mask(masks: Sequence[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack([np.asarray(m, dtype=np.float32) for m in masks]))


# ----------------------------------------------------------------------------- detection

def detector_model_path(detector: str, model_name: str) -> Optional[str]:
    if model_name in (None, "", DEFAULT_DETECTOR_MODEL):
        if detector == "scrfd":
            raise DetectorError(
                "the SCRFD detector needs its model: put an insightface SCRFD .onnx (for example "
                "det_10g.onnx from buffalo_l, or scrfd_2.5g_bnkps.onnx) into ComfyUI/models/"
                f"{cb.DETECTOR_FOLDER}, refresh, and pick it as detector_model; or use yunet.")
        return None
    return cb.model_path(cb.DETECTOR_FOLDER, model_name)


def get_detector(name: str, model_name: str = DEFAULT_DETECTOR_MODEL, threshold: float = 0.7) -> Any:
    """restorer_core's detector for the widgets (made once per process: restorer_core.faces.detect.cached_detector)."""
    if name not in DETECTORS:
        raise DetectorError(f"unknown detector '{name}'; choose one of {', '.join(DETECTORS)}.")
    return cached_detector(name, detector_model_path(name, model_name), float(threshold), device=cb.compute_device())


def make_selection(selection: str, max_faces: int, face_indices: str, min_face_size: float,
                   similarity_threshold: float) -> FaceSelection:
    """UI widgets -> restorer_core FaceSelection (max_faces 0 = no limit)."""
    if selection not in SELECTIONS:
        raise ValueError(f"selection must be one of {', '.join(SELECTIONS)}, got {selection!r}")
    count = int(max_faces) if max_faces and max_faces > 0 else None
    if selection == "largest" and count is None:
        count = 1
    indices = parse_indices(face_indices) if selection == "index" else ()
    if selection == "index" and not indices:
        raise ValueError("selection 'index' needs face indices, e.g. '0' or '0,2' (faces are numbered "
                         "left to right from 0; see the Detect Faces report).")
    return FaceSelection(mode=selection, count=count, indices=indices, min_size=float(min_face_size),
                         threshold=float(similarity_threshold))


def detect(image: torch.Tensor, detector: Any, selection: FaceSelection, crop_size: int,
           track: bool = True, similarity_fn: Any = None, smoothing: Any = None) -> FaceSet:
    """Faces of every image of the batch, aligned at crop_size from the full-precision pixels.

    With track, a face keeps its index from frame to frame (restorer_core.faces.locate tracking),
    so "face 0" is the same person throughout a clip. smoothing: a
    restorer_core.faces.temporal.SmoothingConfig to align each tracked face at its landmarks smoothed
    over the frames (the batch is a clip, in order).
    """
    frames = image_list(image)
    cb.check_interrupt()
    found = locate_in_images(frames, detector, crop_size, selection, track, similarity_fn, smoothing,
                             workers=cpu_workers(len(frames)))
    faces = [f for per_frame in found for f in per_frame]
    sizes = [(int(f.shape[0]), int(f.shape[1])) for f in frames]
    result = FaceSet(faces, sizes, int(crop_size))
    for i in range(result.num_images):
        if not result.for_image(i):
            result.notes.append(f"image {i}: no face found (or none selected); it passes through unchanged.")
    return result


def describe_faces(faces: FaceSet) -> list[str]:
    lines = [f"{len(faces.faces)} face(s) in {faces.num_images} image(s), crops {faces.crop_size} px"]
    for i in range(faces.num_images):
        per = faces.for_image(i)
        if per:
            parts = [f"#{f.face_index} {f.detection.size:.0f}px score {f.score:.2f}"
                     + (f" sim {f.info['similarity']:.2f}" if "similarity" in f.info else "") for f in per]
            lines.append(f"image {i}: " + ", ".join(parts))
    return lines + list(faces.notes)


def face_box_mask(faces: FaceSet) -> torch.Tensor:
    """MASK [B, H, W]: 1 inside every selected face's detection box."""
    masks = []
    for i, (h, w) in enumerate(faces.image_sizes):
        m = np.zeros((h, w), np.float32)
        for f in faces.for_image(i):
            x0, y0, x1, y1 = np.asarray(f.box, dtype=np.float64)
            m[max(0, int(np.floor(y0))):min(h, int(np.ceil(y1))), max(0, int(np.floor(x0))):min(w, int(np.ceil(x1)))] = 1.0
        masks.append(m)
    return to_mask(masks)


# ----------------------------------------------------------------------------- restoration


def restore(handle: FaceRestorerHandle, faces: FaceSet, bank: Any, options: RestoreOptions) -> tuple[FaceSet, list[str]]:
    """Restore every face of the set on ComfyUI's device, batch by batch, with progress and cancel."""
    lines: list[str] = []
    if bank is not None and len(bank) == 0:
        raise BankError("the reference bank is empty; give it photos with one clear face each.")
    cond = handle.pipeline.conditioning(bank, options)  # a mode that can never work errors here
    if not faces.faces:
        msg = "no faces to restore: the images pass through unchanged."
        log(msg)
        return faces.with_faces([], msg), [msg]
    cb.load_on_device(handle.patcher)
    bar = cb.Progress(len(faces.faces))
    try:
        restored = handle.pipeline.restore_faces(faces.faces, bank, options, progress=bar,
                                                 should_cancel=cb.cancel_check)
    except CancelledError:
        cb.check_interrupt()
        raise cb.interrupted_exception()() from None
    # The runner and its CUDA graphs stay for the next run (captured once per batch shape);
    # ComfyUI moving the model off its device releases them (comfy_bridge.PatchableModule).
    kept = sorted({f.info["kept"] for f in restored if f.info.get("kept")})
    n_kept = sum(1 for f in restored if f.info.get("kept"))
    kept_text = f", kept {n_kept} as they were ({'; '.join(kept)})" if n_kept else ""
    lines.append(f"restored {len(restored) - n_kept} face(s){kept_text} with {handle.describe()}; "
                 f"conditioning: {cond.describe()}")
    lines.append(f"why: {cond.reason}")
    info = handle.pipeline.last_cache_info if cond.use_references else None
    if info is not None:
        lines.append(f"reference keys/values: cache {info.status}"
                     + (f" ({info.reason})" if info.reason and info.status != "hit" else "")
                     + f", references used {list(info.indices)}")
    return faces.with_faces(restored, lines[0], device=str(handle.pipeline.device)), lines


# ----------------------------------------------------------------------------- paste back


def paste(image: torch.Tensor, faces: FaceSet, config: PasteConfig,
          device: Optional[torch.device] = None) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Blend restored faces into their images on `device` (default: where the faces were
    restored, else ComfyUI's compute device); images without restored faces come back bit-identical."""
    device = device if device is not None else (faces.device or cb.compute_device())
    if not isinstance(image, torch.Tensor) or image.dim() != 4:
        raise ValueError(f"expected an IMAGE batch [B, H, W, C], got {getattr(image, 'shape', type(image))}")
    sizes = [(int(image.shape[1]), int(image.shape[2]))] * int(image.shape[0])
    if sizes != list(faces.image_sizes):
        raise ValueError(
            f"these faces were found in {faces.num_images} image(s) of size(s) {_sizes(faces.image_sizes)}, "
            f"but the image input has {len(sizes)} image(s) of size(s) {_sizes(sizes)}; connect the same "
            "IMAGE to Detect Faces and Paste Faces Back.")
    if not faces.restored_count:
        msg = ("no restored faces to paste: the images pass through unchanged"
               + (f" ({faces.kept_count} face(s) kept as they were)." if faces.kept_count else "."))
        log(msg)
        return image, torch.zeros(image.shape[:3], dtype=torch.float32), [msg]
    out = image.detach().to("cpu").clone()  # pasted in place, window by window (paste_frame)
    masks, lines = [], []
    bar = cb.Progress(len(sizes))
    for i in range(len(sizes)):
        cb.check_interrupt()
        done = [f for f in faces.for_image(i) if f.restored is not None and not f.info.get("kept")]
        if done:
            masks.append(paste_frame(out[i], done, config, device=device))
        else:
            masks.append(torch.zeros(sizes[i], dtype=torch.float32))
            kept = sum(1 for f in faces.for_image(i) if f.info.get("kept"))
            lines.append(f"image {i}: every face kept as it was, unchanged." if kept
                         else f"image {i}: no restored face, unchanged.")
        bar(i + 1, len(sizes))
    return out.to(device=image.device), torch.stack(masks), lines


def _sizes(sizes: Sequence[tuple]) -> str:
    uniq = sorted(set(sizes))
    return ", ".join(f"{w}x{h}" for h, w in uniq)
