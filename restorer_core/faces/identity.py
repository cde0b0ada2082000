"""A small face-recognition embedder (MobileFaceNet-style) for identity loss and face similarity.

It takes aligned face crops (the FFHQ-style template of restorer_core.faces.align, any size, RGB in
0..1), cuts the inner-face box that matches the usual 112 px recognition framing, and returns
L2-normalised embeddings. Cosine similarity of two embeddings is the identity score used by
the restorer's identity loss, reference-bank face selection and the similarity output node.

Weights ship as restorer_core/assets/models/identity_embedder.safetensors (fp16, ~2 MB) with
the architecture config in the file's metadata; train them with restorer_core.train.identity_train.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CheckpointError, ModelNotFoundError

EMBEDDER_FORMAT = "identity-embedder/1"
DEFAULT_EMBEDDER_PATH = Path(__file__).resolve().parents[1] / "assets" / "models" / "identity_embedder.safetensors"


@dataclass(frozen=True)
class IdentityConfig:
    """Architecture of the embedder.

    crop_box: (x0, y0, x1, y1) fractions of the aligned crop fed to the network; the default
    frames an FFHQ-template crop like the ArcFace 112 px template (eye distance ~31% of width).
    stages: (channels, stride, repeats) of the inverted-residual stages after the stem.
    """

    embedding_dim: int = 128
    input_size: int = 112
    crop_box: tuple[float, float, float, float] = (0.11, 0.11, 0.89, 0.89)
    stem_channels: int = 64
    expansion: int = 2
    stages: tuple[tuple[int, int, int], ...] = ((64, 2, 5), (128, 2, 7), (128, 2, 3))
    head_channels: int = 512

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "IdentityConfig":
        d = dict(d)
        if "crop_box" in d:
            d["crop_box"] = tuple(float(v) for v in d["crop_box"])
        if "stages" in d:
            d["stages"] = tuple(tuple(int(v) for v in s) for s in d["stages"])
        return cls(**d)


# ----------------------------------------------------------------------------- network


class ConvBN(nn.Sequential):
    def __init__(self, cin: int, cout: int, k: int = 1, stride: int = 1, groups: int = 1, act: bool = True):
        layers: list[nn.Module] = [
            nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
        ]
        if act:
            layers.append(nn.PReLU(cout))
        super().__init__(*layers)


class InvertedResidual(nn.Module):
    """1x1 expand -> 3x3 depthwise -> 1x1 linear projection, residual when shapes match."""

    def __init__(self, cin: int, cout: int, stride: int, expansion: int):
        super().__init__()
        mid = cin * expansion
        self.block = nn.Sequential(
            ConvBN(cin, mid, 1),
            ConvBN(mid, mid, 3, stride, groups=mid),
            ConvBN(mid, cout, 1, act=False),
        )
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return x + y if self.residual else y


class IdentityEmbedder(nn.Module):
    """Aligned face crops [B, 3, H, W] in 0..1 -> L2-normalised embeddings [B, embedding_dim]."""

    def __init__(self, config: IdentityConfig = IdentityConfig()):
        super().__init__()
        self.config = config
        self.metadata: dict = {}  # the file's safetensors metadata, when loaded from one
        c = config
        layers: list[nn.Module] = [
            ConvBN(3, c.stem_channels, 3, 2),
            ConvBN(c.stem_channels, c.stem_channels, 3, 1, groups=c.stem_channels),
        ]
        cin = c.stem_channels
        for cout, stride, repeats in c.stages:
            for i in range(repeats):
                layers.append(InvertedResidual(cin, cout, stride if i == 0 else 1, c.expansion))
                cin = cout
        layers.append(ConvBN(cin, c.head_channels, 1))
        self.features = nn.Sequential(*layers)
        reduction = 2 ** (1 + sum(1 for _, s, _ in c.stages if s == 2))
        self.feature_size = -(-c.input_size // reduction)
        # global depthwise conv: a learned spatial weighting instead of average pooling
        self.gdc = nn.Sequential(
            nn.Conv2d(c.head_channels, c.head_channels, self.feature_size, groups=c.head_channels, bias=False),
            nn.BatchNorm2d(c.head_channels),
        )
        self.embed = nn.Linear(c.head_channels, c.embedding_dim, bias=False)
        self.embed_bn = nn.BatchNorm1d(c.embedding_dim)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """Cut the inner-face box, resize to input_size, map 0..1 -> -1..1 (differentiable)."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"IdentityEmbedder expects [B, 3, H, W] RGB crops, got {tuple(images.shape)}")
        h, w = images.shape[-2:]
        x0, y0, x1, y1 = self.config.crop_box
        top, bottom = int(round(y0 * h)), int(round(y1 * h))
        left, right = int(round(x0 * w)), int(round(x1 * w))
        x = images[:, :, top:bottom, left:right]
        size = self.config.input_size
        if x.shape[-2:] != (size, size):
            antialias = x.shape[-1] > size
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=antialias)
        return x * 2.0 - 1.0

    def stage_features(self, images: torch.Tensor) -> list:
        """The activations at the end of each resolution of the network (before every downsampling,
        and the last): what the face-perceptual loss compares (differentiable)."""
        x, outs = self.preprocess(images), []
        for i, layer in enumerate(self.features):
            y = layer(x)
            if i > 0 and y.shape[-1] != x.shape[-1]:  # the input image itself is not a feature
                outs.append(x)
            x = y
        outs.append(x)
        return outs

    def features_raw(self, images: torch.Tensor) -> torch.Tensor:
        """Unnormalised embeddings (what the margin head trains on)."""
        x = self.features(self.preprocess(images))
        x = self.gdc(x).flatten(1)
        return self.embed_bn(self.embed(x))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.features_raw(images).float(), dim=-1)


