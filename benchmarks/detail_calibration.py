#!/usr/bin/env python
"""Calibrate the do-no-harm detail measure (restorer_core/restore/detail.py) on training people's photos.

Whole photos of people in the face cache's *training* split (never the validation people) from
$SHARED_DIR/data/faces, clean; degraded with `degrade_fixed` at x2, x4, x8 and x16 (the whole
photo, resized back to its size); and with the degradations of old photos at the photo's own
resolution (restorer_core.train.degrade steps, sizes in px of a 256 px photo): `noise` (Gaussian
noise sigma 4-10/255 on a sharp photo), `jpeg` (quality 15-35), `grain+blur` (blur sigma 1-2.5,
noise 4-10/255, JPEG 40-75: a soft face under grain). They go through the pipeline's own
detection and alignment (YuNet, 512 px crops); the largest, most central face of each is measured.
Prints, per condition, the quantiles of `detail`, `noise` and the effective detail, the face's
native size and the automatic strength, and the constants they suggest: `sharp` = the clean
photos' 10 % quantile of the effective detail (so ~90 % of clean photos get strength 0),
`blurred` = the x2 photos' 75 % quantile.

    python benchmarks/detail_calibration.py --data .traindata/faces128.npz --photos 200 [--write]
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

from restorer_core.faces.align import align_face  # noqa: E402
from restorer_core.io.atomic import write_text_atomic  # noqa: E402
from restorer_core.restore.detail import DEFAULT_DETAIL, DetailConfig, estimate_detail  # noqa: E402
from restorer_core.faces.detect import create_detector  # noqa: E402
from restorer_core.train.degrade import DegradationConfig, degrade, degrade_fixed  # noqa: E402
from restorer_core.train.prepare import SPLIT_TRAIN, face_priority  # noqa: E402
from shared_data import shared_dir  # noqa: E402

RESULTS_MD = HERE / "results" / "detail_calibration.md"
QUANTILES = (0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95)
# the measure before the noise term: the noise-discounted band ratio alone (same sharp / blurred)
BEFORE = DetailConfig(noise_weight=0.0, noise_check=1.0)
_OFF = dict(base_size=256, blur_prob=0.0, motion_prob=0.0, anisotropic_prob=0.0, downsample_prob=0.0,
            gaussian_noise_prob=0.0, poisson_noise_prob=0.0, jpeg_prob=0.0, shuffle_prob=0.0)
OLD_PHOTO = {  # degradations at the photo's own resolution, as old scans and phone photos have them
    "noise": DegradationConfig(**{**_OFF, "gaussian_noise_prob": 1.0, "gaussian_sigma": (4.0, 10.0),
                                  "gray_noise_prob": 0.5}),
    "jpeg": DegradationConfig(**{**_OFF, "jpeg_prob": 1.0, "jpeg_quality": (15, 35)}),
    "grain+blur": DegradationConfig(**{**_OFF, "blur_prob": 1.0, "blur_sigma": (1.0, 2.5),
                                       "gaussian_noise_prob": 1.0, "gaussian_sigma": (4.0, 10.0),
                                       "gray_noise_prob": 0.5, "jpeg_prob": 1.0, "jpeg_quality": (40, 75)}),
}
CONDITIONS = ("clean", "x2", "x4", "x8", "x16") + tuple(OLD_PHOTO)


def degraded(clean: np.ndarray, cond: str, seed: int) -> np.ndarray:
    if cond == "clean":
        return clean
    if cond in OLD_PHOTO:
        return degrade(clean, np.random.default_rng(seed), OLD_PHOTO[cond])
    return degrade_fixed(clean, int(cond[1:]), seed)


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
    """{condition: list of (detail, noise, effective, native_px, strength, strength before)}; a photo
    without a detected face is skipped."""
    detector = create_detector("yunet")
    out: dict = {c: [] for c in CONDITIONS}
    for k, path in enumerate(paths):
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            continue
        clean = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        for cond in CONDITIONS:
            img = degraded(clean, cond, seed + k)
            det = main_face(img, detector)
            if det is None:
                continue
            face = align_face(img, det, 512)
            est = estimate_detail(face.crop, face.matrix, resolution)
            old = estimate_detail(face.crop, face.matrix, resolution, BEFORE)
            out[cond].append((est.detail, est.noise, est.effective, est.native_px, est.strength, old.strength))
    return out


def _q(values: np.ndarray) -> str:
    return " / ".join(f"{v:.3f}" for v in np.quantile(values, (0.1, 0.5, 0.9)))


def markdown(res: dict, args: argparse.Namespace, seconds: float) -> str:
    cfg = DEFAULT_DETAIL
    lines = ["# Do-no-harm detail measure: calibration", "",
             f"{args.photos} photos of training-split people (face cache `{args.data}`, seed {args.seed}), "
             f"clean, degraded with `degrade_fixed` (whole photo, x2-x16) and with old-photo degradations at "
             f"the photo's resolution (`noise`: Gaussian sigma 4-10/255; `jpeg`: quality 15-35; `grain+blur`: "
             f"blur sigma 1-2.5 px of a 256 px photo, noise 4-10/255, JPEG 40-75), YuNet + 512 px alignment, "
             f"restorer resolution {args.resolution} px. DetailConfig: sharp {cfg.sharp}, blurred {cfg.blurred}, "
             f"noise_free {cfg.noise_free}, noise_weight {cfg.noise_weight}, noise_check {cfg.noise_check}, "
             f"full_below {cfg.full_below}. "
             f"Measured on the 2-core CPU dev machine in {seconds:.0f} s.", "",
             "Effective detail = detail - noise_weight * max(noise - noise_free, 0); strength = max(size term, "
             "smoothstep of the effective detail between `sharp` and `blurred`). \"before\": the same faces with "
             "the measure before the noise term (DetailConfig(noise_weight=0, noise_check=1)).", "",
             "| condition | faces | detail q10 / q50 / q90 | noise q10 / q50 / q90 | "
             + " | ".join(f"effective q{int(q * 100)}" for q in QUANTILES)
             + " | native px median | strength mean | strength = 0 | strength ≥ 0.9 "
             "| before: strength mean | before: = 0 | before: ≥ 0.9 |",
             "|---" * (len(QUANTILES) + 11) + "|"]
    for cond in CONDITIONS:
        rows = np.array(res[cond], np.float64).reshape(-1, 6)
        if not len(rows):
            lines.append(f"| {cond} | 0 |" + " |" * (len(QUANTILES) + 9))
            continue
        qs = np.quantile(rows[:, 2], QUANTILES)
        lines.append(f"| {cond} | {len(rows)} | {_q(rows[:, 0])} | {_q(rows[:, 1])} | "
                     + " | ".join(f"{q:.3f}" for q in qs)
                     + f" | {np.median(rows[:, 3]):.0f} | {rows[:, 4].mean():.2f} | {np.mean(rows[:, 4] == 0):.0%} "
                     f"| {np.mean(rows[:, 4] >= 0.9):.0%} | {rows[:, 5].mean():.2f} | {np.mean(rows[:, 5] == 0):.0%} "
                     f"| {np.mean(rows[:, 5] >= 0.9):.0%} |")
    if res["clean"] and res["x2"]:
        sharp = np.quantile(np.array(res["clean"])[:, 2], 0.10)
        blurred = np.quantile(np.array(res["x2"])[:, 2], 0.75)
        lines += ["", f"Suggested: sharp = clean effective q10 = {sharp:.3f}, blurred = x2 effective q75 = "
                      f"{blurred:.3f}; noise_free ≈ the clean photos' noise q90 = "
                      f"{np.quantile(np.array(res['clean'])[:, 1], 0.90):.3f}."]
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
