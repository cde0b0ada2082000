"""SCRFD (InsightFace) through onnxruntime, for users who bring their own insightface models.

Supports the `*_bnkps` / `det_10g` layout: three feature strides (8, 16, 32) with two anchors per
position, or five strides (8..128) with one anchor; outputs per stride are scores [K, 1],
box distances [K, 4] and keypoint offsets [K, 10], in units of the stride. The input is RGB,
normalised as (x - 127.5) / 128, letterboxed (top-left aligned, zero padded) into the model's
input size. The weights are the user's (non-commercial licence); none ship with this package.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import cv2
import numpy as np

from ...errors import DetectorError
from .base import BaseDetector, DetectorConfig, DetectorModelNotFoundError, nms

DEFAULT_INPUT_SIZE = (640, 640)  # (width, height) for models with a dynamic input shape
_PREFERRED_NAMES = ("det_10g.onnx", "scrfd_10g_bnkps.onnx", "scrfd_2.5g_bnkps.onnx")


def resolve_model_file(model_path: Optional[Path]) -> Path:
    """A .onnx path, or an insightface model folder (e.g. models/buffalo_l) -> the detector file."""
    if model_path is None:
        raise DetectorModelNotFoundError(
            "SCRFD needs a model: pass the path of an insightface detector .onnx (e.g. "
            "det_10g.onnx from buffalo_l) or of the folder that holds it."
        )
    path = Path(model_path).expanduser()
    if path.is_dir():
        files = sorted(path.glob("*.onnx"))
        by_name = {f.name: f for f in files}
        for name in _PREFERRED_NAMES:
            if name in by_name:
                return by_name[name]
        detectors = [f for f in files if f.name.startswith(("det_", "scrfd"))]
        if len(detectors) == 1:
            return detectors[0]
        listing = ", ".join(f.name for f in files) or "no .onnx files"
        raise DetectorModelNotFoundError(
            f"could not tell which file in {path} is the SCRFD detector ({listing}); "
            "pass the .onnx file itself."
        )
    if not path.is_file():
        raise DetectorModelNotFoundError(
            f"SCRFD model not found at {path}; download an insightface model pack "
            "(e.g. buffalo_l) and point to its det_10g.onnx."
        )
    return path


def anchor_centres(height: int, width: int, stride: int, num_anchors: int) -> np.ndarray:
    """[height * width * num_anchors, 2] (x, y) centres, row-major, anchors innermost."""
    ys, xs = np.mgrid[:height, :width]
    centres = np.stack([xs, ys], axis=-1).reshape(-1, 2).astype(np.float32) * stride
    return np.repeat(centres, num_anchors, axis=0)


def distance_to_box(centres: np.ndarray, dist: np.ndarray) -> np.ndarray:
    """(left, top, right, bottom) distances from centres -> (x0, y0, x1, y1)."""
    return np.concatenate([centres - dist[:, 0:2], centres + dist[:, 2:4]], axis=1)


def distance_to_keypoints(centres: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Per-keypoint (dx, dy) offsets from centres [K, 2 * P] -> [K, P, 2] points."""
    return centres[:, None, :] + offsets.reshape(len(offsets), -1, 2)


