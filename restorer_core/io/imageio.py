"""Reading and writing user images without losing bit depth, alpha or orientation.

Pillow decodes almost everything but silently truncates 16-bit colour PNGs to 8 bits, so those
(and anything Pillow cannot open, e.g. some 16-bit TIFFs) are decoded with OpenCV instead.
Complete 8-bit RGB / grey JPEGs are decoded by OpenCV (Pillow's pixels exactly; it releases the
interpreter lock). EXIF orientation is applied with numpy so every decoder path ends up upright.
The file's metadata (ICC profile, EXIF with the orientation reset to 1, JPEG quantisation
tables and chroma subsampling, PNG text chunks) is kept in `LoadedImage.metadata`, and
`save_image(..., metadata=)` writes it back: JPEG (with the input's own quantisation tables,
so the quality matches) through OpenCV where it can write them (jpeg_opencv), else Pillow; WEBP
through Pillow; PNG through OpenCV (any bit depth) with the chunks added by hand; TIFF and BMP
are written without metadata.
Every write goes to a temporary file in the destination folder that is then moved into place,
so a crash never leaves a half-written image behind and an existing file is never replaced
unless the caller asks for it.
"""

from __future__ import annotations

import io
import json
import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

import cv2
import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from .atomic import write_bytes_atomic
from .jpeg_opencv import encode_jpeg
from ..errors import ImageReadError, RestorerError

PathLike = Union[str, os.PathLike]

_EXIF_ORIENTATION = 0x0112
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_WRITE_FORMATS = {".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp"}
_EIGHT_BIT_ONLY = {".jpg", ".jpeg", ".webp", ".bmp"}


class ImageWriteError(RestorerError):
    """An output image could not be written (exists already, bad folder, unsupported format)."""


# Key of the PNG text chunk / prefix of the JPEG comment that marks a file as this tool's output.
OUTPUT_MARKER = "onestep-face-restore"


@dataclass
class ImageMetadata:
    """What a file carries besides its pixels, as needed to write an output like it.

    exif: raw TIFF-structured EXIF (no "Exif\\0\\0" prefix) with the orientation tag set to 1,
    because the pixels were turned upright on loading. text: PNG text chunks (our own marker
    excluded). marker: the JSON this tool writes into its outputs, when the file is one.
    """

    format: str = ""
    icc_profile: Optional[bytes] = None
    exif: Optional[bytes] = None
    jpeg_qtables: Optional[list] = None
    jpeg_subsampling: int = -1
    text: dict = field(default_factory=dict)
    marker: Optional[dict] = None


