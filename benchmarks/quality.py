#!/usr/bin/env python
"""Quality of the shipped default restorer on held-out people: PSNR, SSIM and dlib identity.

Validation people (the face cache's identity split; never seen in training) give fixed samples:
an HQ target, its LQ at x4 and x8 (``degrade_fixed``, fixed seeds) and 4 clean references of
the same person. Rows per scale: bicubic and Lanczos upsampling of the same small degraded image,
the model without references (visual prompt only) and with the first 1, 2 and 4 references
(visual prompt + reference attention). Every output is rounded to uint8 before scoring, so all
rows are treated the same.

Identity: dlib's ResNet face descriptor (face_recognition_models' weights). Each 128 px crop is
upscaled to 256 px with Lanczos, dlib's 5-point shape predictor runs inside one fixed rectangle
(size and height from dlib's HOG detector on the HQ targets, centred on the FFHQ template; the
crops are aligned, so one box fits all), and the descriptor is compared with the target's: cosine similarity and euclidean
distance (dlib's same-person threshold is 0.6).

Means are reported over samples and over people (each person averaged first); paired margins
(4 refs - bicubic, 4 refs - no refs, no refs - bicubic) come with their std over people and a bootstrap 95% CI.

    python benchmarks/quality.py --data .traindata/faces128.npz            # print the tables
    python benchmarks/quality.py --data .traindata/faces128.npz --write    # also update results/
    python benchmarks/quality.py --render    # rewrite results/quality.md from results/quality.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional, Sequence

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from restorer_core.atomic import write_text_atomic  # noqa: E402
from restorer_core.align import template_landmarks  # noqa: E402
from restorer_core.models.reference_kv import ReferenceKV  # noqa: E402
from restorer_core.train.dataset import (  # noqa: E402
    FaceCache,
    ValidationSet,
    _derived_seed,
    build_validation_set,
)
from restorer_core.train.degrade import degrade_fixed  # noqa: E402
from restorer_core.train.losses import ssim as ssim_torch  # noqa: E402
from restorer_core.train.prepare import SPLIT_TRAIN  # noqa: E402

RESULTS_MD = HERE / "results" / "quality.md"
RESULTS_JSON = HERE / "results" / "quality.json"
DLIB_SAME_PERSON = 0.6
METRICS = ("id_cos", "id_dist", "id_match", "psnr", "ssim")
METRIC_LABELS = {"id_cos": "ID cos ↑", "id_dist": "ID dist ↓", "id_match": "dist < 0.6 ↑",
                 "psnr": "PSNR ↑", "ssim": "SSIM ↑"}
MARGIN_METRICS = ("id_cos", "id_dist", "psnr", "ssim")


@dataclass(frozen=True)
class QualityConfig:
    """What is measured and how; stored with the results."""

    data: str = ".traindata/faces128.npz"
    model: Optional[str] = None  # None: the embedded default restorer
    scales: tuple = (4, 8)
    num_refs: int = 4
    ref_counts: tuple = (1, 2, 4)  # the first k of the num_refs references
    seed: int = 1234
    targets_per_identity: int = 6
    limit: int = 0  # score only the first N samples (quick checks); 0 = all
    batch: int = 8
    threads: int = 1
    face_size: int = 256  # crops are Lanczos-upscaled to this before dlib
    bootstrap: int = 10000
    bootstrap_seed: int = 0


# ----------------------------------------------------------------------------- rows


def row_names(ref_counts: Sequence[int]) -> list:
    return ["bicubic", "lanczos", "no refs"] + [f"{k} ref" + ("s" if k > 1 else "") for k in ref_counts]


def small_lq(vset: ValidationSet, scale: int, seed: int) -> np.ndarray:
    """The small degraded images behind ``vset.lq[scale]`` (same seeds as build_validation_set)."""
    return np.stack([degrade_fixed(hq, scale, _derived_seed(seed, int(t), scale), upscale=False)
                     for hq, t in zip(vset.hq, vset.target_index)])


def upsample(small: np.ndarray, size: int, interpolation: int) -> np.ndarray:
    """uint8 [N, s, s, 3] -> uint8 [N, size, size, 3], resized as float 0..1 (like degrade_fixed)."""
    out = np.empty((len(small), size, size, 3), np.uint8)
    for i, img in enumerate(small):
        up = cv2.resize(img.astype(np.float32) / 255.0, (size, size), interpolation=interpolation)
        out[i] = np.round(np.clip(up, 0.0, 1.0) * 255.0).astype(np.uint8)
    return out


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 [..., H, W, 3] -> float [..., 3, H, W] in 0..1."""
    t = torch.from_numpy(np.ascontiguousarray(images)).float() / 255.0
    return t.movedim(-1, -3).contiguous()


