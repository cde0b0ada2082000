#!/usr/bin/env python
"""Calibrate the do-no-harm detail measure (restorer_core/detail.py) on training people's photos.

Whole photos of people in the face cache's *training* split (never the validation people) from
$SHARED_DIR/data/faces, clean and degraded with `degrade_fixed` at x2, x4, x8 and x16 (the whole
photo, resized back to its size), go through the pipeline's own detection and alignment (YuNet,
512 px crops); the largest, most central face of each is measured. Prints, per condition, the
quantiles of `detail`, of the face's native size and of the automatic strength, so the constants
`sharp` (strength 0) and `blurred` (strength 1) of DetailConfig can be read off: `sharp` near the
clean photos' lower quantiles, `blurred` above most x4-degraded ones.

    python benchmarks/detail_calibration.py --data .traindata/faces128.npz --photos 200 [--write]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from restorer_core.align import align_face  # noqa: E402
from restorer_core.atomic import write_text_atomic  # noqa: E402
from restorer_core.detail import DEFAULT_DETAIL, estimate_detail  # noqa: E402
from restorer_core.detect import create_detector  # noqa: E402
from restorer_core.train.degrade import degrade_fixed  # noqa: E402
from restorer_core.train.prepare import SPLIT_TRAIN, face_priority  # noqa: E402

RESULTS_MD = HERE / "results" / "detail_calibration.md"
CONDITIONS = ("clean", "x2", "x4", "x8", "x16")
QUANTILES = (0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95)


def shared_dir() -> Path:
    return Path(os.environ.get("SHARED_DIR", REPO.parent / "shared")).resolve()


def training_photos(data: str, count: int, seed: int) -> list:
    """Paths (relative to data/faces) of `count` photos of training-split people, seeded pick."""
    with np.load(data, allow_pickle=False) as z:
        if "filenames" not in z.files:
            raise SystemExit(f"{data} has no file names; rebuild it with restorer_core.train.prepare")
        names, split = z["filenames"], z["split"]
    pool = np.flatnonzero(split == SPLIT_TRAIN)
    pick = np.random.default_rng(seed).choice(pool, size=min(count, len(pool)), replace=False)
    return [str(names[i]) for i in np.sort(pick)]


def main_face(rgb: np.ndarray, detector) -> Optional[object]:
    dets = detector.detect(rgb)
    if not dets:
        return None
    return max(dets, key=lambda d: face_priority(np.asarray(d.box), rgb.shape[:2]))


def measure(paths: Sequence[Path], resolution: int, seed: int) -> dict:
    """{condition: list of (detail, native_px, strength)}; a photo without a detected face is skipped."""
    detector = create_detector("yunet")
    out: dict = {c: [] for c in CONDITIONS}
    for k, path in enumerate(paths):
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            continue
        clean = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        for cond in CONDITIONS:
            img = clean if cond == "clean" else degrade_fixed(clean, int(cond[1:]), seed + k)
            det = main_face(img, detector)
            if det is None:
                continue
            face = align_face(img, det, 512)
            est = estimate_detail(face.crop, face.matrix, resolution)
            out[cond].append((est.detail, est.native_px, est.strength))
    return out


def markdown(res: dict, args: argparse.Namespace, seconds: float) -> str:
    cfg = DEFAULT_DETAIL
    lines = ["# Do-no-harm detail measure: calibration", "",
             f"{args.photos} photos of training-split people (face cache `{args.data}`, seed {args.seed}), "
             f"clean and degraded with `degrade_fixed` (whole photo), YuNet + 512 px alignment, restorer "
             f"resolution {args.resolution} px. DetailConfig: sharp {cfg.sharp}, blurred {cfg.blurred}, "
             f"full_below {cfg.full_below}. Measured on the 2-core CPU dev machine in {seconds:.0f} s.", "",
             "| condition | faces | " + " | ".join(f"detail q{int(q * 100)}" for q in QUANTILES)
             + " | native px median | strength mean | strength = 0 | strength ≥ 0.9 |",
             "|---" * (len(QUANTILES) + 6) + "|"]
    for cond in CONDITIONS:
        rows = np.array(res[cond], np.float64).reshape(-1, 3)
        if not len(rows):
            lines.append(f"| {cond} | 0 |" + " |" * (len(QUANTILES) + 4))
            continue
        qs = np.quantile(rows[:, 0], QUANTILES)
        lines.append(f"| {cond} | {len(rows)} | " + " | ".join(f"{q:.3f}" for q in qs)
                     + f" | {np.median(rows[:, 1]):.0f} | {rows[:, 2].mean():.2f} | {np.mean(rows[:, 2] == 0):.0%} "
                     f"| {np.mean(rows[:, 2] >= 0.9):.0%} |")
    return "\n".join(lines) + "\n"


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=".traindata/faces128.npz", help="face cache with the identity split")
    ap.add_argument("--photos", type=int, default=200)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--resolution", type=int, default=128, help="the restorer's native resolution")
    ap.add_argument("--write", action="store_true", help=f"write {RESULTS_MD.relative_to(REPO)}")
    args = ap.parse_args(argv)
    cv2.setNumThreads(1)
    faces = shared_dir() / "data" / "faces"
    if not faces.is_dir():
        raise SystemExit(f"{faces} not found; set SHARED_DIR to the folder holding data/faces")
    t0 = time.perf_counter()
    paths = [faces / p for p in training_photos(args.data, args.photos, args.seed)]
    res = measure(paths, args.resolution, args.seed)
    md = markdown(res, args, time.perf_counter() - t0)
    print(md)
    if args.write:
        write_text_atomic(RESULTS_MD, md)
        print(f"wrote {RESULTS_MD}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
