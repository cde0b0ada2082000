#!/usr/bin/env python
"""Tune the no-references policies of restorer_core/restore/identity_gate.py (the gate's threshold,
the fixed no-references strength scale) with the pack's own embedder as the measure (dlib, the
independent judge, is never used).

Faces: one aligned 128 px face per training person (`--split train`), or up to `--per-person` photos
of each validation person that are not benchmarks/quality.py's targets (`--split val`: people the
model never trained on, so it cannot recall them). Each is degraded with `degrade_fixed` at x4 / x8 /
x16 and restored without references at strength 1; for each policy (no gate, gate thresholds, fixed
fractions of the strength) the table gives the pack embedder's cosine to the clean face (mean over
faces), its change over the degraded input, the detail ratio (Laplacian variance of the face centre
over the clean face's) and the share of faces whose strength was lowered.

    python benchmarks/identity_gate_tune.py --data .traindata/faces128.npz --model /tmp/v5.safetensors \\
        [--split val --per-person 4] [--people 200] [--write results/identity_gate_tune_v5.md]
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

import numpy as np  # noqa: E402
import torch  # noqa: E402

from quality import laplacian_variance  # noqa: E402
from restorer_core.faces.identity import load_identity_embedder  # noqa: E402
from restorer_core.io.atomic import write_text_atomic  # noqa: E402
from restorer_core.restore.identity_gate import FRACTIONS, _embed, gate_strengths  # noqa: E402
from restorer_core.train.degrade import degrade_fixed  # noqa: E402
from restorer_core.train.prepare import SPLIT_TRAIN, SPLIT_VAL, decode_image  # noqa: E402

THRESHOLDS = (None, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)  # None: no gate


def training_faces(data: str, people: int, seed: int) -> np.ndarray:
    """One seeded aligned crop [N, 128, 128, 3] uint8 per training person (the first `people`)."""
    with np.load(data, allow_pickle=False) as z:
        split, ident, offsets, blob = z["split"], z["identity"], z["image_offsets"], z["image_data"]
    rng = np.random.default_rng(seed)
    by_person: dict = {}
    for k in np.flatnonzero(split == SPLIT_TRAIN):
        by_person.setdefault(int(ident[k]), []).append(int(k))
    chosen = [rng.choice(v) for _, v in sorted(by_person.items())[:people]]
    return np.stack([decode_image(blob[offsets[k]:offsets[k + 1]]) for k in chosen])


def held_out_faces(data: str, per_person: int, seed: int) -> np.ndarray:
    """Up to `per_person` seeded aligned crops of each validation person (never trained on), none of
    them a target photo of benchmarks/quality.py, so its held-out table stays an independent check."""
    from quality import QualityConfig, validation_samples
    from shared_data import shared_dir

    targets = {str(s.target.relative_to(shared_dir() / "data" / "faces"))
               for s in validation_samples(QualityConfig(data=data), shared_dir() / "data" / "faces")}
    with np.load(data, allow_pickle=False) as z:
        split, ident, offsets, blob, names = (z["split"], z["identity"], z["image_offsets"], z["image_data"],
                                              z["filenames"])
    rng = np.random.default_rng(seed)
    by_person: dict = {}
    for k in np.flatnonzero(split == SPLIT_VAL):
        if str(names[k]) not in targets:
            by_person.setdefault(int(ident[k]), []).append(int(k))
    chosen = [k for _, v in sorted(by_person.items()) for k in rng.permutation(v)[:per_person]]
    return np.stack([decode_image(blob[offsets[k]:offsets[k + 1]]) for k in chosen])


def to_t(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(x.astype(np.float32) / 255.0).permute(0, 3, 1, 2).contiguous()


def u8(t: torch.Tensor) -> np.ndarray:
    return np.round(t.clamp(0, 1).permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8)


def restore(restorer, x: torch.Tensor, batch: int = 8) -> torch.Tensor:
    out = []
    for i in range(0, len(x), batch):
        chunk = x[i:i + batch]
        gens = [torch.Generator("cpu").manual_seed(0) for _ in chunk]
        with torch.inference_mode():
            out.append(restorer(chunk, None, "auto", generator=gens).float().clamp(0, 1))
    return torch.cat(out)


def evaluate(embedder, clean: np.ndarray, scale: int, restorer) -> list:
    x = to_t(np.stack([degrade_fixed(c, scale, 1000 * scale + i) for i, c in enumerate(clean)]))
    y = restore(restorer, x)
    gt = _embed(embedder, to_t(clean))
    lap_gt = np.array([laplacian_variance(c) for c in clean])
    base_sim = (_embed(embedder, x) * gt).sum(1)
    policies = [("no gate", None)] + [(f"gate {t:.2f}", t) for t in THRESHOLDS if t is not None]
    policies += [(f"strength {f:g} (every face)", -f) for f in FRACTIONS[1:]]
    rows = []
    for name, t in policies:
        if t is None:
            s = np.ones(len(x))
        elif t < 0:  # a fixed attenuation, no gate
            s = np.full(len(x), -t)
        else:
            s = np.array([d.strength for d in gate_strengths(embedder, x, y, [1.0] * len(x), t)])
        out = x + torch.from_numpy(s).float().view(-1, 1, 1, 1) * (y - x)
        sim = (_embed(embedder, out) * gt).sum(1)
        detail = np.array([laplacian_variance(c) for c in u8(out)]) / np.maximum(lap_gt, 1e-9)
        rows.append({"policy": name, "threshold": t, "sim": float(sim.mean()),
                     "gain": float((sim - base_sim).mean()), "detail": float(detail.mean()),
                     "lowered": float((s < 1).mean()), "input_sim": float(base_sim.mean())})
    return rows


def markdown(results: dict, args, seconds: float, n_faces: int) -> str:
    who = (f"{args.people} training people, one aligned 128 px face each" if args.split == "train" else
           f"the validation people (never trained on), up to {args.per_person} aligned 128 px faces each, none "
           "a target photo of benchmarks/quality.py")
    lines = [f"# Identity gate threshold on {args.split}-split people (the pack's own embedder)", "",
             f"{who} (`{args.data}`, seed {args.seed}), "
             f"degraded with `degrade_fixed`, restored by `{args.model}` without references at strength 1; "
             f"the gate tries fractions {FRACTIONS} of the strength, else 0. sim = the pack embedder's cosine "
             "to the clean face (mean over faces), gain = sim minus the degraded input's; detail = Laplacian "
             "variance of the face centre over the clean face's; lowered = share of faces the gate lowered. "
             f"{n_faces} faces. 2-core CPU dev machine, {seconds / 60:.1f} min.", ""]
    for scale, rows in results.items():
        lines += [f"**x{scale}** (input sim {rows[0]['input_sim']:.3f})", "",
                  "| policy | sim | gain over input | detail ratio | lowered |", "|---|---|---|---|---|"]
        for r in rows:
            lines.append(f"| {r['policy']} | {r['sim']:.3f} | {r['gain']:+.3f} | {r['detail']:.2f} | {r['lowered']:.0%} |")
        lines.append("")
    return "\n".join(lines) + "\n"


def main(argv: Optional[Sequence[str]] = None) -> int:
    from restorer_core.model_zoo import load_any_restorer

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=".traindata/faces128.npz")
    ap.add_argument("--model", default=None, help="restorer (default: the embedded default)")
    ap.add_argument("--people", type=int, default=200)
    ap.add_argument("--scales", default="4,8,16")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--split", choices=("train", "val"), default="train",
                    help="train: --people training people; val: the validation people's non-target photos")
    ap.add_argument("--per-person", type=int, default=4, help="with --split val: photos per person")
    ap.add_argument("--write", default=None, metavar="MD")
    args = ap.parse_args(argv)
    if args.write and Path(args.write).exists():
        ap.error(f"{args.write} exists; choose a new name")
    if not Path(args.data).is_file():
        ap.error(f"face cache {args.data} not found")
    t0 = time.perf_counter()
    torch.set_num_threads(2)
    restorer = load_any_restorer(args.model, device="cpu", dtype="float32")
    embedder = load_identity_embedder()
    clean = (training_faces(args.data, args.people, args.seed) if args.split == "train"
             else held_out_faces(args.data, args.per_person, args.seed))
    results = {int(s): evaluate(embedder, clean, int(s), restorer) for s in args.scales.split(",") if s}
    md = markdown(results, args, time.perf_counter() - t0, len(clean))
    print(md)
    if args.write:
        write_text_atomic(Path(args.write), md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