@dataclass
class LoadedImage:
    """A decoded image, upright, in its own bit depth.

    pixels: uint8 or uint16; HxW (grayscale) or HxWxC with C = 3 (RGB) or 4 (RGBA).
    mode: the source's Pillow mode (e.g. "RGB", "I;16", "P", "CMYK"), for messages and UI.
    """

    pixels: np.ndarray
    path: Optional[Path]
    mode: str
    metadata: ImageMetadata = field(default_factory=ImageMetadata)

    @property
    def bit_depth(self) -> int:
        return 16 if self.pixels.dtype == np.uint16 else 8

    @property
    def channels(self) -> int:
        return 1 if self.pixels.ndim == 2 else int(self.pixels.shape[2])

    @property
    def alpha(self) -> Optional[np.ndarray]:
        """The alpha plane (HxW, same dtype as pixels), or None."""
        return self.pixels[..., 3] if self.channels == 4 else None

    @property
    def rgb8(self) -> np.ndarray:
        """HxWx3 uint8 RGB for detectors (no copy when the image already is 8-bit RGB)."""
        return to_rgb8(self.pixels)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height)."""
        return int(self.pixels.shape[1]), int(self.pixels.shape[0])


# ----------------------------------------------------------------------------- conversions


def dtype_max(dtype: np.dtype) -> float:
    """Full-scale value of an integer image dtype (1.0 for floats)."""
    dtype = np.dtype(dtype)
    if dtype == np.uint8:
        return 255.0
    if dtype == np.uint16:
        return 65535.0
    if dtype.kind == "f":
        return 1.0
    raise ValueError(f"unsupported image dtype {dtype}; use uint8, uint16 or float")


def to_float01(pixels: np.ndarray) -> np.ndarray:
    """uint8/uint16/float pixels -> float32 in 0..1 (a new array; floats are clipped)."""
    if pixels.dtype.kind == "f":
        return np.clip(pixels, 0.0, 1.0).astype(np.float32, copy=False)  # clip made the new array
    return pixels.astype(np.float32) * np.float32(1.0 / dtype_max(pixels.dtype))


def from_float01(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """float 0..1 -> dtype (rounded and clipped for integer dtypes)."""
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return np.clip(values, 0.0, 1.0).astype(dtype)
    peak = dtype_max(dtype)
    scaled = np.multiply(values, np.float32(peak), dtype=np.float32)  # one new array, then in place
    np.rint(scaled, out=scaled)
    np.clip(scaled, 0, peak, out=scaled)
    return scaled.astype(dtype)


def to_rgb8(pixels: np.ndarray) -> np.ndarray:
    """Any decoded layout (HxW, HxWx1/3/4; uint8/uint16/float) -> HxWx3 uint8 RGB; alpha dropped."""
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[..., 0]
    if pixels.ndim == 3 and pixels.shape[2] == 4:
        pixels = pixels[..., :3]
    if pixels.ndim not in (2, 3) or (pixels.ndim == 3 and pixels.shape[2] != 3):
        raise ValueError(f"expected HxW or HxWx(1|3|4) pixels, got shape {pixels.shape}")
    if pixels.dtype == np.uint16:
        pixels = ((pixels.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    elif pixels.dtype != np.uint8:
        pixels = from_float01(pixels, np.uint8)
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[..., None], 3, axis=2)
    return pixels


# ----------------------------------------------------------------------------- reading


def apply_exif_orientation(pixels: np.ndarray, orientation: Optional[int]) -> np.ndarray:
    """Rotate/flip pixels so that an image with EXIF orientation 1..8 is shown upright."""
    if orientation in (None, 1):
        return pixels
    ops = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.swapaxes(0, 1),
        6: lambda a: np.rot90(a, k=-1),
        7: lambda a: a.swapaxes(0, 1)[::-1, ::-1],
        8: lambda a: np.rot90(a, k=1),
    }
    op = ops.get(int(orientation))
    return np.ascontiguousarray(op(pixels)) if op else pixels


def _png_header(path: Path) -> Optional[tuple[int, int]]:
    """(bit depth, colour type) from a PNG's IHDR, or None for other files."""
    with open(path, "rb") as fh:
        head = fh.read(26)
    if len(head) < 26 or not head.startswith(_PNG_SIGNATURE) or head[12:16] != b"IHDR":
        return None
    return head[24], head[25]


def _read_with_cv2(path: Path) -> Optional[np.ndarray]:
    """Decode with OpenCV keeping depth and alpha; returns RGB(A) order or None."""
    data = np.fromfile(str(path), dtype=np.uint8)  # np.fromfile copes with non-ASCII paths
    if data.size == 0:
        return None
    try:
        arr = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    except cv2.error:
        return None
    if arr is None:
        return None
    if arr.dtype not in (np.uint8, np.uint16):
        raise ImageReadError(
            f"{path} stores {arr.dtype} samples; only 8- and 16-bit images are supported. "
            "Convert it to an 8- or 16-bit PNG first."
        )
    if arr.ndim == 3 and arr.shape[2] == 3:
        arr = cv2.cvtColor(arr, cv2.COLOR_BGR2RGB)
    elif arr.ndim == 3 and arr.shape[2] == 4:
        arr = cv2.cvtColor(arr, cv2.COLOR_BGRA2RGBA)
    elif arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    return arr


