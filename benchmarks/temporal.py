"""Temporal stability on a clip made from a real face photo: landmark jitter and restored-face
flicker, with and without landmark smoothing (restorer_core.faces.temporal).

    python benchmarks/temporal.py                      # writes benchmarks/results/temporal.md (+ .json)
    python benchmarks/temporal.py --photo FACE.jpg     # another photo with one clear face

The clip: the photo moved along a smooth path with sub-pixel steps (drift and sway of a few
pixels, a slow +-5% zoom), every frame with its own Gaussian noise and JPEG compression, and a
cut to another framing (shifted and 25% larger) two thirds through. The true landmarks of every
frame are the clean photo's landmarks moved by that frame's known transform, so the detector's
per-frame error is measurable. Both runs restore the same frames with the CLI's pipeline
(embedded default model, visual prompt, frames fed in chunks of 8 as the CLI does).

Measured, per run:
- landmark error: mean distance of the 5 landmarks to the true ones, % of the face size;
- landmark jitter: RMS frame-to-frame change of that error (the part that moves the crop),
  % of the face size and pixels;
- restored-face flicker: every output frame warped back by its known transform onto the first
  frame's coordinates, then the mean absolute change between consecutive frames (0..255) inside
  the face (an ellipse through the eyes and mouth), the pair across the cut left out; the same
  for the input frames as the floor set by the noise and JPEG;
- the first 3 frames after the cut (a filter that failed to reset would drag the old framing);
- kept/restored flips of the automatic strength: frames whose face changes between kept
  (strength 0, input pixels) and restored, the pair across the cut left out, per frame and
  followed over the track (temporal.StrengthSmoothing), from a pass without the restorer (detect,
  align at smoothed landmarks, estimate), on the clip and on a near-threshold variant (the photo
  shrunk and blurred so that its face reads just at the "sharp" threshold).

The restoring runs use strength 1: at the default model's resolution the clip's face reads sharp
(automatic strength 0 on every frame), so with "auto" both runs would keep the input frames.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from restorer_core.io.atomic import write_text_atomic  # noqa: E402
from restorer_core.faces.temporal import LandmarkSmoother, SmoothingConfig, face_scale  # noqa: E402

DEFAULT_PHOTO = REPO / "example_workflows" / "inputs" / "blake_lively.jpg"
DEFAULT_BOX = (350, 0, 700, 464)  # its right half: one adult face
CHUNK = 8


def frame_transform(k: int, n: int, centre: tuple, cut_at: int) -> np.ndarray:
    """2x3 affine of frame k (photo -> frame): a smooth path with sub-pixel steps; another
    framing from the cut on."""
    t = k / max(n - 1, 1)
    tx = 6.0 * np.sin(2 * np.pi * k / 41.0) + 9.0 * t
    ty = 3.0 * np.sin(2 * np.pi * k / 29.0 + 0.7)
    s = 1.0 + 0.05 * np.sin(2 * np.pi * k / 53.0)
    if k >= cut_at:
        tx, ty, s = tx - 40.0, ty + 25.0, s * 1.25
    cx, cy = centre
    return np.array([[s, 0.0, cx - s * cx + tx], [0.0, s, cy - s * cy + ty]])


def make_clip(photo: np.ndarray, n: int, cut_at: int, seed: int = 0, noise: float = 4.0,
              quality: int = 60) -> tuple:
    """(frames uint8 RGB, transforms): the moved photo with per-frame noise and JPEG."""
    h, w = photo.shape[:2]
    rng = np.random.default_rng(seed)
    frames, mats = [], []
    for k in range(n):
        m = frame_transform(k, n, (w / 2, h / 2), cut_at)
        moved = cv2.warpAffine(photo.astype(np.float32), m, (w, h), flags=cv2.INTER_CUBIC,
                               borderMode=cv2.BORDER_REFLECT101)
        moved = np.clip(moved + rng.normal(0.0, noise, moved.shape), 0, 255).astype(np.uint8)
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(moved, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
        frames.append(cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB))
        mats.append(m)
    return frames, mats


def apply(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return pts @ m[:, :2].T + m[:, 2]


def face_mask(landmarks: np.ndarray, shape: tuple) -> np.ndarray:
    """An ellipse inside the face: through the eyes and mouth corners, on the nose."""
    lm = np.asarray(landmarks, dtype=np.float64)
    centre = lm[2]
    eye_w = np.linalg.norm(lm[1] - lm[0])
    mouth_y = (lm[3, 1] + lm[4, 1]) / 2
    axes = (int(round(eye_w * 0.95)), int(round(max(mouth_y - (lm[0, 1] + lm[1, 1]) / 2, 1) * 1.25)))
    mask = np.zeros(shape[:2], np.uint8)
    cv2.ellipse(mask, (int(round(centre[0])), int(round(centre[1]))), axes, 0, 0, 360, 1, -1)
    return mask.astype(bool)


def flicker(frames: list, mats: list, mask: np.ndarray, skip_pair: int) -> float:
    """Mean |change| (0..255) inside the mask between consecutive frames, each warped back onto
    the first frame's coordinates by its known transform; the pair (skip_pair-1, skip_pair) left out."""
    h, w = mask.shape
    back = []
    for frame, m in zip(frames, mats):
        to_first = np.vstack([mats[0], [0, 0, 1]]) @ np.linalg.inv(np.vstack([m, [0, 0, 1]]))
        back.append(cv2.warpAffine(frame.astype(np.float32), to_first[:2], (w, h), flags=cv2.INTER_CUBIC,
                                   borderMode=cv2.BORDER_REFLECT101))
    diffs = [np.abs(back[k] - back[k - 1])[mask].mean() for k in range(1, len(back)) if k != skip_pair]
    return float(np.mean(diffs))


