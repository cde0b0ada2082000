"""ArcFace from a user's insightface models (w600k_r50.onnx, glintr100.onnx) through onnxruntime.

Users of face packs (ReActor, InstantID, PuLID) keep insightface's model packs in
ComfyUI/models/insightface (models/buffalo_l/w600k_r50.onnx, models/antelopev2/glintr100.onnx).
Their recognition networks take one ArcFace-aligned face, 1x3x112x112 RGB with (x - 127.5) / 127.5
(insightface's ArcFaceONNX for these files), and give a 512-d embedding. ArcFaceOnnx feeds them
the project's FFHQ-aligned crops, warped to the ArcFace framing (warp.py), and scores with the
same cosine as the shipped embedder (restorer_core.faces.identity.IdentityScorer takes either).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

import numpy as np

from ..errors import CheckpointError, ModelNotFoundError

# Where insightface's packs put them, relative to an insightface models folder (checked in this
# order: buffalo_l is the pack most users have, antelopev2 the larger one).
KNOWN_FILES = (
    "models/buffalo_l/w600k_r50.onnx",
    "models/antelopev2/glintr100.onnx",
    "buffalo_l/w600k_r50.onnx",
    "antelopev2/glintr100.onnx",
    "w600k_r50.onnx",
    "glintr100.onnx",
)
INPUT_SIZE = 112
EMBEDDING_DIM = 512
# insightface's recognition example: cosine below 0.2 another person, 0.2-0.28 likely the same,
# from 0.28 the same person (not measured by this project).
SAME_PERSON_THRESHOLD = 0.28


def find_arcface(folders: Iterable[Union[str, os.PathLike]]) -> Optional[Path]:
    """The first insightface recognition model under the folders (KNOWN_FILES order), or None."""
    folders = [Path(f) for f in folders]
    for rel in KNOWN_FILES:
        for folder in folders:
            path = folder / rel
            if path.is_file():
                return path
    return None


def _providers(requested: Optional[Sequence[str]]) -> list:
    import onnxruntime as ort

    available = ort.get_available_providers()
    wanted = list(requested) if requested else ["CUDAExecutionProvider", "CPUExecutionProvider"]
    chosen = [p for p in wanted if p in available]
    return chosen or ["CPUExecutionProvider"]


class ArcFaceOnnx:
    """FFHQ-aligned crops -> L2-normalised ArcFace embeddings [N, 512], by an insightface .onnx.

    Has what restorer_core.faces.identity's scorer reads from an embedder: embed_hwc, embedding_dim,
    name, same_person_threshold.
    """

    def __init__(self, path: Union[str, os.PathLike], providers: Optional[Sequence[str]] = None):
        self.path = Path(path)
        if not self.path.is_file():
            raise ModelNotFoundError(f"ArcFace model {self.path} not found; give the path of an insightface "
                                     "recognition model (e.g. models/insightface/models/buffalo_l/w600k_r50.onnx).")
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise ModelNotFoundError(f"using {self.path.name} for identity needs onnxruntime: pip install "
                                     "onnxruntime (or onnxruntime-gpu) into ComfyUI's Python.") from exc
        try:
            self.session = ort.InferenceSession(str(self.path), providers=_providers(providers))
        except Exception as exc:  # onnxruntime raises its own types for unreadable graphs
            raise CheckpointError(f"{self.path} is not a readable ONNX model ({exc}); re-download it.") from exc
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        shape = list(inputs[0].shape) if len(inputs) == 1 else []
        if len(inputs) != 1 or len(shape) != 4 or shape[1:] != [3, INPUT_SIZE, INPUT_SIZE]:
            raise CheckpointError(
                f"{self.path.name} is not an ArcFace recognition model: it takes "
                f"{[tuple(i.shape) for i in inputs]}, expected one input N x 3 x 112 x 112 "
                "(insightface's w600k_r50.onnx or glintr100.onnx).")
        out_shape = list(outputs[0].shape)
        if len(outputs) != 1 or len(out_shape) != 2 or out_shape[1] != EMBEDDING_DIM:
            raise CheckpointError(
                f"{self.path.name} is not an ArcFace recognition model: it gives "
                f"{[tuple(o.shape) for o in outputs]}, expected one N x 512 embedding.")
        self.input_name = inputs[0].name
        self.batch = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None  # None: any batch
        self.embedding_dim = EMBEDDING_DIM
        self.same_person_threshold = SAME_PERSON_THRESHOLD
        self.name = f"ArcFace {self.path.name}"

    def network_input(self, crops: np.ndarray) -> np.ndarray:
        """FFHQ-aligned crops [N, S, S, 3] (uint8, or float in 0..1) -> the network's input
        [N, 3, 112, 112] float32: ArcFace-aligned RGB, (x - 127.5) / 127.5."""
        import torch

        from .warp import warp_ffhq_to_arcface

        crops = np.asarray(crops)
        if crops.ndim != 4 or crops.shape[-1] != 3 or crops.shape[1] != crops.shape[2]:
            raise ValueError(f"expected square RGB crops [N, S, S, 3], got {crops.shape}")
        x = crops.astype(np.float32) / (255.0 if crops.dtype == np.uint8 else 1.0)
        with torch.no_grad():
            warped = warp_ffhq_to_arcface(torch.from_numpy(x).permute(0, 3, 1, 2), INPUT_SIZE)
        pixels = np.clip(warped.numpy(), 0.0, 1.0) * 255.0
        return ((pixels - 127.5) / 127.5).astype(np.float32)

    def embed_hwc(self, crops: np.ndarray, batch_size: int = 32) -> np.ndarray:
        """L2-normalised embeddings [N, 512] float32 of FFHQ-aligned crops [N, S, S, 3]."""
        if not len(crops):
            return np.zeros((0, EMBEDDING_DIM), np.float32)
        step = self.batch or batch_size
        out = []
        for i in range(0, len(crops), step):
            blob = self.network_input(crops[i:i + step])
            if self.batch and len(blob) < self.batch:  # a fixed-batch graph: pad the last chunk
                blob = np.concatenate([blob, np.repeat(blob[-1:], self.batch - len(blob), axis=0)])
            emb = self.session.run(None, {self.input_name: blob})[0][: min(step, len(crops) - i)]
            out.append(emb.astype(np.float32))
        emb = np.concatenate(out)
        return emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
