#!/usr/bin/env python
"""Face verification quality: shipped MobileFaceNet (restorer_core.face_id) vs identity_embedder.

On the identity-disjoint validation people of the training cache (restorer_core.train.prepare):
all pairs of crops, same person = positive. Rows: clean vs clean, and each crop degraded x4 / x8
(restorer_core.train.degrade.degrade_fixed, seed derived from the crop index) vs every other
clean crop. Metrics: ROC AUC, EER, TAR at FAR 1e-2. Also the same-person cosine threshold with
the best balanced accuracy, fitted on TRAINING people (a seeded sample of their crops), and that
threshold's balanced accuracy on the validation people.

    python benchmarks/face_id_compare.py --cache .traindata/faces128.npz --write
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from restorer_core.io.atomic import write_text_atomic  # noqa: E402
from restorer_core.face_id import embed_crops, load_face_id  # noqa: E402
from restorer_core.faces.identity import embed_faces, load_identity_embedder  # noqa: E402
from restorer_core.train.dataset import FaceCache  # noqa: E402
from restorer_core.train.degrade import degrade_fixed  # noqa: E402


def roc_metrics(scores: np.ndarray, labels: np.ndarray) -> dict:
    """AUC (ties counted half), EER, TAR at FAR 1e-2 of similarity scores."""
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], labels[order].astype(bool)
    npos, nneg = int(y.sum()), int((~y).sum())
    # group ties so that thresholds sit between distinct scores
    last = np.r_[np.flatnonzero(np.diff(s) != 0), len(s) - 1]
    tp, fp = np.cumsum(y)[last], np.cumsum(~y)[last]
    tpr, fpr = np.r_[0.0, tp / npos], np.r_[0.0, fp / nneg]
    auc = float(np.trapezoid(tpr, fpr)) if hasattr(np, "trapezoid") else float(np.trapz(tpr, fpr))
    fnr = 1.0 - tpr
    i = int(np.argmin(np.abs(fnr - fpr)))
    eer = float((fnr[i] + fpr[i]) / 2)
    ok = fpr <= 1e-2
    tar = float(tpr[ok].max()) if ok.any() else 0.0
    return {"auc": auc, "eer": eer, "tar": tar}


def best_threshold(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Cosine threshold maximising balanced accuracy (TPR + TNR) / 2 -> (threshold, accuracy)."""
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], labels[order].astype(bool)
    tpr = np.cumsum(y) / y.sum()
    tnr = 1.0 - np.cumsum(~y) / (~y).sum()
    bal = (tpr + tnr) / 2
    last = np.r_[np.flatnonzero(np.diff(s) != 0), len(s) - 1]
    j = last[int(np.argmax(bal[last]))]
    thr = float((s[j] + s[j + 1]) / 2) if j + 1 < len(s) else float(s[j])
    return thr, float(bal[j])


def balanced_accuracy(scores: np.ndarray, labels: np.ndarray, thr: float) -> float:
    y = labels.astype(bool)
    return float(((scores[y] >= thr).mean() + (scores[~y] < thr).mean()) / 2)