def landmark_stats(found: list, truth: list, skip_pair: int) -> dict:
    err = [np.asarray(f) - t for f, t in zip(found, truth)]
    scales = [face_scale(t) for t in truth]
    err_pct = [100 * np.linalg.norm(e, axis=1).mean() / s for e, s in zip(err, scales)]
    steps = [(k, err[k] - err[k - 1]) for k in range(1, len(err)) if k != skip_pair]
    jit_px = float(np.sqrt(np.mean([np.sum(d ** 2, axis=1).mean() for _, d in steps])))
    jit_pct = float(np.sqrt(np.mean([np.sum(d ** 2, axis=1).mean() / scales[k] ** 2 for k, d in steps])) * 100)
    return {"error_pct": float(np.mean(err_pct)), "jitter_pct": jit_pct, "jitter_px": jit_px,
            "after_cut_error_pct": [round(float(v), 2) for v in err_pct[skip_pair:skip_pair + 3]]}


def flips(kept: list, skip_pair: int) -> int:
    """Changes between kept and restored from frame to frame, the pair (skip_pair-1, skip_pair) left out."""
    return sum(kept[k] != kept[k - 1] for k in range(1, len(kept)) if k != skip_pair)


def near_threshold(photo: np.ndarray, scale: float = 0.8, sigma: float = 2.5) -> np.ndarray:
    """The photo resized (area) and blurred so that the shipped photo's face reads just at the
    sharp threshold for the default model (automatic strength 0 to ~0.05)."""
    small = cv2.resize(photo, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA).astype(np.float32)
    return np.clip(cv2.GaussianBlur(small, (0, 0), sigma), 0, 255).astype(np.uint8)


def strength_pass(pipeline, frames: list, config: SmoothingConfig) -> tuple:
    """Automatic strengths of the clip's face without restoring: (per frame, followed over its track)."""
    from restorer_core.restore.detail import AUTO, face_strength
    from restorer_core.restore.pipeline import RestoreOptions

    options = RestoreOptions(temporal=LandmarkSmoother(config), use_cache=False)
    own, followed = [], []
    for k, frame in enumerate(frames):
        faces, _ = pipeline.locate(frame, options, k)
        (face,) = options.temporal.realign(faces, frame, frame_key=k)
        strength, _ = face_strength(AUTO, face.crop, face.matrix, pipeline.resolution)
        own.append(strength)
        followed.append(options.temporal.strengths.follow(face, strength))
    return own, followed


