#!/usr/bin/env python
"""Paste-back of one 512 px face into a 1920x1080 frame, alone (no other thread, no restorer):
the torch operators one paste dispatches (on any device: what the Python thread spends its time
launching), ms per face on each device, then a torch profile of the device paste (kernel launches,
copies, stream syncs). What the pipeline's paste costs without contention (issue 19).

    python benchmarks/paste_alone.py [--devices cuda,cpu] [--repeats 20]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from restorer_core.faces.align import align_face, template_landmarks  # noqa: E402
from restorer_core.faces.records import DetectedFace  # noqa: E402
from restorer_core.restore.paste import paste_faces  # noqa: E402


def one_face_frame(seed: int = 0) -> tuple:
    """(a noise 1080p uint8 frame, one aligned face of it with a restored crop)."""
    rng = np.random.default_rng(seed)
    frame = rng.integers(0, 255, (1080, 1920, 3), dtype=np.uint8)
    landmarks = template_landmarks(512) * 0.6 + np.array([800.0, 300.0])
    face = align_face(frame, DetectedFace(np.array([780.0, 280.0, 1120.0, 640.0]), 0.9, landmarks), 512)
    face.restored = np.clip(face.crop + 0.05, 0.0, 1.0).astype(np.float32)
    return frame, face


def operator_count(frame: np.ndarray, face) -> int:
    """torch operators (views included) that one paste on the CPU dispatches."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        calls = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            Count.calls += 1
            return func(*args, **(kwargs or {}))

    with Count():
        paste_faces(frame, [face], device="cpu")
    return Count.calls


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", default="cuda,cpu" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--repeats", type=int, default=20)
    a = ap.parse_args(argv)
    frame, face = one_face_frame()
    devices = [d for d in a.devices.split(",") if d]
    print(f"torch operators per paste: {operator_count(frame, face)}", flush=True)
    for dev in devices:
        for _ in range(3):
            paste_faces(frame, [face], device=dev)
        sync(dev)
        t0 = time.perf_counter()
        for _ in range(a.repeats):
            paste_faces(frame, [face], device=dev)
        sync(dev)
        print(f"{dev}: paste {1000 * (time.perf_counter() - t0) / a.repeats:.2f} ms/face alone", flush=True)
    gpu = [d for d in devices if d.startswith("cuda")]
    if gpu:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for _ in range(5):
                paste_faces(frame, [face], device=gpu[0])
        print("profile of 5 pastes:")
        print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=25))
    return 0


if __name__ == "__main__":
    sys.exit(main())
