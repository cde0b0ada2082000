"""How many torch operations one paste-back of a 1080p frame with one face dispatches.

On a GPU every dispatched operation is a kernel launch made by the pasting thread while it holds
the interpreter lock, and the paste was half of the lock's samples in the CLI's video run
(benchmarks/results/gil_profile_h100_cli_video_jpeg_opencv.md). This counts them on the CPU with
torch.profiler (aten operations that do the work themselves: views, allocations and metadata
left out, and an operation that only calls others counted through them),
for the form each device runs: the CPU's colour-fix blur (shifted sums) and the GPU's (one
convolution per level, forced here), with and without the blend mask (the CLI asks for none).

    python benchmarks/paste_ops.py [--write benchmarks/results/paste_ops_cpu.md]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import quality as Q  # noqa: E402  (results_path / write_markdown: checked before the work, never overwritten)

from restorer_core.faces.align import align_face  # noqa: E402
from restorer_core.faces.detect.base import DetectedFace  # noqa: E402
from restorer_core.restore import color  # noqa: E402
from restorer_core.restore.paste import paste_window  # noqa: E402
from restorer_core.restore.paste_mask import PasteConfig  # noqa: E402

NOT_WORK = {"aten::as_strided", "aten::empty", "aten::empty_strided", "aten::resolve_conj", "aten::lift_fresh",
            "aten::view", "aten::expand", "aten::slice", "aten::select", "aten::alias", "aten::resize_",
            "aten::as_strided_", "aten::unsqueeze", "aten::squeeze", "aten::permute", "aten::detach", "aten::t",
            "aten::transpose", "aten::reshape", "aten::_reshape_alias", "aten::unbind", "aten::item",
            "aten::_local_scalar_dense", "aten::is_nonzero", "aten::set_", "aten::empty_like"}


def frame_and_face():
    """A random 1080p frame and one 512 px aligned face on it, 'restored' (brightened)."""
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 255, (1080, 1920, 3), dtype=np.uint8)
    landmarks = np.array([[900, 450], [1000, 450], [950, 510], [910, 570], [990, 570]], np.float32)
    face = align_face(frame, DetectedFace(np.array([850, 380, 1050, 640], np.float32), 0.9, landmarks), 512)
    return frame, face.with_restored(np.clip(face.crop.astype(np.float32) / 255.0 + 0.05, 0.0, 1.0))


def working_ops(fn) -> Counter:
    """Aten operations that do work themselves (none of their children does), by name, of one call
    of fn (after a warm-up call)."""
    fn()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
    work = [e for e in prof.events() if e.name.startswith("aten::") and e.name not in NOT_WORK]
    calls_more = {e.cpu_parent.id for e in work if e.cpu_parent is not None}  # its work is its children's
    return Counter(e.name for e in work if e.id not in calls_more)


def measure(blur: str, mask: bool, repeats: int = 5) -> dict:
    frame, face = frame_and_face()
    real = color._binomial_blur_torch
    if blur == "gpu form":
        color._binomial_blur_torch = color._binomial_blur_conv
    try:
        def one():
            return paste_window(frame, [face], PasteConfig(), False, mask, "cpu")
        ops = working_ops(one)
        t0 = time.perf_counter()
        for _ in range(repeats):
            one()
        ms = (time.perf_counter() - t0) / repeats * 1e3
    finally:
        color._binomial_blur_torch = real
    return {"blur": blur, "mask": mask, "ops": sum(ops.values()), "top": ops.most_common(4), "ms": ms}


def markdown(rows: list) -> str:
    out = ["# Torch operations per paste-back (one 1080p frame, one 512 px face)", "",
           f"`python benchmarks/paste_ops.py` on the 2-core CPU dev machine, torch {torch.__version__}, "
           "1 thread. Operations: aten operations that do the work themselves (torch.profiler; views, "
           "allocations, metadata left out): on a GPU, about one kernel launch each. ms: the CPU's own time per paste "
           "(its compute, not what a GPU would take).", "",
           "| colour-fix blur | blend mask | operations | most frequent | CPU ms |", "|---|---|---|---|---|"]
    for r in rows:
        top = ", ".join(f"{n.replace('aten::', '')} {k}" for n, k in r["top"])
        out.append(f"| {r['blur']} | {'yes' if r['mask'] else 'no (the CLI)'} | {r['ops']} | {top} | {r['ms']:.1f} |")
    return "\n".join(out) + "\n"


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--write", default=None, metavar="MD", help="write the table here (never overwrites)")
    a = ap.parse_args(argv)
    out = Q.results_path(ap, a.write)
    torch.set_num_threads(1)
    rows = [measure(blur, mask) for blur in ("cpu form", "gpu form") for mask in (True, False)]
    md = markdown(rows)
    print(md)
    Q.write_markdown(out, md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