def run(pipeline, frames: list, smoothing: bool, config: SmoothingConfig) -> tuple:
    """Restore the clip at strength 1 in chunks like the CLI; (output frames, landmarks per frame, seconds)."""
    from restorer_core.restore.pipeline import RestoreOptions

    options = RestoreOptions(temporal=LandmarkSmoother(config) if smoothing else None, use_cache=False,
                             strength=1.0)
    outs, marks = [], []
    t0 = time.perf_counter()
    for start in range(0, len(frames), CHUNK):
        chunk = frames[start:start + CHUNK]
        names = [f"frame_{start + i:04d}" for i in range(len(chunk))]
        for result in pipeline.restore_images(chunk, None, options, names=names):
            if len(result.faces) != 1:
                raise SystemExit(f"expected one face per frame, found {len(result.faces)}; use a photo "
                                 "with one clear face (--photo, --box)")
            outs.append(np.asarray(result.pixels))
            marks.append(np.asarray(result.faces[0].landmarks, dtype=np.float64))
    return outs, marks, time.perf_counter() - t0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photo", default=str(DEFAULT_PHOTO), help="a photo with one clear face")
    parser.add_argument("--box", default=None,
                        help="x0,y0,x1,y1 region of the photo to use (default: all of it; for the shipped "
                             "photo, its adult)")
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "temporal.md"))
    args = parser.parse_args(argv)

    import torch

    from restorer_core.faces.detect import create_detector
    from restorer_core.model_zoo import load_any_restorer
    from restorer_core.restore.pipeline import FaceRestorePipeline

    torch.set_num_threads(max(1, torch.get_num_threads()))
    photo = cv2.cvtColor(cv2.imread(args.photo, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    if args.box is None and Path(args.photo).resolve() == DEFAULT_PHOTO:
        args.box = ",".join(map(str, DEFAULT_BOX))
    if args.box:
        x0, y0, x1, y1 = (int(v) for v in args.box.split(","))
        photo = np.ascontiguousarray(photo[y0:y1, x0:x1])
    dets = create_detector("yunet").detect(photo)
    if len(dets) != 1:
        raise SystemExit(f"{args.photo}: found {len(dets)} faces, need exactly one")
    base_lm = np.asarray(dets[0].landmarks, dtype=np.float64)
    n, cut_at = args.frames, (2 * args.frames) // 3
    frames, mats = make_clip(photo, n, cut_at)
    truth = [apply(m, base_lm) for m in mats]
    mask = face_mask(truth[0], photo.shape)

    config = SmoothingConfig()
    pipeline = FaceRestorePipeline(load_any_restorer(None), speed="auto")
    t0 = time.perf_counter()
    passes = {}
    near_frames, _ = make_clip(near_threshold(photo), n, cut_at)
    for clip_name, clip in (("the clip", frames), ("near-threshold variant", near_frames)):
        own, followed = strength_pass(pipeline, clip, config)
        passes[clip_name] = {
            "strength_range": [round(min(own), 3), round(max(own), 3)],
            "kept_frames": [sum(s <= 0.0 for s in own), sum(s <= 0.0 for s in followed)],
            "flips": [flips([s <= 0.0 for s in own], cut_at), flips([s <= 0.0 for s in followed], cut_at)]}
        print(clip_name, passes[clip_name])
    pass_seconds = time.perf_counter() - t0
    rows = {}
    for name, smoothing in (("per-frame landmarks", False), ("smoothed landmarks", True)):
        outs, marks, secs = run(pipeline, frames, smoothing, config)
        stats = landmark_stats(marks, truth, cut_at)
        stats["flicker"] = flicker(outs, mats, mask, cut_at)
        stats["ms_per_frame"] = 1000 * secs / n
        rows[name] = stats
        print(name, {k: (round(v, 3) if isinstance(v, float) else v) for k, v in stats.items()})
    floor = flicker(frames, mats, mask, cut_at)
    clean = flicker([cv2.warpAffine(photo, m, photo.shape[1::-1], flags=cv2.INTER_CUBIC,
                                    borderMode=cv2.BORDER_REFLECT101) for m in mats], mats, mask, cut_at)

    machine = f"{platform.machine()} CPU, {torch.get_num_threads()} torch threads"
    lines = [
        "# Temporal stability: landmark smoothing on a moving face",
        "",
        f"`python benchmarks/temporal.py` on the project's 2-core CPU dev machine ({machine}); "
        f"{n} frames of {photo.shape[1]}x{photo.shape[0]} from `{Path(args.photo).name}` "
        f"(region {args.box}): sub-pixel drift and sway, +-5% zoom, Gaussian noise sigma 4/255 and "
        f"JPEG q60 per frame, a cut to another framing at frame {cut_at}. Default model, visual "
        f"prompt, frames in chunks of {CHUNK}. Smoothing: One-Euro filter, min_cutoff "
        f"{config.min_cutoff}, beta {config.beta}, d_cutoff {config.d_cutoff}, reset on a jump > "
        f"{config.cut_jump} face sizes or a size change > {config.cut_scale} (log). Strength following "
        f"(second table): fall {config.strength.fall}/frame, kept again after "
        f"{config.strength.keep_after} frames that read sharp.",
        "",
        "| run (strength 1) | landmark error (% face) | landmark jitter (% face) | jitter (px) | restored-face flicker (0..255) | error on the 3 frames after the cut (% face) | ms/frame |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, s in rows.items():
        lines.append(f"| {name} | {s['error_pct']:.2f} | {s['jitter_pct']:.2f} | {s['jitter_px']:.2f} | "
                     f"{s['flicker']:.2f} | {', '.join(f'{v:.2f}' for v in s['after_cut_error_pct'])} | "
                     f"{s['ms_per_frame']:.0f} |")
    lines += [
        f"| input frames (noise + JPEG floor) | | | | {floor:.2f} | | |",
        f"| clean moved photo (warp-back floor) | | | | {clean:.2f} | | |",
        "",
        f"Automatic strength (\"auto\") without the restorer: detect, align at smoothed landmarks, "
        f"estimate; {n} frames each, {pass_seconds:.0f} s for both clips. Near-threshold variant: the "
        "photo at 0.8x (area) blurred with sigma 2.5 px, then the same motion, noise, JPEG and cut. "
        "Flips: kept/restored changes from frame to frame, per frame vs followed over the track.",
        "",
        "| clip | automatic strength per frame (min-max) | kept frames (per frame / followed) | flips per frame | flips followed |",
        "|---|---|---|---|---|",
    ]
    for name, p in passes.items():
        lines.append(f"| {name} | {p['strength_range'][0]:.3f}-{p['strength_range'][1]:.3f} | "
                     f"{p['kept_frames'][0]} / {p['kept_frames'][1]} | {p['flips'][0]} | {p['flips'][1]} |")
    lines += [
        "",
        "Face size = mean of the eye distance and the eyes-to-mouth distance of the true landmarks. "
        "Jitter = RMS frame-to-frame change of the landmark error (what moves the aligned crop); "
        "flicker = mean absolute change between consecutive frames inside the face after undoing "
        "the known motion (the pair across the cut left out). ms/frame: wall time of the whole pipeline"
        " (detect, align, restore, paste) while other jobs shared the 2 cores, for comparing the two runs only.",
        "",
    ]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out, "\n".join(lines))
    write_text_atomic(out.with_suffix(".json"), json.dumps(
        {"frames": n, "cut_at": cut_at, "photo": Path(args.photo).name, "box": args.box, "machine": machine,
         "config": {k: getattr(config, k) for k in ("min_cutoff", "beta", "d_cutoff", "cut_jump", "cut_scale")},
         "strength": {"fall": config.strength.fall, "keep_after": config.strength.keep_after},
         "runs": rows, "strength_passes": passes, "input_flicker": floor, "clean_flicker": clean}, indent=2) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