def _pil_to_array(im: Image.Image, path: Path) -> np.ndarray:
    """Pillow image in any common mode -> uint8/uint16 HxW, HxWx3 or HxWx4."""
    mode = im.mode
    if mode in ("L", "RGB", "RGBA"):
        return np.asarray(im)
    if mode == "1":
        return np.asarray(im.convert("L"))
    if mode.startswith("I;16"):
        return np.asarray(im).astype(np.uint16)  # big-endian variants become native
    if mode == "I":
        return np.clip(np.asarray(im), 0, 65535).astype(np.uint16)
    if mode == "F":
        raise ImageReadError(
            f"{path} is a 32-bit float image; convert it to an 8- or 16-bit PNG first."
        )
    has_alpha = mode in ("LA", "La", "PA", "RGBa") or "transparency" in im.info
    return np.asarray(im.convert("RGBA" if has_alpha else "RGB"))


def _decode_jpeg_cv2(path: Path, im: Image.Image) -> Optional[np.ndarray]:
    """A complete 8-bit RGB or grey JPEG decoded by OpenCV (the same libjpeg-turbo pixels as
    Pillow's, but it releases the interpreter lock, so reader threads overlap); None for anything
    else, which Pillow decodes. Complete: the data ends with the EOI marker, so a truncated file
    still reaches Pillow, which refuses it."""
    if im.format != "JPEG" or im.mode not in ("RGB", "L"):
        return None
    data = np.fromfile(str(path), dtype=np.uint8)
    if data.size < 4 or data[-2] != 0xFF or data[-1] != 0xD9:
        return None
    grey = im.mode == "L"
    flags = (cv2.IMREAD_GRAYSCALE if grey else cv2.IMREAD_COLOR) | cv2.IMREAD_IGNORE_ORIENTATION
    try:
        arr = cv2.imdecode(data, flags)
    except cv2.error:
        return None
    if arr is None or arr.shape[:2] != (im.height, im.width):
        return None
    return arr if grey else cv2.cvtColor(arr, cv2.COLOR_BGR2RGB)


def load_image(path: PathLike) -> LoadedImage:
    """Read an image file: upright, in its own bit depth, grayscale kept as HxW.

    Raises ImageReadError for a missing, truncated, corrupt or unsupported file.
    """
    path = Path(path)
    if not path.exists():
        raise ImageReadError(f"image not found: {path}. Check the path and file name.")
    if path.is_dir():
        raise ImageReadError(f"{path} is a folder, not an image file. Pick an image inside it.")
    if path.stat().st_size == 0:
        raise ImageReadError(f"{path} is empty (0 bytes). Copy or export the image again.")
    # Host apps (ComfyUI among them) may switch on Pillow's silent gray fill for truncated
    # files; a restorer must not paste faces into a half-decoded photo, so insist here.
    lenient = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        with Image.open(path) as im:
            frames = int(getattr(im, "n_frames", 1) or 1)
            if frames > 1:
                raise ImageReadError(
                    f"{path} has {frames} frames (an animation or a multi-page file); only the first "
                    "would be restored. Extract the frames first (e.g. `ffmpeg -i IN frame_%04d.png`) "
                    "and restore those.")
            orientation = im.getexif().get(_EXIF_ORIENTATION)
            mode = im.mode
            metadata = _read_metadata(im)
            pixels = _decode_jpeg_cv2(path, im)
            if pixels is None:
                im.load()
                pixels = _pil_to_array(im, path)
    except Image.DecompressionBombError as exc:
        raise ImageReadError(
            f"{path} is larger than Pillow's safety limit ({exc}). If you trust the file, raise "
            "PIL.Image.MAX_IMAGE_PIXELS, or split the image into tiles."
        ) from exc
    except UnidentifiedImageError:
        pixels = _read_with_cv2(path)  # e.g. 16-bit TIFF variants Pillow does not know
        if pixels is None:
            raise ImageReadError(
                f"{path} is not an image this tool can read. Use PNG, JPEG, WEBP, TIFF or BMP."
            ) from None
        mode, orientation, metadata = "cv2", None, ImageMetadata()
    except ImageReadError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error) as exc:
        raise ImageReadError(
            f"{path} is truncated or corrupt ({exc}). Re-export or re-download the image."
        ) from exc
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = lenient
    header = _png_header(path)
    if header is not None and header[0] == 16 and header[1] in (2, 4, 6):
        # 16-bit colour (or gray+alpha) PNG: Pillow returned 8 bits, decode again at full depth.
        deep = _read_with_cv2(path)
        if deep is None:
            raise ImageReadError(f"{path} is truncated or corrupt. Re-export the image.")
        pixels = deep
        if pixels.ndim == 2 or pixels.shape[2] == 2:
            pixels = _gray_alpha_to_rgba(pixels)
    pixels = apply_exif_orientation(pixels, orientation)
    return LoadedImage(pixels=np.ascontiguousarray(pixels), path=path, mode=mode, metadata=metadata)


