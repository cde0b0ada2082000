#!/usr/bin/env python
"""The batch CLI on several GPUs of one host (issue 5): same files, same pixels as one process.

Builds a folder of test photos (the pack's example photos, flipped and rescaled), restores it
once with one process and once under torchrun with one process per GPU, then compares every
output file pixel by pixel and prints a table (also written as multi_gpu_check.md to --out).

    python benchmarks/multi_gpu_check.py --out "$OUT"               # all visible GPUs
    python benchmarks/multi_gpu_check.py --device cpu --procs 2     # CPU smoke run (gloo)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

REPO = Path(__file__).resolve().parent.parent
PHOTOS = [REPO / "examples" / "family_10045.png", REPO / "example_workflows" / "inputs" / "old_photo_family.jpg",
          REPO / "example_workflows" / "inputs" / "blake_lively.jpg"]
REFERENCE = REPO / "example_workflows" / "inputs" / "blake_lively.jpg"  # the adult: x >= 350 (one face)


def make_inputs(folder: Path, count: int) -> list:
    """`count` distinct photos: each example at a few scales, mirrored or not."""
    folder.mkdir(parents=True, exist_ok=True)
    out, i = [], 0
    while len(out) < count:
        src = Image.open(PHOTOS[i % len(PHOTOS)]).convert("RGB")
        scale = (1.0, 0.8, 1.25, 0.9)[(i // len(PHOTOS)) % 4]
        img = src.resize((max(64, round(src.width * scale)), max(64, round(src.height * scale))), Image.LANCZOS)
        if (i // (len(PHOTOS) * 4)) % 2:
            img = ImageOps.mirror(img)
        path = folder / f"photo_{i:03d}.png"
        img.save(path)
        out.append(path)
        i += 1
    return out


def run(cmd: list, env: dict) -> float:
    t = time.time()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stdout.write(proc.stdout[-4000:] + proc.stderr[-4000:])
        raise SystemExit(f"command failed ({proc.returncode}): {' '.join(cmd)}")
    return time.time() - t


def compare(a: Path, b: Path) -> dict:
    files_a = sorted(p.name for p in a.iterdir() if p.suffix.lower() in (".png", ".jpg", ".webp"))
    files_b = sorted(p.name for p in b.iterdir() if p.suffix.lower() in (".png", ".jpg", ".webp"))
    identical, max_diff, differing = 0, 0, []
    for name in sorted(set(files_a) & set(files_b)):
        x = np.asarray(Image.open(a / name)).astype(np.int16)
        y = np.asarray(Image.open(b / name)).astype(np.int16)
        d = int(np.abs(x - y).max()) if x.shape == y.shape else 255
        identical += d == 0
        max_diff = max(max_diff, d)
        if d:
            differing.append(f"{name} ({d}/255, {float((np.abs(x - y) > 0).mean()):.4%} of values)")
    return dict(files_single=len(files_a), files_multi=len(files_b), same_names=files_a == files_b,
                identical=identical, max_abs_diff=max_diff, differing=differing)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--procs", type=int, default=None, help="processes (default: the visible GPUs)")
    ap.add_argument("--device", default="cuda", help="cuda (one GPU per process) or cpu (gloo)")
    ap.add_argument("--images", type=int, default=24)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--speed", default="auto")
    ap.add_argument("--cudnn-benchmark", action="store_true", help="pass --cudnn-benchmark to the CLI")
    ap.add_argument("--out", default=os.environ.get("OUT", "./bench_out"))
    a = ap.parse_args(argv)

    import torch

    procs = a.procs or (torch.cuda.device_count() if a.device == "cuda" else 2)
    if a.device == "cuda" and procs < 2:
        raise SystemExit(f"needs at least 2 GPUs, {torch.cuda.device_count()} visible")
    os.makedirs(a.out, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="multi_gpu_"))
    make_inputs(work / "in", a.images)
    ref = Image.open(REFERENCE).convert("RGB")
    ref.crop((350, 0, ref.width, ref.height)).save(work / "reference.png")
    env = dict(os.environ, PYTHONPATH=f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    common = ["restore", str(work / "in"), "--refs", str(work / "reference.png"), "--batch-size", str(a.batch_size),
              "--speed", a.speed, "--quiet"] + (["--cudnn-benchmark"] if a.cudnn_benchmark else [])
    single_dev = "cuda:0" if a.device == "cuda" else "cpu"
    t1 = run([sys.executable, "-m", "restorer_core", *common, "--out", str(work / "one"), "--device", single_dev,
              "--report", str(work / "one.json")], env)
    multi = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1",
             "--nproc_per_node", str(procs), "-m", "restorer_core", *common, "--out", str(work / "many"),
             "--report", str(work / "many.json")]
    if a.device == "cpu":
        multi += ["--device", "cpu"]
    tn = run(multi, env)
    cmp = compare(work / "one", work / "many")
    rep1, repn = (json.loads((work / f).read_text()) for f in ("one.json", "many.json"))
    faces = lambda rep: sum(int(img.get("faces_restored", 0)) for img in rep.get("images", []))  # noqa: E731
    result = dict(device=torch.cuda.get_device_name(0) if a.device == "cuda" else "cpu", procs=procs,
                  images=a.images, batch_size=a.batch_size, speed=a.speed, wall_s_single=t1, wall_s_multi=tn,
                  faces_single=faces(rep1), faces_multi=faces(repn), **cmp)
    lines = [f"### Batch CLI, 1 process vs torchrun x{procs} ({result['device']}, default model, "
             f"{a.images} photos, batch size {a.batch_size}, speed {a.speed}, cuDNN benchmark "
             f"{'on' if a.cudnn_benchmark else 'off'})", "",
             "| run | wall s (incl. start-up) | images written | faces restored |", "|---|---|---|---|",
             f"| 1 process | {t1:.1f} | {cmp['files_single']} | {result['faces_single']} |",
             f"| torchrun, {procs} processes | {tn:.1f} | {cmp['files_multi']} | {result['faces_multi']} |", "",
             f"Same file names: {cmp['same_names']}; pixel-identical files: {cmp['identical']} of "
             f"{cmp['files_single']}; largest difference {cmp['max_abs_diff']}/255."]
    if cmp["differing"]:
        lines += ["", "Differing files: " + "; ".join(cmp["differing"][:10])]
    md = "\n".join(lines) + "\n"
    Path(a.out, "multi_gpu_check.md").write_text(md)
    Path(a.out, "multi_gpu_check.json").write_text(json.dumps(result, indent=1))
    print(md)
    ok = cmp["same_names"] and cmp["files_single"] == a.images and result["faces_single"] == result["faces_multi"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
