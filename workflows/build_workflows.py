"""Writes the example workflows in both ComfyUI formats from one description each.

    python workflows/build_workflows.py        # rewrites workflows/*.json and workflows/api/*.json

UI format (what the ComfyUI frontend saves and opens: nodes with positions and widget values,
links as [id, from node, from slot, to node, to slot, type]) and API format (what POST /prompt
takes: {"id": {"class_type", "inputs"}}). Widget order per node type is listed in WIDGETS; the
tests check it against each node's INPUT_TYPES. Plain Python, no ComfyUI needed.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:
    sys.path.insert(0, str(HERE.parent))

from restorer_core.atomic import write_text_atomic  # noqa: E402

# Widget names in the order the frontend lays them out (required, then optional inputs), with
# the extra widgets the frontend adds: "control_after_generate" after a seed, "upload" after
# LoadImage's file list.
WIDGETS = {
    "CheckpointLoaderSimple": ["ckpt_name"],
    "CLIPTextEncode": ["text"],
    "EmptyLatentImage": ["width", "height", "batch_size"],
    "KSampler": ["seed", "control_after_generate", "steps", "cfg", "sampler_name", "scheduler", "denoise"],
    "VAEDecode": [],
    "LoadImage": ["image", "upload"],
    "SaveImage": ["filename_prefix"],
    "PreviewImage": [],
    "ImageBatch": [],
    "RepeatImageBatch": ["amount"],
    "ImageCrop": ["width", "height", "x", "y"],
    "PreviewAny": [],
    "Note": ["text"],
    "OneStepLoadFaceRestorer": ["model_name", "base_model", "device", "precision", "allow_download", "speed"],
    "OneStepDetectFaces": ["detector", "detector_model", "threshold", "selection", "max_faces", "face_indices",
                           "min_face_size", "similarity_threshold", "track_faces", "crop_size"],
    "OneStepReferenceBank": ["folder", "detector", "detector_model", "threshold", "align_size"],
    "OneStepReferenceBankFromImages": ["detector", "detector_model", "threshold", "align_size"],
    "OneStepRestore": ["mode", "max_refs", "strength", "seed", "control_after_generate", "batch_size",
                       "auto_strength"],
    "OneStepPasteFacesBack": ["color_fix", "mask_shape", "feather", "erosion"],
    "OneStepRestoreFaces": ["mode", "max_refs", "strength", "seed", "control_after_generate", "batch_size",
                            "detector", "detector_model", "threshold", "selection", "max_faces", "face_indices",
                            "min_face_size", "similarity_threshold", "color_fix", "mask_shape", "feather",
                            "erosion", "auto_strength"],
    "OneStepFaceSimilarity": [],
}
FRONTEND_ONLY_WIDGETS = {"control_after_generate", "upload"}
VIRTUAL_NODES = {"Note"}  # frontend-only: saved in the UI format, never sent to /prompt

# Socket inputs (name, type) and outputs (name, type) per node type, in slot order.
SOCKETS = {
    "CheckpointLoaderSimple": ([], [("MODEL", "MODEL"), ("CLIP", "CLIP"), ("VAE", "VAE")]),
    "CLIPTextEncode": ([("clip", "CLIP")], [("CONDITIONING", "CONDITIONING")]),
    "EmptyLatentImage": ([], [("LATENT", "LATENT")]),
    "KSampler": ([("model", "MODEL"), ("positive", "CONDITIONING"), ("negative", "CONDITIONING"),
                  ("latent_image", "LATENT")], [("LATENT", "LATENT")]),
    "VAEDecode": ([("samples", "LATENT"), ("vae", "VAE")], [("IMAGE", "IMAGE")]),
    "LoadImage": ([], [("IMAGE", "IMAGE"), ("MASK", "MASK")]),
    "SaveImage": ([("images", "IMAGE")], []),
    "PreviewImage": ([("images", "IMAGE")], []),
    "ImageBatch": ([("image1", "IMAGE"), ("image2", "IMAGE")], [("IMAGE", "IMAGE")]),
    "RepeatImageBatch": ([("image", "IMAGE")], [("IMAGE", "IMAGE")]),
    "ImageCrop": ([("image", "IMAGE")], [("IMAGE", "IMAGE")]),
    "PreviewAny": ([("source", "*")], []),
    "Note": ([], []),
    "OneStepLoadFaceRestorer": ([], [("restorer", "FACE_RESTORER")]),
    "OneStepDetectFaces": ([("image", "IMAGE"), ("reference_bank", "REF_BANK")],
                           [("faces", "FACES"), ("crops", "IMAGE"), ("face_mask", "MASK"), ("report", "STRING")]),
    "OneStepReferenceBank": ([], [("reference_bank", "REF_BANK"), ("report", "STRING")]),
    "OneStepReferenceBankFromImages": ([("images", "IMAGE")], [("reference_bank", "REF_BANK"), ("report", "STRING")]),
    "OneStepRestore": ([("restorer", "FACE_RESTORER"), ("faces", "FACES"), ("reference_bank", "REF_BANK")],
                       [("faces", "FACES"), ("restored_crops", "IMAGE"), ("report", "STRING")]),
    "OneStepPasteFacesBack": ([("image", "IMAGE"), ("faces", "FACES")], [("image", "IMAGE"), ("mask", "MASK")]),
    "OneStepRestoreFaces": ([("image", "IMAGE"), ("restorer", "FACE_RESTORER"), ("reference_bank", "REF_BANK")],
                            [("image", "IMAGE"), ("mask", "MASK"), ("report", "STRING")]),
    "OneStepFaceSimilarity": ([("faces", "FACES"), ("reference_bank", "REF_BANK")],
                              [("similarity", "FLOAT"), ("report", "STRING")]),
}


@dataclass
class Node:
    id: int
    type: str
    widgets: dict = field(default_factory=dict)
    links: dict = field(default_factory=dict)  # input name -> (node id, output slot)
    pos: tuple = (0, 0)
    title: Optional[str] = None
    size: tuple = (320, 120)


# ----------------------------------------------------------------------------- shared settings

RESTORER = {"model_name": "default (embedded)", "base_model": "none", "device": "auto", "precision": "auto",
            "allow_download": False, "speed": "auto"}
DETECT = {"detector": "yunet", "detector_model": "default", "threshold": 0.7}
SELECT_ALL = {"selection": "all", "max_faces": 0, "face_indices": "0", "min_face_size": 0,
              "similarity_threshold": 0.4}
RESTORE = {"mode": "auto", "max_refs": 4, "strength": 1.0, "seed": 0, "control_after_generate": "fixed",
           "batch_size": 8, "auto_strength": True}
PASTE = {"color_fix": "wavelet", "mask_shape": "landmarks", "feather": 24.0, "erosion": 8.0}
BANK = dict(DETECT, align_size=512)
# blake_lively.jpg is 700x464: the child on the left half, the adult on the right half
ADULT_HALF = {"width": 350, "height": 464, "x": 350, "y": 0}
CHILD_HALF = {"width": 350, "height": 464, "x": 0, "y": 0}
INPUTS_NOTE = ("Example images: copy workflows/inputs/*.jpg of the node pack into ComfyUI/input "
               "(GFPGAN demo inputs, Apache-2.0, see workflows/inputs/SOURCE.md).")


def workflow_1() -> list[Node]:
    """txt2img with core nodes, then Restore Faces guided by a reference bank."""
    return [
        Node(1, "CheckpointLoaderSimple", {"ckpt_name": "v1-5-pruned-emaonly-fp16.safetensors"}, pos=(0, 0)),
        Node(2, "CLIPTextEncode", {"text": "photo portrait of a smiling blonde woman, natural light, 35mm"},
             {"clip": (1, 1)}, pos=(380, 0), title="positive", size=(400, 160)),
        Node(3, "CLIPTextEncode", {"text": "blurry, lowres, watermark, text"}, {"clip": (1, 1)},
             pos=(380, 200), title="negative", size=(400, 160)),
        Node(4, "EmptyLatentImage", {"width": 512, "height": 512, "batch_size": 1}, pos=(380, 400)),
        Node(5, "KSampler", {"seed": 123456789, "control_after_generate": "fixed", "steps": 20, "cfg": 7.0,
                             "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0},
             {"model": (1, 0), "positive": (2, 0), "negative": (3, 0), "latent_image": (4, 0)},
             pos=(820, 0), size=(320, 262)),
        Node(6, "VAEDecode", {}, {"samples": (5, 0), "vae": (1, 2)}, pos=(1180, 0), size=(210, 46)),
        Node(7, "LoadImage", {"image": "blake_lively.jpg", "upload": "image"}, pos=(0, 560), size=(320, 320),
             title="reference photo"),
        Node(8, "ImageCrop", ADULT_HALF, {"image": (7, 0)}, pos=(380, 560), title="crop to one face"),
        Node(9, "OneStepReferenceBankFromImages", BANK, {"images": (8, 0)}, pos=(760, 560)),
        Node(10, "OneStepLoadFaceRestorer", RESTORER, pos=(760, 320), size=(320, 160)),
        Node(11, "OneStepRestoreFaces", {**RESTORE, **DETECT, **SELECT_ALL, **PASTE},
             {"image": (6, 0), "restorer": (10, 0), "reference_bank": (9, 0)}, pos=(1180, 120), size=(340, 560)),
        Node(12, "SaveImage", {"filename_prefix": "onestep_txt2img"}, {"images": (11, 0)}, pos=(1560, 0),
             size=(400, 440)),
        Node(13, "PreviewAny", {}, {"source": (11, 2)}, pos=(1560, 480), title="restore report"),
        Node(14, "PreviewAny", {}, {"source": (9, 1)}, pos=(1180, 720), title="bank report"),
        Node(15, "Note", {"text": "Generate an image, then restore its face towards the person in the "
                                  "reference photo (one clear face per reference image). " + INPUTS_NOTE},
             pos=(0, 280), size=(320, 160)),
    ]


def workflow_2() -> list[Node]:
    """Old photo, no references: the visual prompt alone, with the split nodes."""
    return [
        Node(1, "LoadImage", {"image": "old_photo_family.jpg", "upload": "image"}, pos=(0, 0), size=(320, 380)),
        Node(2, "OneStepLoadFaceRestorer", RESTORER, pos=(0, 420), size=(320, 160)),
        Node(3, "OneStepDetectFaces", {**DETECT, **SELECT_ALL, "min_face_size": 32, "track_faces": True,
                                       "crop_size": 512}, {"image": (1, 0)}, pos=(380, 0), size=(320, 330)),
        Node(4, "OneStepRestore", {**RESTORE, "mode": "visual_prompt"},
             {"restorer": (2, 0), "faces": (3, 0)}, pos=(760, 0), size=(320, 220)),
        Node(5, "OneStepPasteFacesBack", PASTE, {"image": (1, 0), "faces": (4, 0)}, pos=(1140, 0), size=(320, 160)),
        Node(6, "SaveImage", {"filename_prefix": "onestep_old_photo"}, {"images": (5, 0)}, pos=(1500, 0),
             size=(400, 500)),
        Node(7, "PreviewImage", {}, {"images": (4, 1)}, pos=(760, 280), size=(320, 320), title="restored faces"),
        Node(8, "PreviewAny", {}, {"source": (3, 3)}, pos=(380, 380), title="detected faces"),
        Node(9, "Note", {"text": "An old photo without reference photos: the restorer uses its visual prompt "
                                 "(mode visual_prompt). min_face_size 32 skips tiny false detections. " + INPUTS_NOTE},
             pos=(0, 620), size=(320, 160)),
    ]


def workflow_3() -> list[Node]:
    """Character consistency: several images of one character restored against one bank."""
    return [
        Node(1, "LoadImage", {"image": "blake_lively.jpg", "upload": "image"}, pos=(0, 0), size=(320, 320)),
        Node(2, "ImageCrop", ADULT_HALF, {"image": (1, 0)}, pos=(380, 0), title="reference: adult"),
        Node(3, "ImageCrop", CHILD_HALF, {"image": (1, 0)}, pos=(380, 200), title="another image: child"),
        Node(4, "OneStepReferenceBankFromImages", BANK, {"images": (2, 0)}, pos=(760, 0)),
        Node(5, "ImageBatch", {}, {"image1": (1, 0), "image2": (3, 0)}, pos=(760, 200), size=(210, 46)),
        Node(6, "OneStepLoadFaceRestorer", RESTORER, pos=(760, 320), size=(320, 160)),
        Node(7, "OneStepDetectFaces", {**DETECT, **SELECT_ALL, "track_faces": False, "crop_size": 512},
             {"image": (5, 0)}, pos=(1140, 200), size=(320, 330)),
        Node(8, "OneStepRestore", RESTORE, {"restorer": (6, 0), "faces": (7, 0), "reference_bank": (4, 0)},
             pos=(1500, 0), size=(320, 220)),
        Node(9, "OneStepPasteFacesBack", PASTE, {"image": (5, 0), "faces": (8, 0)}, pos=(1860, 0), size=(320, 160)),
        Node(10, "SaveImage", {"filename_prefix": "onestep_character"}, {"images": (9, 0)}, pos=(2220, 0),
             size=(400, 440)),
        Node(11, "OneStepFaceSimilarity", {}, {"faces": (8, 0), "reference_bank": (4, 0)}, pos=(1860, 260),
             size=(320, 80)),
        Node(12, "PreviewAny", {}, {"source": (11, 1)}, pos=(2220, 480), title="identity before/after"),
        Node(13, "PreviewAny", {}, {"source": (8, 2)}, pos=(1500, 280), title="restore report"),
        Node(14, "Note", {"text": "Every image of a batch (here: the photo and a second, resized image) is "
                                  "restored against the same reference bank; its keys/values are computed "
                                  "once and cached. Face Similarity shows the identity score before and "
                                  "after. " + INPUTS_NOTE}, pos=(0, 380), size=(320, 180)),
    ]


def workflow_4() -> list[Node]:
    """A batch of frames restored with one bank; face numbers follow each person across frames."""
    return [
        Node(1, "LoadImage", {"image": "blake_lively.jpg", "upload": "image"}, pos=(0, 0), size=(320, 320)),
        Node(2, "RepeatImageBatch", {"amount": 4}, {"image": (1, 0)}, pos=(380, 0), title="frames"),
        Node(3, "ImageCrop", ADULT_HALF, {"image": (1, 0)}, pos=(380, 140), title="reference: adult"),
        Node(4, "OneStepReferenceBankFromImages", BANK, {"images": (3, 0)}, pos=(760, 140)),
        Node(5, "OneStepLoadFaceRestorer", RESTORER, pos=(760, 360), size=(320, 160)),
        Node(6, "OneStepDetectFaces", {**DETECT, **SELECT_ALL, "selection": "index", "face_indices": "1",
                                       "track_faces": True, "crop_size": 512},
             {"image": (2, 0)}, pos=(760, 560), size=(320, 330)),
        Node(7, "OneStepRestore", {**RESTORE, "mode": "references"},
             {"restorer": (5, 0), "faces": (6, 0), "reference_bank": (4, 0)}, pos=(1140, 140), size=(320, 220)),
        Node(8, "OneStepPasteFacesBack", PASTE, {"image": (2, 0), "faces": (7, 0)}, pos=(1500, 140),
             size=(320, 160)),
        Node(9, "SaveImage", {"filename_prefix": "onestep_frames"}, {"images": (8, 0)}, pos=(1860, 140),
             size=(400, 440)),
        Node(10, "PreviewAny", {}, {"source": (6, 3)}, pos=(1140, 560), title="face numbers per frame"),
        Node(11, "Note", {"text": "Frames of a clip as one IMAGE batch. With track_faces, face #1 (the adult, "
                                  "second from the left in the first frame) keeps its number in every frame, "
                                  "so selection 'index 1' restores the same person throughout. " + INPUTS_NOTE},
             pos=(0, 380), size=(320, 180)),
    ]


WORKFLOWS = {
    "01_txt2img_restore_with_reference": workflow_1,
    "02_old_photo_visual_prompt": workflow_2,
    "03_character_consistency_batch": workflow_3,
    "04_video_frames_one_bank": workflow_4,
}


# ----------------------------------------------------------------------------- formats


def _order(nodes: list[Node]) -> dict[int, int]:
    """Execution order (a topological sort, ties by id), as the frontend stores in `order`."""
    done: dict[int, int] = {}
    by_id = {n.id: n for n in nodes}

    def visit(n: Node) -> None:
        if n.id in done:
            return
        for src, _ in n.links.values():
            visit(by_id[src])
        done[n.id] = len(done)

    for n in sorted(nodes, key=lambda n: n.id):
        visit(n)
    return done


def to_ui(nodes: list[Node]) -> dict:
    by_id = {n.id: n for n in nodes}
    links, out_links = [], {}
    for n in sorted(nodes, key=lambda n: n.id):
        in_names = [name for name, _ in SOCKETS[n.type][0]]
        for name, (src, slot) in sorted(n.links.items(), key=lambda kv: in_names.index(kv[0])):
            link_id = len(links) + 1
            kind = SOCKETS[by_id[src].type][1][slot][1]
            links.append([link_id, src, slot, n.id, in_names.index(name), kind])
            out_links.setdefault((src, slot), []).append(link_id)
    link_of = {(l[3], l[4]): l[0] for l in links}
    order = _order(nodes)
    ui_nodes = []
    for n in sorted(nodes, key=lambda n: n.id):
        ins, outs = SOCKETS[n.type]
        entry: dict[str, Any] = {
            "id": n.id, "type": n.type, "pos": list(n.pos), "size": list(n.size), "flags": {},
            "order": order[n.id], "mode": 0,
        }
        if ins:
            entry["inputs"] = [{"name": name, "type": kind, "link": link_of.get((n.id, i))}
                               for i, (name, kind) in enumerate(ins)]
        if outs:
            entry["outputs"] = [{"name": name, "type": kind, "links": out_links.get((n.id, i)), "slot_index": i}
                                for i, (name, kind) in enumerate(outs)]
        entry["properties"] = {"Node name for S&R": n.type}
        if WIDGETS[n.type]:
            entry["widgets_values"] = [n.widgets[w] for w in WIDGETS[n.type]]
        if n.title:
            entry["title"] = n.title
        ui_nodes.append(entry)
    return {
        "last_node_id": max(n.id for n in nodes), "last_link_id": len(links), "nodes": ui_nodes,
        "links": links, "groups": [], "config": {}, "extra": {"ds": {"scale": 1.0, "offset": [0, 0]}},
        "version": 0.4,
    }


def to_api(nodes: list[Node]) -> dict:
    out = {}
    for n in sorted(nodes, key=lambda n: n.id):
        if n.type in VIRTUAL_NODES:
            continue
        inputs: dict[str, Any] = {w: n.widgets[w] for w in WIDGETS[n.type] if w not in FRONTEND_ONLY_WIDGETS}
        for name, (src, slot) in n.links.items():
            inputs[name] = [str(src), slot]
        out[str(n.id)] = {"class_type": n.type, "inputs": inputs, "_meta": {"title": n.title or n.type}}
    return out


def build_all(folder: Path = HERE) -> dict:
    """{name: (ui, api)} for every workflow."""
    return {name: (to_ui(make()), to_api(make())) for name, make in WORKFLOWS.items()}


def main() -> None:
    (HERE / "api").mkdir(exist_ok=True)
    for name, (ui, api) in build_all().items():
        write_text_atomic(HERE / f"{name}.json", json.dumps(ui, indent=2) + "\n")
        write_text_atomic(HERE / "api" / f"{name}.json", json.dumps(api, indent=2) + "\n")
        print(f"wrote workflows/{name}.json and workflows/api/{name}.json")


if __name__ == "__main__":
    main()