# ----------------------------------------------------------------------------- helpers


def cosine_similarity(a: Union[torch.Tensor, np.ndarray], b: Union[torch.Tensor, np.ndarray]):
    """Pairwise cosine similarity of embeddings a [N, D] and b [M, D] -> [N, M] (same type as a)."""
    if isinstance(a, np.ndarray):
        a2 = a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), 1e-12)
        b2 = np.asarray(b) / np.maximum(np.linalg.norm(b, axis=-1, keepdims=True), 1e-12)
        return a2 @ b2.T
    b = torch.as_tensor(b, device=a.device, dtype=a.dtype)
    return F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T


@torch.no_grad()
def embed_faces(model: nn.Module, crops: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Embeddings [N, D] float32 of aligned crops [N, S, S, 3] (uint8, or float in 0..1), by any
    embedder taking [B, 3, S, S] crops in 0..1 (IdentityEmbedder, face_id.FaceIdEmbedder), or one
    that embeds such crops itself (embed_hwc: face_id.arcface_onnx.ArcFaceOnnx)."""
    if hasattr(model, "embed_hwc"):
        return model.embed_hwc(np.asarray(crops), batch_size)
    p = next(model.parameters())
    out = []
    for i in range(0, len(crops), batch_size):
        chunk = np.asarray(crops[i:i + batch_size])
        x = torch.from_numpy(chunk.astype(np.float32) / (255.0 if chunk.dtype == np.uint8 else 1.0))
        x = x.permute(0, 3, 1, 2).to(p.device, p.dtype)
        out.append(model(x).float().cpu().numpy())
    dim = getattr(model, "embedding_dim", None) or model.config.embedding_dim
    return np.concatenate(out) if out else np.zeros((0, dim), np.float32)


def mean_identity(model: IdentityEmbedder, crops: np.ndarray) -> np.ndarray:
    """One unit-length identity [D] from several aligned photos of a person (mean embedding)."""
    emb = embed_faces(model, crops).mean(axis=0)
    return emb / max(float(np.linalg.norm(emb)), 1e-12)


def similarities(model: IdentityEmbedder, crops, identity: np.ndarray) -> list:
    """Cosine similarity of each aligned crop [S, S, 3] (0..1) to a unit-length identity."""
    if not len(crops):
        return []
    emb = embed_faces(model, np.stack([np.asarray(c, np.float32) for c in crops]))
    emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    return [float(v) for v in emb @ identity]


def embedder_metadata(model: IdentityEmbedder, extra: Optional[dict] = None) -> dict[str, str]:
    """safetensors metadata (all strings) describing an embedder file."""
    meta = {"format": EMBEDDER_FORMAT, "config": json.dumps(model.config.to_dict())}
    for k, v in (extra or {}).items():
        meta[k] = v if isinstance(v, str) else json.dumps(v)
    return meta


def load_identity_embedder(
    path: Optional[Union[str, os.PathLike]] = None,
    device: Union[str, torch.device] = "cpu",
    dtype: torch.dtype = torch.float32,
) -> IdentityEmbedder:
    """Load a frozen, eval-mode embedder from safetensors (default: the shipped one)."""
    from safetensors import safe_open

    path = Path(path) if path is not None else DEFAULT_EMBEDDER_PATH
    if not path.is_file():
        if path == DEFAULT_EMBEDDER_PATH:
            raise ModelNotFoundError(
                f"the identity embedder is not shipped yet ({path} is missing); train one with "
                "python -m restorer_core.train.identity_train and copy its identity_embedder.safetensors there, "
                "or pass the path of one explicitly."
            )
        raise ModelNotFoundError(f"identity embedder file {path} not found; check the path.")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # safetensors raises several types on corrupt headers
        raise CheckpointError(f"{path} is not a readable safetensors file ({exc}); re-download or re-export it.") from exc
    if meta.get("format") != EMBEDDER_FORMAT or "config" not in meta:
        raise CheckpointError(
            f"{path} is not an identity embedder (metadata format {meta.get('format')!r}, expected "
            f"{EMBEDDER_FORMAT!r}); export one with restorer_core.train.identity_train."
        )
    model = IdentityEmbedder(IdentityConfig.from_dict(json.loads(meta["config"])))
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in state.items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"{path} does not fit the embedder architecture in its own metadata (missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}); re-export it."
        )
    model.metadata = meta
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False)


# The shipped embedder's same-person cosine (balanced accuracy on held-out people, model card),
# used when an embedder file does not carry its own "threshold" metadata.
SAME_PERSON_FALLBACK = 0.24


class IdentityScorer:
    """How much faces look like a reference bank's person: cosine similarity of each aligned
    crop to the bank's mean identity, which is computed once per bank (by its hash), and the
    embedder's same-person threshold. The embedder is the shipped IdentityEmbedder or an
    ArcFace network (face_id.arcface_onnx), which carries its own name and threshold."""

    def __init__(self, embedder: IdentityEmbedder, threshold: Optional[float] = None,
                 name: Optional[str] = None):
        self.embedder = embedder
        self.name = name or getattr(embedder, "name", None) or "identity_embedder"
        if threshold is None:
            threshold = getattr(embedder, "same_person_threshold", None)
        if threshold is None:
            try:
                threshold = float((getattr(embedder, "metadata", {}) or {}).get("threshold", ""))
            except ValueError:
                threshold = SAME_PERSON_FALLBACK
        self.threshold = float(threshold)
        self._banks: dict = {}

    def same_person(self, score: float) -> bool:
        return float(score) >= self.threshold

    def bank_identity(self, bank) -> np.ndarray:
        """Unit-length mean embedding [D] of the bank's faces."""
        key = bank.bank_hash()
        if key not in self._banks:
            self._banks = {key: mean_identity(self.embedder, bank.crops_hwc())}  # the last bank only
        return self._banks[key]

    def similarity(self, crops, bank) -> list:
        """Cosine similarity (-1..1) of aligned crops [S, S, 3] (0..1) to the bank's identity."""
        return similarities(self.embedder, crops, self.bank_identity(bank)) if len(crops) else []

    def for_selection(self, bank):
        """faces -> similarity of each face's crop to the bank (restorer_core.faces.locate's SimilarityFn)."""
        return lambda faces: self.similarity([f.crop for f in faces], bank)
