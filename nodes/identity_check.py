"""Identity check: is each face the reference bank's person? Said in the report and the console.

When a bank steers restoration, a face of someone else gets that person's features: the wrong
face is "restored" into the bank's person. Every node that restores with a bank scores each
input face against it (similarity.get_scorer, the one identity network of the nodes) and names
the faces below the network's same-person threshold. Selection `same_person` restores only the
faces at or above that threshold, without the user having to know its value.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Optional

from ..restorer_core.faces.select import FaceSelection
from . import ops
from .similarity import IdentityScorer, get_scorer, similarity_fn, try_scorer
from .types import FaceSet

SAME_PERSON = "same_person"
SELECTIONS = ops.SELECTIONS + (SAME_PERSON,)
logger = logging.getLogger("onestep_face_restore")


def make_selection(selection: str, max_faces: int, face_indices: str, min_face_size: float,
                   similarity_threshold: float, bank: Any) -> tuple[FaceSelection, Optional[Callable]]:
    """UI selection widgets -> (FaceSelection, similarity function for locate or None).

    same_person is selection 'similar' at the identity network's own same-person threshold."""
    if selection != SAME_PERSON:
        sel = ops.make_selection(selection, max_faces, face_indices, min_face_size, similarity_threshold)
        return sel, (similarity_fn(bank) if selection == "similar" else None)
    if bank is None:
        raise ValueError("selection 'same_person' restores only the faces of the reference person: connect "
                         "a REF_BANK, or choose another selection.")
    scorer = get_scorer("choose a selection other than 'same_person'")
    sel = ops.make_selection("similar", max_faces, face_indices, min_face_size, scorer.threshold)
    return sel, similarity_fn(bank, scorer)


def check_identity(faces: FaceSet, bank: Any, scorer: Optional[IdentityScorer] = None) -> list[str]:
    """Report lines scoring each input face against the bank; faces below the same-person
    threshold are also logged as warnings. No bank: no lines. No identity network: one line."""
    if bank is None or not faces.faces:
        return []
    scorer = scorer or try_scorer()
    if scorer is None:
        return ["identity check skipped: the identity network file is missing (reinstall the node pack)."]
    missing = [f for f in faces.faces if "similarity" not in f.info]
    fresh = iter(scorer.similarity([f.crop for f in missing], bank))
    scores = [f.info["similarity"] if "similarity" in f.info else next(fresh) for f in faces.faces]
    others = [(f, s) for f, s in zip(faces.faces, scores) if not scorer.same_person(s)]
    lines = [f"identity check ({scorer.name}, same person from {scorer.threshold:.2f}): "
             + ", ".join(f"image {f.image_index} face #{f.face_index} {s:.2f}" for f, s in zip(faces.faces, scores))]
    for f, s in others:
        warning = (f"image {f.image_index} face #{f.face_index}: similarity {s:.2f} to the reference bank is "
                   f"below the same-person threshold {scorer.threshold:.2f}: probably not the bank's person, "
                   "yet restored with that person's references. Use selection 'same_person' to restore only "
                   "the faces that match the bank.")
        lines.append("WARNING " + warning)
        logger.warning("[one-step face restore] %s", warning)
    return lines
