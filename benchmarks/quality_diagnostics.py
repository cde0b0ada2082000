#!/usr/bin/env python
"""Where two of issue 13's misses come from, on the same held-out people and degradations as
benchmarks/quality.py.

A. PSNR (target: restored >= bicubic + 1 dB at x4 and x8). The restorer alone on its own 128 px
   input (the pipeline's crop, cut at the clean photo's alignment, scored against the clean photo
   cut the same way) versus the whole pipeline (detection on the degraded photo, automatic
   strength, paste-back with each mask shape, colour fix on/off), scored as quality.py scores it
   (the clean photo's 128 px aligned crop). The paste mask decides how much of the restored crop
   reaches the photo: "landmarks" (the default) keeps the input's hair and background.

B. Identity (target: 4 references >= no references + .05 dlib similarity at x8). The restorer has
   two reference channels: shared attention over the references' keys/values (InstantRestore) and
   the references' mean face-ID embedding as 4 extra prompt tokens (restorer_core/models/
   ref_identity.py). Each is switched off in turn: "shared attention only" drops the embedding,
   "identity tokens only" runs the restoring step with no reference keys/values installed
   (OneStepRestorer.forward's run_step hook). The wrong person's 4 references, both channels, as
   in quality.py.

    python benchmarks/quality_diagnostics.py --data .traindata/faces128.npz [--model PATH] [--write MD]
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Optional, Sequence

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
for path in (REPO, HERE):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import quality as Q  # noqa: E402
from restorer_core.faces.align import align_face  # noqa: E402
from restorer_core.restore.paste import PasteConfig  # noqa: E402
from restorer_core.restore.pipeline import resize_square  # noqa: E402

PASTES = {"landmarks (default)": PasteConfig(), "ellipse": PasteConfig(mask="ellipse"),
          "box": PasteConfig(mask="box"), "box, no colour fix": PasteConfig(mask="box", color_fix="none")}
CHANNELS = ("no refs", "shared attention only", "identity tokens only", "both (shipped)", "wrong person, both")


def model_frame(rgb: np.ndarray, det, crop_size: int, res: int) -> np.ndarray:
    """The restorer's input as the pipeline makes it (the aligned crop resized to `res`), float 0..1."""
    return resize_square(align_face(rgb, det, crop_size).crop, res)


def run_alone(restorer, crop: np.ndarray) -> np.ndarray:
    x = torch.from_numpy(np.ascontiguousarray(crop)).permute(2, 0, 1)[None]
    with torch.inference_mode():
        return restorer(x, None, "auto")[0].permute(1, 2, 0).numpy()


def channel_runner(restorer, channel: str):
    """The pipeline's runner for one reference-channel ablation."""
    def tokens_only(x, refs, mode, generator=None):
        return restorer(x, refs, mode, generator, run_step=lambda inputs, _refs: restorer.restore_step(**inputs))

    def attention_only(x, refs, mode, generator=None):
        return restorer(x, replace(refs, identity=None) if refs is not None else None, mode, generator)

    return {"identity tokens only": tokens_only, "shared attention only": attention_only}.get(channel, restorer)


