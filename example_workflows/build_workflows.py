"""Writes the example workflows in both ComfyUI formats from one description each.

    python example_workflows/build_workflows.py        # rewrites example_workflows/*.json, example_workflows/api/*.json and
                                               # the Templates thumbnails example_workflows/*.jpg

UI format (what the ComfyUI frontend saves and opens: nodes with positions and widget values,
links as [id, from node, from slot, to node, to slot, type]) and API format (what POST /prompt
takes: {"id": {"class_type", "inputs"}}). Widget order per node type is listed in WIDGETS; the
tests check it against each node's INPUT_TYPES. Plain Python, no ComfyUI needed.

Layout: each workflow is a row of titled groups, left to right in the order the data flows
(input -> detect -> bank -> restore -> output); nodes stack inside their group. Node sizes
follow the frontend's own minimum (LiteGraph's LGraphNode.computeSize, see frontend_min_size),
so ComfyUI never grows a node over its neighbour. The saved view (extra.ds) shows the whole
graph below the menu bar on a 1920x1080 screen at a zoom where node text is drawn. ComfyUI's
Templates browser lists these files with `<name>.jpg` beside each as its thumbnail; names sort in
the order a newcomer should open them. The folder is `example_workflows`, the first name ComfyUI
looks for: it serves every existing alias folder (example_workflows, example, examples, workflow,
workflows) under the same URL and the first one registered answers, so beside the pack's
`examples/` photo folder, a `workflows/` folder's templates would be listed but never load.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:
    sys.path.insert(0, str(HERE.parent))

from restorer_core.io.atomic import write_text_atomic  # noqa: E402

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
                           "min_face_size", "similarity_threshold", "track_faces", "crop_size", "smooth_landmarks"],
    "OneStepReferenceBank": ["folder", "detector", "detector_model", "threshold", "align_size"],
    "OneStepReferenceBankFromImages": ["detector", "detector_model", "threshold", "align_size"],
    "OneStepRestore": ["mode", "max_refs", "strength", "seed", "control_after_generate", "batch_size",
                       "auto_strength", "keep_identity_without_refs"],
    "OneStepPasteFacesBack": ["color_fix", "mask_shape", "feather", "erosion"],
    "OneStepRestoreFaces": ["mode", "max_refs", "strength", "seed", "control_after_generate", "batch_size",
                            "detector", "detector_model", "threshold", "selection", "max_faces", "face_indices",
                            "min_face_size", "similarity_threshold", "color_fix", "mask_shape", "feather",
                            "erosion", "auto_strength", "smooth_landmarks", "keep_identity_without_refs"],
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


# ----------------------------------------------------------------------------- frontend facts
# ComfyUI frontend (litegraph) constants: LiteGraph.NODE_TITLE_HEIGHT, NODE_SLOT_HEIGHT,
# NODE_WIDGET_HEIGHT, NODE_WIDTH, NODE_TEXT_SIZE; BaseWidget.margin / arrowMargin / arrowWidth /
# minValueWidth; LGraphCanvas.low_quality_zoom_threshold (below it node text is not drawn);
# DragAndScale.fitToBounds' default zoom (the "." fit-view key).
TITLE_H = 30
SLOT_H = 20
WIDGET_H = 20
NODE_WIDTH = 140
TEXT_SIZE = 14
WIDGET_PADDING = 42 + 2 * (15 + 6 + 10)
TEXT_ZOOM = 0.6
FIT_ZOOM = 0.75
GROUP_TITLE_H = 34  # LGraphGroup: font_size 24 * 1.4
MULTILINE_MIN_H = 60  # the frontend's textarea widget minimum
IMAGE_PREVIEW_H = 220  # useImagePreviewWidget's minimum: Load Image once a file shows, Save / Preview Image once run
IMAGE_PREVIEW_NODES = {"LoadImage", "SaveImage", "PreviewImage"}

# The screen the layout is made for: a 1920x1080 monitor, the browser's own bars taking ~120 px;
# ComfyUI's menu bar and tabs across the top and its sidebar icons on the left.
SCREEN = (1920, 960)
MENU_H = 80
SIDEBAR_W = 56
VIEW_MARGIN = 24

# Layout metrics (graph units)
GROUP_PAD = 20
GROUP_GAP = 40
NODE_GAP = 24
MIN_NODE_W = 300
MAX_NODE_W = 380
MULTILINE = {("CLIPTextEncode", "text"), ("Note", "text")}
# room the frontend gives a node's content below its widgets: image previews, text areas
CONTENT_H = {"LoadImage": 30, "SaveImage": 80, "PreviewImage": 10, "PreviewAny": 100,
             "CLIPTextEncode": 40, "Note": 60}
CORE_DISPLAY_NAMES = {
    "CheckpointLoaderSimple": "Load Checkpoint", "CLIPTextEncode": "CLIP Text Encode (Prompt)",
    "EmptyLatentImage": "Empty Latent Image", "KSampler": "KSampler", "VAEDecode": "VAE Decode",
    "LoadImage": "Load Image", "SaveImage": "Save Image", "PreviewImage": "Preview Image",
    "ImageCrop": "Image Crop", "ImageBatch": "Batch Images", "RepeatImageBatch": "Repeat Image Batch",
    "PreviewAny": "Preview Any", "Note": "Note",
}
GROUP_COLORS = ("#3f789e", "#8A8", "#a1309b", "#b06634", "#88A")


def text_width(text: str) -> float:
    """The frontend's text measure when it has no canvas (and an upper bound of Arial's)."""
    return TEXT_SIZE * len(text) * 0.6


def display_names() -> dict:
    """Node titles as the frontend shows them: core names, then this pack's display names (the
    first two arguments, node id and title, of each NodeSpec(...) in nodes/*.py)."""
    import ast

    names = dict(CORE_DISPLAY_NAMES)
    for path in sorted((HERE.parent / "nodes").glob("*.py")):
        for call in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(call, ast.Call) and getattr(call.func, "id", "") == "NodeSpec"
                    and len(call.args) >= 2 and all(isinstance(a, ast.Constant) for a in call.args[:2])):
                names[call.args[0].value] = call.args[1].value
    return names


def frontend_min_size(title: str, inputs: list, outputs: list, widgets: list) -> tuple:
    """LGraphNode.computeSize: the smallest size the frontend lets a node have.

    inputs / outputs: socket names (widget inputs excluded); widgets: (label, height) pairs
    (WIDGET_H for plain widgets; an empty label for widgets without an input, such as an image
    preview, whose label adds no width).
    Width: the widest of title, input + output labels, widget labels (+ their arrows and value
    room) and 1.5 x NODE_WIDTH for nodes with widgets. Height: socket rows, then each widget's
    height + 4, + 8, + a 6 px margin."""
    rows = max(len(inputs), len(outputs), 1)
    in_w = max((text_width(n) for n in inputs), default=0.0)
    out_w = max((text_width(n) for n in outputs), default=0.0)
    slots_w = in_w + out_w + 2 * SLOT_H + (5 if in_w and out_w else 0)
    widget_w = max((text_width(n) for n, _ in widgets if n), default=0.0)
    widget_w = widget_w + WIDGET_PADDING if widgets else 0.0
    title_w = TITLE_H + text_width(title) + TITLE_H * 0.33
    width = max(slots_w, widget_w, title_w, NODE_WIDTH * (1.5 if widgets else 1))
    height = rows * SLOT_H
    if widgets:
        height += sum(h + 4 for _, h in widgets) + 8
    return width, height + 6


def comfortable_width(node: "Node") -> float:
    """Wide enough to show each widget's label and value untruncated (within MAX_NODE_W)."""
    need = 0.0
    for name in WIDGETS[node.type]:
        if name in FRONTEND_ONLY_WIDGETS or (node.type, name) in MULTILINE:
            continue
        value = node.widgets.get(name)
        shown = f"{value:g}" if isinstance(value, float) else str(value)
        need = max(need, text_width(name) + text_width(shown) * 0.8 + 2 * (15 + 6 + 10) + 5)
    return min(need, MAX_NODE_W)


@dataclass
class Node:
    id: int
    type: str
    widgets: dict = field(default_factory=dict)
    links: dict = field(default_factory=dict)  # input name -> (node id, output slot)
    title: Optional[str] = None
    content: Optional[float] = None  # height for previews / text areas (default CONTENT_H)
    pos: tuple = (0.0, 0.0)
    size: tuple = (0.0, 0.0)

    def shown_title(self, names: dict) -> str:
        return self.title or names.get(self.type, self.type)

    def min_size(self, names: dict) -> tuple:
        ins, outs = SOCKETS[self.type]
        widgets = [(w, MULTILINE_MIN_H if (self.type, w) in MULTILINE else WIDGET_H) for w in WIDGETS[self.type]]
        if self.type in IMAGE_PREVIEW_NODES:
            widgets.append(("", IMAGE_PREVIEW_H))
        return frontend_min_size(self.shown_title(names), [n for n, _ in ins], [n for n, _ in outs], widgets)


@dataclass
class Group:
    title: str
    nodes: list
    bounding: tuple = (0.0, 0.0, 0.0, 0.0)


@dataclass
class Workflow:
    groups: list

    @property
    def nodes(self) -> list:
        return [n for g in self.groups for n in g.nodes]


def layout(wf: Workflow) -> Workflow:
    """Place the groups left to right and each group's nodes top to bottom, one width per group;
    all groups as tall as the tallest."""
    names = display_names()
    x, bottoms = 0.0, []
    for group in wf.groups:
        width = math.ceil(max([MIN_NODE_W] + [max(n.min_size(names)[0], comfortable_width(n)) for n in group.nodes]))
        y = GROUP_TITLE_H + GROUP_PAD
        for node in group.nodes:
            min_w, min_h = node.min_size(names)
            extra = CONTENT_H.get(node.type, 0.0) if node.content is None else node.content
            node.pos = (x + GROUP_PAD, y + TITLE_H)
            node.size = (float(width), float(math.ceil(min_h + extra)))
            y += TITLE_H + node.size[1] + NODE_GAP
        bottoms.append(y - NODE_GAP + GROUP_PAD)
        group.bounding = (x, 0.0, width + 2 * GROUP_PAD, 0.0)
        x += width + 2 * GROUP_PAD + GROUP_GAP
    height = max(bottoms)
    for group in wf.groups:
        gx, gy, gw, _ = group.bounding
        group.bounding = (gx, gy, gw, height)
    return wf


def graph_bounds(ui: dict) -> tuple:
    """(x0, y0, x1, y1) around every node (title bar included) and group of a UI workflow."""
    boxes = [(n["pos"][0], n["pos"][1] - TITLE_H, n["pos"][0] + n["size"][0], n["pos"][1] + n["size"][1])
             for n in ui["nodes"]]
    boxes += [(g["bounding"][0], g["bounding"][1], g["bounding"][0] + g["bounding"][2],
               g["bounding"][1] + g["bounding"][3]) for g in ui.get("groups", [])]
    return (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes))


def fit_view_scale(bounds: tuple, screen: tuple = SCREEN) -> float:
    """The zoom of the frontend's fit-view ("."): DragAndScale.fitToBounds, zoom 0.75."""
    w, h = bounds[2] - bounds[0], bounds[3] - bounds[1]
    return min(FIT_ZOOM * screen[0] / max(w, 300), FIT_ZOOM * screen[1] / max(h, 300))


def saved_view(bounds: tuple) -> dict:
    """extra.ds: the whole graph, centred in the canvas area below the menu bar and right of the
    sidebar, at most at zoom 1 (canvas = (graph + offset) * scale)."""
    w, h = bounds[2] - bounds[0], bounds[3] - bounds[1]
    room_w = SCREEN[0] - SIDEBAR_W - 2 * VIEW_MARGIN
    room_h = SCREEN[1] - MENU_H - 2 * VIEW_MARGIN
    scale = min(1.0, room_w / w, room_h / h)
    left = SIDEBAR_W + VIEW_MARGIN + (room_w - w * scale) / 2
    top = MENU_H + VIEW_MARGIN + (room_h - h * scale) / 2
    return {"scale": round(scale, 4), "offset": [round(left / scale - bounds[0], 2), round(top / scale - bounds[1], 2)]}


# ----------------------------------------------------------------------------- shared settings

RESTORER = {"model_name": "default (embedded)", "base_model": "none", "device": "auto", "precision": "auto",
            "allow_download": False, "speed": "auto"}
DETECT = {"detector": "yunet", "detector_model": "default", "threshold": 0.7}
SELECT_ALL = {"selection": "all", "max_faces": 0, "face_indices": "0", "min_face_size": 0,
              "similarity_threshold": 0.4}
RESTORE = {"mode": "auto", "max_refs": 4, "strength": 1.0, "seed": 0, "control_after_generate": "fixed",
           "batch_size": 8, "auto_strength": True, "keep_identity_without_refs": True}
PASTE = {"color_fix": "wavelet", "mask_shape": "landmarks", "feather": 24.0, "erosion": 8.0}
BANK = dict(DETECT, align_size=512)
# blake_lively.jpg is 700x464: the child on the left half, the adult on the right half
ADULT_HALF = {"width": 350, "height": 464, "x": 350, "y": 0}
CHILD_HALF = {"width": 350, "height": 464, "x": 0, "y": 0}
INPUTS_NOTE = ("Example images: copy example_workflows/inputs/*.jpg of the node pack into ComfyUI/input "
               "(GFPGAN demo inputs, Apache-2.0, see example_workflows/inputs/SOURCE.md).")


def workflow_old_photo() -> Workflow:
    """Old photo, no references: the visual prompt alone, with the split nodes."""
    return Workflow([
        Group("1 · Input", [
            Node(1, "LoadImage", {"image": "old_photo_family.jpg", "upload": "image"}, content=80),
            Node(9, "Note", {"text": "Start here. An old photo without reference photos: the restorer uses "
                                     "its visual prompt (mode visual_prompt). min_face_size 32 skips tiny false "
                                     "detections. Hover any input for help. " + INPUTS_NOTE}, content=110),
        ]),
        Group("2 · Detect faces", [
            Node(3, "OneStepDetectFaces", {**DETECT, **SELECT_ALL, "min_face_size": 32, "track_faces": True,
                                           "crop_size": 512, "smooth_landmarks": False}, {"image": (1, 0)}),
            Node(8, "PreviewAny", {}, {"source": (3, 3)}, title="detected faces"),
        ]),
        Group("3 · Restore", [
            Node(2, "OneStepLoadFaceRestorer", RESTORER),
            Node(4, "OneStepRestore", {**RESTORE, "mode": "visual_prompt"}, {"restorer": (2, 0), "faces": (3, 0)}),
            Node(7, "PreviewImage", {}, {"images": (4, 1)}, title="restored faces"),
        ]),
        Group("4 · Paste back and save", [
            Node(5, "OneStepPasteFacesBack", PASTE, {"image": (1, 0), "faces": (4, 0)}),
            Node(6, "SaveImage", {"filename_prefix": "onestep_old_photo"}, {"images": (5, 0)}, content=200),
        ]),
    ])


def workflow_character() -> Workflow:
    """Character consistency: several images of one character restored against one bank."""
    return Workflow([
        Group("1 · Input", [
            Node(1, "LoadImage", {"image": "blake_lively.jpg", "upload": "image"}),
            Node(3, "ImageCrop", CHILD_HALF, {"image": (1, 0)}, title="another image: child"),
            Node(5, "ImageBatch", {}, {"image1": (1, 0), "image2": (3, 0)}),
            Node(14, "Note", {"text": "Every image of a batch (here: the photo and a second, resized image) is "
                                      "restored against the same reference bank; its keys/values are computed "
                                      "once and cached. The report warns about faces that are not the bank's "
                                      "person; Face Similarity shows identity before and after. " + INPUTS_NOTE},
                 content=120),
        ]),
        Group("2 · Detect faces", [
            Node(7, "OneStepDetectFaces", {**DETECT, **SELECT_ALL, "track_faces": False, "crop_size": 512,
                                           "smooth_landmarks": False}, {"image": (5, 0)}),
        ]),
        Group("3 · Reference bank", [
            Node(2, "ImageCrop", ADULT_HALF, {"image": (1, 0)}, title="reference: adult"),
            Node(4, "OneStepReferenceBankFromImages", BANK, {"images": (2, 0)}),
        ]),
        Group("4 · Restore", [
            Node(6, "OneStepLoadFaceRestorer", RESTORER),
            Node(8, "OneStepRestore", RESTORE, {"restorer": (6, 0), "faces": (7, 0), "reference_bank": (4, 0)}),
            Node(13, "PreviewAny", {}, {"source": (8, 2)}, title="restore report", content=130),
        ]),
        Group("5 · Output", [
            Node(9, "OneStepPasteFacesBack", PASTE, {"image": (5, 0), "faces": (8, 0)}),
            Node(10, "SaveImage", {"filename_prefix": "onestep_character"}, {"images": (9, 0)}, content=40),
            Node(11, "OneStepFaceSimilarity", {}, {"faces": (8, 0), "reference_bank": (4, 0)}),
            Node(12, "PreviewAny", {}, {"source": (11, 1)}, title="identity before/after"),
        ]),
    ])


def workflow_video() -> Workflow:
    """A batch of frames restored with one bank; face numbers and landmarks follow each person."""
    return Workflow([
        Group("1 · Frames", [
            Node(1, "LoadImage", {"image": "blake_lively.jpg", "upload": "image"}),
            Node(2, "RepeatImageBatch", {"amount": 4}, {"image": (1, 0)}, title="frames"),
            Node(11, "Note", {"text": "Frames of a clip as one IMAGE batch, in order. With track_faces, face #1 "
                                      "(the adult, second from the left in the first frame) keeps its number in "
                                      "every frame, so selection 'index 1' restores the same person throughout; "
                                      "smooth_landmarks steadies the face from frame to frame. " + INPUTS_NOTE},
                 content=130),
        ]),
        Group("2 · Detect and track faces", [
            Node(6, "OneStepDetectFaces", {**DETECT, **SELECT_ALL, "selection": "index", "face_indices": "1",
                                           "track_faces": True, "crop_size": 512, "smooth_landmarks": True},
                 {"image": (2, 0)}),
            Node(10, "PreviewAny", {}, {"source": (6, 3)}, title="face numbers per frame"),
        ]),
        Group("3 · Reference bank", [
            Node(3, "ImageCrop", ADULT_HALF, {"image": (1, 0)}, title="reference: adult"),
            Node(4, "OneStepReferenceBankFromImages", BANK, {"images": (3, 0)}),
        ]),
        Group("4 · Restore", [
            Node(5, "OneStepLoadFaceRestorer", RESTORER),
            Node(7, "OneStepRestore", {**RESTORE, "mode": "references"},
                 {"restorer": (5, 0), "faces": (6, 0), "reference_bank": (4, 0)}),
        ]),
        Group("5 · Output", [
            Node(8, "OneStepPasteFacesBack", PASTE, {"image": (2, 0), "faces": (7, 0)}),
            Node(9, "SaveImage", {"filename_prefix": "onestep_frames"}, {"images": (8, 0)}, content=80),
        ]),
    ])


def workflow_txt2img() -> Workflow:
    """txt2img with core nodes, then Restore Faces guided by a reference bank."""
    return Workflow([
        Group("1 · Prompt", [
            Node(1, "CheckpointLoaderSimple", {"ckpt_name": "v1-5-pruned-emaonly-fp16.safetensors"}),
            Node(2, "CLIPTextEncode", {"text": "photo portrait of a smiling blonde woman, natural light, 35mm"},
                 {"clip": (1, 1)}, title="positive"),
            Node(3, "CLIPTextEncode", {"text": "blurry, lowres, watermark, text"}, {"clip": (1, 1)},
                 title="negative"),
            Node(15, "Note", {"text": "Needs a Stable Diffusion 1.5 checkpoint in models/checkpoints. Generate "
                                      "an image, then restore its face towards the person in the reference photo "
                                      "(one clear face per reference image). " + INPUTS_NOTE}, content=100),
        ]),
        Group("2 · Generate", [
            Node(4, "EmptyLatentImage", {"width": 512, "height": 512, "batch_size": 1}),
            Node(5, "KSampler", {"seed": 123456789, "control_after_generate": "fixed", "steps": 20, "cfg": 7.0,
                                 "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0},
                 {"model": (1, 0), "positive": (2, 0), "negative": (3, 0), "latent_image": (4, 0)}),
            Node(6, "VAEDecode", {}, {"samples": (5, 0), "vae": (1, 2)}),
        ]),
        Group("3 · Reference bank", [
            Node(7, "LoadImage", {"image": "blake_lively.jpg", "upload": "image"}, title="reference photo",
                 content=0),
            Node(8, "ImageCrop", ADULT_HALF, {"image": (7, 0)}, title="crop to one face"),
            Node(9, "OneStepReferenceBankFromImages", BANK, {"images": (8, 0)}),
            Node(14, "PreviewAny", {}, {"source": (9, 1)}, title="bank report", content=80),
        ]),
        Group("4 · Detect, restore, paste back", [
            Node(10, "OneStepLoadFaceRestorer", RESTORER),
            Node(11, "OneStepRestoreFaces", {**RESTORE, **DETECT, **SELECT_ALL, **PASTE, "smooth_landmarks": False},
                 {"image": (6, 0), "restorer": (10, 0), "reference_bank": (9, 0)}),
        ]),
        Group("5 · Output", [
            Node(12, "SaveImage", {"filename_prefix": "onestep_txt2img"}, {"images": (11, 0)}, content=100),
            Node(13, "PreviewAny", {}, {"source": (11, 2)}, title="restore report", content=140),
        ]),
    ])


TITLES = {
    "01_old_photo_visual_prompt": "Old photo, no reference photos: detect, restore, paste back",
    "02_character_consistency_batch": "One character, several images: restore against a reference bank",
    "03_video_frames_one_bank": "Video frames: track one person, steady landmarks, one bank",
    "04_txt2img_restore_with_reference": "txt2img, then restore the face towards a reference photo",
}
# In the order a newcomer should open them: no references first, then a reference bank, then
# batches and video, then txt2img (which needs a Stable Diffusion checkpoint of one's own).
WORKFLOWS = {
    "01_old_photo_visual_prompt": workflow_old_photo,
    "02_character_consistency_batch": workflow_character,
    "03_video_frames_one_bank": workflow_video,
    "04_txt2img_restore_with_reference": workflow_txt2img,
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


def to_ui(wf: Workflow) -> dict:
    layout(wf)
    nodes = wf.nodes
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
    groups = [{"id": k + 1, "title": g.title, "bounding": [float(v) for v in g.bounding],
               "color": GROUP_COLORS[k % len(GROUP_COLORS)], "font_size": 24, "flags": {}}
              for k, g in enumerate(wf.groups)]
    ui = {
        "last_node_id": max(n.id for n in nodes), "last_link_id": len(links), "nodes": ui_nodes,
        "links": links, "groups": groups, "config": {}, "extra": {}, "version": 0.4,
    }
    ui["extra"]["ds"] = saved_view(graph_bounds(ui))
    return ui


def to_api(wf: Workflow) -> dict:
    out = {}
    for n in sorted(wf.nodes, key=lambda n: n.id):
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


THUMBNAIL_SIZE = 512  # square: the Templates browser's cards crop to their own shape


def write_thumbnail(ui: dict, path: Path, title: str) -> None:
    """The Templates browser's picture of a workflow: its title in large type above the graph
    drawn by docs/render_workflow.py, in a square on the canvas colour, as JPEG (the frontend
    asks for <name>.jpg; a square survives whatever shape the card crops to)."""
    import importlib.util

    from PIL import Image, ImageDraw

    from restorer_core.io.atomic import atomic_path

    spec = importlib.util.spec_from_file_location("render_workflow", HERE.parent / "docs" / "render_workflow.py")
    render = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("render_workflow", render)
    spec.loader.exec_module(render)
    size, pad = THUMBNAIL_SIZE, THUMBNAIL_SIZE // 16
    square = Image.new("RGB", (size, size), render.Theme().canvas)
    draw = ImageDraw.Draw(square)
    painter = render.Painter((0, 0, 1, 1), render.Theme(scale=1))
    font = painter.font(size // 22, bold=True)
    lines = painter.wrap(title, font, size - 2 * pad)
    y = pad
    for line in lines:
        draw.text((pad, y), line, font=font, fill="#EEEEEE")
        y += int(size / 22 * 1.35)
    graph = render.render(ui)
    room_w, room_h = size - 2 * pad, size - y - pad
    scale = min(room_w / graph.width, room_h / graph.height)
    graph = graph.resize((max(1, round(graph.width * scale)), max(1, round(graph.height * scale))), Image.LANCZOS)
    square.paste(graph, ((size - graph.width) // 2, y + (room_h - graph.height) // 2))
    with atomic_path(path) as tmp:
        square.save(tmp, "JPEG", quality=88, optimize=True)


def main() -> None:
    (HERE / "api").mkdir(exist_ok=True)
    for name, (ui, api) in build_all().items():
        write_text_atomic(HERE / f"{name}.json", json.dumps(ui, indent=2) + "\n")
        write_text_atomic(HERE / "api" / f"{name}.json", json.dumps(api, indent=2) + "\n")
        write_thumbnail(ui, HERE / f"{name}.jpg", TITLES[name])
        print(f"wrote example_workflows/{name}.json, example_workflows/api/{name}.json and example_workflows/{name}.jpg")


if __name__ == "__main__":
    main()