def to_uint8(t: torch.Tensor) -> np.ndarray:
    return (t.float().clamp(0, 1) * 255.0).round().to(torch.uint8).movedim(-3, -1).numpy()


def first_refs(kv: ReferenceKV, k: int) -> ReferenceKV:
    """The K/V of the first k references (each reference is encoded on its own, so this equals
    encoding only those k)."""
    mask = kv.mask[:, :k] if kv.mask is not None else None
    return ReferenceKV(list(kv.layers), [x[:, :k] for x in kv.keys], [x[:, :k] for x in kv.values], mask)


@torch.no_grad()
def restore_all(model, vset: ValidationSet, cfg: QualityConfig) -> dict:
    """{scale: {row: uint8 [N, S, S, 3]}} for the model rows; references encoded once per sample."""
    n = len(vset)
    names = row_names(cfg.ref_counts)[2:]
    out = {sc: {r: np.empty_like(vset.hq) for r in names} for sc in cfg.scales}
    start = time.perf_counter()
    for lo in range(0, n, cfg.batch):
        hi = min(n, lo + cfg.batch)
        kv = model.encode_references(to_tensor(vset.refs[lo:hi]))
        for sc in cfg.scales:
            lq = to_tensor(vset.lq[sc][lo:hi])
            out[sc]["no refs"][lo:hi] = to_uint8(model(lq, None, mode="visual_prompt"))
            for k, name in zip(cfg.ref_counts, names[1:]):
                out[sc][name][lo:hi] = to_uint8(model(lq, first_refs(kv, k), mode="both"))
        done = time.perf_counter() - start
        print(f"  restored {hi}/{n} samples ({done:.0f} s, ~{done / hi * (n - hi):.0f} s left)",
              file=sys.stderr, flush=True)
    return out


# ----------------------------------------------------------------------------- pixel metrics


