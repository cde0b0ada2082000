#!/usr/bin/env python
"""How far the batched torch YuNet's landmarks are from OpenCV's, next to how far OpenCV's own move
when the shrunk frame changes by one 8-bit level in a few pixels.

The torch detector shrinks frames on the device with area weights; its 8-bit result differs from
cv2.INTER_AREA's by one level in a few percent of the pixels (float order at rounding ties). This
prints, per frame of gpu_pipeline.py's 1080p video, the largest landmark distance (px) between
(a) the torch detector's batched path and OpenCV, and (b) OpenCV on its own shrunk frame with
+-1 level added to 2% of the pixels. Runs on the CPU (same arithmetic as a GPU run: the device
resize gives the CPU's values exactly, checked on one H100).

    python benchmarks/yunet_torch_agreement.py [--frames 32] [--write benchmarks/results/yunet_torch_agreement.md]
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
for path in (HERE.parent, HERE):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from restorer_core.faces.detect import create_detector  # noqa: E402
from restorer_core.faces.detect.base import downscale_for_detection  # noqa: E402
from restorer_core.faces.detect.yunet_torch import YuNetTorchDetector  # noqa: E402
from restorer_core.io.atomic import write_text_atomic  # noqa: E402


def frames(n: int) -> list:
    import gpu_pipeline as gp

    with tempfile.TemporaryDirectory() as tmp:
        s = gp.parse_args(["--frames", str(n), "--device", "cpu", "--out", tmp])
        made = gp.make_inputs(Path(tmp), s)
        return [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in made["frames"]]


def measure(images: list, seed: int = 0) -> tuple:
    cpu = create_detector("yunet", retry=False)
    ours = YuNetTorchDetector(cpu.config)
    rng = np.random.default_rng(seed)
    torch_px, noise_px, eyes = [], [], []
    for im, got in zip(images, ours.detect_batch(images)):
        ref = cpu.detect(im)[0]
        eyes.append(float(np.linalg.norm(ref.landmarks[0] - ref.landmarks[1])))
        torch_px.append(float(np.abs(got[0].landmarks - ref.landmarks).max()))
        small, scale = downscale_for_detection(im, cpu.config.max_side)
        flip = rng.random(small.shape) < 0.02
        noisy = np.clip(small.astype(np.int16) + flip * rng.choice([-1, 1], small.shape), 0, 255).astype(np.uint8)
        _, scores, marks = cpu._detect_raw(noisy)
        best = np.asarray(marks).reshape(-1, 5, 2)[int(np.argmax(scores))] / scale
        noise_px.append(float(np.abs(best - ref.landmarks).max()))
    return np.array(torch_px), np.array(noise_px), float(np.median(eyes))


def report(torch_px: np.ndarray, noise_px: np.ndarray, eye: float) -> str:
    def row(name, v):
        return (f"| {name} | {np.median(v):.2f} | {v.max():.2f} | {int((v > 1).sum())} of {len(v)} |")

    return "\n".join([
        "# Torch YuNet (batched, device shrink) against OpenCV's YuNet", "",
        f"Machine: {platform.machine()} CPU, OpenCV {cv2.__version__}. 1080p frames of gpu_pipeline.py "
        f"(one face, eye distance {eye:.1f} px). Command: `python benchmarks/yunet_torch_agreement.py`.", "",
        "| landmarks against OpenCV's (largest distance per frame, px) | median | max | frames > 1 px |",
        "|---|---|---|---|",
        row("torch YuNet, batched (frames shrunk by area weights)", torch_px),
        row("OpenCV YuNet, +-1 level on 2% of its shrunk frame's pixels", noise_px), ""])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=32)
    ap.add_argument("--write", type=Path, default=None)
    a = ap.parse_args(argv)
    torch_px, noise_px, eye = measure(frames(a.frames))
    print("torch batched vs OpenCV, px per frame:", np.round(torch_px, 2).tolist())
    print("OpenCV with +-1 level noise, px per frame:", np.round(noise_px, 2).tolist())
    md = report(torch_px, noise_px, eye)
    print(md)
    if a.write:
        write_text_atomic(a.write, md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
