"""YuNet (libfacedetection, Apache-2.0) through OpenCV's FaceDetectorYN: the default detector.

The ONNX file ships inside the package, so this backend works offline with no extra install.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import contextlib

import cv2
import numpy as np

from ...errors import DetectorError
from .base import BaseDetector, DetectorConfig, DetectorModelNotFoundError

SHIPPED_MODEL = Path(__file__).resolve().parents[2] / "assets" / "yunet" / "face_detection_yunet_2023mar.onnx"



@contextlib.contextmanager
def _quiet_opencv():
    """OpenCV 5 warns that its new DNN graph engine ignores the target setting, once per net:
    harmless noise in a user's console, silenced for the duration of our own calls only."""
    logging = getattr(getattr(cv2, "utils", None), "logging", None)
    previous = logging.getLogLevel() if logging is not None else None
    if previous is not None:
        logging.setLogLevel(logging.LOG_LEVEL_ERROR)
    try:
        yield
    finally:
        if previous is not None:
            logging.setLogLevel(previous)

class YuNetDetector(BaseDetector):
    """Rows from FaceDetectorYN are [x, y, w, h, 5 x (lx, ly), score]; landmarks are already
    image-left eye, image-right eye, nose, image-left mouth corner, image-right mouth corner."""

    name = "yunet"

    def __init__(self, config: DetectorConfig, model_path: Optional[Path] = None):
        super().__init__(config)
        path = Path(model_path) if model_path is not None else SHIPPED_MODEL
        if path.is_dir():
            candidates = sorted(path.glob("*yunet*.onnx"))
            if not candidates:
                raise DetectorModelNotFoundError(
                    f"no YuNet .onnx file in {path}; put face_detection_yunet_2023mar.onnx there "
                    "or leave the model path empty to use the shipped one."
                )
            path = candidates[-1]
        if not path.is_file():
            raise DetectorModelNotFoundError(
                f"YuNet model not found at {path}; leave the model path empty to use the copy "
                "shipped with the package, or reinstall it if that copy is missing."
            )
        self.model_path = path
        try:
            with _quiet_opencv():
                self._net = cv2.FaceDetectorYN.create(
                    str(path), "", (320, 320), config.score_threshold, config.nms_threshold, config.top_k
                )
        except cv2.error as exc:
            raise DetectorError(
                f"OpenCV could not load YuNet from {path} ({exc}); it needs opencv-python >= 4.8."
            ) from exc

    def _detect_raw(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        h, w = rgb.shape[:2]
        self._net.setInputSize((w, h))
        with _quiet_opencv():
            _, rows = self._net.detect(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        if rows is None or len(rows) == 0:
            empty = np.zeros((0,), dtype=np.float32)
            return empty.reshape(0, 4), empty, empty.reshape(0, 5, 2)
        rows = np.asarray(rows, dtype=np.float32)
        boxes = np.concatenate([rows[:, 0:2], rows[:, 0:2] + rows[:, 2:4]], axis=1)
        return boxes, rows[:, 14], rows[:, 4:14].reshape(-1, 5, 2)
