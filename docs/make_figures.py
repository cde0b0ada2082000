"""Before/after figures for the README, made with the project's own restorer.

    python docs/make_figures.py          # rewrites docs/images/before_after_*.jpg, faces_*.jpg, SOURCES.md

Inputs are real low-quality photos from GFPGAN's and VQFR's demo sets (Apache-2.0 only; the
CodeFormer and LFW images are not licensed for this), read from $SHARED_DIR/data/real_lq
(default: ../shared next to the repository). Each photo is restored on CPU with the shipped
default model, no reference photos (so the visual prompt steers it), and the library's default
settings. Every face those settings restore is shown: nothing is picked by hand.

Per photo two figures: the whole image, input beside output (about 900 px wide in total), and a
strip of close-ups, each face's region of the input beside the same region of the output.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from restorer_core.io.atomic import atomic_path, write_text_atomic  # noqa: E402
from restorer_core.io.imageio import load_image, to_rgb8  # noqa: E402
from restorer_core.model_zoo import load_any_restorer  # noqa: E402
from restorer_core.restore.pipeline import FaceRestorePipeline, RestoreOptions  # noqa: E402

OUT_DIR = REPO / "docs" / "images"
LEFT_LABEL = "input"
RIGHT_LABEL = "restored (default model, CPU)"


@dataclass(frozen=True)
class FigureInput:
    """One committed example: where it lives under real_lq/, its figure stem and its origin."""

    rel_path: str
    stem: str
    origin: str  # "GFPGAN" or "VQFR": picks the license file copied next to the figures


INPUTS = (
    FigureInput("gfpgan/whole_imgs/10045.png", "10045", "GFPGAN"),
    FigureInput("gfpgan/whole_imgs/00.jpg", "00", "GFPGAN"),
    FigureInput("gfpgan/whole_imgs/Blake_Lively.jpg", "Blake_Lively", "GFPGAN"),
    FigureInput("vqfr/whole_imgs/example.jpg", "example", "VQFR"),
)
ORIGIN_URLS = {"GFPGAN": "github.com/TencentARC/GFPGAN, inputs/whole_imgs/",
               "VQFR": "github.com/TencentARC/VQFR, inputs/whole_imgs/"}


@dataclass(frozen=True)
class FigureStyle:
    """Sizes and colours of the figures."""

    whole_width: int = 900  # both halves and the gap
    tile: int = 192  # one close-up
    pairs_per_row: int = 2  # faces per row of the close-up strip
    gap: int = 6
    label_height: int = 26
    face_context: float = 1.8  # close-up side / detector box side
    background: tuple = (255, 255, 255)
    text: tuple = (30, 30, 30)
    muted: tuple = (110, 110, 110)
    font_size: int = 15
    small_font_size: int = 12
    jpeg_quality: int = 90


def shared_dir() -> Path:
    return Path(os.environ.get("SHARED_DIR", REPO.parent / "shared")).resolve()


def font(size: int) -> ImageFont.ImageFont:
    """DejaVu Sans where installed, else Pillow's built-in scalable font."""
    try:
        return ImageFont.truetype("DejaVuSans.ttf", size)
    except OSError:
        return ImageFont.load_default(size=size)


# ----------------------------------------------------------------------------- geometry


def face_window(box: Sequence[float], width: int, height: int, context: float) -> tuple:
    """Square (x0, y0, x1, y1) around a detector box, `context` times its larger side, shifted
    (not cut) to stay inside a width x height image; shrunk only when the image is smaller."""
    x0, y0, x1, y1 = (float(v) for v in box)
    side = int(round(min(max(x1 - x0, y1 - y0) * context, width, height)))
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    left = int(round(min(max(cx - side / 2, 0), width - side)))
    top = int(round(min(max(cy - side / 2, 0), height - side)))
    return left, top, left + side, top + side


def fit_width(image: Image.Image, width: int) -> Image.Image:
    """Resize to `width` keeping the aspect (Lanczos: a fair downscale for both halves)."""
    height = max(1, round(image.height * width / image.width))
    return image.resize((width, height), Image.LANCZOS)


