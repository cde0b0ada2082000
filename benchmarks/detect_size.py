#!/usr/bin/env python
"""How the detection size (DetectorConfig.max_side: the long side a large image is shrunk to before
detection) trades detection time for agreement with the default 1600 px, on 1080p frames.

Inputs, all 1920x1080: frames of gpu_pipeline.py's video (one face of about 720 px), and the
family photo pasted at half size on a plain background (three faces of about 50 px). For each
size: YuNet's time per frame on one OpenCV thread, faces found, and against the 1600 px
detections the smallest box IoU and the largest landmark distance as a share of the face's eye
distance (what alignment follows).

    python benchmarks/detect_size.py [--sizes 1600,1280,960,640] [--write benchmarks/results/detect_size_cpu.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
for path in (REPO, HERE):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from restorer_core.faces.detect import create_detector  # noqa: E402
from restorer_core.faces.detect.base import box_iou  # noqa: E402

FAMILY = REPO / "examples" / "family_10045.png"


def inputs(frames: int) -> dict:
    import gpu_pipeline as gp

    with tempfile.TemporaryDirectory() as tmp:
        s = gp.parse_args(["--frames", str(frames), "--device", "cpu", "--out", tmp])
        made = gp.make_inputs(Path(tmp), s)
        video = [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in made["frames"]]
    fam = cv2.cvtColor(cv2.imread(str(FAMILY)), cv2.COLOR_BGR2RGB)
    half = cv2.resize(fam, (fam.shape[1] // 2, fam.shape[0] // 2), interpolation=cv2.INTER_AREA)
    canvas = np.full((1080, 1920, 3), 90, np.uint8)
    canvas[100:100 + half.shape[0], 600:600 + half.shape[1]] = half
    return {"video frames, one ~720 px face": video, "family photo at half size, three ~50 px faces": [canvas]}


def agreement(found: list, ref: list) -> tuple:
    """(min box IoU, max landmark distance / eye distance) of each reference face's best match."""
    ious, dists = [], []
    for dets, refs in zip(found, ref):
        for r in refs:
            if not dets:
                ious.append(0.0)
                dists.append(float("inf"))
                continue
            iou = box_iou(np.asarray(r.box)[None], np.stack([d.box for d in dets]))[0]
            best = dets[int(iou.argmax())]
            eyes = float(np.linalg.norm(r.landmarks[0] - r.landmarks[1]))
            ious.append(float(iou.max()))
            dists.append(float(np.linalg.norm(best.landmarks - r.landmarks, axis=1).max()) / max(eyes, 1e-6))
    return min(ious), max(dists)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1600,1280,960,640")
    ap.add_argument("--frames", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--write", default=None, help="write the markdown here (never overwrites)")
    ap.add_argument("--machine", default=platform.node(), help="how the report names this machine")
    a = ap.parse_args(argv)
    sizes = [int(v) for v in a.sizes.split(",")]
    if 1600 not in sizes:
        sizes = [1600] + sizes
    if a.write and Path(a.write).exists():
        ap.error(f"{a.write} exists; choose another name")
    cv2.setNumThreads(1)
    sets = inputs(a.frames)
    ref: dict = {}
    rows = []
    for side in sizes:
        det = create_detector("yunet", max_side=side)
        for name, images in sets.items():
            det.detect(images[0])  # warm
            t0 = time.perf_counter()
            for _ in range(a.repeat):
                found = [det.detect(im) for im in images]
            ms = 1000 * (time.perf_counter() - t0) / (a.repeat * len(images))
            ref.setdefault(name, found)
            iou, dist = agreement(found, ref[name])
            rows.append((side, name, ms, [len(f) for f in found], iou, dist))
            print(f"max_side {side:5d} | {name:46s} | {ms:6.1f} ms/frame | faces {[len(f) for f in found]} | "
                  f"min IoU {iou:.3f} | max landmark shift {dist:.3f} eye distances", flush=True)
    if a.write:
        lines = ["# Detection size on 1080p frames (YuNet, one OpenCV thread)", "",
                 f"Machine: {a.machine} ({platform.machine()}, {os.cpu_count()} cores), OpenCV {cv2.__version__}. "
                 f"Command: `python benchmarks/detect_size.py --write {a.write}`.", "",
                 "| max_side | input | ms/frame | faces found | min box IoU to 1600 | max landmark shift (eye distances) |",
                 "|---|---|---|---|---|---|"]
        for side, name, ms, counts, iou, dist in rows:
            lines.append(f"| {side} | {name} | {ms:.1f} | {counts} | {iou:.3f} | {dist:.3f} |")
        Path(a.write).write_text("\n".join(lines) + "\n")
        print(f"wrote {a.write}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
