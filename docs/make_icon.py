"""Draws the pack's Registry icon, web/icon.png (256 x 256): a face, coarse blocks on the left
half (the degraded input), smooth on the right (restored in one step).

    python docs/make_icon.py
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

SIZE = 256
OUT = Path(__file__).resolve().parents[1] / "web" / "icon.png"


def face(size: int) -> Image.Image:
    """A simple face: skin oval, eyes, brows, nose, mouth, hair."""
    img = Image.new("RGB", (size, size), (34, 46, 66))
    d = ImageDraw.Draw(img)
    s = size / 256
    d.ellipse([60 * s, 28 * s, 196 * s, 150 * s], fill=(58, 40, 30))  # hair
    d.ellipse([70 * s, 48 * s, 186 * s, 210 * s], fill=(236, 196, 160))  # face
    for x in (100, 156):
        d.ellipse([(x - 11) * s, 108 * s, (x + 11) * s, 124 * s], fill=(255, 255, 255))
        d.ellipse([(x - 6) * s, 110 * s, (x + 6) * s, 122 * s], fill=(60, 90, 130))
        d.line([(x - 14) * s, 98 * s, (x + 14) * s, 96 * s], fill=(70, 48, 36), width=max(1, int(5 * s)))
    d.line([128 * s, 122 * s, 122 * s, 156 * s, 132 * s, 158 * s], fill=(190, 140, 110), width=max(1, int(4 * s)))
    d.arc([104 * s, 160 * s, 152 * s, 188 * s], 20, 160, fill=(170, 70, 70), width=max(1, int(5 * s)))
    return img


def icon(size: int = SIZE) -> Image.Image:
    sharp = face(size * 2).resize((size, size), Image.LANCZOS)  # anti-aliased
    coarse = sharp.resize((size // 16, size // 16), Image.BILINEAR).resize((size, size), Image.NEAREST)
    coarse = coarse.filter(ImageFilter.GaussianBlur(1))
    out = sharp.copy()
    out.paste(coarse.crop((0, 0, size // 2, size)), (0, 0))
    d = ImageDraw.Draw(out)
    d.line([size // 2, 12, size // 2, size - 12], fill=(120, 200, 255), width=3)
    mask = Image.new("L", (size, size), 0)
    ImageDraw.Draw(mask).rounded_rectangle([0, 0, size - 1, size - 1], radius=size // 8, fill=255)
    rgba = out.convert("RGBA")
    rgba.putalpha(mask)
    return rgba


if __name__ == "__main__":
    OUT.parent.mkdir(parents=True, exist_ok=True)
    icon().save(OUT, optimize=True)
    print(f"wrote {OUT}")
