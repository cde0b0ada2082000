"""Face recognition for identity loss and face similarity: MobileFaceNet on the project's crops.

    from restorer_core.face_id import load_face_id, similarity
    net = load_face_id()            # frozen, eval mode, shipped weights
    emb = net(crops)                # crops: [B, 3, S, S] FFHQ-aligned RGB 0..1, any S -> [B, 192]
    cos = similarity(emb_a, emb_b)  # [N, M] cosine similarities

The embedder warps the FFHQ-aligned crops to the ArcFace 112 px framing (warp.py) and runs
MobileFaceNet (mobilefacenet.py, converted from TF.js by convert.py). Differentiable in its input.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ModelNotFoundError
from ..faces.identity import cosine_similarity as similarity
from ..faces.identity import embed_faces as embed_crops
from .mobilefacenet import FACE_ID_FORMAT, MobileFaceNet, load_mobilefacenet, save_face_id
from .warp import ARCFACE_TEMPLATE_112, ffhq_to_arcface_matrix, warp_ffhq_to_arcface

DEFAULT_FACE_ID_PATH = Path(__file__).resolve().parent.parent / "assets" / "models" / "mobilefacenet.safetensors"

__all__ = [
    "ARCFACE_TEMPLATE_112", "DEFAULT_FACE_ID_PATH", "FACE_ID_FORMAT", "FaceIdEmbedder", "MobileFaceNet",
    "embed_crops", "ffhq_to_arcface_matrix", "load_face_id", "save_face_id", "similarity", "warp_ffhq_to_arcface",
]


class FaceIdEmbedder(nn.Module):
    """FFHQ-aligned crops [B, 3, S, S] RGB in 0..1 -> L2-normalised float32 embeddings [B, D]."""

    def __init__(self, net: MobileFaceNet):
        super().__init__()
        self.net = net
        self.embedding_dim = net.embedding_dim
        self.input_size = net.input_size

    def to_network_input(self, crops: torch.Tensor) -> torch.Tensor:
        """The crops the network sees, in its framing (differentiable): ArcFace-aligned, or the
        central fraction of the FFHQ-aligned crop ("centre:F"), resized to its input size."""
        if crops.ndim != 4 or crops.shape[1] != 3:
            raise ValueError(f"FaceIdEmbedder expects [B, 3, S, S] RGB crops in 0..1, got {tuple(crops.shape)}")
        fraction = self.net.centre_fraction
        if not fraction:
            return warp_ffhq_to_arcface(crops, self.input_size)
        size = crops.shape[-1]
        keep = max(1, int(round(size * fraction)))
        start = (size - keep) // 2
        centre = crops[..., start:start + keep, start:start + keep]
        return F.interpolate(centre, size=(self.input_size, self.input_size), mode="bilinear",
                             align_corners=False, antialias=keep > self.input_size)

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.net(self.to_network_input(crops)).float(), dim=-1)

    def stage_features(self, crops: torch.Tensor) -> list:
        """The network's activations at the end of each resolution, in its framing (differentiable):
        what the face-perceptual loss (train.losses, identity_features) compares."""
        return self.net.stage_features(self.to_network_input(crops))


def load_face_id(
    path: Optional[Union[str, os.PathLike]] = None,
    device: Union[str, torch.device] = "cpu",
    dtype: torch.dtype = torch.float32,
) -> FaceIdEmbedder:
    """The frozen, eval-mode embedder from a converted file (default: the shipped MobileFaceNet)."""
    path = Path(path) if path is not None else DEFAULT_FACE_ID_PATH
    if not path.is_file() and path == DEFAULT_FACE_ID_PATH:
        raise ModelNotFoundError(
            f"the shipped face-ID network {path} is missing; reinstall the pack or convert it with "
            "python -m restorer_core.face_id.convert --json mobilefacenet.json --out " + str(path)
        )
    net = load_mobilefacenet(path)
    return FaceIdEmbedder(net).to(device=device, dtype=dtype).eval().requires_grad_(False)
