"""Build the compact training cache: aligned 128 px face crops of every identity folder, in one .npz.

The GPU machine only sees the repository's working tree (64 MiB in all), so the training data
travels as compressed crops (WebP by default, or JPEG) in one flat uint8 buffer plus offsets
(no object arrays, so np.load(allow_pickle=False) reads it),
with per-crop identity, source, 5-point landmarks in crop coordinates, and a train/val split
by identity (no person appears in both).

    python -m restorer_core.train.prepare --faces /work/shared/data/faces \
        --out .traindata/faces128.npz --size 128
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import cv2
import numpy as np

from ..io.atomic import atomic_path

CACHE_FORMAT = "faces-cache/1"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
SPLIT_TRAIN, SPLIT_VAL = 0, 1


@dataclass(frozen=True)
class PrepareConfig:
    size: int = 128
    # WebP q88 is ~40 MB for the ~13k shared faces at ~39.5 dB PSNR vs the raw crop; JPEG needs
    # q90 for that quality but then weighs ~60 MB, over the device's 64 MiB working-tree budget.
    codec: str = "webp"  # "webp" | "jpeg" (cv2 decodes both)
    quality: int = 88
    detector: str = "yunet"
    val_fraction: float = 0.08  # of the identities that have >= val_min_images crops
    val_min_images: int = 5
    split_seed: int = 0
    workers: int = 2


@dataclass(frozen=True)
class SourceImage:
    source: str  # "celeba" | "lfw" | any top-level folder name
    identity: str  # "<source>/<folder name>", unique across sources
    path: str


# ----------------------------------------------------------------------------- scanning


def scan_identity_folders(root: str | os.PathLike) -> list[SourceImage]:
    """All images under ``root/<source>/<identity>/``, sorted (deterministic order)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"face folder {root} does not exist; pass --faces <dir with celeba/ and lfw/>")
    items: list[SourceImage] = []
    for source_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for id_dir in sorted(p for p in source_dir.iterdir() if p.is_dir()):
            for img in sorted(id_dir.iterdir()):
                if img.suffix.lower() in IMAGE_SUFFIXES and img.is_file():
                    items.append(SourceImage(source_dir.name, f"{source_dir.name}/{id_dir.name}", str(img)))
    return items


# ----------------------------------------------------------------------------- per image


