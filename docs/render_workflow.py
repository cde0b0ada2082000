"""Render a ComfyUI UI-format workflow (.json) to a screenshot-style PNG, without ComfyUI.

    python docs/render_workflow.py                        # docs/images/workflow_0N.png, one per workflow
    python docs/render_workflow.py WORKFLOW.json OUT.png  # any other workflow

What is drawn: a dark grid canvas; each node at its saved position and size (grown when its
contents need more room) with a title bar; input sockets on the left and outputs on the right,
each with its name and type; widget values one per row (with their names where
example_workflows/build_workflows.py lists them); links as bezier curves between sockets, coloured by
type like ComfyUI's dark theme. Load Image nodes show their file from example_workflows/inputs/ when it
is there. Output previews stay empty: this is the graph as opened, not a run.
Everything is drawn at 2x and scaled down, which gives anti-aliased curves and text.
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from PIL import Image, ImageDraw, ImageFont

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from restorer_core.io.atomic import atomic_path  # noqa: E402
WORKFLOW_FILES = "example_workflows/[0-9][0-9]_*.json"  # each to docs/images/workflow_<its number>.png

# Link/socket colours: ComfyUI's dark palette for core types, distinct picks for this pack's.
TYPE_COLORS = {
    "CLIP": "#FFD500", "CLIP_VISION": "#A8DADC", "CONDITIONING": "#FFA931", "CONTROL_NET": "#6EE7B7",
    "IMAGE": "#64B5F6", "LATENT": "#FF9CF9", "MASK": "#81C784", "MODEL": "#B39DDB", "VAE": "#FF6E6E",
    "FACE_RESTORER": "#D4E157", "FACES": "#4DD0E1", "REF_BANK": "#F06292",
}
DEFAULT_TYPE_COLOR = "#99AA99"  # LiteGraph's link colour, used for STRING, FLOAT, "*", ...

MULTILINE_WIDGETS = {("CLIPTextEncode", "text"), ("Note", "text")}
IMAGE_PREVIEW_NODES = {"LoadImage"}


@dataclass(frozen=True)
class Theme:
    """Colours and metrics in workflow units (LiteGraph's defaults where it has one)."""

    canvas: str = "#1B1B1B"
    grid: str = "#232323"
    grid_major: str = "#2A2A2A"
    node_body: str = "#353535"
    node_title: str = "#262626"
    node_outline: str = "#101010"
    title_text: str = "#D0D0D0"
    text: str = "#DDDDDD"
    muted: str = "#999999"
    widget_fill: str = "#222222"
    widget_outline: str = "#5A5A5A"
    note_body: str = "#665533"
    note_title: str = "#443322"
    note_text_fill: str = "#55442A"
    toggle_on: str = "#8BC34A"
    title_height: int = 30
    slot_height: int = 20
    widget_height: int = 20
    widget_gap: int = 4
    margin: int = 40
    font_size: int = 13
    title_font_size: int = 14
    type_font_size: int = 10
    link_width: float = 3.0
    scale: int = 2  # supersampling factor


@dataclass
class Socket:
    name: str
    type: str
    x: float = 0.0
    y: float = 0.0
    linked: bool = False


@dataclass
class NodeBox:
    """One node laid out: body rectangle (x, y, w, h) under a title bar of theme.title_height."""

    id: int
    type: str
    title: str
    x: float
    y: float
    w: float
    h: float
    inputs: list = field(default_factory=list)
    outputs: list = field(default_factory=list)
    widgets: list = field(default_factory=list)  # (name or None, value)
    widgets_top: float = 0.0
    saved_h: float = 0.0  # the height the workflow file gives
    image_path: Optional[Path] = None
    is_note: bool = False


# ----------------------------------------------------------------------------- metadata


def literal_assignment(path: Path, name: str) -> Any:
    """The literal value assigned to `name` at module level in a Python file (not imported, so
    no side effects); None when the file or assignment is absent or not a literal."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError):
        return None
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in stmt.targets):
            try:
                return ast.literal_eval(stmt.value)
            except ValueError:
                return None
    return None


def widget_names() -> dict:
    return literal_assignment(REPO / "example_workflows" / "build_workflows.py", "WIDGETS") or {}


def display_names() -> dict:
    """Core node titles (as example_workflows/build_workflows.py lists them), then this pack's."""
    core = literal_assignment(REPO / "example_workflows" / "build_workflows.py", "CORE_DISPLAY_NAMES") or {}
    pack = literal_assignment(REPO / "nodes" / "__init__.py", "NODE_DISPLAY_NAME_MAPPINGS") or {}
    return {**core, **pack}


def type_color(type_name: str) -> str:
    return TYPE_COLORS.get(type_name, DEFAULT_TYPE_COLOR)


def format_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


# ----------------------------------------------------------------------------- geometry


def slot_y(body_top: float, index: int, theme: Theme) -> float:
    """Centre of socket row `index` (LiteGraph: (index + 0.7) slot heights below the body top)."""
    return body_top + (index + 0.7) * theme.slot_height


def bezier(p0: tuple, p1: tuple, p2: tuple, p3: tuple, steps: int = 48) -> list:
    """Points of a cubic bezier curve, both ends included."""
    points = []
    for k in range(steps + 1):
        t = k / steps
        a, b, c, d = (1 - t) ** 3, 3 * (1 - t) ** 2 * t, 3 * (1 - t) * t ** 2, t ** 3
        points.append((a * p0[0] + b * p1[0] + c * p2[0] + d * p3[0],
                       a * p0[1] + b * p1[1] + c * p2[1] + d * p3[1]))
    return points


def link_curve(start: tuple, end: tuple) -> list:
    """A link from an output socket (leaving rightwards) to an input socket (arriving from the
    left), with LiteGraph's handle length of a quarter of the distance."""
    dist = ((end[0] - start[0]) ** 2 + (end[1] - start[1]) ** 2) ** 0.5
    handle = max(dist * 0.25, 30.0)
    return bezier(start, (start[0] + handle, start[1]), (end[0] - handle, end[1]), end)


def layout_node(node: dict, names: dict, titles: dict, theme: Theme, inputs_dir: Path) -> NodeBox:
    """Read a UI-format node and size it: its body grows when its rows need more room than
    the saved size (the saved sizes are sometimes a frontend's minimum, not what it draws)."""
    x, y = (float(v) for v in node["pos"][:2])
    w, h = (float(v) for v in node["size"][:2])
    kind = node["type"]
    box = NodeBox(int(node["id"]), kind, node.get("title") or titles.get(kind, kind), x, y, w, h,
                  is_note=kind == "Note")
    box.inputs = [Socket(s["name"], str(s.get("type", "*")), linked=s.get("link") is not None)
                  for s in node.get("inputs") or []]
    box.outputs = [Socket(s["name"], str(s.get("type", "*")), linked=bool(s.get("links")))
                   for s in node.get("outputs") or []]
    values = node.get("widgets_values") or []
    if isinstance(values, dict):  # some nodes save {name: value}
        box.widgets = list(values.items())
    else:
        known = names.get(kind, [])
        box.widgets = [(known[k] if k < len(known) else None, v) for k, v in enumerate(values)]
    if kind in IMAGE_PREVIEW_NODES and values:
        candidate = inputs_dir / str(values[0])
        box.image_path = candidate if candidate.is_file() else None
    rows = max(len(box.inputs), len(box.outputs))
    widgets_offset = rows * theme.slot_height + (6 if rows else 8)
    box.saved_h = h
    box.h = max(h, widgets_offset + widgets_height(box, theme) + 8)
    place(box, theme)
    return box


def place(box: NodeBox, theme: Theme) -> None:
    """Socket centres and the widgets' top edge from the box's position."""
    for k, s in enumerate(box.inputs):
        s.x, s.y = box.x + theme.slot_height / 2, slot_y(box.y, k, theme)
    for k, s in enumerate(box.outputs):
        s.x, s.y = box.x + box.w - theme.slot_height / 2, slot_y(box.y, k, theme)
    rows = max(len(box.inputs), len(box.outputs))
    box.widgets_top = box.y + rows * theme.slot_height + (6 if rows else 8)


def push_down_overlaps(boxes: Sequence[NodeBox], theme: Theme, gap: float = 12.0) -> None:
    """Move a node down when a node above it in the same column (overlapping x spans) reaches
    into its title bar because it grew; overlaps of a body already in the file are left as saved.
    Top to bottom, so pushes cascade down a column."""
    placed: list = []
    for box in sorted(boxes, key=lambda b: (b.y, b.x)):
        for other in placed:
            overlaps_x = box.x < other.x + other.w and other.x < box.x + box.w
            title_top = box.y - theme.title_height
            clear_before = other.y + other.saved_h <= box.y  # saved layout left its body alone
            reach = other.y + other.h + gap - title_top
            grew = other.h > other.saved_h
            if overlaps_x and other.y <= box.y and clear_before and grew and reach > 0:
                box.y += reach
        place(box, theme)
        placed.append(box)


def label_rooms(in_need: float, out_need: float, inner: float, gap: float = 16.0) -> tuple:
    """Widths for the input label (left) and output label (right) sharing a socket row: full
    when both fit, else the short one whole and the long one the rest, else half each."""
    if in_need + out_need + gap <= inner:
        return in_need, out_need
    half = (inner - gap) / 2
    if in_need <= half:
        return in_need, inner - in_need - gap
    if out_need <= half:
        return inner - out_need - gap, out_need
    return half, half


def is_multiline(box: NodeBox, name: Optional[str]) -> bool:
    return (box.type, name) in MULTILINE_WIDGETS or (box.is_note and name in (None, "text"))


def widgets_height(box: NodeBox, theme: Theme) -> float:
    """Height of the single-line widget rows (multiline ones take what is left of the body)."""
    rows = sum(1 for name, _ in box.widgets if not is_multiline(box, name))
    return rows * (theme.widget_height + theme.widget_gap)


def canvas_bounds(boxes: Sequence[NodeBox], groups: Sequence[dict], theme: Theme) -> tuple:
    """(x0, y0, x1, y1) in workflow units around every node (title bars included) and group."""
    xs0 = [b.x for b in boxes] + [g["bounding"][0] for g in groups]
    ys0 = [b.y - theme.title_height for b in boxes] + [g["bounding"][1] for g in groups]
    xs1 = [b.x + b.w for b in boxes] + [g["bounding"][0] + g["bounding"][2] for g in groups]
    ys1 = [b.y + b.h for b in boxes] + [g["bounding"][1] + g["bounding"][3] for g in groups]
    m = theme.margin
    return min(xs0) - m, min(ys0) - m, max(xs1) + m, max(ys1) + m


# ----------------------------------------------------------------------------- drawing


class Painter:
    """Draws in workflow units onto a supersampled canvas whose top-left is `origin`."""

    def __init__(self, bounds: tuple, theme: Theme):
        self.theme, self.s = theme, theme.scale
        self.ox, self.oy = bounds[0], bounds[1]
        size = (int((bounds[2] - bounds[0]) * self.s), int((bounds[3] - bounds[1]) * self.s))
        self.image = Image.new("RGB", size, theme.canvas)
        self.draw = ImageDraw.Draw(self.image)
        self._fonts: dict = {}

    def p(self, x: float, y: float) -> tuple:
        return (x - self.ox) * self.s, (y - self.oy) * self.s

    def rect(self, x0: float, y0: float, x1: float, y1: float) -> list:
        return [*self.p(x0, y0), *self.p(x1, y1)]

    def font(self, size: int, bold: bool = False) -> ImageFont.ImageFont:
        key = (size, bold)
        if key not in self._fonts:
            try:
                name = "DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"
                self._fonts[key] = ImageFont.truetype(name, size * self.s)
            except OSError:
                self._fonts[key] = ImageFont.load_default(size=size * self.s)
        return self._fonts[key]

    def text_width(self, text: str, font: ImageFont.ImageFont) -> float:
        return self.draw.textlength(text, font=font) / self.s

    def fit(self, text: str, font: ImageFont.ImageFont, width: float) -> str:
        """`text`, cut with an ellipsis to at most `width` workflow units."""
        if self.text_width(text, font) <= width:
            return text
        while text and self.text_width(text + "…", font) > width:
            text = text[:-1]
        return text + "…"

    def text(self, x: float, y: float, text: str, font: ImageFont.ImageFont, fill: str,
             anchor: str = "lm") -> None:
        self.draw.text(self.p(x, y), text, font=font, fill=fill, anchor=anchor)

    def wrap(self, text: str, font: ImageFont.ImageFont, width: float) -> list:
        lines: list = []
        for paragraph in str(text).split("\n"):
            line = ""
            for word in paragraph.split(" "):
                trial = f"{line} {word}".strip()
                if line and self.text_width(trial, font) > width:
                    lines.append(line)
                    line = word
                else:
                    line = trial
            lines.append(line)
        return lines


def draw_grid(pt: Painter) -> None:
    th = pt.theme
    x0, y0 = pt.ox, pt.oy
    x1, y1 = x0 + pt.image.width / pt.s, y0 + pt.image.height / pt.s
    for step, color in ((20, th.grid), (100, th.grid_major)):
        gx = (int(x0) // step) * step
        while gx <= x1:
            pt.draw.line([pt.p(gx, y0), pt.p(gx, y1)], fill=color, width=1)
            gx += step
        gy = (int(y0) // step) * step
        while gy <= y1:
            pt.draw.line([pt.p(x0, gy), pt.p(x1, gy)], fill=color, width=1)
            gy += step


def draw_link(pt: Painter, start: tuple, end: tuple, color: str) -> None:
    points = [pt.p(*q) for q in link_curve(start, end)]
    width = pt.theme.link_width * pt.s
    pt.draw.line(points, fill="#000000", width=int(width + 2 * pt.s), joint="curve")
    pt.draw.line(points, fill=color, width=int(width), joint="curve")


def draw_socket(pt: Painter, socket: Socket) -> None:
    r = 4.5
    color = type_color(socket.type)
    box = pt.rect(socket.x - r, socket.y - r, socket.x + r, socket.y + r)
    if socket.linked:
        pt.draw.ellipse(box, fill=color, outline="#000000", width=pt.s)
    else:
        pt.draw.ellipse(box, fill=pt.theme.node_body, outline=color, width=int(1.5 * pt.s))


def draw_sockets(pt: Painter, box: NodeBox) -> None:
    """Sockets with their name (and type, smaller and in the type's colour, when it differs)."""
    th = pt.theme
    name_font, type_font = pt.font(th.font_size), pt.font(th.type_font_size)

    def need(s: Optional[Socket]) -> float:
        if s is None:
            return 0.0
        extra = 0.0 if s.type == s.name else 6 + pt.text_width(s.type, type_font)
        return pt.text_width(s.name, name_font) + extra

    for k in range(max(len(box.inputs), len(box.outputs))):
        inp = box.inputs[k] if k < len(box.inputs) else None
        out = box.outputs[k] if k < len(box.outputs) else None
        in_room, out_room = label_rooms(need(inp), need(out), box.w - 40)
        for s, room, sign in ((inp, in_room, 1), (out, out_room, -1)):
            if s is None:
                continue
            draw_socket(pt, s)
            x, anchor = s.x + sign * 10, "lm" if sign > 0 else "rm"
            name = pt.fit(s.name, name_font, room)
            pt.text(x, s.y, name, name_font, th.text, anchor=anchor)
            left = room - pt.text_width(name, name_font) - 6
            if s.type != s.name and left >= min(18.0, pt.text_width(s.type, type_font)):
                x += sign * (pt.text_width(name, name_font) + 6)
                pt.text(x, s.y + 1, pt.fit(s.type, type_font, left), type_font, type_color(s.type), anchor=anchor)


def draw_widgets(pt: Painter, box: NodeBox) -> float:
    """Single-line widgets as rounded rows (name left, value right); multiline ones as a text
    area filling the rest of the body. Returns the y below the last widget drawn."""
    th = pt.theme
    fnt = pt.font(th.font_size - 1)
    left, right = box.x + 12, box.x + box.w - 12
    y = box.widgets_top
    multiline = [(n, v) for n, v in box.widgets if is_multiline(box, n)]
    for name, value in box.widgets:
        if is_multiline(box, name):
            continue
        y0, y1 = y, y + th.widget_height
        pt.draw.rounded_rectangle(pt.rect(left, y0, right, y1), radius=th.widget_height / 2 * pt.s,
                                  fill=th.widget_fill, outline=th.widget_outline, width=pt.s)
        mid = (y0 + y1) / 2
        shown = format_value(value)
        if name == "upload":
            pt.text((left + right) / 2, mid, "choose file to upload", fnt, th.muted, anchor="mm")
        elif isinstance(value, bool):
            pt.text(left + 14, mid, (name or "").replace("_", " "), fnt, th.muted)
            r = 5
            pt.draw.ellipse(pt.rect(right - 14 - r, mid - r, right - 14 + r, mid + r),
                            fill=th.toggle_on if value else th.widget_fill, outline=th.muted, width=pt.s)
            pt.text(right - 26, mid, shown, fnt, th.text, anchor="rm")
        else:
            label = (name or "").replace("_", " ")
            value_w = min(pt.text_width(shown, fnt), (right - left) * 0.62)
            name_room = right - left - 28 - value_w - 10
            if label and name_room > 24:
                pt.text(left + 14, mid, pt.fit(label, fnt, name_room), fnt, th.muted)
            pt.text(right - 14, mid, pt.fit(shown, fnt, value_w + 1), fnt, th.text, anchor="rm")
            if isinstance(value, (int, float, str)) and not isinstance(value, bool):
                for ax, glyph in ((left + 6, "◂"), (right - 6, "▸")):
                    pt.text(ax, mid, glyph, fnt, th.muted, anchor="mm")
        y = y1 + th.widget_gap
    for _, value in multiline:
        top, bottom = y + 2, box.y + box.h - 8
        pt.draw.rounded_rectangle(pt.rect(left - 4, top, right + 4, bottom), radius=4 * pt.s,
                                  fill=th.note_text_fill if box.is_note else th.widget_fill,
                                  outline=None if box.is_note else th.widget_outline, width=pt.s)
        line_h = th.font_size + 4
        ty = top + 4 + line_h / 2
        for line in pt.wrap(str(value), fnt, right - left - 8):
            if ty + line_h / 2 > bottom:
                break
            pt.text(left + 2, ty, line, fnt, th.text)
            ty += line_h
        y = bottom
    return y


def draw_preview(pt: Painter, box: NodeBox, top: float) -> None:
    """The Load Image node's picture, fitted below its widgets."""
    if box.image_path is None:
        return
    room_w, room_h = box.w - 20, box.y + box.h - 10 - top
    if room_w < 20 or room_h < 20:
        return
    with Image.open(box.image_path) as im:
        im = im.convert("RGB")
        scale = min(room_w / im.width, room_h / im.height)
        w, h = im.width * scale, im.height * scale
        x0, y0 = box.x + (box.w - w) / 2, top + (room_h - h) / 2
        pix = im.resize((max(1, int(w * pt.s)), max(1, int(h * pt.s))), Image.LANCZOS)
    pt.image.paste(pix, tuple(int(v) for v in pt.p(x0, y0)))


def draw_node(pt: Painter, box: NodeBox) -> None:
    th = pt.theme
    body = th.note_body if box.is_note else th.node_body
    title = th.note_title if box.is_note else th.node_title
    r = 8 * pt.s
    top = box.y - th.title_height
    # shadow, then the whole node, then the title bar over its upper part
    pt.draw.rounded_rectangle(pt.rect(box.x + 4, top + 5, box.x + box.w + 4, box.y + box.h + 5), radius=r,
                              fill="#111111")
    pt.draw.rounded_rectangle(pt.rect(box.x, top, box.x + box.w, box.y + box.h), radius=r, fill=body,
                              outline=th.node_outline, width=pt.s)
    pt.draw.rounded_rectangle(pt.rect(box.x, top, box.x + box.w, box.y), radius=r, fill=title,
                              corners=(True, True, False, False))
    pt.draw.line([pt.p(box.x, box.y), pt.p(box.x + box.w, box.y)], fill=th.node_outline, width=pt.s)
    mid = top + th.title_height / 2
    dot = 5
    pt.draw.ellipse(pt.rect(box.x + 12 - dot, mid - dot, box.x + 12 + dot, mid + dot), fill=th.muted)
    tfont = pt.font(th.title_font_size)
    pt.text(box.x + 26, mid, pt.fit(box.title, tfont, box.w - 36), tfont, th.title_text)
    draw_sockets(pt, box)
    below = draw_widgets(pt, box)
    draw_preview(pt, box, below + 4)


def draw_group(pt: Painter, group: dict) -> None:
    x, y, w, h = group["bounding"]
    color = group.get("color", "#3F789E")
    pt.draw.rectangle(pt.rect(x, y, x + w, y + h), outline=color, width=2 * pt.s)
    pt.draw.rectangle(pt.rect(x, y, x + w, y + 34), fill=color)
    fnt = pt.font(18)
    pt.text(x + 10, y + 17, str(group.get("title", "")), fnt, "#FFFFFF")


def render(workflow: dict, theme: Theme = Theme(), inputs_dir: Path = REPO / "example_workflows" / "inputs") -> Image.Image:
    """The workflow drawn as a PIL image (1 pixel per workflow unit)."""
    names, titles = widget_names(), display_names()
    boxes = {b.id: b for b in (layout_node(n, names, titles, theme, inputs_dir) for n in workflow["nodes"])}
    push_down_overlaps(list(boxes.values()), theme)
    groups = workflow.get("groups") or []
    pt = Painter(canvas_bounds(list(boxes.values()), groups, theme), theme)
    draw_grid(pt)
    for group in groups:
        draw_group(pt, group)
    for link in workflow.get("links") or []:
        _, src, src_slot, dst, dst_slot, kind = link[:6]
        if src not in boxes or dst not in boxes:
            continue
        out = boxes[src].outputs[src_slot]
        inp = boxes[dst].inputs[dst_slot]
        draw_link(pt, (out.x, out.y), (inp.x, inp.y), type_color(str(kind)))
    for box in boxes.values():  # file order, like the frontend: later nodes on top
        draw_node(pt, box)
    size = (pt.image.width // theme.scale, pt.image.height // theme.scale)
    return pt.image.resize(size, Image.LANCZOS)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workflow", nargs="?", help="UI-format workflow .json (default: every shipped one)")
    parser.add_argument("out", nargs="?", help="output .png")
    args = parser.parse_args(argv)
    if bool(args.workflow) != bool(args.out):
        parser.error("give both WORKFLOW and OUT, or neither")
    jobs = [(args.workflow, args.out)] if args.workflow else [
        (w, REPO / "docs" / "images" / f"workflow_{w.name[:2]}.png") for w in sorted(REPO.glob(WORKFLOW_FILES))]
    for src, dst in jobs:
        workflow = json.loads(Path(src).read_text(encoding="utf-8"))
        if "nodes" not in workflow:
            parser.error(f"{src} is not a UI-format workflow (no 'nodes'); API-format files have no layout")
        image = render(workflow)
        Path(dst).parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(dst) as tmp:
            image.save(tmp, "PNG", optimize=True)
        print(f"{dst}  {image.width}x{image.height}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