def psnr(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per-image PSNR (dB) of uint8 [N, H, W, 3] images on 0..1 RGB."""
    err = ((pred.astype(np.float64) - target.astype(np.float64)) / 255.0) ** 2
    mse = np.maximum(err.reshape(len(pred), -1).mean(1), 1e-12)
    return 10.0 * np.log10(1.0 / mse)


def ssim(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per-image SSIM on 0..1 RGB (the training loss's definition: 11 px Gaussian window, sigma 1.5,
    valid filtering, mean over channels and positions)."""
    p, t = to_tensor(pred), to_tensor(target)
    return np.array([float(ssim_torch(p[i:i + 1], t[i:i + 1])) for i in range(len(p))])


# ----------------------------------------------------------------------------- identity


def dlib_model_files() -> tuple:
    """(5-point shape predictor, ResNet descriptor) paths inside the installed face_recognition_models
    (found without importing it: its __init__ needs pkg_resources)."""
    import importlib.util

    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("face_recognition_models is not installed: pip install face_recognition_models")
    root = Path(list(spec.submodule_search_locations)[0]) / "models"
    files = (root / "shape_predictor_5_face_landmarks.dat", root / "dlib_face_recognition_resnet_model_v1.dat")
    for f in files:
        if not f.is_file():
            raise SystemExit(f"{f} is missing; reinstall face_recognition_models")
    return files


class DlibIdentity:
    """dlib face descriptors of FFHQ-aligned crops, all located with one fixed rectangle."""

    def __init__(self, face_size: int = 256):
        import dlib

        shape_file, net_file = dlib_model_files()
        self.dlib = dlib
        self.face_size = face_size
        self.shape_predictor = dlib.shape_predictor(str(shape_file))
        self.net = dlib.face_recognition_model_v1(str(net_file))
        self.box: Optional[tuple] = None
        self.box_detections = 0

    def upscale(self, img: np.ndarray) -> np.ndarray:
        return cv2.resize(img, (self.face_size, self.face_size), interpolation=cv2.INTER_LANCZOS4)

    def fit_box(self, images: np.ndarray) -> tuple:
        """One box for every crop: the median top, bottom and width of dlib's HOG detections (on
        images where it finds exactly one face), centred on the FFHQ template's landmark centroid.

        The detector's left/right edges come on a coarse grid, so their medians jump between two
        modes with the sample set; the width and the aligned face's centre line do not.
        """
        detector = self.dlib.get_frontal_face_detector()
        boxes = []
        for img in images:
            dets = detector(self.upscale(img), 0)
            if len(dets) == 1:
                d = dets[0]
                boxes.append((d.left(), d.top(), d.right(), d.bottom()))
        if not boxes:
            raise RuntimeError("dlib's detector found no face in the targets; are these aligned face crops?")
        b = np.array(boxes, np.float64)
        width = float(np.median(b[:, 2] - b[:, 0]))
        centre = float(template_landmarks(self.face_size)[:, 0].mean())
        self.box = (int(round(centre - width / 2)), int(round(np.median(b[:, 1]))),
                    int(round(centre + width / 2)), int(round(np.median(b[:, 3]))))
        self.box_detections = len(boxes)
        return self.box

    def shape(self, up: np.ndarray):
        if self.box is None:
            raise RuntimeError("call fit_box first")
        return self.shape_predictor(up, self.dlib.rectangle(*self.box))

    def descriptors(self, images: np.ndarray) -> np.ndarray:
        """uint8 [N, S, S, 3] RGB crops -> [N, 128] descriptors."""
        out = np.empty((len(images), 128), np.float64)
        for i, img in enumerate(images):
            up = np.ascontiguousarray(self.upscale(img))
            out[i] = np.array(self.net.compute_face_descriptor(up, self.shape(up)))
        return out

    def landmark_sheet(self, rows: list, path: str) -> None:
        """Write a PNG grid (one row per list entry of crops) with the box and the 5 points drawn."""
        tiles = []
        for crops in rows:
            line = []
            for img in crops:
                up = np.ascontiguousarray(self.upscale(img))
                sh = self.shape(up)
                vis = cv2.cvtColor(up, cv2.COLOR_RGB2BGR)
                cv2.rectangle(vis, self.box[:2], self.box[2:], (0, 255, 255), 1)
                for j in range(sh.num_parts):
                    cv2.circle(vis, (sh.part(j).x, sh.part(j).y), 3, (0, 0, 255), -1)
                line.append(vis)
            tiles.append(np.concatenate(line, axis=1))
        cv2.imwrite(path, np.concatenate(tiles, axis=0))


def identity_scores(pred: np.ndarray, target: np.ndarray) -> dict:
    """Cosine similarity, euclidean distance and same-person flag of descriptor pairs [N, 128]."""
    cos = (pred * target).sum(1) / (np.linalg.norm(pred, axis=1) * np.linalg.norm(target, axis=1))
    dist = np.linalg.norm(pred - target, axis=1)
    return {"id_cos": cos, "id_dist": dist, "id_match": (dist < DLIB_SAME_PERSON).astype(np.float64)}


# ----------------------------------------------------------------------------- statistics


def per_person(values: np.ndarray, person: np.ndarray) -> np.ndarray:
    """Mean of values per person (people in sorted id order)."""
    ids = np.unique(person)
    return np.array([values[person == p].mean() for p in ids])


def mean_std(x: np.ndarray) -> dict:
    return {"mean": float(np.mean(x)), "std": float(np.std(x, ddof=1)) if len(x) > 1 else 0.0}


def bootstrap_ci(x: np.ndarray, reps: int, seed: int, level: float = 0.95) -> tuple:
    """Percentile bootstrap CI of the mean of x (resampling its entries with replacement)."""
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(reps, len(x)))].mean(1)
    a = (1.0 - level) / 2.0
    return float(np.quantile(means, a)), float(np.quantile(means, 1.0 - a))


