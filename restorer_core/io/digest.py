"""The one content hash of a set of tensors (restorer weights, cached reference keys/values)."""

from __future__ import annotations

import hashlib

import torch


def tensors_sha256(tensors: dict) -> str:
    """sha256 over the tensors sorted by name: name, dtype, shape and bytes of each."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous().reshape(-1)  # 0-dim tensors (BatchNorm counters) too
        h.update(f"{name}|{t.dtype}|{tuple(tensors[name].shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()
