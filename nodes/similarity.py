"""Face Similarity, and the identity embedder the nodes share (for 'similar' face selection).

The embedder is restorer_core.identity's small face-recognition network; it is optional: without
its weights file, only the features that need it ('similar' selection, this node) report that.
"""

from __future__ import annotations

from typing import Any, Optional

from ..restorer_core.errors import ModelNotFoundError
from ..restorer_core.identity import DEFAULT_EMBEDDER_PATH, IdentityScorer, load_identity_embedder
from .ops import log
from .spec import NodeSpec, Output
from .types import FACES, REF_BANK, FaceSet
_IDENTITY: dict = {}


def get_identity(alternative: str = "remove the Face Similarity node") -> IdentityScorer:
    """The shipped identity embedder as a restorer_core IdentityScorer (loaded once per file
    version); ModelNotFoundError if absent."""
    path = DEFAULT_EMBEDDER_PATH
    if not path.is_file():
        raise ModelNotFoundError(
            f"face similarity needs the identity embedder: file '{path.name}' in folder "
            f"'{path.parent}' is missing. Reinstall the node pack (the file ships with it), or "
            f"{alternative}.")
    key = (str(path), path.stat().st_mtime_ns)
    if key not in _IDENTITY:
        _IDENTITY.clear()
        _IDENTITY[key] = IdentityScorer(load_identity_embedder(path))
    return _IDENTITY[key]


def try_identity() -> Optional[Any]:
    """The identity embedder, or None when its file is missing."""
    try:
        return get_identity().embedder
    except ModelNotFoundError:
        return None


def get_scorer(alternative: str = "remove the Face Similarity node") -> IdentityScorer:
    """The one identity scorer of the nodes (get_identity; a stronger network replaces it here)."""
    return get_identity(alternative)


def try_scorer() -> Optional[IdentityScorer]:
    try:
        return get_scorer()
    except ModelNotFoundError:
        return None


def similarity_fn(bank: Any, scorer: Optional[IdentityScorer] = None):
    """For restorer_core.locate: faces -> similarity of each crop to the bank."""
    if bank is None:
        raise ValueError("selections 'similar' and 'same_person' keep the faces that look like the reference "
                         "person: connect a REF_BANK, or choose another selection.")
    scorer = scorer or get_scorer("choose a selection other than 'similar' or 'same_person'")
    return scorer.for_selection(bank)


def similarity_inputs() -> dict:
    return {"required": {
        "faces": (FACES, {"tooltip": "Faces from Detect Faces or One-Step Restore (restored faces are "
                                     "scored after restoration)."}),
        "reference_bank": (REF_BANK, {"tooltip": "Photos of the person to compare with."})}}


def face_similarity(faces: FaceSet, reference_bank: Any) -> tuple:
    """How much each face looks like the reference person (cosine similarity, -1..1)."""
    scorer = get_scorer()
    before = scorer.similarity([f.crop for f in faces.faces], reference_bank)
    restored = [f.restored for f in faces.faces if f.restored is not None]
    after = scorer.similarity(restored, reference_bank) if len(restored) == len(faces.faces) else None
    scores = after if after is not None else before
    lines = [f"similarity to the reference bank ({len(reference_bank)} faces), {len(faces.faces)} face(s); "
             f"the same person from {scorer.threshold:.2f}:"]
    for k, f in enumerate(faces.faces):
        line = f"image {f.image_index} face #{f.face_index}: input {before[k]:.3f}"
        if after is not None:
            line += f" -> restored {after[k]:.3f} ({after[k] - before[k]:+.3f})"
        lines.append(line + ("" if scorer.same_person(scores[k]) else "  <- not the bank's person"))
    if not faces.faces:
        lines.append("no faces.")
    report = "\n".join(lines)
    log(report)
    return (scores, report)


FACE_SIMILARITY = NodeSpec(
    "OneStepFaceSimilarity", "Face Similarity",
    "Identity similarity of each face to the reference bank (cosine, -1..1): of the restored face when "
    "there is one (with the input face's score beside it in the report), else of the input. Use it to "
    "check that restoration kept the person.",
    similarity_inputs,
    (Output("FLOAT", "similarity", "One similarity per face (a list of FLOATs, in face order).", is_list=True),
     Output("STRING", "report", "Text: each face's similarity before and after restoration, and the change.")),
    face_similarity, "score")
