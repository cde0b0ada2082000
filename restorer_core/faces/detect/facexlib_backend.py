"""RetinaFace from facexlib, for users who already have facexlib and its weights.

facexlib is optional (it needs torchvision). Its own `init_detection_model` downloads weights
and unpickles them without restriction, so this backend builds the network itself and loads
the state dict with `torch.load(weights_only=True)` from a file the user points to.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Any, Optional

import cv2
import numpy as np

from ...errors import DetectorError
from .base import BaseDetector, DetectorConfig, DetectorModelNotFoundError

WEIGHT_FILES = {
    "resnet50": "detection_Resnet50_Final.pth",
    "mobile0.25": "detection_mobilenet0.25_Final.pth",
}
WEIGHTS_URL = "https://github.com/xinntao/facexlib/releases/download/v0.1.0/"


def _import_retinaface() -> Any:
    try:
        from facexlib.detection import retinaface  # type: ignore[import-not-found]
    except ImportError as exc:
        raise DetectorError(
            "the 'facexlib' detector needs the facexlib package (and torchvision): run "
            "`pip install facexlib`, or pick the built-in 'yunet' detector."
        ) from exc
    return retinaface


def _resolve_weights(model_path: Optional[Path], retinaface_module: Any) -> Path:
    search: list[Path] = []
    if model_path is not None:
        path = Path(model_path).expanduser()
        if path.is_file():
            return path
        search.append(path)
    else:
        package_dir = Path(retinaface_module.__file__).resolve().parents[1]
        search += [package_dir / "weights", Path("facexlib") / "weights"]
    for folder in search:
        for name in WEIGHT_FILES.values():
            if (folder / name).is_file():
                return folder / name
    raise DetectorModelNotFoundError(
        f"RetinaFace weights not found (looked in {', '.join(map(str, search))}); download "
        f"{WEIGHTS_URL}{WEIGHT_FILES['resnet50']} and pass its path as the model path."
    )


def load_retinaface(model_path: Optional[Path]) -> Any:
    """Build facexlib's RetinaFace and load weights safely; returns the ready model."""
    retinaface = _import_retinaface()
    import torch

    weights = _resolve_weights(model_path, retinaface)
    network = "mobile0.25" if "mobilenet" in weights.name.lower() else "resnet50"
    model = retinaface.RetinaFace(network_name=network, half=False)
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise DetectorError(
            f"could not read RetinaFace weights {weights} ({exc}); re-download the file."
        ) from exc
    state = {k[7:] if k.startswith("module.") else k: v for k, v in state.items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise DetectorError(
            f"{weights.name} does not fit facexlib's RetinaFace-{network} ({exc})."
        ) from exc
    device = getattr(retinaface, "device", torch.device("cpu"))
    return model.to(device).eval()


class FacexlibDetector(BaseDetector):
    """Wraps any object with facexlib's `detect_faces(bgr, conf_threshold, nms_threshold)`,
    whose rows are [x0, y0, x1, y1, score, 5 x (lx, ly)] in RetinaFace's landmark order
    (image-left eye first, the same order as YuNet and SCRFD)."""

    name = "facexlib"

    def __init__(self, config: DetectorConfig, model: Any):
        super().__init__(config)
        self._model = model

    @classmethod
    def from_path(cls, config: DetectorConfig, model_path: Optional[Path]) -> "FacexlibDetector":
        return cls(config, load_retinaface(model_path))

    def _detect_raw(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        torch = sys.modules.get("torch")  # facexlib models are torch modules: torch is loaded
        with torch.no_grad() if torch is not None else contextlib.nullcontext():
            rows = self._model.detect_faces(
                bgr,
                conf_threshold=self.config.score_threshold,
                nms_threshold=self.config.nms_threshold,
            )
        rows = np.asarray(rows, dtype=np.float32).reshape(-1, 15)
        return rows[:, 0:4], rows[:, 4], rows[:, 5:15].reshape(-1, 5, 2)
