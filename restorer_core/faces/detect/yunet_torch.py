"""YuNet on a torch device, batched: FaceDetectorYN's pre- and post-processing around the torch
network (yunet_net.YuNet), so a GPU run detects a chunk of video frames in one pass (issue 19).

Same steps as the CPU backend (BaseDetector + OpenCV's FaceDetectorYN): shrink to the detection
size with area averaging (cv2.INTER_AREA's weights, as matrices on the device: warp_torch.resize) and round to 8 bits,
BGR, zero-pad to multiples of 32, run the network, score = sqrt(cls * obj), decode boxes and
landmarks per cell and stride, then OpenCV's NMS on integer boxes (on the host: only the few
candidates above the threshold leave the device). detect() (shrunk on the host by cv2) gives
the CPU backend's detections to float rounding; detect_batch()'s device shrink differs from
cv2's by one level in a few percent of the pixels (float order at rounding ties), which moves
landmarks as one level of noise moves OpenCV's own (tests/test_yunet_torch.py,
benchmarks/results/yunet_torch_agreement.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from ..records import DetectedFace
from ..warp_torch import resize
from .base import BaseDetector, DetectorConfig, check_rgb8, detection_size, nms
from .yunet_net import STRIDES, TORCH_FILE, load_yunet

DIVISOR = 32


def _resize_area(batch: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """[B, 3, H, W] float -> [B, 3, h, w] (size = (w, h)) by area averaging, rounded as uint8 is."""
    _, _, h_in, w_in = batch.shape
    w_out, h_out = size
    if (w_out, h_out) == (w_in, h_in):
        return batch
    out = resize(batch, (h_out, w_out), "area")  # its weight matrices are made once per size and device
    # cv2 rounds an integer-factor shrink (its box-average path) half up, any other half to even
    whole = w_in % w_out == 0 and h_in % h_out == 0
    return (out.add_(0.5).floor_() if whole else out.round_()).clamp_(0, 255)


def decode(outputs: dict, pad_hw: tuple[int, int], threshold: float) -> list[np.ndarray]:
    """FaceDetectorYN's decoding, batched: per image the rows [x, y, w, h, 10 landmark coords,
    score] of every cell whose score reaches `threshold` (strides 8, 16, 32, row-major order)."""
    rows = []
    for stride in STRIDES:
        cols, n = pad_hw[1] // stride, (pad_hw[0] // stride) * (pad_hw[1] // stride)
        cls, obj = outputs[f"cls_{stride}"][..., 0].float(), outputs[f"obj_{stride}"][..., 0].float()
        bbox, kps = outputs[f"bbox_{stride}"].float(), outputs[f"kps_{stride}"].float()
        idx = torch.arange(n, device=cls.device)
        cell = torch.stack([idx % cols, idx // cols], dim=1).float()  # (c, r)
        score = torch.sqrt(cls.clamp(0, 1) * obj.clamp(0, 1))
        centre = (cell + bbox[..., 0:2]) * stride
        wh = torch.exp(bbox[..., 2:4]) * stride
        marks = (kps.reshape(*kps.shape[:2], 5, 2) + cell[:, None, :]) * stride
        rows.append(torch.cat([centre - wh / 2, wh, marks.flatten(2), score[..., None]], dim=2))
    table = torch.cat(rows, dim=1)
    keep = table[..., 14] >= threshold
    counts = keep.sum(dim=1).tolist()
    picked = table[keep].cpu().numpy()  # one small copy for the whole batch
    return np.split(picked, np.cumsum(counts)[:-1]) if counts else []


def opencv_nms(rows: np.ndarray, nms_threshold: float, top_k: int) -> np.ndarray:
    """FaceDetectorYN's NMS: on boxes truncated to integers, best score first, top_k kept."""
    if len(rows) < 2:
        return rows
    xywh = np.trunc(rows[:, 0:4]).astype(np.float64)
    boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
    order = np.argsort(-rows[:, 14], kind="stable")[:top_k]
    keep = nms(boxes[order], rows[order, 14], nms_threshold)
    return rows[order[keep]]


class YuNetTorchDetector(BaseDetector):
    """The "yunet" backend on a torch device; detect() takes one image, detect_batch() many
    (images of one size go through the network together, `batch` at a time)."""

    name = "yunet"
    thread_safe = True  # no per-call state: the network is only read

    def __init__(self, config: DetectorConfig, device: torch.device | str = "cpu",
                 weights: Path = TORCH_FILE, batch: int = 8):
        super().__init__(config)
        self.device = torch.device(device)
        self.net = load_yunet(weights, self.device)
        self.batch = int(batch)

    def _detect_raw(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rows = self._rows(torch.from_numpy(np.ascontiguousarray(rgb))[None], rgb.shape[1::-1])[0]
        return _split_rows(rows)

    def _rows(self, frames_u8: torch.Tensor, size: tuple[int, int]) -> list[np.ndarray]:
        """[B, H, W, 3] uint8 RGB (any device) -> per image its rows after NMS, at detection size."""
        x = frames_u8.to(self.device, non_blocking=True).permute(0, 3, 1, 2).flip(1).float()  # BGR
        x = _resize_area(x, size)
        h, w = x.shape[2:]
        ph, pw = -(-h // DIVISOR) * DIVISOR, -(-w // DIVISOR) * DIVISOR
        x = torch.nn.functional.pad(x, (0, pw - w, 0, ph - h))
        with torch.inference_mode():
            found = decode(self.net(x.contiguous()), (ph, pw), self.config.score_threshold)
        return [opencv_nms(r, self.config.nms_threshold, self.config.top_k) for r in found]

    def detect_batch(self, images: Sequence[np.ndarray]) -> list[list[DetectedFace]]:
        """detect() of every image; images of one size share network passes."""
        images = [check_rgb8(im) for im in images]
        out: list[Optional[list[DetectedFace]]] = [None] * len(images)
        groups: dict = {}
        for i, im in enumerate(images):
            if min(im.shape[:2]) < self.config.min_side:
                out[i] = []
            else:
                groups.setdefault(im.shape, []).append(i)
        for shape, members in groups.items():
            size, scale = detection_size(shape[:2], self.config.max_side)
            for start in range(0, len(members), self.batch):
                part = members[start:start + self.batch]
                stacked = torch.from_numpy(np.stack([images[i] for i in part]))
                if self.device.type == "cuda":
                    stacked = stacked.pin_memory()
                for i, rows in zip(part, self._rows(stacked, size)):
                    out[i] = self._to_faces(*_split_rows(rows), scale, shape[1], shape[0])
        return out  # type: ignore[return-value]

    def __repr__(self) -> str:
        return f"YuNetTorchDetector({self.config}, device={self.device})"


def _split_rows(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    boxes = np.concatenate([rows[:, 0:2], rows[:, 0:2] + rows[:, 2:4]], axis=1)
    return boxes, rows[:, 14], rows[:, 4:14].reshape(-1, 5, 2)
