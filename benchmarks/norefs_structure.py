"""Pick the no-references policy on TRAINING-split people: strength scale and structure gate.

Without references the restorer guesses who a blurred face is. This measures, with the dlib judge,
how the guess moves a face's identity at x4 / x8 / x16 (benchmarks/quality.py's degradation) when
its automatic strength is scaled by 0.25 / 0.5 / 0.75, and the face's structure reading
(restorer_core.restore.detail.structure_measure). Policies "scale x smoothstep((structure - keep) /
(full - keep))" are then scored per face by interpolating between the measured strengths (0 is
the input itself), and the library's own defaults are run as a check of the interpolation.

Training-split people, never the held-out ones: the held-out table (quality.py) checks the pick.
The model has seen these photos, so its guesses here are if anything better than on new people.

    python benchmarks/norefs_structure.py --data .traindata/faces128.npz --people 60 \
        --write benchmarks/results/norefs_structure_train.md
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quality as Q  # noqa: E402  (the held-out table's degradation, crops and dlib judge)

SCALES = (4, 8, 16)
STRENGTHS = (0.25, 0.5, 0.75)
TOPS = (0.75, 0.6, 0.5)
GATES = ((0.0, 0.0), (0.45, 0.7), (0.5, 0.75), (0.55, 0.8), (0.6, 0.9))  # (keep, full); (0, 0): no gate


def training_people(data: str, n: int, seed: int) -> list:
    """(person, photo file) of n seeded training-split people, one photo each."""
    with np.load(data, allow_pickle=False) as z:
        names, split, ident, id_names = z["filenames"], z["split"], z["identity"], z["identity_names"]
    people: dict = {}
    for name, s, i in zip(names, split, ident):
        if int(s) == Q.SPLIT_TRAIN:
            people.setdefault(str(id_names[i]), []).append(str(name))
    order = sorted(people)
    rng = np.random.default_rng(seed)
    chosen = [order[j] for j in rng.permutation(len(order))[:n]]
    return [(p, sorted(people[p])[int(rng.integers(len(people[p])))]) for p in chosen]


def smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def interpolate(curves: np.ndarray, strength: np.ndarray) -> np.ndarray:
    """Per face: the value at `strength` from values at 0, STRENGTHS (columns), linear between."""
    grid = np.array((0.0,) + STRENGTHS)
    return np.array([np.interp(s, grid, row) for s, row in zip(strength, curves)])


def run(data: str, people: int, seed: int, noise_seed: int, threads: int) -> dict:
    from restorer_core.faces.detect import create_detector
    from restorer_core.faces.detect.base import box_iou
    from restorer_core.model_zoo import load_any_restorer
    from restorer_core.restore.detail import structure_measure
    from restorer_core.restore.pipeline import FaceRestorePipeline, RestoreOptions

    torch.set_num_threads(threads)
    cv2.setNumThreads(1)
    t0 = time.perf_counter()
    root = Q.shared_dir() / "data" / "faces"
    detector = create_detector("yunet")
    pipe = FaceRestorePipeline(load_any_restorer(None, device="cpu", dtype="float32"))
    pipe.add_detector(RestoreOptions(), detector)
    rows = ["input"] + [f"s{s:g}" for s in STRENGTHS] + ["defaults"]
    crops: dict = {(c, r): [] for c in SCALES for r in rows}
    structure: dict = {c: [] for c in SCALES}
    hq = []
    for i, (person, name) in enumerate(training_people(data, people, seed)):
        clean = Q.read_rgb(root / name)
        det = Q.main_face(clean, detector)
        if det is None:
            continue
        hq.append(Q.crop_at(clean, det, Q.CROP))
        for c in SCALES:
            lq = Q.condition_input(clean, f"x{c}", noise_seed + 7919 * i + c)
            crops[(c, "input")].append(Q.crop_at(lq, det, Q.CROP))
            located = pipe.locate_images([lq], None, RestoreOptions())
            mine = [f for f in located.faces if box_iou(np.asarray(f.box)[None], np.asarray(det.box)[None])[0, 0] > 0.3]
            structure[c].append(structure_measure(mine[0].crop) if mine else np.nan)
            for s in STRENGTHS:
                options = RestoreOptions(use_cache=False, no_refs_strength=s, no_refs_structure_gate=False)
                out = pipe.restore_images([lq], None, options)[0]
                crops[(c, f"s{s:g}")].append(Q.crop_at(np.asarray(out.pixels), det, Q.CROP))
            out = pipe.restore_images([lq], None, RestoreOptions(use_cache=False))[0]
            crops[(c, "defaults")].append(Q.crop_at(np.asarray(out.pixels), det, Q.CROP))
        print(f"  {i + 1}/{people} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
    ident = Q.DlibIdentity(256)
    hq_arr = np.stack(hq)
    ident.fit_box(hq_arr)
    target = ident.descriptors(hq_arr)
    hq_lap = np.array([Q.laplacian_variance(x) for x in hq_arr])
    sim, detail = {}, {}
    for key, faces in crops.items():
        arr = np.stack(faces)
        sim[key] = 1.0 - np.linalg.norm(ident.descriptors(arr) - target, axis=1) / Q.DLIB_SCALE
        detail[key] = np.array([Q.laplacian_variance(x) for x in arr]) / np.maximum(hq_lap, 1e-9)
    return {"sim": sim, "detail": detail, "structure": {c: np.array(v) for c, v in structure.items()},
            "rows": rows, "n": len(hq), "seconds": time.perf_counter() - t0}


def markdown(res: dict, argv: Sequence[str]) -> str:
    from restorer_core.restore.identity_gate import NO_REFS_STRENGTH, STRUCTURE_FULL, STRUCTURE_KEEP

    sim, detail, structure = res["sim"], res["detail"], res["structure"]
    se = lambda d: d.std() / np.sqrt(len(d))  # noqa: E731
    out = [f"# No references: strength scale and structure gate on {res['n']} training-split people (dlib)", "",
           f"`python benchmarks/norefs_structure.py {' '.join(argv)}` on the 2-core CPU dev machine, "
           f"{res['seconds'] / 60:.1f} min. The embedded default model; each person's photo degraded as in "
           "benchmarks/quality.py; dlib similarity to the clean photo (1 - d / 1.2) on the 128 px crop; detail = "
           "Laplacian variance of the face centre over the clean crop's. Training-split people: the model "
           "has seen these photos. The held-out table (quality.py) checks the pick.", "",
           "## Measured (automatic strength x the scale, no gate; `defaults`: the library's policy)", "",
           "| scale | row | dlib sim | minus input (± s.e.) | detail |", "|---|---|---|---|---|"]
    for c in SCALES:
        base = sim[(c, "input")]
        for r in res["rows"]:
            d = sim[(c, r)] - base
            out.append(f"| x{c} | {r} | {sim[(c, r)].mean():.3f} | {d.mean():+.3f} ± {se(d):.3f} | "
                       f"{detail[(c, r)].mean():.2f} |")
    out += ["", "Structure reading (10th / 50th / 90th percentile): " + "; ".join(
        f"x{c} {' / '.join(f'{v:.2f}' for v in np.nanpercentile(structure[c], [10, 50, 90]))}" for c in SCALES), "",
        "## Policies, per face interpolated between the measured strengths", "",
        "scale x smoothstep((structure - keep) / (full - keep)); keep = full = 0: no gate.", "",
        "| scale | keep | full | " + " | ".join(f"x{c} minus input (detail)" for c in SCALES) + " |",
        "|---|---|---|" + "---|" * len(SCALES)]
    for top in TOPS:
        for keep, full in GATES:
            cells = []
            for c in SCALES:
                s_struct = np.nan_to_num(structure[c], nan=0.0)
                factor = smoothstep((s_struct - keep) / (full - keep)) if full > keep else np.ones_like(s_struct)
                strength = top * factor
                cols = [(c, "input")] + [(c, f"s{s:g}") for s in STRENGTHS]
                gain = interpolate(np.stack([sim[k] for k in cols], 1), strength) - sim[(c, "input")]
                det = interpolate(np.stack([detail[k] for k in cols], 1), strength)
                cells.append(f"{gain.mean():+.3f} ({det.mean():.2f})")
            out.append(f"| {top:g} | {keep:g} | {full:g} | " + " | ".join(cells) + " |")
    out += ["", f"The library's defaults: scale {NO_REFS_STRENGTH:g}, keep {STRUCTURE_KEEP:g}, full {STRUCTURE_FULL:g} "
            "(restorer_core/restore/identity_gate.py); the `defaults` rows above are that policy run for real.", ""]
    return "\n".join(out)


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=".traindata/faces128.npz", help="face cache .npz (restorer_core.train.prepare)")
    ap.add_argument("--people", type=int, default=60)
    ap.add_argument("--seed", type=int, default=2026, help="which people and photos")
    ap.add_argument("--noise-seed", type=int, default=1234, help="the degradations' (quality.py's seed)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--write", default=None, metavar="MD", help="write the markdown here (never overwrites)")
    a = ap.parse_args(argv)
    out = Q.results_path(ap, a.write)
    md = markdown(run(a.data, a.people, a.seed, a.noise_seed, a.threads), argv)
    print(md)
    Q.write_markdown(out, md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