# ----------------------------------------------------------------------------- drawing


def draw_centered(draw: ImageDraw.ImageDraw, box: tuple, text: str, fnt: ImageFont.ImageFont,
                  fill: tuple) -> None:
    x0, y0, x1, y1 = box
    left, top, right, bottom = draw.textbbox((0, 0), text, font=fnt)
    draw.text((x0 + (x1 - x0 - (right - left)) / 2 - left, y0 + (y1 - y0 - (bottom - top)) / 2 - top),
              text, font=fnt, fill=fill)


def with_footer(body: Image.Image, note: str, style: FigureStyle) -> Image.Image:
    """The figure with one line of small grey text under it (source and settings)."""
    fnt = font(style.small_font_size)
    out = Image.new("RGB", (body.width, body.height + style.label_height), style.background)
    out.paste(body, (0, 0))
    draw = ImageDraw.Draw(out)
    draw_centered(draw, (0, body.height, body.width, out.height), note, fnt, style.muted)
    return out


def side_by_side(before: Image.Image, after: Image.Image, style: FigureStyle) -> Image.Image:
    """Whole input | whole output, each half of the figure width, labelled on top."""
    half = (style.whole_width - style.gap) // 2
    left, right = fit_width(before, half), fit_width(after, half)
    top = style.label_height
    canvas = Image.new("RGB", (2 * half + style.gap, top + left.height), style.background)
    canvas.paste(left, (0, top))
    canvas.paste(right, (half + style.gap, top))
    draw, fnt = ImageDraw.Draw(canvas), font(style.font_size)
    draw_centered(draw, (0, 0, half, top), LEFT_LABEL, fnt, style.text)
    draw_centered(draw, (half + style.gap, 0, canvas.width, top), RIGHT_LABEL, fnt, style.text)
    return canvas