def verdict(ci: tuple, higher_is_better: bool = True) -> str:
    lo, hi = ci
    if lo > 0:
        return "above" if higher_is_better else "worse"
    if hi < 0:
        return "below" if higher_is_better else "better"
    return "not distinguishable from"


# ----------------------------------------------------------------------------- run


def check_split(cache: FaceCache, vset: ValidationSet) -> int:
    """Number of validation people; raises if any of their crops is in the training split."""
    people = np.unique(vset.identity)
    for p in people:
        if np.any(cache.split[cache.by_identity[p]] == SPLIT_TRAIN):
            raise RuntimeError(f"validation person {cache.identity_names[p]} has training crops")
    return len(people)


def run(cfg: QualityConfig, landmark_sheet: Optional[str] = None) -> dict:
    t0 = time.perf_counter()
    torch.set_num_threads(cfg.threads)
    from restorer_core.model_zoo import describe_model, load_any_restorer

    cache = FaceCache.load(cfg.data)
    vset = build_validation_set(cache, scales=cfg.scales, num_refs=cfg.num_refs, seed=cfg.seed,
                                targets_per_identity=cfg.targets_per_identity)
    if cfg.limit:
        keep = np.arange(min(cfg.limit, len(vset)))
        vset = ValidationSet(vset.hq[keep], {k: v[keep] for k, v in vset.lq.items()}, vset.refs[keep],
                             vset.landmarks[keep], vset.ref_landmarks[keep], vset.identity[keep],
                             vset.target_index[keep], vset.ref_index[keep],
                             [vset.identity_names[i] for i in keep])
    people = check_split(cache, vset)
    print(f"{len(vset)} samples of {people} held-out people", file=sys.stderr)

    # baselines from the very same small degraded images the model's bicubic LQ was made from
    outputs: dict = {sc: {} for sc in cfg.scales}
    for sc in cfg.scales:
        small = small_lq(vset, sc, cfg.seed)
        bicubic = upsample(small, cache.crop_size, cv2.INTER_CUBIC)
        if not np.array_equal(bicubic, vset.lq[sc]):
            raise RuntimeError("the bicubic row differs from the validation LQ: degrade_fixed changed?")
        outputs[sc]["bicubic"] = bicubic
        outputs[sc]["lanczos"] = upsample(small, cache.crop_size, cv2.INTER_LANCZOS4)
    t_setup = time.perf_counter() - t0

    model = load_any_restorer(cfg.model, device="cpu", dtype="float32")
    t1 = time.perf_counter()
    for sc, rows in restore_all(model, vset, cfg).items():
        outputs[sc].update(rows)
    t_model = time.perf_counter() - t1

    t2 = time.perf_counter()
    ident = DlibIdentity(cfg.face_size)
    box = ident.fit_box(vset.hq)
    target_desc = ident.descriptors(vset.hq)
    ref_scores = identity_scores(ident.descriptors(vset.refs[:, 0]), target_desc)
    names = row_names(cfg.ref_counts)
    scores: dict = {}
    for sc in cfg.scales:
        scores[sc] = {}
        for name in names:
            img = outputs[sc][name]
            s = identity_scores(ident.descriptors(img), target_desc)
            s["psnr"] = psnr(img, vset.hq)
            s["ssim"] = ssim(img, vset.hq)
            scores[sc][name] = s
    t_metrics = time.perf_counter() - t2
    if landmark_sheet:
        picks = np.linspace(0, len(vset) - 1, 4).astype(int)
        sc = max(cfg.scales)
        ident.landmark_sheet([[vset.hq[i], outputs[sc]["bicubic"][i], outputs[sc]["no refs"][i],
                               outputs[sc][names[-1]][i]] for i in picks], landmark_sheet)
        print(f"landmark check sheet: {landmark_sheet}", file=sys.stderr)

    return summarize(cfg, vset, people, scores, ref_scores, box, ident.box_detections, describe_model(model), {"setup_s": t_setup, "model_s": t_model, "metrics_s": t_metrics,
                                             "total_s": time.perf_counter() - t0})


