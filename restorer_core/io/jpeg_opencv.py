"""JPEG encoding through OpenCV where it writes the same file parameters Pillow would.

Pillow's JPEG encoder keeps the interpreter lock while it runs; OpenCV's releases it. In the
CLI's video path the file threads' JPEG encodes held the lock for most of a run (py-spy --gil,
benchmarks/results/gpu_pipeline_h200_gil.md), so other threads waited on them. OpenCV can only set
a quality, not arbitrary tables, so it is used where the tables to keep are libjpeg's standard
tables at some quality (every file written by libjpeg, Pillow, OpenCV or GIMP at a quality setting),
or where there are none to keep (quality 95). ICC profile, EXIF and the comment go in as their
own segments after OpenCV's JFIF header. Anything else returns None and Pillow writes it.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Optional, Sequence

import numpy as np

# libjpeg's standard tables (ITU-T T.81 Annex K), natural (row-major) order, as Pillow reports them.
_LUMA = (
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
)
_CHROMA = (
    17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99,
    24, 26, 56, 99, 99, 99, 99, 99, 47, 66, 99, 99, 99, 99, 99, 99,
) + (99,) * 32

_SOI = b"\xff\xd8"
_MAX_SEGMENT = 65533  # payload bytes of one marker segment (length field counts itself)
_ICC_CHUNK = _MAX_SEGMENT - 14  # 'ICC_PROFILE\0' + sequence number + count


@lru_cache(maxsize=None)
def _tables(quality: int) -> tuple:
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    return tuple(tuple(min(max((v * scale + 50) // 100, 1), 255) for v in table) for table in (_LUMA, _CHROMA))


@lru_cache(maxsize=1)
def _quality_of_tables() -> dict:
    """{luma tables: quality, (luma, chroma): quality}; where qualities share tables the highest wins."""
    found: dict = {}
    for q in range(1, 101):
        luma, chroma = _tables(q)
        found[(luma,)] = found[(luma, chroma)] = q
    return found


def standard_tables(quality: int) -> list:
    """libjpeg's jpeg_set_quality tables (baseline, 1..255) for quality 1..100: [luma, chroma]."""
    return [list(t) for t in _tables(min(max(int(quality), 1), 100))]


def standard_quality(qtables: Optional[Sequence[Sequence[int]]]) -> Optional[int]:
    """The quality whose standard tables equal qtables (one table for grey, two for colour), else
    None. No tables: 95, the pack's quality for outputs of non-JPEG inputs. A dictionary lookup:
    the video path asks once per written frame."""
    if not qtables:
        return 95
    if len(qtables) not in (1, 2) or any(len(t) != 64 for t in qtables):
        return None
    try:
        key = tuple(tuple(int(v) for v in t) for t in qtables)
    except (TypeError, ValueError):
        return None
    return _quality_of_tables().get(key)


def _segment(marker: int, payload: bytes) -> bytes:
    return bytes((0xFF, marker)) + (len(payload) + 2).to_bytes(2, "big") + payload


def _icc_segments(icc: bytes) -> bytes:
    chunks = [icc[i:i + _ICC_CHUNK] for i in range(0, len(icc), _ICC_CHUNK)]
    return b"".join(_segment(0xE2, b"ICC_PROFILE\x00" + bytes((k + 1, len(chunks))) + c)
                    for k, c in enumerate(chunks))


def _insert_point(data: bytes) -> int:
    """Offset after SOI and a leading APP0 (JFIF) segment, where EXIF/ICC/comment go."""
    pos = len(_SOI)
    if data[pos:pos + 2] == b"\xff\xe0":
        pos += 2 + int.from_bytes(data[pos + 2:pos + 4], "big")
    return pos


def encode_jpeg(arr: np.ndarray, qtables=None, subsampling: int = -1, icc: Optional[bytes] = None,
                exif: Optional[bytes] = None, comment: Optional[bytes] = None) -> Optional[bytes]:
    """JPEG bytes of RGB [H, W, 3] or grey [H, W] uint8 pixels with standard-quality tables, or None
    where OpenCV cannot write what Pillow would (other tables, pixel layout or sizes of segments).
    exif is the payload after 'Exif\\0\\0'; subsampling is Pillow's code (0 4:4:4, 1 4:2:2, 2 4:2:0,
    other: 4:2:0, Pillow's default)."""
    import cv2

    quality = standard_quality(qtables)
    grey = arr.ndim == 2
    if quality is None or arr.dtype != np.uint8 or not (grey or (arr.ndim == 3 and arr.shape[2] == 3)):
        return None
    if qtables and (len(qtables) == 1) != grey:
        return None
    exif_payload = b"Exif\x00\x00" + exif if exif else b""
    if (len(exif_payload) > _MAX_SEGMENT or (comment is not None and len(comment) > _MAX_SEGMENT)
            or (icc and len(icc) > 255 * _ICC_CHUNK)):
        return None
    params = [cv2.IMWRITE_JPEG_QUALITY, quality]
    if not grey:
        factor = {0: cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444, 1: cv2.IMWRITE_JPEG_SAMPLING_FACTOR_422}
        params += [cv2.IMWRITE_JPEG_SAMPLING_FACTOR, factor.get(subsampling, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_420)]
    pixels = arr if grey else cv2.cvtColor(arr, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(pixels), params)
    if not ok:
        return None
    data = buf.tobytes()
    extra = (_segment(0xE1, exif_payload) if exif_payload else b"") + (_icc_segments(icc) if icc else b"")
    if comment is not None:
        extra += _segment(0xFE, comment)
    at = _insert_point(data)
    return data[:at] + extra + data[at:]
