"""JPEG encodes and decodes per second of a 1080p frame through Pillow and through OpenCV (the
pack's paths: jpeg_opencv, imageio._decode_jpeg_cv2), in 1..N threads: Pillow's encoder keeps the
interpreter lock, so its threads do not add up.

    python benchmarks/jpeg_codec.py [--threads 1 2] [--seconds 4] [--out benchmarks/results/jpeg_codec.md]
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from restorer_core.io.jpeg_opencv import encode_jpeg, standard_tables  # noqa: E402


def frame(h: int = 1080, w: int = 1920) -> np.ndarray:
    """A photo-like frame: smooth gradients plus grain (JPEG's cost depends on content)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([x / w, y / h, (x + y) / (w + h)], -1) * 200 + 20
    grain = np.random.default_rng(0).normal(0, 10, (h, w, 3))
    return np.clip(base + grain, 0, 255).astype(np.uint8)


def _pillow(arr: np.ndarray, tables) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", qtables=tables, subsampling=2)
    return buf.getvalue()


def _opencv(arr: np.ndarray, tables) -> bytes:
    data = encode_jpeg(arr, tables, 2)
    assert data is not None
    return data


def _pillow_decode(data: bytes, _=None) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im)


def _opencv_decode(data: bytes, _=None) -> np.ndarray:
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    return cv2.cvtColor(arr, cv2.COLOR_BGR2RGB)


def rate(encoder, arr, tables, threads: int, seconds: float) -> float:
    """Calls per second of all threads together over `seconds`."""
    counts = [0] * threads
    stop = time.perf_counter() + seconds

    def work(k: int) -> None:
        while time.perf_counter() < stop:
            encoder(arr, tables)
            counts[k] += 1

    pool = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
    start = time.perf_counter()
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return sum(counts) / (time.perf_counter() - start)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--quality", type=int, default=90)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    arr, tables = frame(), standard_tables(args.quality)
    data = _pillow(arr, tables)
    assert np.array_equal(_pillow_decode(data), _opencv_decode(data)), "decoders disagree"
    rows = []
    for what, pil, ocv, x in (("encode", _pillow, _opencv, arr), ("decode", _pillow_decode, _opencv_decode, data)):
        for threads in args.threads:
            p = rate(pil, x, tables, threads, args.seconds)
            o = rate(ocv, x, tables, threads, args.seconds)
            rows.append((what, threads, p, o))
            print(f"{what}, threads {threads}: pillow {p:.1f}/s, opencv {o:.1f}/s", flush=True)
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at the end"
    lines = [
        f"# JPEG encodes and decodes of a 1920x1080 frame (quality {args.quality} tables, 4:2:0), Pillow vs OpenCV",
        "",
        f"Run: `python benchmarks/jpeg_codec.py --threads {' '.join(map(str, args.threads))}` on {machine}; "
        f"{args.seconds:g} s per cell. The two decoders' pixels are equal (checked).",
        "",
        "| what | threads | Pillow per s | OpenCV per s |",
        "|---|---|---|---|",
        *[f"| {w} | {t} | {p:.1f} | {o:.1f} |" for w, t, p, o in rows],
    ]
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
