#!/usr/bin/env python
"""Share of faces the pipeline's detector finds on held-out photos degraded x4 / x8 / x16, with
and without the second detection pass (restorer_core/faces/detect/retry.py), and the false faces it
could add on real photos.

Held-out photos: every photo of the face cache's *validation* people (identity split of
restorer_core/train/prepare.py), read from $SHARED_DIR/data/faces. The clean photo's main face
(largest, most central, default detector) is the target; each photo is degraded whole with
`degrade_fixed` (fixed seeds) and a detection counts as found when it overlaps the target box
(IoU > 0.3). False faces: on every whole image of real_lq, and on face-free background patches cut
from them (every 160 px square, stepped by 80 px, at least 0.5 box sizes away from every detected
face), the detections each detector makes.

    python benchmarks/detection_rate.py --data .traindata/faces128.npz [--every 1] [--write]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
for path in (REPO, HERE):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from restorer_core.io.atomic import write_text_atomic  # noqa: E402
from restorer_core.faces.detect import RETRY_THRESHOLDS, create_detector  # noqa: E402
from restorer_core.faces.detect.base import box_iou  # noqa: E402
from restorer_core.train.degrade import degrade_fixed  # noqa: E402
from restorer_core.train.prepare import SPLIT_VAL, face_priority  # noqa: E402
from shared_data import shared_dir  # noqa: E402

RESULTS_MD = HERE / "results" / "detection_rate.md"
SCALES = (4, 8, 16)
PATCH, STEP = 160, 80


def validation_photos(data: str) -> list:
    with np.load(data, allow_pickle=False) as z:
        names, split = z["filenames"], z["split"]
    return [str(n) for n, s in zip(names, split) if s == SPLIT_VAL]


def read_rgb(path: Path) -> Optional[np.ndarray]:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    return None if bgr is None else cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def found(faces: list, target: np.ndarray) -> bool:
    return any(box_iou(np.asarray(f.box)[None], target[None])[0, 0] > 0.3 for f in faces)


def detection_rates(paths: Sequence[Path], detectors: dict, seed: int) -> dict:
    """{scale: {detector name: [found per photo]}} and the number of photos with a clean target."""
    out = {sc: {k: [] for k in detectors} for sc in SCALES}
    reference = detectors["before"]
    targets = 0
    for k, path in enumerate(paths):
        clean = read_rgb(path)
        if clean is None:
            continue
        faces = reference.detect(clean)
        if not faces:
            continue
        targets += 1
        target = np.asarray(max(faces, key=lambda d: face_priority(np.asarray(d.box), clean.shape[:2])).box)
        for sc in SCALES:
            lq = degrade_fixed(clean, sc, seed + 7919 * k + sc)
            for name, det in detectors.items():
                out[sc][name].append(found(det.detect(lq), target))
    return {"rates": out, "targets": targets}


def background_patches(rgb: np.ndarray, faces: list) -> list:
    """Face-free squares (PATCH px, stepped by STEP) at least half a box size from every face."""
    h, w = rgb.shape[:2]
    grown = []
    for f in faces:
        x0, y0, x1, y1 = np.asarray(f.box, np.float64)
        m = 0.5 * max(x1 - x0, y1 - y0)
        grown.append(np.array([x0 - m, y0 - m, x1 + m, y1 + m]))
    patches = []
    for y in range(0, max(h - PATCH, 0) + 1, STEP):
        for x in range(0, max(w - PATCH, 0) + 1, STEP):
            box = np.array([x, y, x + PATCH, y + PATCH], np.float64)
            if all(box_iou(box[None], g[None])[0, 0] == 0 for g in grown):
                patches.append(rgb[y:y + PATCH, x:x + PATCH])
    return patches


def false_faces(images: Sequence[Path], detectors: dict) -> dict:
    """Per image: detections of each detector; over all background patches: detections."""
    per_image, patches, on_patches = {}, 0, {k: 0 for k in detectors}
    for path in images:
        rgb = read_rgb(path)
        if rgb is None:
            continue
        faces = {k: d.detect(rgb) for k, d in detectors.items()}
        per_image[str(path.relative_to(shared_dir() / "data" / "real_lq"))] = {
            k: [round(f.score, 2) for f in v] for k, v in faces.items()}
        for patch in background_patches(rgb, faces["before"]):
            patches += 1
            for k, d in detectors.items():
                on_patches[k] += len(d.detect(np.ascontiguousarray(patch)))
    return {"images": per_image, "patches": patches, "patch_detections": on_patches}


def markdown(res: dict, args: argparse.Namespace, seconds: float) -> str:
    n = res["targets"]
    share = "all photos" if args.every == 1 else f"every {args.every}th photo"
    lines = ["# Detection rate on degraded held-out photos", "",
             f"{n} photos of the validation people ({share} of the face cache's validation "
             f"split, `{args.data}`) whose clean version has a face; each degraded whole with `degrade_fixed` "
             "(fixed seeds). Found: a detection overlapping the clean photo's main face (IoU > 0.3). "
             "**before**: YuNet at its default threshold 0.7, one pass. **after**: the same, plus the second "
             f"pass of `restorer_core/faces/detect/retry.py` when nothing is found (threshold "
             f"{RETRY_THRESHOLDS['yunet']}, also on a half-size copy). Measured on the 2-core CPU dev machine "
             f"in {seconds / 60:.1f} min.", "",
             "| degradation | before | after | faces found again |", "|---|---|---|---|"]
    for sc, rows in res["rates"]["rates"].items():
        b, a = np.mean(rows["before"]), np.mean(rows["after"])
        lines.append(f"| x{sc} | {b:.1%} ({len(rows['before']) - sum(rows['before'])} missed) | {a:.1%} "
                     f"({len(rows['after']) - sum(rows['after'])} missed) | {sum(rows['after']) - sum(rows['before'])} |")
    ff = res["false"]
    lines += ["", "## False faces on real photos", "",
              f"Background patches: {ff['patches']} face-free {PATCH} px squares cut from the real_lq whole "
              f"images; detections before: {ff['patch_detections']['before']}, after: "
              f"{ff['patch_detections']['after']}.", "",
              "| image | scores before | scores after |", "|---|---|---|"]
    for name, d in ff["images"].items():
        lines.append(f"| {name} | {d['before']} | {d['after']} |")
    return "\n".join(lines) + "\n"


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=".traindata/faces128.npz", help="face cache with the identity split")
    ap.add_argument("--every", type=int, default=1, help="use every N-th validation photo (quick runs)")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--write", action="store_true", help=f"write {RESULTS_MD.relative_to(REPO)}")
    args = ap.parse_args(argv)
    cv2.setNumThreads(1)
    faces_root, real_lq = shared_dir() / "data" / "faces", shared_dir() / "data" / "real_lq"
    if not faces_root.is_dir() or not real_lq.is_dir():
        raise SystemExit(f"{faces_root} or {real_lq} not found; set SHARED_DIR to the folder holding data/")
    t0 = time.perf_counter()
    detectors = {"before": create_detector("yunet", retry=False), "after": create_detector("yunet")}
    paths = [faces_root / p for p in validation_photos(args.data)[::args.every]]
    res = {"rates": detection_rates(paths, detectors, args.seed),
           "false": false_faces(sorted(real_lq.glob("*/whole_imgs/*")), detectors)}
    res["targets"] = res["rates"]["targets"]
    md = markdown(res, args, time.perf_counter() - t0)
    print(md)
    if args.write:
        write_text_atomic(RESULTS_MD, md)
        print(f"wrote {RESULTS_MD}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