def pair_scores(a: np.ndarray, b: np.ndarray, ida: np.ndarray, idb: np.ndarray, same_set: bool):
    """Cosines and same-person labels of all pairs (i < j when a and b are the same crops, else i != j)."""
    sim = a @ b.T
    same = ida[:, None] == idb[None, :]
    if same_set:
        iu = np.triu_indices(len(a), 1)
        return sim[iu], same[iu]
    mask = ~np.eye(len(a), dtype=bool)
    return sim[mask], same[mask]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cache", default=str(REPO / ".traindata" / "faces128.npz"))
    ap.add_argument("--train-sample", type=int, default=3000, help="training crops used to fit the threshold")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--write", action="store_true", help="write the markdown (--out)")
    ap.add_argument("--out", default=str(HERE / "results" / "face_id_compare.md"), help="where --write writes")
    ap.add_argument("--face-id", action="append", default=[], metavar="NAME=FILE",
                    help="also a converted face-ID file (python -m restorer_core.face_id.convert), e.g. "
                         "'HSE FaceRes=faceres.safetensors'; repeatable")
    ap.add_argument("--no-shipped", action="store_true", help="only the --face-id networks")
    args = ap.parse_args()
    torch.set_num_threads(2)
    t0 = time.time()
    cache = FaceCache.load(args.cache)
    val = cache.indices("val")
    train = cache.indices("train")
    rng = np.random.default_rng(args.seed)
    train = np.sort(rng.choice(train, size=min(args.train_sample, len(train)), replace=False))
    clean = cache.images(val)
    ids = cache.identity[val]
    degraded = {
        sc: np.stack([degrade_fixed(img, sc, int(np.random.SeedSequence([args.seed, int(i), sc]).generate_state(1)[0]))
                      for img, i in zip(clean, val)])
        for sc in (4, 8)
    }
    train_imgs, train_ids = cache.images(train), cache.identity[train]
    models = {} if args.no_shipped else {
        "MobileFaceNet (face_id, 192-d)": (load_face_id(), embed_crops),
        "identity_embedder (128-d)": (load_identity_embedder(), embed_faces),
    }
    for spec in args.face_id:
        name, _, path = spec.partition("=")
        if not path:
            ap.error(f"--face-id takes NAME=FILE, got {spec!r}")
        net = load_face_id(path)
        models[f"{name} (face_id, {net.embedding_dim}-d, {net.net.framing})"] = (net, embed_crops)
    rows, thresholds = [], {}
    for name, (model, embed) in models.items():
        e_clean = embed(model, clean)
        for cond, e in [("clean vs clean", None), ("x4 vs clean", embed(model, degraded[4])), ("x8 vs clean", embed(model, degraded[8]))]:
            s, y = pair_scores(e_clean, e_clean, ids, ids, True) if e is None else pair_scores(e, e_clean, ids, ids, False)
            m = roc_metrics(s, y)
            rows.append((name, cond, m, float(s[y].mean()), float(s[~y].mean())))
        e_train = embed(model, train_imgs)
        st, yt = pair_scores(e_train, e_train, train_ids, train_ids, True)
        thr, acc = best_threshold(st, yt)
        sv, yv = pair_scores(e_clean, e_clean, ids, ids, True)
        thresholds[name] = (thr, acc, balanced_accuracy(sv, yv, thr))
    npos = int((ids[:, None] == ids[None]).sum() - len(ids)) // 2
    lines = [
        "# Face verification: " + " vs ".join(n.split(" (")[0] for n in models),
        "",
        f"Machine: the 2-core CPU dev machine, torch {torch.__version__}; {time.time() - t0:.0f} s. "
        f"Command: `python benchmarks/face_id_compare.py {' '.join(sys.argv[1:])}`.",
        "",
        f"Data: `{Path(args.cache).name}` (128 px FFHQ-aligned crops, restorer_core.train.prepare). Validation people "
        f"(identity-disjoint split): {len(set(ids.tolist()))} people, {len(val)} crops, {npos} same-person pairs in the "
        "clean-vs-clean row. Degraded rows: each crop degraded with `degrade_fixed(crop, scale, seed)` (seed from "
        "the crop index) against every other clean crop. Converted face-ID networks see the crops through "
        "FaceIdEmbedder in their framing (arcface: FFHQ -> ArcFace 112 px warp; centre:F: the central fraction "
        "F of the crop resized to the network's input); identity_embedder through its own crop box.",
        "",
        "| model | pairs | ROC AUC | EER | TAR @ FAR 1e-2 | mean cos same | mean cos different |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, cond, m, ps, ns in rows:
        lines.append(f"| {name} | {cond} | {m['auc']:.4f} | {m['eer'] * 100:.1f}% | {m['tar']:.3f} | {ps:.4f} | {ns:.4f} |")
    lines += [
        "",
        f"Same-person cosine threshold (best balanced accuracy), fitted on {len(train)} crops of "
        f"{len(set(train_ids.tolist()))} TRAINING people (seed {args.seed}), then applied to the validation people:",
        "",
        "| model | threshold | balanced acc. (train people) | balanced acc. (val people, clean) |",
        "|---|---|---|---|",
    ]
    for name, (thr, acc, vacc) in thresholds.items():
        lines.append(f"| {name} | {thr:.4f} | {acc:.3f} | {vacc:.3f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.write:
        out = Path(args.out)
        write_text_atomic(out, text)
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