class SCRFDDetector(BaseDetector):
    name = "scrfd"

    def __init__(
        self,
        config: DetectorConfig,
        model_path: Optional[Path],
        providers: Optional[Sequence[str]] = None,
    ):
        super().__init__(config)
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise DetectorError(
                "the SCRFD detector needs onnxruntime: run `pip install onnxruntime` "
                "(or onnxruntime-gpu), or pick the built-in 'yunet' detector."
            ) from exc
        self.model_path = resolve_model_file(model_path)
        if providers is None:
            available = ort.get_available_providers()
            providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
        try:
            self._session = ort.InferenceSession(str(self.model_path), providers=list(providers))
        except Exception as exc:  # onnxruntime raises its own exception types
            raise DetectorError(
                f"onnxruntime could not load {self.model_path} ({exc}); is it a SCRFD detector .onnx?"
            ) from exc
        self._input_name = self._session.get_inputs()[0].name
        self._input_size = self._fixed_input_size() or DEFAULT_INPUT_SIZE
        self._layout = self._output_layout()

    def _fixed_input_size(self) -> Optional[tuple[int, int]]:
        shape = self._session.get_inputs()[0].shape
        if len(shape) == 4 and isinstance(shape[2], int) and isinstance(shape[3], int):
            return int(shape[3]), int(shape[2])
        return None

    def _output_layout(self) -> tuple[list[int], int, list[tuple[int, int, int]]]:
        """(strides, anchors per position, [(score, box, kps) output index per stride])."""
        outputs = self._session.get_outputs()
        count = len(outputs)
        if count == 9:
            strides, anchors = [8, 16, 32], 2
        elif count == 15:
            strides, anchors = [8, 16, 32, 64, 128], 1
        elif count in (6, 10):
            raise DetectorError(
                f"{self.model_path.name} is a SCRFD model without keypoints; alignment needs the "
                "five landmarks. Use a *_kps / *_bnkps model such as det_10g.onnx."
            )
        else:
            raise DetectorError(
                f"{self.model_path.name} has {count} outputs, not a SCRFD layout (9 or 15 expected)."
            )
        names = [o.name for o in outputs]
        fmc = len(strides)
        by_name = []
        for stride in strides:
            idx = [names.index(f"{kind}_{stride}") if f"{kind}_{stride}" in names else -1
                   for kind in ("score", "bbox", "kps")]
            by_name.append(tuple(idx))
        if all(i >= 0 for triple in by_name for i in triple):
            return strides, anchors, by_name
        # insightface's export order: all scores, then all boxes, then all keypoints.
        return strides, anchors, [(i, i + fmc, i + 2 * fmc) for i in range(fmc)]

    def _letterbox(self, rgb: np.ndarray) -> tuple[np.ndarray, float]:
        in_w, in_h = self._input_size
        h, w = rgb.shape[:2]
        scale = min(in_w / w, in_h / h)
        new_w, new_h = max(1, int(w * scale)), max(1, int(h * scale))
        canvas = np.zeros((in_h, in_w, 3), dtype=np.uint8)
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        canvas[:new_h, :new_w] = cv2.resize(rgb, (new_w, new_h), interpolation=interp)
        blob = (canvas.astype(np.float32) - 127.5) / 128.0
        return blob.transpose(2, 0, 1)[None], new_h / h

    def _detect_raw(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        blob, det_scale = self._letterbox(rgb)
        outs = self._session.run(None, {self._input_name: blob})
        strides, anchors, layout = self._layout
        in_h, in_w = blob.shape[2:]
        all_boxes, all_scores, all_kps = [], [], []
        for stride, (i_score, i_box, i_kps) in zip(strides, layout):
            scores = _drop_batch(outs[i_score]).reshape(-1)
            keep = np.flatnonzero(scores >= self.config.score_threshold)
            if keep.size == 0:
                continue
            centres = anchor_centres(in_h // stride, in_w // stride, stride, anchors)[keep]
            dist = _drop_batch(outs[i_box]).reshape(-1, 4)[keep] * stride
            offs = _drop_batch(outs[i_kps]).reshape(-1, 10)[keep] * stride
            all_boxes.append(distance_to_box(centres, dist))
            all_kps.append(distance_to_keypoints(centres, offs))
            all_scores.append(scores[keep])
        if not all_scores:
            empty = np.zeros((0,), dtype=np.float32)
            return empty.reshape(0, 4), empty, empty.reshape(0, 5, 2)
        boxes = np.concatenate(all_boxes) / det_scale
        kps = np.concatenate(all_kps) / det_scale
        scores = np.concatenate(all_scores)
        order = np.argsort(-scores, kind="stable")[: self.config.top_k]
        keep = order[nms(boxes[order], scores[order], self.config.nms_threshold)]
        return boxes[keep], scores[keep], kps[keep]


def _drop_batch(arr: np.ndarray) -> np.ndarray:
    """Some exports return [1, K, C], others [K, C]."""
    return arr[0] if arr.ndim == 3 else arr