def run(a) -> dict:
    from restorer_core.restore.bank import build_bank
    from restorer_core.faces.detect import create_detector
    from restorer_core.model_zoo import describe_model, load_any_restorer
    from restorer_core.restore.pipeline import FaceRestorePipeline, RestoreOptions

    t0 = time.perf_counter()
    torch.set_num_threads(a.threads)
    cv2.setNumThreads(1)
    cfg = Q.QualityConfig(data=a.data, model=a.model, people=a.people)
    samples = Q.validation_samples(cfg, Q.shared_dir() / "data" / "faces")
    detector = create_detector("yunet")
    restorer = load_any_restorer(a.model, device="cpu", dtype="float32")
    pipe = FaceRestorePipeline(restorer, speed="eager")
    pipe.add_detector(RestoreOptions(), detector)
    res, crop_size = pipe.resolution, pipe.crop_size(RestoreOptions())
    psnr_rows: dict = {}
    ident_rows: dict = {}
    hq, person = [], []
    for i, s in enumerate(samples):
        clean = Q.read_rgb(s.target)
        det = Q.main_face(clean, detector)
        if det is None:
            continue
        hq.append(Q.crop_at(clean, det, Q.CROP))
        person.append(s.person)
        target_frame = Q._u8(model_frame(clean, det, crop_size, res))
        banks = {"right": build_bank(s.refs, detector), "wrong": build_bank(s.wrong_refs, detector)}
        for cond in ("x4", "x8", "x16"):
            lq = Q.condition_input(clean, cond, cfg.seed + 7919 * i + int(cond[1:]))
            if cond != "x16":  # A: PSNR
                rows = psnr_rows.setdefault(cond, {})
                frame = model_frame(lq, det, crop_size, res)
                rows.setdefault("bicubic (restorer's frame)", []).append(Q.psnr(Q._u8(frame)[None], target_frame[None])[0])
                rows.setdefault("restorer alone (restorer's frame)", []).append(
                    Q.psnr(Q._u8(run_alone(restorer, frame))[None], target_frame[None])[0])
                rows.setdefault("bicubic", []).append(Q.psnr(Q.crop_at(lq, det, Q.CROP)[None], hq[-1][None])[0])
                for name, paste in PASTES.items():
                    out = pipe.restore_images([lq], None, RestoreOptions(use_cache=False, paste=paste))[0].pixels
                    rows.setdefault(f"pipeline, mask {name}", []).append(
                        Q.psnr(Q.crop_at(np.asarray(out), det, Q.CROP)[None], hq[-1][None])[0])
            if cond != "x4":  # B: identity channels (crops scored with dlib below)
                rows = ident_rows.setdefault(cond, {})
                for channel in CHANNELS:
                    bank = None if channel == "no refs" else banks["wrong" if channel.startswith("wrong") else "right"]
                    pipe.runner = channel_runner(restorer, channel)
                    out = pipe.restore_images([lq], bank, RestoreOptions(use_cache=False))[0].pixels
                    rows.setdefault(channel, []).append(Q.crop_at(np.asarray(out), det, Q.CROP))
                pipe.runner = restorer
        done = time.perf_counter() - t0
        print(f"  sample {i + 1}/{len(samples)} ({done:.0f} s)", file=sys.stderr, flush=True)

    ident = Q.DlibIdentity(cfg.face_size)
    hq_arr = np.stack(hq)
    ident.fit_box(hq_arr)
    target_desc = ident.descriptors(hq_arr)
    people = np.array(person)

    def summary(values: np.ndarray, base: Optional[np.ndarray]) -> dict:
        per = Q.per_person(values, people)
        out = {"mean": float(per.mean()), "std": float(per.std())}
        if base is not None:
            diff = Q.per_person(values - base, people)
            lo, hi = Q.bootstrap_ci(diff, cfg.bootstrap, cfg.bootstrap_seed)
            out.update(margin=float(diff.mean()), ci=[float(lo), float(hi)])
        return out

    psnr_out = {}
    for cond, rows in psnr_rows.items():
        arr = {k: np.array(v) for k, v in rows.items()}
        psnr_out[cond] = {k: summary(v, arr["bicubic (restorer's frame)"] if "frame" in k else arr["bicubic"])
                          for k, v in arr.items()}
    ident_out = {}
    for cond, rows in ident_rows.items():
        sims = {}
        for k, crops in rows.items():
            dist = np.linalg.norm(ident.descriptors(np.stack(crops)) - target_desc, axis=1)
            sims[k] = 1.0 - dist / Q.DLIB_SCALE
        ident_out[cond] = {k: summary(v, sims["no refs"]) for k, v in sims.items()}
    return {"people": len(hq), "model": describe_model(restorer), "psnr": psnr_out, "identity": ident_out,
            "seconds": time.perf_counter() - t0, "threads": a.threads, "torch": torch.__version__,
            "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads"}


def markdown(r: dict) -> str:
    def row(name: str, s: dict, digits: int) -> str:
        margin = (f"{s['margin']:+.{digits}f} [{s['ci'][0]:+.{digits}f}, {s['ci'][1]:+.{digits}f}]"
                  if "margin" in s else "–")
        return f"| {name} | {s['mean']:.{digits}f} ± {s['std']:.{digits}f} | {margin} |"

    lines = ["# Quality diagnostics: where the PSNR and reference-identity misses come from",
             "", f"Model: `{r['model'].get('path', r['model'])}` (sha256 {r['model'].get('weights_sha256', '?')[:12]}…). {r['people']} held-out people (one target each, "
             f"the samples and seeds of benchmarks/quality.py). Run: `python benchmarks/quality_diagnostics.py` on the "
             f"2-core CPU dev machine, torch {r['torch']} ({r['threads']} thread), {r['seconds'] / 60:.1f} min. "
             "Means over people ± std; margins with a 95% bootstrap CI over people.", "",
             "## A. PSNR: the restorer alone and through the pipeline's paste-back", "",
             "Margins: the restorer-frame rows against bicubic in the restorer's frame; the pipeline rows "
             "against the bicubic photo (as quality.py scores them).", ""]
    for cond, rows in r["psnr"].items():
        lines += [f"**{cond}**", "", "| row | PSNR (dB) | margin over bicubic |", "|---|---|---|"]
        lines += [row(k, s, 2) for k, s in rows.items()] + [""]
    lines += ["## B. Identity: which reference channel carries it (dlib similarity 1 − d/1.2)", "",
              "Margins against the same faces restored without references.", ""]
    for cond, rows in r["identity"].items():
        lines += [f"**{cond}**", "", "| references | dlib similarity | margin over no refs |", "|---|---|---|"]
        lines += [row(k, s, 3) for k, s in rows.items()] + [""]
    return "\n".join(lines) + "\n"


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=Q.QualityConfig.data, help="face cache .npz (restorer_core.train.prepare)")
    ap.add_argument("--model", default=None, help="the restorer (default: the embedded default)")
    ap.add_argument("--people", type=int, default=0, help="only the first N validation people (0: all)")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    ap.add_argument("--write", default=None, metavar="MD", help="write the markdown here and the JSON next to "
                    "it (.json); never overwrites")
    a = ap.parse_args(argv)
    out = Q.results_path(ap, a.write)
    r = run(a)
    md = markdown(r)
    print(md)
    Q.write_results(out, r, md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