def _upright_exif(raw: bytes) -> Optional[bytes]:
    """Raw EXIF (with or without the "Exif\\0\\0" prefix) -> raw TIFF bytes whose IFD0
    orientation is 1; every other byte unchanged (camera, dates, maker notes survive).
    None when the block is not a TIFF structure."""
    data = bytearray(raw[6:] if raw.startswith(b"Exif\x00\x00") else raw)
    if len(data) < 8 or data[:2] not in (b"II", b"MM"):
        return None
    end = "<" if data[:2] == b"II" else ">"
    try:
        (ifd,) = struct.unpack_from(end + "I", data, 4)
        (count,) = struct.unpack_from(end + "H", data, ifd)
        for k in range(count):
            at = ifd + 2 + 12 * k
            tag, kind = struct.unpack_from(end + "HH", data, at)
            if tag == _EXIF_ORIENTATION and kind == 3:  # SHORT, stored in the entry itself
                struct.pack_into(end + "H", data, at + 8, 1)
    except struct.error:
        return None
    return bytes(data)


def _read_metadata(im: Image.Image) -> ImageMetadata:
    """ICC, EXIF (orientation reset), JPEG tables, PNG text and our marker from an open image."""
    meta = ImageMetadata(format=str(im.format or ""))
    meta.icc_profile = im.info.get("icc_profile") or None
    raw_exif = im.info.get("exif")
    if isinstance(raw_exif, bytes) and raw_exif:
        meta.exif = _upright_exif(raw_exif)
    marker_text = None
    if meta.format == "JPEG":
        from PIL import JpegImagePlugin

        tables = getattr(im, "quantization", None)
        meta.jpeg_qtables = [list(tables[k]) for k in sorted(tables)] if tables else None
        meta.jpeg_subsampling = int(JpegImagePlugin.get_sampling(im))
        comment = im.info.get("comment", b"")
        if isinstance(comment, bytes) and comment.startswith(OUTPUT_MARKER.encode() + b":"):
            marker_text = comment[len(OUTPUT_MARKER) + 1:].decode("utf-8", "replace")
    if meta.format == "PNG":
        text = dict(getattr(im, "text", {}) or {})
        marker_text = text.pop(OUTPUT_MARKER, None)
        meta.text = {str(k): str(v) for k, v in text.items()}
    if marker_text:
        try:
            marker = json.loads(marker_text)
            meta.marker = marker if isinstance(marker, dict) else None
        except ValueError:
            meta.marker = None
    return meta


def read_output_marker(path: PathLike) -> Optional[dict]:
    """The marker this tool writes into its PNG and JPEG outputs, or None (not one of our
    outputs, another format, or not an image at all). Reads the header only."""
    try:
        with Image.open(path) as im:
            if im.format not in ("PNG", "JPEG"):
                return None
            return _read_metadata(im).marker
    except Exception:  # noqa: BLE001 - anything unreadable simply carries no marker
        return None


