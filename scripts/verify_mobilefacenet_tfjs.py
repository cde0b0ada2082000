"""Check the torch MobileFaceNet against the original TF.js graph run by @tensorflow/tfjs in node.

Faces: the first photo of the first --n people of an LFW-style folder (one sub-folder per
person), detected with the project's YuNet and FFHQ-aligned at 256 px, warped by FaceIdEmbedder
to the 112 px ArcFace framing and rounded to uint8. Both implementations get the same float32
network input; the script prints and writes (--md) the max abs difference of the embeddings.
--fixture also writes the tests' reference file from examples/family_10045.png.

    python scripts/verify_mobilefacenet_tfjs.py --json /tmp/hm/package/models/mobilefacenet.json \
        --tfjs-dir /tmp/tfjsrun --faces ../shared/data/faces/lfw --n 20 --md benchmarks/results/mobilefacenet_tfjs.md
(--tfjs-dir: a folder where `npm install @tensorflow/tfjs` was run.)
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from restorer_core.faces.align import align_face  # noqa: E402
from restorer_core.faces.detect import create_detector  # noqa: E402
from restorer_core.face_id import MobileFaceNet, load_face_id  # noqa: E402
from restorer_core.io.imageio import load_image, to_rgb8  # noqa: E402

FIXTURE = ROOT / "tests" / "data" / "mobilefacenet_tfjs_reference.npz"


def network_crops(paths: list[Path], embedder, all_faces: bool = False) -> tuple[np.ndarray, list[str]]:
    """uint8 [N, 112, 112, 3] ArcFace-framed crops (largest face per image, or every face)."""
    det = create_detector("yunet")
    crops, names = [], []
    for p in paths:
        rgb = to_rgb8(load_image(p).pixels)[..., :3]
        faces = det.detect(rgb)
        if not faces:
            print(f"  no face in {p}")
            continue
        faces = sorted(faces, key=lambda d: d.box[0]) if all_faces else [
            max(faces, key=lambda d: (d.box[2] - d.box[0]) * (d.box[3] - d.box[1]))]
        for k, f in enumerate(faces):
            crop = torch.from_numpy(align_face(rgb, f, 256).crop).permute(2, 0, 1)[None].float()
            with torch.no_grad():
                x = embedder.to_network_input(crop)[0].permute(1, 2, 0).numpy()
            crops.append(np.round(np.clip(x, 0, 1) * 255).astype(np.uint8))
            names.append(f"{p.name}#{k}")
    return np.stack(crops), names


def run_tfjs(model_json: Path, tfjs_dir: Path, crops_u8: np.ndarray, net: MobileFaceNet) -> np.ndarray:
    """Embeddings of the original graph in node; input scaled exactly as MobileFaceNet does."""
    x = (crops_u8.astype(np.float32) / np.float32(255.0)) * np.float32(net.input_scale) + np.float32(net.input_offset)
    with tempfile.TemporaryDirectory() as tmp:
        inp, out = Path(tmp) / "in.f32", Path(tmp) / "out.f32"
        np.ascontiguousarray(x, dtype="<f4").tofile(inp)
        r = subprocess.run(
            ["node", str(ROOT / "scripts" / "verify_mobilefacenet_tfjs.mjs"), str(model_json), str(inp), str(len(x)), str(out)],
            cwd=tfjs_dir, capture_output=True, text=True,
        )
        if r.returncode != 0:
            raise SystemExit(f"node failed:\n{r.stderr}")
        print("  " + r.stdout.strip().splitlines()[0])
        return np.fromfile(out, dtype="<f4").reshape(len(x), -1)


def run_torch(net: MobileFaceNet, crops_u8: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return net(torch.from_numpy(crops_u8).permute(0, 3, 1, 2).float() / 255.0).numpy()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", required=True, type=Path)
    ap.add_argument("--tfjs-dir", required=True, type=Path)
    ap.add_argument("--faces", type=Path, default=ROOT.parent / "shared" / "data" / "faces" / "lfw")
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--md", type=Path, default=None)
    ap.add_argument("--fixture", action="store_true", help=f"also (re)write {FIXTURE.relative_to(ROOT)}")
    args = ap.parse_args()
    torch.set_num_threads(2)
    embedder = load_face_id()
    net = embedder.net
    people = sorted(d for d in args.faces.iterdir() if d.is_dir())[: args.n]
    paths = [sorted(d.iterdir())[0] for d in people]
    crops, names = network_crops(paths, embedder)
    ref, ours = run_tfjs(args.json, args.tfjs_dir, crops, net), run_torch(net, crops)
    diff = float(np.abs(ref - ours).max())
    cos = float(((ref * ours).sum(1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(ours, axis=1))).min())
    line = f"{len(crops)} faces: max |torch - tfjs| = {diff:.3g}, min cosine {cos:.7f}"
    print(line)
    if args.fixture:
        fam, fam_names = network_crops([ROOT / "examples" / "family_10045.png"], embedder, all_faces=True)
        fam_ref = run_tfjs(args.json, args.tfjs_dir, fam, net)
        FIXTURE.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(FIXTURE, crops=fam, embeddings=fam_ref.astype(np.float32), names=np.array(fam_names))
        print(f"wrote {FIXTURE} ({len(fam)} faces, max |torch - tfjs| {np.abs(fam_ref - run_torch(net, fam)).max():.3g})")
    if args.md:
        import importlib.metadata as md

        tfjs_version = subprocess.run(
            ["node", "-e", "console.log(require('@tensorflow/tfjs/package.json').version)"],
            cwd=args.tfjs_dir, capture_output=True, text=True,
        ).stdout.strip()
        sim = ref @ ref.T
        text = (
            "# MobileFaceNet: torch port vs the original TF.js graph\n\n"
            f"Machine: the 2-core CPU dev machine ({platform.processor() or platform.machine()}), torch {torch.__version__}, "
            f"@tensorflow/tfjs {tfjs_version} (pure JS, CPU backend) on node {subprocess.run(['node', '--version'], capture_output=True, text=True).stdout.strip()}.\n"
            f"Command: `python scripts/verify_mobilefacenet_tfjs.py --json .../mobilefacenet.json --tfjs-dir ... --n {args.n}`\n\n"
            f"Faces: first photo of the first {args.n} people of `../shared/data/faces/lfw` (sorted by name), YuNet + FFHQ "
            "alignment at 256 px, FaceIdEmbedder warp to the 112 px ArcFace framing, rounded to uint8; both sides get the "
            "same float32 input ((x/255)*255/128 - 127.5/128, NHWC for tfjs, NCHW for torch).\n\n"
            f"| faces | max abs diff of the 192-d embeddings | min cosine (torch, tfjs) |\n|---|---|---|\n"
            f"| {len(crops)} | {diff:.3g} | {cos:.7f} |\n\n"
            f"Tolerance: 1e-4 (fp32). Result: {'PASS' if diff <= 1e-4 else 'FAIL'}.\n\n"
            "Observation on the same 20 faces (20 different people): the original graph's embeddings are nearly "
            f"input-independent, mean pairwise cosine between different people {sim[np.triu_indices(len(sim), 1)].mean():.5f} "
            f"(min {sim[np.triu_indices(len(sim), 1)].min():.5f}). See `face_id_compare.md`.\n"
        )
        args.md.parent.mkdir(parents=True, exist_ok=True)
        args.md.write_text(text)
        print(f"wrote {args.md}")
    return 0 if diff <= 1e-4 else 1


if __name__ == "__main__":
    sys.exit(main())
