"""Before/after figures of two restorers (v1 vs v2) on every whole image of real_lq.

    python docs/make_comparison_figures.py --v1 /tmp/v1_restorer.safetensors --v2 PATH [--labels v5,v6]

Every `real_lq/*/whole_imgs/*` image (the Stable Diffusion portrait first; a file that appears in
two demo sets is shown once) is restored on CPU by both models with the library's defaults (no
references, automatic strength). Per image one JPEG: the whole input beside both outputs, and
under it each face's close-ups: input, v1 and v2 at the automatic strength (the strength used in
the label), then v1 and v2 at strength 1 (what the model itself does to the face).

Licenses: GFPGAN's and VQFR's demo inputs are Apache-2.0; their figures go to
docs/images/compare/. CodeFormer's (the SD portrait among them) are under the S-Lab License 1.0,
non-commercial use only; their figures go to docs/images/noncommercial/ with that license, apart
from everything the project's Apache-2.0 license covers. Existing figures are replaced only with
--overwrite.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from PIL import Image, ImageDraw

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
for p in (str(REPO), str(HERE)):
    if p not in sys.path:
        sys.path.insert(0, p)

from make_figures import FigureStyle, draw_centered, face_window, fit_width, font, save_figure, shared_dir, with_footer  # noqa: E402
from restorer_core.io.atomic import write_text_atomic  # noqa: E402
from restorer_core.io.imageio import load_image, to_rgb8  # noqa: E402

FIRST = "codeformer/whole_imgs/stable_diffusion_00.jpg"
ORIGINS = {"gfpgan": ("GFPGAN", "github.com/TencentARC/GFPGAN, inputs/whole_imgs/", "Apache-2.0", "compare"),
           "vqfr": ("VQFR", "github.com/TencentARC/VQFR, inputs/whole_imgs/", "Apache-2.0", "compare"),
           "codeformer": ("CodeFormer", "github.com/sczhou/CodeFormer, inputs/whole_imgs/",
                          "S-Lab License 1.0, non-commercial", "noncommercial")}


@dataclass(frozen=True)
class Photo:
    rel_path: str  # under real_lq/
    origin: str  # gfpgan | vqfr | codeformer

    @property
    def stem(self) -> str:
        return f"{self.origin}_{Path(self.rel_path).stem}"


def whole_images(real_lq: Path) -> list:
    """Every whole image, the SD portrait first, then by path; duplicates (same bytes) once."""
    paths = sorted(real_lq.glob("*/whole_imgs/*"), key=lambda p: (p.relative_to(real_lq).as_posix() != FIRST,
                                                                   p.relative_to(real_lq).as_posix()))
    seen, out = set(), []
    for p in paths:
        digest = hashlib.sha256(p.read_bytes()).hexdigest()
        if digest in seen or p.parts[-3] not in ORIGINS:
            continue
        seen.add(digest)
        out.append(Photo(p.relative_to(real_lq).as_posix(), p.parts[-3]))
    return out


def restore(pipeline, pixels: np.ndarray, strength) -> tuple:
    """(output RGB8, {face_index: (box, strength used)}) with the library defaults."""
    from restorer_core.restore.pipeline import RestoreOptions

    result = pipeline.restore_images([pixels], None, RestoreOptions(strength=strength))[0]
    faces = {f.face_index: (f.box, float(f.info.get("strength", 1.0))) for f in result.faces}
    return to_rgb8(np.asarray(result.pixels)), faces


def comparison(before: Image.Image, outs: Sequence[tuple], boxes: list, labels: Sequence[str],
               style: FigureStyle) -> Image.Image:
    """Top: input | first | second restorer (whole, auto strength). Below: per face, tiles of every image in `outs`."""
    g, top = style.gap, style.label_height
    third = (style.whole_width - 2 * g) // 3
    wholes = [before] + [o for o, _ in outs[:2]]
    halves = [fit_width(im, third) for im in wholes]
    tile = (style.whole_width - (len(outs)) * g) // (len(outs) + 1)
    face_rows = len(boxes)
    height = top + halves[0].height + face_rows * (top + tile + g)
    canvas = Image.new("RGB", (3 * third + 2 * g, height), style.background)
    draw, fnt, small = ImageDraw.Draw(canvas), font(style.font_size), font(style.small_font_size)
    for k, (im, label) in enumerate(zip(halves, ("input", labels[0], labels[1]))):
        x = k * (third + g)
        canvas.paste(im, (x, top))
        draw_centered(draw, (x, 0, x + third, top), label, fnt, style.text)
    y = top + halves[0].height + g
    for n, (idx, box) in enumerate(boxes):
        window = face_window(box, before.width, before.height, style.face_context)
        tiles = [("input", before)] + [(lab, im) for (im, _), lab in zip(outs, labels)]
        for k, (lab, im) in enumerate(tiles):
            x = k * (tile + g)
            crop = im.crop(window).resize((tile, tile), Image.LANCZOS if window[2] - window[0] > tile else Image.BICUBIC)
            canvas.paste(crop, (x, y + top))
            text = lab
            if k > 0:
                used = outs[k - 1][1].get(idx)
                text = f"{lab}: {used[1]:.2f}" if used is not None else f"{lab}: not found"
            elif k == 0:
                size = int(round(max(box[2] - box[0], box[3] - box[1])))
                text = f"face {n + 1} ({size} px)"
            draw_centered(draw, (x, y, x + tile, y + top), text, small, style.text)
        y += top + tile + g
    return canvas


def sources_markdown(rows: Sequence[tuple], folder: str, names: Sequence[str] = ("v1", "v2")) -> str:
    lines = ["# Sources of the pictures in this folder", "",
             f"Written by `docs/make_comparison_figures.py`: the photo restored by {names[0]} and {names[1]} (CPU, no references, "
             "library defaults), images resized and cropped, labels added.", ""]
    if folder == "noncommercial":
        lines += ["**Non-commercial only.** These photos are CodeFormer's demo inputs under the S-Lab License 1.0 "
                  "(`LICENSE.CodeFormer.txt` here): they may be redistributed for non-commercial purposes only, and "
                  "are not covered by this project's Apache-2.0 license.", ""]
    lines += ["| figure | photo | origin | faces | license |", "|---|---|---|---|---|"]
    for photo, n in rows:
        name, url, lic, _ = ORIGINS[photo.origin]
        lines.append(f"| `compare_{photo.stem}.jpg` | `{Path(photo.rel_path).name}` | {url} | {n} | {lic} |")
    return "\n".join(lines) + "\n"


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--v1", required=True, help="the v1 restorer (.safetensors)")
    ap.add_argument("--v2", required=True, help="the v2 restorer (.safetensors)")
    ap.add_argument("--out", default=str(REPO / "docs" / "images"), help="folder holding compare/ and noncommercial/")
    ap.add_argument("--only", default="", help="only photos whose path contains this text")
    ap.add_argument("--overwrite", action="store_true", help="replace existing figures")
    ap.add_argument("--labels", default="v1,v2", help="the two restorers' names in the figures (e.g. v5,v6)")
    a = ap.parse_args(argv)
    names = [n.strip() for n in a.labels.split(",")]
    if len(names) != 2 or not all(names):
        ap.error(f"--labels takes two names separated by a comma, got {a.labels!r}")
    from restorer_core.model_zoo import load_any_restorer
    from restorer_core.restore.pipeline import FaceRestorePipeline

    real_lq = shared_dir() / "data" / "real_lq"
    if not real_lq.is_dir():
        raise SystemExit(f"{real_lq} not found; set SHARED_DIR to the folder holding data/real_lq")
    photos = [p for p in whole_images(real_lq) if a.only in p.rel_path]
    out_root = Path(a.out)
    targets = [out_root / ORIGINS[p.origin][3] / f"compare_{p.stem}.jpg" for p in photos]
    existing = [str(t) for t in targets if t.exists()]
    if existing and not a.overwrite:
        raise SystemExit(f"{len(existing)} figure(s) exist (e.g. {existing[0]}); pass --overwrite to replace them")
    pipes = {k: FaceRestorePipeline(load_any_restorer(path, device="cpu"), speed="eager")
             for k, path in (("v1", a.v1), ("v2", a.v2))}
    style = FigureStyle()
    rows: dict = {}
    for photo, target in zip(photos, targets):
        pixels = to_rgb8(load_image(real_lq / photo.rel_path).pixels)
        outs = [restore(pipes[k], pixels, s) for s, k in (("auto", "v1"), ("auto", "v2"), (1.0, "v1"), (1.0, "v2"))]
        faces = {**outs[2][1], **outs[3][1]}
        boxes = sorted(((i, b) for i, (b, _) in faces.items()), key=lambda t: t[0])
        figure = comparison(Image.fromarray(pixels), [(Image.fromarray(o), f) for o, f in outs], boxes,
                            (f"{names[0]} auto", f"{names[1]} auto", f"{names[0]} strength 1",
                             f"{names[1]} strength 1"), style)
        name, _, lic, folder = ORIGINS[photo.origin]
        note = (f"{Path(photo.rel_path).name} ({name} demo input, {lic}) · no references, defaults · "
                "labels: strength used")
        target.parent.mkdir(parents=True, exist_ok=True)
        save_figure(with_footer(figure, note, style), target, style)
        print(f"{target}  {figure.width}x{figure.height}  {len(boxes)} face(s)")
        rows.setdefault(folder, []).append((photo, len(boxes)))
    for folder, items in rows.items():
        for origin in sorted({p.origin for p, _ in items}):
            lic_name = f"LICENSE.{ORIGINS[origin][0]}.txt"
            shutil.copyfile(real_lq / lic_name, out_root / folder / lic_name)
        write_text_atomic(out_root / folder / "SOURCES.md", sources_markdown(items, folder, names))
    return 0


if __name__ == "__main__":
    sys.exit(main())
