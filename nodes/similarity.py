"""Face Similarity, and the identity network the nodes share (identity check, 'similar' and
'same_person' selection, this node's scores).

The network is ArcFace when the user has insightface's recognition model in ComfyUI's
models/insightface folder (models/buffalo_l/w600k_r50.onnx or models/antelopev2/glintr100.onnx,
run by onnxruntime), else restorer_core.faces.identity's small shipped embedder (offline, no extra
package). The environment variable ONESTEP_IDENTITY picks one: "shipped", or the path of an
ArcFace .onnx. Without either, only the features that need a network say so.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

from ..restorer_core.errors import CheckpointError, ModelNotFoundError
from ..restorer_core.face_id.arcface_onnx import ArcFaceOnnx, find_arcface
from ..restorer_core.faces.identity import DEFAULT_EMBEDDER_PATH, IdentityScorer, load_identity_embedder
from . import comfy_bridge as cb
from .ops import log
from .spec import NodeSpec, Output
from .types import FACES, REF_BANK, FaceSet

IDENTITY_ENV = "ONESTEP_IDENTITY"
_IDENTITY: dict = {}  # (kind, path, mtime) -> IdentityScorer: the network in use, loaded once per file version
_NOTED: set = set()  # found models that cannot run, said once per file version


def _cached(kind: str, path: Path, load) -> IdentityScorer:
    key = (kind, str(path), path.stat().st_mtime_ns)
    if key not in _IDENTITY:
        _IDENTITY.clear()
        _IDENTITY[key] = IdentityScorer(load(path))
    return _IDENTITY[key]


def get_identity(alternative: str = "remove the Face Similarity node") -> IdentityScorer:
    """The shipped identity embedder as a restorer_core IdentityScorer (loaded once per file
    version); ModelNotFoundError if absent."""
    path = DEFAULT_EMBEDDER_PATH
    if not path.is_file():
        raise ModelNotFoundError(
            f"face similarity needs the identity embedder: file '{path.name}' in folder "
            f"'{path.parent}' is missing. Reinstall the node pack (the file ships with it), or "
            f"{alternative}.")
    return _cached("shipped", path, load_identity_embedder)


def arcface_choice() -> tuple[Optional[Path], bool]:
    """(ArcFace model to use or None, whether the user named it). ONESTEP_IDENTITY=shipped: none;
    a path: that file (ModelNotFoundError when it is missing); unset: the first insightface
    recognition model found in ComfyUI's insightface folders."""
    choice = os.environ.get(IDENTITY_ENV, "").strip().strip('"')
    if choice.lower() == "shipped":
        return None, True
    if choice:
        path = Path(choice).expanduser()
        if not path.is_file():
            raise ModelNotFoundError(f"{IDENTITY_ENV}={choice}: no such file. Give the path of an ArcFace .onnx "
                                     f"(e.g. models/insightface/models/buffalo_l/w600k_r50.onnx), or 'shipped'.")
        return path, True
    return find_arcface(cb.insightface_dirs()), False


def get_scorer(alternative: str = "remove the Face Similarity node") -> IdentityScorer:
    """The one identity scorer of the nodes: ArcFace when present (arcface_choice), else the
    shipped embedder. A model found on its own that cannot run (no onnxruntime, not ArcFace's
    layout) falls back to the shipped embedder with a console note; one the user named raises."""
    path, named = arcface_choice()
    if path is not None:
        try:
            return _cached("arcface", path, ArcFaceOnnx)
        except (ModelNotFoundError, CheckpointError) as exc:
            if named:
                raise
            key = (str(path), path.stat().st_mtime_ns)
            if key not in _NOTED:
                _NOTED.add(key)
                log(f"identity: not using {path} ({exc}); using the shipped embedder.")
    return get_identity(alternative)


def try_identity() -> Optional[Any]:
    """The identity network's embedder (for the pipeline's report), or None without one."""
    scorer = try_scorer()
    return scorer.embedder if scorer is not None else None


def try_scorer() -> Optional[IdentityScorer]:
    """get_scorer, or None when no identity network can run."""
    try:
        return get_scorer()
    except (ModelNotFoundError, CheckpointError):
        return None


def similarity_fn(bank: Any, scorer: Optional[IdentityScorer] = None):
    """For restorer_core.faces.locate: faces -> similarity of each crop to the bank."""
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
    lines = [f"similarity to the reference bank ({len(reference_bank)} faces) by {scorer.name}, "
             f"{len(faces.faces)} face(s); the same person from {scorer.threshold:.2f}:"]
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
    "check that restoration kept the person. Scored by ArcFace when insightface's w600k_r50.onnx (buffalo_l) "
    "or glintr100.onnx (antelopev2) is in models/insightface and onnxruntime is installed, else by the "
    "embedder that ships with the pack; the report names the network.",
    similarity_inputs,
    (Output("FLOAT", "similarity", "One similarity per face (a list of FLOATs, in face order).", is_list=True),
     Output("STRING", "report", "Text: each face's similarity before and after restoration, and the change.")),
    face_similarity, "score")
