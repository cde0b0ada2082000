"""Identity gate: without references, a restored face must keep the identity of its input.

Without references the restorer can only guess a blurred face's identity, and it sometimes moves
the face towards another person. The gate needs no ground truth: it embeds the input face and
the restored face blended at a few fractions of the face's strength with the pack's own identity
embedder (restorer_core.faces.identity), and keeps the largest fraction whose cosine to the
input's embedding stays at or above `threshold` (none: the input face, strength 0). A restored
face that keeps its input's identity is left at its strength. With references the gate does
nothing: the references, not the input, say who the person is.
Always on, without an embedder: an automatic strength without references is scaled by
NO_REFS_STRENGTH (RestoreOptions.no_refs_strength): a full-strength guess of a blurred face's
identity moves it further from the person than a partial one. And by how much mid-scale shape
the face has left (detail.structure_measure; RestoreOptions.no_refs_structure_gate): below
STRUCTURE_FULL the scale falls smoothly to 0 at STRUCTURE_KEEP, where the face is kept as it
was. At 16x blur every strength tried lowered dlib similarity to the clean face below the
input's (training people, benchmarks/results/norefs_structure_train.md); references change that.

The threshold was tuned on training-split people with the pack's embedder
(benchmarks/identity_gate_tune.py); benchmarks/quality.py checks it on held-out people with dlib.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch

DEFAULT_THRESHOLD = 0.6  # the largest threshold costing <= 0.01 of the pack embedder's x8 similarity (training people)
FRACTIONS = (1.0, 0.75, 0.5, 0.25)  # of the face's strength, tried largest first; 0 is the fallback
# Without references an automatic strength is scaled by this: of 1, .75, .5, .25 the one whose blend came
# closest to the clean face with the pack's embedder at x4, x8 and x16 together, on held-out people's
# photos the quality benchmark does not use (benchmarks/results/identity_gate_tune_v6_heldout.md).
NO_REFS_STRENGTH = 0.6
# The structure gate: the scale is NO_REFS_STRENGTH at STRUCTURE_FULL and above, 0 at STRUCTURE_KEEP and below
# (smoothstep between): picked on training-split people with dlib at x4 / x8 / x16 together
# (benchmarks/results/norefs_structure_train.md); the held-out table checks it.
STRUCTURE_KEEP = 0.55
STRUCTURE_FULL = 0.8
KEPT_STRUCTURELESS = ("too blurred to restore without references (a guess would change who it is): "
                      "kept; give reference photos to restore it")


def check_no_refs_strength(value: float) -> float:
    """A no-references strength scale in 0..1 (1: none); ValueError saying what is allowed otherwise."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"the no-references strength must be a number from 0 to 1, got {value!r}") from None
    if not 0.0 <= v <= 1.0:
        raise ValueError(f"the no-references strength must be from 0 to 1, got {v}")
    return v


def no_refs_scale(automatic: bool, use_references: bool, scale: float) -> float:
    """The policy in one place: an automatic strength without references is scaled by `scale`;
    a manual strength, or any strength with references, is left as it is (1.0)."""
    return float(scale) if automatic and not use_references else 1.0


def structure_factor(automatic: bool, use_references: bool, structure: Optional[float],
                     gate: bool = True) -> float:
    """The structure gate's factor on an automatic strength without references: a smoothstep of
    the face's structure reading from 0 at STRUCTURE_KEEP to 1 at STRUCTURE_FULL; 1.0 with a
    manual strength, with references, with the gate off or where no reading was taken. Applied
    before a video's strength smoothing, so a track does not flicker between kept and restored."""
    if not gate or not automatic or use_references or structure is None:
        return 1.0
    x = min(max((float(structure) - STRUCTURE_KEEP) / (STRUCTURE_FULL - STRUCTURE_KEEP), 0.0), 1.0)
    return x * x * (3.0 - 2.0 * x)


def check_threshold(value: float) -> float:
    """A gate threshold (a cosine, 0 < t <= 1); ValueError saying what is allowed otherwise."""
    try:
        t = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"the identity gate threshold must be a number in (0, 1], got {value!r}") from None
    if not 0.0 < t <= 1.0:
        raise ValueError(f"the identity gate threshold must be in (0, 1], got {t}")
    return t


@dataclass(frozen=True)
class GateDecision:
    """One face: the strength to use, the cosine of the full-strength restore to the input, the
    cosine at the chosen strength, and why the strength was lowered ("" when it was not)."""

    strength: float
    cosine_full: float
    cosine_chosen: float
    reason: str = ""

    def to_dict(self) -> dict:
        return {"cosine_full": round(self.cosine_full, 4), "cosine_chosen": round(self.cosine_chosen, 4),
                "lowered": bool(self.reason)}


def _embed(embedder, images: torch.Tensor) -> np.ndarray:
    """Unit embeddings [N, D] of [N, 3, R, R] crops in 0..1 (any embedder embed_faces takes)."""
    from ..faces.identity import embed_faces

    hwc = images.detach().float().clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()
    emb = embed_faces(embedder, hwc)
    return emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)


def gate_strengths(embedder, inputs: torch.Tensor, outputs: torch.Tensor, strengths: Sequence[float],
                   threshold: float = DEFAULT_THRESHOLD, fractions: Sequence[float] = FRACTIONS) -> list:
    """GateDecision per face for inputs / restorer outputs [N, 3, R, R] (0..1, the restorer's
    resolution) and each face's strength (> 0)."""
    n = len(strengths)
    if n == 0:
        return []
    x, y = inputs.float(), outputs.float()
    s = torch.tensor([float(v) for v in strengths], dtype=x.dtype, device=x.device).view(-1, 1, 1, 1)
    ref = _embed(embedder, x)
    cos = np.stack([(_embed(embedder, x + (f * s) * (y - x)) * ref).sum(1) for f in fractions], axis=1)
    out = []
    for i in range(n):
        ok = [j for j in range(len(fractions)) if cos[i, j] >= threshold]
        j = ok[0] if ok else None
        full = float(cos[i, 0])
        if j == 0:
            out.append(GateDecision(float(strengths[i]), full, full))
            continue
        chosen = float(strengths[i]) * (fractions[j] if j is not None else 0.0)
        at = float(cos[i, j]) if j is not None else 1.0
        reason = (f"identity gate: without references the restored face drifted from the input's identity "
                  f"(cosine {full:.2f} < {threshold:.2f}); strength {float(strengths[i]):.2f} -> {chosen:.2f}")
        out.append(GateDecision(chosen, full, at, reason))
    return out


def option_fields(threshold: Optional[float]) -> dict:
    """RestoreOptions fields for a gate threshold (None: off), as the CLI and benchmarks set it."""
    return {} if threshold is None else {"identity_gate": True, "identity_gate_threshold": threshold}


def gate_applies(enabled: bool, use_references: bool, embedder: Optional[object]) -> bool:
    """The policy in one place: on, without references, with an embedder to measure identity."""
    return bool(enabled) and not use_references and embedder is not None