def face_strip(before: Image.Image, after: Image.Image, boxes: Sequence, style: FigureStyle) -> Image.Image:
    """Close-ups: for each face (left to right) its region of the input beside the same region
    of the output, both resized to one tile; `pairs_per_row` faces per row. Each face's label
    gives its detector box size, since the 128 px default model helps small faces most."""
    t, g, top = style.tile, style.gap, style.label_height
    pair_w = 2 * t + g
    cols = min(style.pairs_per_row, len(boxes))
    rows = -(-len(boxes) // cols)
    width = cols * pair_w + (cols - 1) * 3 * g
    row_h = top + t
    canvas = Image.new("RGB", (width, rows * row_h + (rows - 1) * g), style.background)
    draw, fnt = ImageDraw.Draw(canvas), font(style.small_font_size + 1)
    for k, box in enumerate(boxes):
        x = (k % cols) * (pair_w + 3 * g)
        y = (k // cols) * (row_h + g)
        window = face_window(box, before.width, before.height, style.face_context)
        for j, (image, label) in enumerate(((before, LEFT_LABEL), (after, RIGHT_LABEL))):
            tile = image.crop(window).resize((t, t), Image.LANCZOS if window[2] - window[0] > t
                                             else Image.BICUBIC)
            tx = x + j * (t + g)
            canvas.paste(tile, (tx, y + top))
            size = int(round(max(box[2] - box[0], box[3] - box[1])))
            text = f"face {k + 1} ({size} px): {label}" if j == 0 else label.replace(" (default model, CPU)", "")
            draw_centered(draw, (tx, y, tx + t, y + top), text, fnt, style.text)
    return canvas


# ----------------------------------------------------------------------------- files


def save_figure(image: Image.Image, path: Path, style: FigureStyle) -> None:
    """JPEG or PNG by the file's suffix, written atomically."""
    with atomic_path(path) as tmp:
        if path.suffix.lower() in (".jpg", ".jpeg"):
            image.save(tmp, "JPEG", quality=style.jpeg_quality, optimize=True, progressive=True)
        else:
            image.save(tmp, "PNG", optimize=True)


def sources_markdown(rows: Sequence[tuple]) -> str:
    """docs/images/SOURCES.md: where each figure's photo comes from, what was done, its license."""
    lines = ["# Sources of the pictures in this folder", "",
             "Written by `docs/make_figures.py`. The photos are demo inputs of GFPGAN and VQFR",
             "(Apache-2.0, license texts next to this file). Changes: faces restored by this project's",
             "default model (CPU, no references, default settings), images resized and cropped, and",
             "labels added. `workflow_*.png` are renderings of `example_workflows/*.json` by",
             "`docs/render_workflow.py`; their Load Image previews are `example_workflows/inputs/*.jpg`",
             "(GFPGAN demo inputs, see `example_workflows/inputs/SOURCE.md`).", "",
             "| figure | photo | origin | faces restored | license |", "|---|---|---|---|---|"]
    for item, n_faces in rows:
        lines.append(f"| `before_after_{item.stem}.jpg`, `faces_{item.stem}.jpg` | `{Path(item.rel_path).name}` "
                     f"| {ORIGIN_URLS[item.origin]} | {n_faces} | Apache-2.0 (`LICENSE.{item.origin}.txt`) |")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- main


def restore_photo(pipeline: FaceRestorePipeline, path: Path, options: RestoreOptions) -> tuple:
    """(input RGB8, output RGB8, detector boxes of the restored faces, left to right)."""
    pixels = to_rgb8(load_image(path).pixels)
    result = pipeline.restore_images([pixels], None, options, names=[str(path)])[0]
    faces = sorted(result.faces, key=lambda f: f.face_index)
    return pixels, to_rgb8(np.asarray(result.pixels)), [f.box for f in faces]


def make_figures(inputs: Sequence[FigureInput] = INPUTS, out_dir: Path = OUT_DIR,
                 style: FigureStyle = FigureStyle()) -> list:
    """Restore each input and write its two figures; returns the written paths."""
    real_lq = shared_dir() / "data" / "real_lq"
    missing = [str(real_lq / i.rel_path) for i in inputs if not (real_lq / i.rel_path).is_file()]
    if missing:
        raise SystemExit(f"input photos not found: {', '.join(missing)}. Set SHARED_DIR to the folder "
                         "holding data/real_lq (default: ../shared next to the repository).")
    out_dir.mkdir(parents=True, exist_ok=True)
    restorer = load_any_restorer(None, device="cpu")
    pipeline = FaceRestorePipeline(restorer, speed="eager")
    options = RestoreOptions()  # the library defaults: all faces, no references -> visual prompt
    use_refs, use_vp = restorer.resolve_mode(options.mode, None)
    assert use_vp and not use_refs, "the default model is expected to carry a visual prompt"
    written, rows = [], []
    for item in inputs:
        before, after, boxes = restore_photo(pipeline, real_lq / item.rel_path, options)
        note = (f"{Path(item.rel_path).name} ({item.origin} demo input, Apache-2.0) · {len(boxes)} face(s) "
                f"restored · default {restorer.config.resolution} px model, no references")
        b, a = Image.fromarray(before), Image.fromarray(after)
        figures = [(f"before_after_{item.stem}.jpg", side_by_side(b, a, style))]
        if boxes:
            figures.append((f"faces_{item.stem}.jpg", face_strip(b, a, boxes, style)))
        for name, figure in figures:
            path = out_dir / name
            save_figure(with_footer(figure, note, style), path, style)
            written.append(path)
            print(f"{path.relative_to(REPO)}  {figure.width}x{figure.height}  {len(boxes)} face(s)")
        rows.append((item, len(boxes)))
    for origin in sorted({i.origin for i in inputs}):
        shutil.copyfile(real_lq / f"LICENSE.{origin}.txt", out_dir / f"LICENSE.{origin}.txt")
    write_text_atomic(out_dir / "SOURCES.md", sources_markdown(rows))
    return written


if __name__ == "__main__":
    make_figures()