def summarize(cfg: QualityConfig, vset: ValidationSet, people: int, scores: dict, ref_scores: dict, box: tuple,
              box_n: int, described: dict, times: dict) -> dict:
    """The JSON-able results: tables, margins, provenance, machine and runtime."""
    names = row_names(cfg.ref_counts)
    person = vset.identity
    table: dict = {}
    for sc, rows in scores.items():
        table[f"x{sc}"] = {}
        for name in names:
            table[f"x{sc}"][name] = {
                m: {"samples": mean_std(rows[name][m]), "people": mean_std(per_person(rows[name][m], person))}
                for m in METRICS}
    best = names[-1]
    margins: dict = {}
    for sc, rows in scores.items():
        margins[f"x{sc}"] = {}
        for row, base in ((best, "bicubic"), (best, "no refs"), ("no refs", "bicubic")):
            key = f"{row} - {base}"
            margins[f"x{sc}"][key] = {}
            for m in MARGIN_METRICS:
                diff = per_person(rows[row][m] - rows[base][m], person)
                ci = bootstrap_ci(diff, cfg.bootstrap, cfg.bootstrap_seed)
                margins[f"x{sc}"][key][m] = {**mean_std(diff), "ci95": list(ci),
                                             "verdict": verdict(ci, higher_is_better=(m != "id_dist"))}
    n_faces = len(vset) * len(cfg.scales) * (len(names) - 2)
    per_person_ids = np.unique(person)
    return {
        "config": asdict(cfg),
        "samples": len(vset),
        "people": people,
        "samples_per_person": {"min": int(min((person == p).sum() for p in per_person_ids)),
                               "max": int(max((person == p).sum() for p in per_person_ids))},
        "identity_box_256": {"box": list(box), "from_detections": box_n,
                             "rule": "median top, bottom and width of dlib HOG boxes on the Lanczos-upscaled HQ "
                                      "targets, centred on the FFHQ template's landmark centroid"},
        "reference_photo_vs_target": {m: {"samples": mean_std(ref_scores[m]),
                                           "people": mean_std(per_person(ref_scores[m], person))}
                                      for m in ("id_cos", "id_dist", "id_match")},
        "table": table,
        "margins": margins,
        "model": {**{k: v for k, v in described.items() if k != "info"}, "path": _repo_relative(described.get("path"))},
        "model_info": described.get("info", {}),
        "machine": {"cpu": platform.processor() or platform.machine(), "logical_cores": os.cpu_count(),
                    "torch": torch.__version__, "threads": torch.get_num_threads(), "device": "cpu",
                    "dtype": "float32", "load_average_end": round(os.getloadavg()[0], 2)},
        "runtime_s": {k: round(v, 1) for k, v in times.items()},
        "model_ms_per_face_forward": round(times["model_s"] * 1000.0 / max(1, n_faces), 1),
    }


# ----------------------------------------------------------------------------- report