def is_gray_rgb(pixels: np.ndarray) -> bool:
    """True for an RGB(A) image whose three colour channels are equal everywhere."""
    arr = np.asarray(pixels)
    if arr.ndim != 3 or arr.shape[2] < 3:
        return False
    return bool(np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 1], arr[..., 2]))


def keep_gray(result: np.ndarray, original: np.ndarray) -> np.ndarray:
    """`result` with R = G = B (their rounded mean) when `original` is a grey photo stored as
    RGB, so a restored face picks up no colour tint; otherwise `result` unchanged."""
    if not is_gray_rgb(original) or not (np.ndim(result) == 3 and np.shape(result)[2] >= 3):
        return result
    out = np.array(result, copy=True)
    mean = out[..., :3].astype(np.float64).mean(axis=2)
    gray = np.rint(mean).astype(out.dtype) if out.dtype.kind in "ui" else mean.astype(out.dtype)
    for c in range(3):
        out[..., c] = gray
    return out


def _gray_alpha_to_rgba(pixels: np.ndarray) -> np.ndarray:
    if pixels.ndim == 2:
        return pixels
    gray, alpha = pixels[..., 0], pixels[..., 1]
    return np.stack([gray, gray, gray, alpha], axis=2)


# ----------------------------------------------------------------------------- writing


def _prepare(path: Path, pixels: np.ndarray, bit_depth: Optional[int]) -> np.ndarray:
    """Pixels in a layout and dtype the target format can hold (RGB(A) order, uint8/uint16)."""
    ext = path.suffix.lower()
    if ext not in _WRITE_FORMATS:
        raise ImageWriteError(
            f"cannot write '{ext or path.name}' files; use one of {', '.join(sorted(_WRITE_FORMATS))}."
        )
    arr = np.asarray(pixels)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
        raise ImageWriteError(f"expected HxW or HxWx(1|3|4) pixels, got shape {arr.shape}.")
    if arr.dtype.kind == "f":
        arr = from_float01(arr, np.uint16 if bit_depth == 16 else np.uint8)
    elif arr.dtype not in (np.uint8, np.uint16):
        raise ImageWriteError(f"cannot write {arr.dtype} pixels; pass uint8, uint16 or float 0..1.")
    elif bit_depth == 8 and arr.dtype == np.uint16:
        arr = from_float01(to_float01(arr), np.uint8)
    if ext in _EIGHT_BIT_ONLY and arr.dtype == np.uint16:
        arr = from_float01(to_float01(arr), np.uint8)
    if ext in (".jpg", ".jpeg") and arr.ndim == 3 and arr.shape[2] == 4:
        raise ImageWriteError(f"JPEG cannot store transparency; save {path.name} as .png instead.")
    return np.ascontiguousarray(arr)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _png_with_chunks(png: bytes, meta: ImageMetadata, marker: Optional[dict]) -> bytes:
    """Insert iCCP, eXIf and tEXt/iTXt chunks right after IHDR (before any image data)."""
    chunks = []
    if meta.icc_profile:
        chunks.append(_png_chunk(b"iCCP", b"ICC profile\x00\x00" + zlib.compress(meta.icc_profile)))
    if meta.exif:
        chunks.append(_png_chunk(b"eXIf", meta.exif))
    for key, value in meta.text.items():
        keyword = key.encode("latin-1", "replace")[:79]
        if not keyword:
            continue
        try:
            chunks.append(_png_chunk(b"tEXt", keyword + b"\x00" + value.encode("latin-1")))
        except UnicodeEncodeError:
            chunks.append(_png_chunk(b"iTXt", keyword + b"\x00\x00\x00\x00\x00" + value.encode("utf-8")))
    if marker is not None:
        chunks.append(_png_chunk(b"tEXt", OUTPUT_MARKER.encode() + b"\x00"
                                 + json.dumps(marker, sort_keys=True).encode("latin-1", "replace")))
    ihdr_end = 8 + 12 + struct.unpack(">I", png[8:12])[0]
    return png[:ihdr_end] + b"".join(chunks) + png[ihdr_end:]


