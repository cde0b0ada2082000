"""Writes the node help pages the ComfyUI frontend shows in its node help panel.

    python docs/make_node_help.py      # rewrites web/docs/<node id>.md for every node of the pack

The frontend fetches /extensions/<pack folder>/docs/<node id>.md from the pack's WEB_DIRECTORY
(web/); a page replaces its generic view of the node's description and tooltips. Each page is
made from the node's own declarations (DESCRIPTION, every input's tooltip, OUTPUT_TOOLTIPS), so
it cannot drift from what the node does, plus a few tips from TIPS below. The declarations are
read through tests/comfy_stub (the pack's nodes import ComfyUI modules; the stand-in is enough
to import them here, no ComfyUI needed).
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "web" / "docs"

TIPS = {
    "OneStepLoadFaceRestorer": [
        "Start with `default (embedded)`: it ships with the pack, needs no download and runs on a CPU.",
        "Put converted restorers (`python -m restorer_core convert`) into `models/face_restore_onestep/` "
        "and refresh (R) to see them in the list.",
    ],
    "OneStepDetectFaces": [
        "The report numbers every face left to right; use those numbers with selection `index`.",
        "For a clip, keep `track_faces` on and turn `smooth_landmarks` on: numbers follow people and "
        "the restored face stops jittering.",
        "Connect a reference bank and choose `same_person` to restore only that person in a group photo.",
    ],
    "OneStepReferenceBank": [
        "2-4 sharp photos of the person with different angles and light work best.",
        "The report lists each rejected photo with the reason (no face, two faces, too small).",
    ],
    "OneStepReferenceBankFromImages": [
        "Crop group photos to one face first (e.g. with Image Crop); ambiguous images are rejected.",
    ],
    "OneStepRestore": [
        "With a bank, the report checks every face against it and warns about faces that are not "
        "the bank's person (they would be restored towards someone else).",
        "Too smooth or less like the person? Lower `strength`, or give the bank more photos.",
    ],
    "OneStepPasteFacesBack": [
        "Connect the very IMAGE that went into Detect Faces; another size or batch is refused.",
        "A visible seam: raise `feather`. A halo of changed hair or background: raise `erosion`.",
    ],
    "OneStepRestoreFaces": [
        "The same result as Detect Faces -> One-Step Restore -> Paste Faces Back with the same settings.",
        "Use the split nodes to preview the crops or score identity before pasting.",
    ],
    "OneStepFaceSimilarity": [
        "Scores are cosine similarities of the shipped identity network; about 0.24 and above means "
        "the same person to it.",
    ],
}


def load_pack():
    stub = REPO / "tests" / "comfy_stub"
    if str(stub) not in sys.path:
        sys.path.insert(0, str(stub))
    import harness  # noqa: E402  (tests/comfy_stub)

    # the classic registration: its INPUT_TYPES give dropdowns as lists (the V3 one serves the
    # same nodes, tests/test_nodes_v3.py)
    return harness.load_pack(REPO, comfy_api=False)


# choices that list the files of a model folder: they differ from one installation to the next
FOLDER_CHOICES = {"model_name", "base_model", "detector_model"}


def kind_of(name: str, entry: tuple) -> str:
    kind = entry[0]
    if not isinstance(kind, list):
        return str(kind)
    return "a file of the model folder" if name in FOLDER_CHOICES else "one of " + " / ".join(map(str, kind))


def page(key: str, cls: type, title: str) -> str:
    """The markdown help page of one node class."""
    lines = [f"# {title}", "", cls.DESCRIPTION, "", "## Inputs", ""]
    spec = cls.INPUT_TYPES()
    for category in ("required", "optional"):
        for name, entry in spec.get(category, {}).items():
            opts = entry[1] if len(entry) > 1 else {}
            extra = "" if category == "required" else ", optional"
            lines.append(f"- **{name}** ({kind_of(name, entry)}{extra}): {opts.get('tooltip', '')}")
    lines += ["", "## Outputs", ""]
    names = getattr(cls, "RETURN_NAMES", None) or cls.RETURN_TYPES
    for name, kind, tip in zip(names, cls.RETURN_TYPES, getattr(cls, "OUTPUT_TOOLTIPS", ())):
        lines.append(f"- **{name}** ({kind}): {tip}")
    if TIPS.get(key):
        lines += ["", "## Tips", ""] + [f"- {t}" for t in TIPS[key]]
    return "\n".join(lines) + "\n"


def pages() -> dict:
    """{file name: markdown} for every node of the pack."""
    pack = load_pack()
    return {f"{key}.md": page(key, cls, pack.NODE_DISPLAY_NAME_MAPPINGS[key])
            for key, cls in pack.NODE_CLASS_MAPPINGS.items()}


def main() -> int:
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from restorer_core.io.atomic import write_text_atomic

    OUT.mkdir(parents=True, exist_ok=True)
    for name, text in pages().items():
        write_text_atomic(OUT / name, text)
        print(f"wrote web/docs/{name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
