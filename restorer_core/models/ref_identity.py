"""The reference-identity channel: the references' face-ID embeddings as extra prompt tokens.

Shared attention lets the restoring UNet copy *appearance* from the references' features; a
severely degraded input gives it little to match them with. This second channel hands the UNet
the person's identity directly: the mean face-recognition embedding of the valid references,
projected to a few cross-attention tokens appended to the prompt (as IP-Adapter does with image
embeddings). Declared by ``RestorerConfig.ref_id`` (``{"tokens": T, "network": NAME}``); absent,
nothing changes. The face-ID network is frozen and its weights travel inside the restorer's file.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn


FACE_ID_NETWORKS = ("identity_embedder", "mobilefacenet")


def build_face_id_network(name: str) -> tuple[nn.Module, int]:
    """(frozen eval-mode network, embedding size) for ``ref_id["network"]``, with the shipped
    weights (a restorer file then overwrites them with its own copy)."""
    if name == "identity_embedder":
        from ..faces.identity import load_identity_embedder

        net = load_identity_embedder()
        return net, int(net.config.embedding_dim)
    if name == "mobilefacenet":
        from ..face_id import load_face_id

        net = load_face_id()
        return net, int(net.embedding_dim)
    raise ValueError(f"ref_id network must be one of {FACE_ID_NETWORKS}, got {name!r}")


def pooled_identity(identity: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
    """[Bk, R, D] per-reference embeddings (+ [Bk, R] validity) -> [Bk, D] unit mean embedding.
    A row with no valid reference pools to zeros."""
    if mask is None:
        mean = identity.mean(1)
    else:
        w = mask.to(identity.dtype).unsqueeze(-1)
        mean = (identity * w).sum(1) / w.sum(1).clamp(min=1.0)
    return F.normalize(mean, dim=-1, eps=1e-6)


class ReferenceIdentityTokens(nn.Module):
    """[Bk, D] identity embedding -> [Bk, tokens, C] cross-attention tokens (linear + LayerNorm)."""

    def __init__(self, embed_dim: int, tokens: int, context_dim: int):
        super().__init__()
        self.tokens, self.context_dim = int(tokens), int(context_dim)
        self.proj = nn.Linear(embed_dim, self.tokens * self.context_dim)
        self.norm = nn.LayerNorm(self.context_dim)

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        x = self.proj(embedding.to(self.proj.weight.dtype))
        return self.norm(x.view(-1, self.tokens, self.context_dim))