def face_priority(box: np.ndarray, image_hw: tuple[int, int]) -> float:
    """Rank faces for 'the' face of a photo: large and central wins.

    Size (the box's larger side) discounted by up to half as the box centre moves from the
    image centre to its border.
    """
    h, w = image_hw
    size = float(max(box[2] - box[0], box[3] - box[1]))
    cx, cy = (box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0
    dist = float(np.hypot((cx - w / 2.0) / (w / 2.0), (cy - h / 2.0) / (h / 2.0)))
    return size * (1.0 - 0.5 * min(dist, 1.0))


def encode_image(rgb_uint8: np.ndarray, quality: int, codec: str = "webp") -> bytes:
    """RGB uint8 -> compressed bytes: baseline JPEG (4:2:0, optimised Huffman tables) or WebP."""
    bgr = cv2.cvtColor(rgb_uint8, cv2.COLOR_RGB2BGR)
    if codec == "jpeg":
        params = [cv2.IMWRITE_JPEG_QUALITY, int(quality), cv2.IMWRITE_JPEG_OPTIMIZE, 1]
        ok, buf = cv2.imencode(".jpg", bgr, params)
    elif codec == "webp":
        ok, buf = cv2.imencode(".webp", bgr, [cv2.IMWRITE_WEBP_QUALITY, int(quality)])
    else:
        raise ValueError(f"unknown codec {codec!r}; use 'jpeg' or 'webp'")
    if not ok:
        raise RuntimeError(f"{codec} encoding failed")
    return buf.tobytes()


def decode_image(data: np.ndarray | bytes) -> np.ndarray:
    """Compressed crop bytes (JPEG, or WebP in a webp cache) -> RGB uint8 [H, W, 3]."""
    arr = np.frombuffer(data, np.uint8) if isinstance(data, (bytes, bytearray)) else data
    img = cv2.imdecode(arr, cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError("corrupt image bytes in the face cache; rebuild it with restorer_core.train.prepare")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


_WORKER: dict = {}


def _init_worker(detector_name: str, size: int, quality: int, codec: str) -> None:
    cv2.setNumThreads(1)
    from restorer_core.faces.detect import create_detector  # lazy: only prepare needs the detector

    _WORKER.update(detector=create_detector(detector_name), size=size, quality=quality, codec=codec)


def _process_image(path: str) -> tuple[Optional[bytes], Optional[np.ndarray], str]:
    """Detect, pick one face (largest / most central), align, encode. Returns (bytes, crop landmarks, status)."""
    from restorer_core.faces.align import align_face, landmarks_in_crop

    bgr = cv2.imread(path, cv2.IMREAD_COLOR)
    if bgr is None:
        return None, None, "unreadable"
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    detections = _WORKER["detector"].detect(rgb)
    if not detections:
        return None, None, "no_face"
    det = max(detections, key=lambda d: face_priority(np.asarray(d.box), rgb.shape[:2]))
    best = align_face(rgb, det, _WORKER["size"])
    crop = np.round(np.clip(best.crop, 0.0, 1.0) * 255.0).astype(np.uint8)
    lms = landmarks_in_crop(best).astype(np.float32)
    return encode_image(crop, _WORKER["quality"], _WORKER["codec"]), lms, "ok"


# ----------------------------------------------------------------------------- packing


def split_identities(
    counts: Sequence[int], names: Sequence[str], val_fraction: float, min_images: int, seed: int
) -> np.ndarray:
    """Per-identity split (uint8, SPLIT_TRAIN/SPLIT_VAL): ``val_fraction`` of the identities with at
    least ``min_images`` crops go to val, chosen by a seeded shuffle of their sorted names."""
    eligible = sorted(n for n, c in zip(names, counts) if c >= min_images)
    n_val = int(round(val_fraction * len(eligible)))
    rng = np.random.default_rng(seed)
    chosen = set(eligible[i] for i in rng.permutation(len(eligible))[:n_val])
    return np.array([SPLIT_VAL if n in chosen else SPLIT_TRAIN for n in names], np.uint8)


def pack_cache(
    blobs: Sequence[bytes],
    identities: Sequence[str],
    sources: Sequence[str],
    landmarks: np.ndarray,
    crop_size: int,
    cfg: PrepareConfig = PrepareConfig(),
    filenames: Optional[Sequence[str]] = None,
    meta: Optional[dict] = None,
) -> dict[str, np.ndarray]:
    """Assemble the cache arrays (no object arrays, so np.load(allow_pickle=False) reads them)."""
    n = len(blobs)
    if not (len(identities) == len(sources) == n and len(landmarks) == n):
        raise ValueError("pack_cache: blobs, identities, sources and landmarks must have the same length")
    id_names = sorted(set(identities))
    id_index = {name: i for i, name in enumerate(id_names)}
    source_names = sorted(set(sources))
    source_index = {name: i for i, name in enumerate(source_names)}
    identity = np.array([id_index[i] for i in identities], np.int32)
    counts = np.bincount(identity, minlength=len(id_names)) if n else np.zeros(0, np.int64)
    identity_split = split_identities(counts, id_names, cfg.val_fraction, cfg.val_min_images, cfg.split_seed)
    offsets = np.zeros(n + 1, np.int64)
    offsets[1:] = np.cumsum([len(j) for j in blobs])
    data = np.frombuffer(b"".join(blobs), np.uint8).copy() if n else np.zeros(0, np.uint8)
    info = {"format": CACHE_FORMAT, "crop_size": int(crop_size), "quality": cfg.quality, "codec": cfg.codec,
            "detector": cfg.detector, "val_fraction": cfg.val_fraction, "val_min_images": cfg.val_min_images,
            "split_seed": cfg.split_seed, **(meta or {})}
    arrays = {
        "image_data": data,
        "image_offsets": offsets,
        "identity": identity,
        "identity_names": np.array(id_names, dtype=str) if id_names else np.zeros(0, "<U1"),
        "identity_split": identity_split,
        "split": identity_split[identity] if n else np.zeros(0, np.uint8),
        "source": np.array([source_index[s] for s in sources], np.uint8),
        "source_names": np.array(source_names, dtype=str) if source_names else np.zeros(0, "<U1"),
        "landmarks": np.asarray(landmarks, np.float32).reshape(n, 5, 2),
        "crop_size": np.array(int(crop_size), np.int32),
        "meta_json": np.array(json.dumps(info, sort_keys=True)),
    }
    if filenames is not None:
        arrays["filenames"] = np.array(list(filenames), dtype=str)
    return arrays


def write_cache(path: str | os.PathLike, arrays: dict[str, np.ndarray], overwrite: bool = False) -> int:
    """Write the arrays as a compressed .npz atomically (temp file + os.replace); return its size."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass --overwrite to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)
    return path.stat().st_size


def prepare_cache(faces_root: str, out: str, cfg: PrepareConfig, overwrite: bool = False, limit: int = 0) -> dict:
    """Run detection + alignment over every identity folder and write the cache; return a summary."""
    t0 = time.time()
    images = scan_identity_folders(faces_root)
    if limit:
        images = images[:limit]
    if not images:
        raise FileNotFoundError(f"no images found under {faces_root}/<source>/<identity>/")
    if Path(out).exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass --overwrite to replace it")
    paths = [im.path for im in images]
    init = (cfg.detector, cfg.size, cfg.quality, cfg.codec)
    if cfg.workers > 1:
        with mp.get_context("spawn").Pool(cfg.workers, initializer=_init_worker, initargs=init) as pool:
            results = list(pool.imap(_process_image, paths, chunksize=16))
    else:
        _init_worker(*init)
        results = [_process_image(p) for p in paths]

    blobs, ids, sources, lms, names = [], [], [], [], []
    status_counts: dict[str, dict[str, int]] = {}
    root = Path(faces_root)
    for im, (blob, lm, status) in zip(images, results):
        status_counts.setdefault(im.source, {}).setdefault(status, 0)
        status_counts[im.source][status] += 1
        if blob is None:
            continue
        blobs.append(blob)
        ids.append(im.identity)
        sources.append(im.source)
        lms.append(lm)
        names.append(str(Path(im.path).relative_to(root)))
    arrays = pack_cache(blobs, ids, sources, np.asarray(lms, np.float32).reshape(-1, 5, 2), cfg.size, cfg,
                        filenames=names, meta={"images_scanned": len(images)})
    size = write_cache(out, arrays, overwrite=overwrite)
    split = arrays["identity_split"]
    summary = {
        "out": str(out),
        "bytes": size,
        "megabytes": round(size / 2**20, 2),
        "images": len(images),
        "crops": len(blobs),
        "status": status_counts,
        "identities": int(len(split)),
        "val_identities": int((split == SPLIT_VAL).sum()),
        "train_crops": int((arrays["split"] == SPLIT_TRAIN).sum()),
        "val_crops": int((arrays["split"] == SPLIT_VAL).sum()),
        "seconds": round(time.time() - t0, 1),
    }
    return summary


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--faces", required=True, help="folder with <source>/<identity>/*.jpg")
    ap.add_argument("--out", required=True, help="output .npz")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--quality", type=int, default=PrepareConfig.quality)
    ap.add_argument("--codec", choices=("jpeg", "webp"), default=PrepareConfig.codec)
    ap.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--val-fraction", type=float, default=PrepareConfig.val_fraction)
    ap.add_argument("--seed", type=int, default=PrepareConfig.split_seed)
    ap.add_argument("--limit", type=int, default=0, help="only the first N images (smoke runs)")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    args = ap.parse_args(argv)
    cfg = PrepareConfig(size=args.size, quality=args.quality, codec=args.codec, workers=args.workers,
                        val_fraction=args.val_fraction, split_seed=args.seed)
    summary = prepare_cache(args.faces, args.out, cfg, overwrite=args.overwrite, limit=args.limit)
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
