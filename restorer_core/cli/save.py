"""Writing one restored image (and its face crops) under a free name, never over a file."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable

from ..io.outputs import free_path, write_no_clobber
from ..options import IMAGE_EXTENSIONS

if TYPE_CHECKING:
    from ..io.imageio import LoadedImage
    from ..restore.pipeline import ImageResult
    from .run import RunSettings

_EIGHT_BIT_ONLY = (".jpg", ".jpeg", ".webp", ".bmp")


_NO_ALPHA = (".jpg", ".jpeg", ".bmp")


def output_suffix(input_path: Path, output_format: str, bit_depth: int, has_alpha: bool) -> str:
    """The output extension: the input's where it can hold the pixels, else .png."""
    if output_format != "keep":
        ext = "." + output_format
    else:
        ext = input_path.suffix.lower()
        if ext not in IMAGE_EXTENSIONS:
            ext = ".png"
    if (bit_depth > 8 and ext in _EIGHT_BIT_ONLY) or (has_alpha and ext in _NO_ALPHA):
        ext = ".png"
    return ext


def save_face_crops(result: "ImageResult", input_path: Path, folder: Path, marker: dict) -> list:
    from ..io.imageio import ImageWriteError, save_image

    folder.mkdir(exist_ok=True)
    written = []
    for face in result.faces:
        for kind, pixels in (("input", face.crop), ("restored", face.restored)):
            stem = f"{input_path.stem}_face{face.face_index}_{kind}"
            path = write_no_clobber(lambda stem=stem: free_path(folder, stem, ".png"),
                                    lambda p, px=pixels: save_image(p, px, marker=marker),
                                    (ImageWriteError, FileExistsError))
            written.append(str(path))
    return written


def save_result(result: "ImageResult", loaded: "LoadedImage", settings: RunSettings, marker: dict,
                 same: Callable[[Path], bool]) -> Path:
    """Write one image: restored pixels with the input's metadata and our marker, or the input's
    own bytes when nothing changed. When another run writes the same output under the name
    meanwhile (same(path)), that file is the result and nothing more is written."""
    from ..io.imageio import ImageWriteError, keep_gray, save_image
    from ..io.outputs import copy_no_clobber

    src = loaded.path
    stem = f"{src.stem}_restored"
    if result.record.status == "unchanged" and settings.output_format == "keep":
        suffix = src.suffix if src.suffix.lower() in IMAGE_EXTENSIONS else ".png"
        return write_no_clobber(lambda: free_path(settings.out_dir, stem, suffix),
                                lambda p: copy_no_clobber(src, p), same=same)
    suffix = output_suffix(src, settings.output_format, loaded.bit_depth, loaded.alpha is not None)
    pixels = keep_gray(result.pixels, loaded.pixels)
    return write_no_clobber(lambda: free_path(settings.out_dir, stem, suffix),
                            lambda p: save_image(p, pixels, metadata=loaded.metadata, marker=marker),
                            (ImageWriteError, FileExistsError), same=same)
