"""ReferenceKV: the keys/values a set of reference faces contributes to shared attention.

They depend only on the references and the restorer's weights, so they are computed once per
reference bank and cached (see restorer_core.restore.reference_cache).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch


@dataclass
class ReferenceKV:
    """Per reference site: keys/values [Bk, R, T, C] (Bk = 1 broadcasts over a batch of faces)."""

    layers: list
    keys: list
    values: list
    mask: Optional[torch.Tensor] = None  # [Bk, R] bool, None = all references valid
    # [Bk, R, D] face-ID embedding of each reference, for restorers with a reference-identity
    # channel (RestorerConfig.ref_id); None otherwise
    identity: Optional[torch.Tensor] = None

    @property
    def num_refs(self) -> int:
        return int(self.keys[0].shape[1]) if self.keys else 0

    def to(self, device=None, dtype=None) -> "ReferenceKV":
        move = lambda t: t.to(device=device, dtype=dtype)  # noqa: E731
        mask = self.mask.to(device) if self.mask is not None else None
        identity = self.identity.to(device) if self.identity is not None else None
        return ReferenceKV(list(self.layers), [move(k) for k in self.keys],
                           [move(v) for v in self.values], mask, identity)

    def state_dict(self) -> dict:
        """Flat tensor dict for safetensors (layer order kept by an index)."""
        out = {}
        for i, (k, v) in enumerate(zip(self.keys, self.values)):
            out[f"{i:03d}.keys"] = k.contiguous()
            out[f"{i:03d}.values"] = v.contiguous()
        if self.mask is not None:
            out["mask"] = self.mask.to(torch.uint8).contiguous()
        if self.identity is not None:
            out["identity"] = self.identity.contiguous()
        return out

    @classmethod
    def from_state_dict(cls, layers: list, tensors: dict) -> "ReferenceKV":
        keys = [tensors[f"{i:03d}.keys"] for i in range(len(layers))]
        values = [tensors[f"{i:03d}.values"] for i in range(len(layers))]
        mask = tensors["mask"].bool() if "mask" in tensors else None
        return cls(list(layers), keys, values, mask, tensors.get("identity"))