def _repo_relative(path: Optional[str]) -> Optional[str]:
    if not path:
        return path
    try:
        return str(Path(path).resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def _ms(d: dict, digits: int) -> str:
    return f"{d['mean']:.{digits}f} ± {d['std']:.{digits}f}"


_NOTES = {"above": "better", "below": "worse", "better": "better", "worse": "worse"}
DIGITS = {"id_cos": 3, "id_dist": 3, "id_match": 2, "psnr": 2, "ssim": 3}


def markdown(res: dict) -> str:
    cfg = res["config"]
    info = res["model_info"].get("training", {})
    tcfg = info.get("config", {})
    lines = [
        "# Quality: the shipped default restorer on held-out people",
        "",
        f"What: `{res['model']['path']}` ({res['model']['method']}, {res['model']['resolution']} px, "
        f"weights sha256 {str(res['model']['weights_sha256'])[:12]}…) against bicubic and Lanczos "
        f"upsampling, on {res['samples']} samples of {res['people']} validation people "
        f"({res['samples_per_person']['min']}–{res['samples_per_person']['max']} targets each) whose photos "
        f"were never trained on (the face cache's identity split). Each sample: an HQ 128 px aligned target, its "
        f"`degrade_fixed` LQ at x{' and x'.join(str(s) for s in cfg['scales'])} (blur, area downsampling, noise, "
        f"JPEG; fixed seeds), and {cfg['num_refs']} clean other photos of the same person as references "
        f"(`build_validation_set(seed={cfg['seed']}, targets_per_identity={cfg['targets_per_identity']})`).",
        "",
        "Rows: bicubic / Lanczos upsampling of the same small degraded image (bicubic is exactly the "
        "model's input); the model with the visual prompt only (`no refs`); the model with the visual "
        "prompt and the first 1, 2, 4 references (mode `both`). All outputs are rounded to uint8.",
        "",
        "Metrics against the HQ target: PSNR and SSIM on the 128 px RGB crops in [0, 1] (SSIM: 11 px "
        "Gaussian window, sigma 1.5, valid filtering). Identity: dlib's ResNet descriptor "
        "(`dlib_face_recognition_resnet_model_v1.dat`): crops Lanczos-upscaled to "
        f"{cfg['face_size']} px, 5-point shape found in one fixed box {tuple(res['identity_box_256']['box'])} "
        f"(median top, bottom and width of dlib's HOG detections on the "
        f"{res['identity_box_256']['from_detections']} targets, centred on the FFHQ template; checked by eye on "
        "targets, bicubic and restored x8 crops that the points land on the eye corners and under the nose), `compute_face_descriptor`; cosine similarity and "
        "euclidean distance to the target's descriptor, and the share under dlib's 0.6 same-person threshold.",
        "",
        f"Rerun: `python benchmarks/quality.py --data {cfg['data']} --write` "
        f"(CPU, {res['machine']['threads']} torch thread(s), {res['machine']['logical_cores']} logical cores, "
        f"torch {res['machine']['torch']}, float32; took {res['runtime_s']['total_s'] / 60:.1f} min: "
        f"model {res['runtime_s']['model_s']:.0f} s ({res['model_ms_per_face_forward']:.0f} ms per restored "
        f"face incl. reference encoding), metrics {res['runtime_s']['metrics_s']:.0f} s; load average "
        f"{res['machine']['load_average_end']} at the end).",
        "",
    ]
    if info:
        v = info.get("val", {})
        lines += [
            f"Model training (from its metadata): step {info.get('step')} of {tcfg.get('total_steps')} "
            f"planned, {info.get('minutes_trained', 0):.1f} min on {info.get('world_size', 1)}× "
            f"{info.get('device')}, batch {tcfg.get('batch_size')}, lr {tcfg.get('lr')}, "
            f"{tcfg.get('mixed_precision')}, EMA {tcfg.get('ema_decay')}, data `{tcfg.get('data')}`, loss weights "
            f"{json.dumps(tcfg.get('weights', {}), sort_keys=True)}. Its own validation at export: "
            + ", ".join(f"{k} {val:.3f}" for k, val in sorted(v.items())) + ".",
            "",
        ]
    ref = res["reference_photo_vs_target"]
    lines += [
        "Context: a clean *different* photo of the same person (reference 1) against the target scores "
        f"ID cos {_ms(ref['id_cos']['people'], 3)}, dist {_ms(ref['id_dist']['people'], 3)}, "
        f"{ref['id_match']['people']['mean']:.2f} under 0.6 (per person).",
        "",
    ]
    for level, title in (("people", "per person (averaged per person first; ± std over people)"),
                         ("samples", "over samples (± std over samples)")):
        lines += [f"## Mean {title}", ""]
        for sc, rows in res["table"].items():
            lines += [f"**{sc}**", "", "| row | " + " | ".join(METRIC_LABELS[m] for m in METRICS) + " |",
                      "|---" * (len(METRICS) + 1) + "|"]
            for name, metrics in rows.items():
                lines.append(f"| {name} | " + " | ".join(_ms(metrics[m][level], DIGITS[m]) for m in METRICS) + " |")
            lines.append("")
    lines += ["## Paired margins over people", "",
              f"Per-person mean of the per-sample difference; std over people; 95% percentile bootstrap CI "
              f"over people ({cfg['bootstrap']} resamples, seed {cfg['bootstrap_seed']}).", "",
              "| scale | comparison | metric | mean | std | 95% CI | |", "|---|---|---|---|---|---|---|"]
    for sc, comps in res["margins"].items():
        for comp, metrics in comps.items():
            for m, d in metrics.items():
                dg = DIGITS[m] + 1
                note = _NOTES.get(d["verdict"], "CI includes 0")
                lines.append(f"| {sc} | {comp} | {METRIC_LABELS[m]} | {d['mean']:+.{dg}f} | {d['std']:.{dg}f} | "
                             f"[{d['ci95'][0]:+.{dg}f}, {d['ci95'][1]:+.{dg}f}] | {note} |")
    lines += ["", "## Verdict", ""]
    for sc, comps in res["margins"].items():
        for key in comps:
            row, base = key.split(" - ")
            d, e = comps[key]["id_cos"], comps[key]["id_dist"]
            lines.append(f"- {sc}: identity (dlib cosine) with {row.replace('no refs', 'no references')} is "
                         f"**{d['verdict']}** {base}: "
                         f"cos {d['mean']:+.4f}, 95% CI [{d['ci95'][0]:+.4f}, {d['ci95'][1]:+.4f}]; "
                         f"distance {e['mean']:+.4f}, 95% CI [{e['ci95'][0]:+.4f}, {e['ci95'][1]:+.4f}] "
                         f"(lower is better: {_NOTES.get(e['verdict'], 'CI includes 0')}).")
    lines += [
        "",
        "Reading these numbers: dlib descriptors are not centred, so cosine similarities crowd near 1 and "
        "the distance is the more readable identity scale. The CIs resample the people only: they do not "
        "cover other degradation seeds, other data or other training runs. With 128 px crops, dlib sees "
        "upscaled low-resolution faces even for the HQ target.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=QualityConfig.data, help="face cache .npz (restorer_core.train.prepare)")
    ap.add_argument("--model", default=None, help="restorer to score (default: the embedded default)")
    ap.add_argument("--targets-per-identity", type=int, default=QualityConfig.targets_per_identity)
    ap.add_argument("--limit", type=int, default=0, help="only the first N samples (quick check; not for --write)")
    ap.add_argument("--batch", type=int, default=QualityConfig.batch)
    ap.add_argument("--threads", type=int, default=QualityConfig.threads, help="torch intra-op threads")
    ap.add_argument("--landmark-sheet", default=None, help="write a PNG with the dlib box and 5 points drawn")
    ap.add_argument("--write", action="store_true",
                    help=f"update {RESULTS_MD.relative_to(REPO)} and {RESULTS_JSON.relative_to(REPO)}")
    ap.add_argument("--render", action="store_true",
                    help=f"only rewrite {RESULTS_MD.relative_to(REPO)} from {RESULTS_JSON.relative_to(REPO)} (no run)")
    a = ap.parse_args(argv)
    if a.render:
        write_text_atomic(RESULTS_MD, markdown(json.loads(RESULTS_JSON.read_text(encoding="utf-8"))))
        print(f"wrote {RESULTS_MD}", file=sys.stderr)
        return 0
    if a.write and a.limit:
        ap.error("--write scores the whole validation set; drop --limit")
    cfg = QualityConfig(data=a.data, model=a.model, targets_per_identity=a.targets_per_identity, limit=a.limit,
                        batch=a.batch, threads=a.threads)
    res = run(cfg, a.landmark_sheet)
    md = markdown(res)
    print(md)
    if a.write:
        write_text_atomic(RESULTS_JSON, json.dumps(res, indent=1, sort_keys=False) + "\n")
        write_text_atomic(RESULTS_MD, md)
        print(f"wrote {RESULTS_MD} and {RESULTS_JSON}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