def _encode(path: Path, pixels: np.ndarray, bit_depth: Optional[int],
            metadata: Optional[ImageMetadata] = None, marker: Optional[dict] = None) -> bytes:
    ext = path.suffix.lower()
    arr = _prepare(path, pixels, bit_depth)
    meta = metadata or ImageMetadata()
    if ext in (".jpg", ".jpeg", ".webp"):
        return _encode_pillow(ext, arr, meta, marker)
    bgr = arr
    if arr.ndim == 3:
        code = cv2.COLOR_RGB2BGR if arr.shape[2] == 3 else cv2.COLOR_RGBA2BGRA
        bgr = cv2.cvtColor(arr, code)
    ok, buf = cv2.imencode(ext, np.ascontiguousarray(bgr))
    if not ok:
        raise ImageWriteError(f"OpenCV could not encode {path.name} as {ext}.")
    data = buf.tobytes()
    if ext == ".png" and (metadata is not None or marker is not None):
        data = _png_with_chunks(data, meta, marker)
    return data


def _encode_pillow(ext: str, arr: np.ndarray, meta: ImageMetadata, marker: Optional[dict]) -> bytes:
    """JPEG (the input's quantisation tables and subsampling when it was a JPEG, else quality 95)
    and WEBP (quality 95), with ICC and EXIF; JPEG outputs carry the marker as a comment. JPEGs
    go through OpenCV where it writes the same tables (jpeg_opencv: it releases the interpreter
    lock, Pillow's encoder does not), else through Pillow."""
    comment = None if marker is None else OUTPUT_MARKER.encode() + b":" + json.dumps(marker, sort_keys=True).encode()
    if ext != ".webp":
        data = encode_jpeg(arr, meta.jpeg_qtables, meta.jpeg_subsampling, meta.icc_profile, meta.exif, comment)
        if data is not None:
            return data
    image = Image.fromarray(arr)
    kwargs: dict = {}
    if meta.icc_profile:
        kwargs["icc_profile"] = meta.icc_profile
    if meta.exif:
        kwargs["exif"] = b"Exif\x00\x00" + meta.exif
    buf = io.BytesIO()
    if ext == ".webp":
        image.save(buf, format="WEBP", quality=95, **kwargs)
        return buf.getvalue()
    if image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    if meta.jpeg_qtables:
        kwargs["qtables"] = meta.jpeg_qtables
        if meta.jpeg_subsampling in (0, 1, 2) and image.mode == "RGB":
            kwargs["subsampling"] = meta.jpeg_subsampling
    else:
        kwargs["quality"] = 95
    if comment is not None:
        kwargs["comment"] = comment
    image.save(buf, format="JPEG", **kwargs)
    return buf.getvalue()


def save_image(
    path: PathLike, pixels: np.ndarray, overwrite: bool = False, bit_depth: Optional[int] = None,
    metadata: Optional[ImageMetadata] = None, marker: Optional[dict] = None,
) -> Path:
    """Write pixels atomically; refuse to replace an existing file unless overwrite=True.

    Integer pixels keep their depth where the format allows (PNG/TIFF keep 16 bits);
    float pixels in 0..1 are written as 8-bit, or 16-bit with bit_depth=16.
    metadata: the input's (LoadedImage.metadata) to carry over (see the module docstring);
    marker: a small JSON-able dict stored in PNG/JPEG outputs (see read_output_marker).
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise ImageWriteError(
            f"{path} already exists; choose another file name or pass overwrite=True."
        )
    if not path.parent.is_dir():
        raise ImageWriteError(f"folder {path.parent} does not exist; create it first.")
    data = _encode(path, pixels, bit_depth, metadata, marker)
    try:
        return write_bytes_atomic(path, data, overwrite, fsync=True)
    except FileExistsError:  # appeared while encoding
        raise ImageWriteError(
            f"{path} already exists; choose another file name or pass overwrite=True."
        ) from None
