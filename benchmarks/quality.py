#!/usr/bin/env python
"""Quality of the restorers on held-out people, through the whole pipeline: the issue-13 table.

Validation people (the identity split of restorer_core/train/prepare.py, never trained on) give
samples: a target photo (the original file from $SHARED_DIR/data/faces, at its own size), 4 other
photos of the same person (the references) and 4 photos of another validation person (the wrong
references). Conditions: the whole target photo degraded with `degrade_fixed` at x4, x8, x16 (blur,
area downsampling, noise, JPEG; fixed seeds; resized back with bicubic), and **clean** (the photo as
it is). Rows: `bicubic` (the condition's input photo itself), `v1` (--v1, no references), and the
model under test (--model): without references, with the wrong person's 4 references, with 1, 2
and 4 references. Every model row runs the library's pipeline with its defaults (detection,
alignment, automatic strength, paste-back with colour fix); a face the detector misses passes
through unrestored and is scored as it is.

Scoring: the clean photo's face (default detector, largest and most central) gives the alignment;
every output photo is cut with that same alignment. PSNR and SSIM on the 128 px aligned crop;
identity with dlib's ResNet descriptor (an independent model, never trained on): similarity
1 - d/1.2 and the same-person share d < 0.6; detail ratio = variance of the Laplacian in the face
centre over the clean target's, on the 128 px crop and at the face's own size (128-512 px); colour shift = CIE76
distance between the mean Lab colours of the face centre (output vs target); detection share = the
pipeline restored a face overlapping the target (IoU > 0.3); the strength the pipeline used.
Means over people (each person averaged first); margins with a 95% bootstrap CI over people; the
issue's targets printed as PASS / MISS.

Plus the real-world reference case of real_lq/lfw_references: VQFR's real LQ crop of each person,
restored with that person's other photos as references; ground truth: the person's `_0001` photo
(never in a bank).

    python benchmarks/quality.py --data .traindata/faces128.npz --v1 /tmp/v1_restorer.safetensors \\
        --model PATH [--targets-per-identity 2] [--write results/quality_v2.md]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
for path in (REPO, HERE):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from shared_data import shared_dir  # noqa: E402

from restorer_core.faces.align import align_face, template_landmarks  # noqa: E402
from restorer_core.io.atomic import write_text_atomic  # noqa: E402
from restorer_core.faces.detect.base import box_iou  # noqa: E402
from restorer_core.train.degrade import degrade_fixed  # noqa: E402
from restorer_core.train.losses import ssim as ssim_torch  # noqa: E402
from restorer_core.train.prepare import SPLIT_TRAIN, SPLIT_VAL, face_priority  # noqa: E402

DLIB_SAME_PERSON = 0.6
DLIB_SCALE = 1.2  # similarity = 1 - distance / DLIB_SCALE
CROP = 128  # aligned crop for PSNR / SSIM / identity
FACE_CENTRE = (0.25, 0.30, 0.75, 0.85)  # face centre of an aligned crop (x0, y0, x1, y1), as restorer_core.restore.detail
METRICS = ("psnr", "ssim", "sim", "same", "detail128", "detail", "dE", "detected", "strength")
LABELS = {"psnr": "PSNR ↑", "ssim": "SSIM ↑", "sim": "dlib sim ↑", "same": "same person ↑",
          "detail128": "detail ratio 128 px", "detail": "detail ratio own size", "dE": "colour ΔE ↓",
          "detected": "detected", "strength": "strength"}
DIGITS = {"psnr": 2, "ssim": 3, "sim": 3, "same": 2, "detail128": 2, "detail": 2, "dE": 2, "detected": 2,
          "strength": 2}


@dataclass(frozen=True)
class QualityConfig:
    """What is measured and how; stored with the results."""

    data: str = ".traindata/faces128.npz"
    v1: Optional[str] = None  # None: the embedded default restorer
    model: Optional[str] = None  # the model under test ("v2"); None: the embedded default
    scales: tuple = (4, 8, 16)
    clean: bool = True
    lfw_case: bool = True
    num_refs: int = 4
    ref_counts: tuple = (1, 2, 4)
    targets_per_identity: int = 1
    people: int = 0  # 0: every validation person with enough photos
    seed: int = 1234
    threads: int = 1
    face_size: int = 256  # crops are Lanczos-upscaled to this before dlib
    bootstrap: int = 10000
    bootstrap_seed: int = 0
    identity_gate: float = 0.0  # > 0: the model under test's rows run with the identity gate at this threshold
    no_refs_strength: Optional[float] = None  # the model under test's RestoreOptions.no_refs_strength (None: default)
    v1_no_refs_strength: Optional[float] = None  # v1's (None: the library default)
    no_structure_gate: bool = False  # the model under test without RestoreOptions.no_refs_structure_gate
    v1_no_structure_gate: bool = False  # v1 without it


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 [..., H, W, 3] -> float [..., 3, H, W] in 0..1."""
    t = torch.from_numpy(np.ascontiguousarray(images)).float() / 255.0
    return t.movedim(-1, -3).contiguous()


# ----------------------------------------------------------------------------- samples


@dataclass
class Sample:
    """One target photo of a validation person, its references and a wrong person's."""

    person: str
    target: Path
    refs: list
    wrong_person: str = ""
    wrong_refs: list = field(default_factory=list)


def validation_samples(cfg: QualityConfig, faces_root: Path) -> list:
    """Seeded targets and references of the validation people; checks the split is identity-disjoint."""
    with np.load(cfg.data, allow_pickle=False) as z:
        if "filenames" not in z.files:
            raise SystemExit(f"{cfg.data} has no file names; rebuild it with restorer_core.train.prepare")
        names, split, ident, id_names = z["filenames"], z["split"], z["identity"], z["identity_names"]
    people: dict = {}
    for n, s, i in zip(names, split, ident):
        people.setdefault(str(id_names[i]), []).append((str(n), int(s)))
    val = sorted(p for p, items in people.items() if items[0][1] == SPLIT_VAL)
    for p in val:
        if any(s == SPLIT_TRAIN for _, s in people[p]):
            raise RuntimeError(f"validation person {p} has training photos")
    val = [p for p in val if len(people[p]) >= cfg.num_refs + 1]
    if cfg.people:
        val = val[:cfg.people]
    samples = []
    for k, p in enumerate(val):
        files = sorted(n for n, _ in people[p])
        rng = np.random.default_rng([cfg.seed, k])
        perm = rng.permutation(len(files))
        for t in range(min(cfg.targets_per_identity, len(files))):
            pool = [files[j] for j in perm if j != perm[t]]
            samples.append(Sample(p, faces_root / files[perm[t]], [faces_root / f for f in pool[:cfg.num_refs]]))
    by_person = {s.person: s.refs for s in samples}
    order = sorted(by_person)
    for s in samples:  # the wrong person: the next validation person in name order
        other = order[(order.index(s.person) + 1) % len(order)]
        s.wrong_person, s.wrong_refs = other, by_person[other]
    return samples


def read_rgb(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise RuntimeError(f"cannot read {path}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def main_face(rgb: np.ndarray, detector: Any) -> Any:
    faces = detector.detect(rgb)
    if not faces:
        return None
    return max(faces, key=lambda d: face_priority(np.asarray(d.box), rgb.shape[:2]))


# ----------------------------------------------------------------------------- metrics


def _u8(x: np.ndarray) -> np.ndarray:
    return np.round(np.clip(np.asarray(x, np.float32), 0, 1) * 255.0).astype(np.uint8)


def crop_at(rgb: np.ndarray, det: Any, size: int) -> np.ndarray:
    """uint8 aligned crop of `rgb` with the target's alignment (from the clean photo's detection)."""
    return _u8(align_face(rgb, det, size).crop)


def _centre(img: np.ndarray) -> np.ndarray:
    s = img.shape[0]
    x0, y0, x1, y1 = (int(round(v * s)) for v in FACE_CENTRE)
    return img[y0:y1, x0:x1]


def laplacian_variance(crop: np.ndarray) -> float:
    """Variance of the Laplacian of the grey face centre (uint8 units)."""
    grey = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY).astype(np.float64)
    return float(cv2.Laplacian(grey, cv2.CV_64F)[_centre_slice(grey.shape[0])].var())


def _centre_slice(s: int) -> tuple:
    x0, y0, x1, y1 = (int(round(v * s)) for v in FACE_CENTRE)
    return slice(y0, y1), slice(x0, x1)


def colour_shift(a: np.ndarray, b: np.ndarray) -> float:
    """CIE76 distance between the mean Lab colours of two crops' face centres."""
    la = cv2.cvtColor(_centre(a).astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB).reshape(-1, 3).mean(0)
    lb = cv2.cvtColor(_centre(b).astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB).reshape(-1, 3).mean(0)
    return float(np.linalg.norm(la - lb))


def detail_size(det: Any) -> int:
    """The face's own size for the detail ratio: the image pixels its aligned crop spans, 128..512."""
    from restorer_core.restore.detail import native_size

    m = align_face(np.zeros((8, 8, 3), np.uint8), det, 512).matrix
    return int(np.clip(round(native_size(512, m)), 128, 512))


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


# ----------------------------------------------------------------------------- run


MODEL_ROWS = ("v1", "v2 no refs", "v2 wrong refs")


def row_names(cfg: QualityConfig) -> list:
    return ["bicubic", *MODEL_ROWS] + [f"v2 {k} ref" + ("s" if k > 1 else "") for k in cfg.ref_counts]


def condition_names(cfg: QualityConfig) -> list:
    return [f"x{s}" for s in cfg.scales] + (["clean"] if cfg.clean else [])


def condition_input(clean: np.ndarray, cond: str, seed: int) -> np.ndarray:
    return clean if cond == "clean" else degrade_fixed(clean, int(cond[1:]), seed)


def restored_target(result: Any, det: Any) -> tuple:
    """(detected, strength) of the pipeline's face overlapping the target (IoU > 0.3)."""
    for face in result.faces:
        if box_iou(np.asarray(face.box)[None], np.asarray(det.box)[None])[0, 0] > 0.3:
            return 1.0, float(face.info.get("strength", 1.0))
    return 0.0, float("nan")


def run(cfg: QualityConfig) -> dict:
    from restorer_core.restore.bank import build_bank
    from restorer_core.faces.detect import create_detector
    from restorer_core.errors import BankError
    from restorer_core.model_zoo import describe_model, load_any_restorer
    from restorer_core.restore.identity_gate import option_fields
    from restorer_core.restore.pipeline import FaceRestorePipeline, RestoreOptions

    t0 = time.perf_counter()
    torch.set_num_threads(cfg.threads)
    cv2.setNumThreads(1)
    faces_root = shared_dir() / "data" / "faces"
    if not faces_root.is_dir():
        raise SystemExit(f"{faces_root} not found; set SHARED_DIR to the folder holding data/faces")
    detector = create_detector("yunet")
    samples = validation_samples(cfg, faces_root)
    v1 = load_any_restorer(cfg.v1, device="cpu", dtype="float32")
    v2 = load_any_restorer(cfg.model, device="cpu", dtype="float32")
    pipes = {"v1": FaceRestorePipeline(v1), "v2": FaceRestorePipeline(v2)}
    for p in pipes.values():
        p.add_detector(RestoreOptions(), detector)
    rows, conds = row_names(cfg), condition_names(cfg)
    rec: dict = {(c, r): {"crop": [], "dcrop": [], "detected": [], "strength": []} for c in conds for r in rows}
    hq, hq_detail, person, skipped, face_sizes, t_model = [], [], [], [], [], 0.0
    for i, s in enumerate(samples):
        clean = read_rgb(s.target)
        det = main_face(clean, detector)
        if det is None:
            skipped.append(f"{s.target.name}: no face in the clean photo")
            continue
        try:
            banks = {"right": build_bank(s.refs, detector), "wrong": build_bank(s.wrong_refs, detector)}
        except BankError as exc:
            skipped.append(f"{s.target.name}: {exc}")
            continue
        dsize = detail_size(det)
        hq.append(crop_at(clean, det, CROP))
        hq_detail.append(crop_at(clean, det, dsize))
        person.append(s.person)
        face_sizes.append(det.size)
        inputs = {c: condition_input(clean, c, cfg.seed + 7919 * i + (0 if c == "clean" else int(c[1:])))
                  for c in conds}
        for c in conds:
            rec[(c, "bicubic")]["crop"].append(crop_at(inputs[c], det, CROP))
            rec[(c, "bicubic")]["dcrop"].append(crop_at(inputs[c], det, dsize))
            rec[(c, "bicubic")]["detected"].append(float("nan"))
            rec[(c, "bicubic")]["strength"].append(float("nan"))
        specs = [("v1", "v1", None, 4), ("v2 no refs", "v2", None, 4), ("v2 wrong refs", "v2", "wrong", 4)]
        specs += [(name, "v2", "right", k) for name, k in zip(rows[4:], cfg.ref_counts)]
        t1 = time.perf_counter()
        for row, model, bank, k in specs:
            gate = cfg.identity_gate if model == "v2" and cfg.identity_gate else None  # the model under test only
            scale = cfg.no_refs_strength if model == "v2" else cfg.v1_no_refs_strength
            scaled = {} if scale is None else {"no_refs_strength": scale}
            if (cfg.no_structure_gate if model == "v2" else cfg.v1_no_structure_gate):
                scaled["no_refs_structure_gate"] = False
            opts = RestoreOptions(max_refs=k, use_cache=False, **scaled, **option_fields(gate))
            for c in conds:
                res = pipes[model].restore_images([inputs[c]], banks.get(bank) if bank else None, opts)[0]
                out = np.asarray(res.pixels)
                detected, strength = restored_target(res, det)
                r = rec[(c, row)]
                r["crop"].append(crop_at(out, det, CROP))
                r["dcrop"].append(crop_at(out, det, dsize))
                r["detected"].append(detected)
                r["strength"].append(strength)
        t_model += time.perf_counter() - t1
        done = time.perf_counter() - t0
        print(f"  sample {i + 1}/{len(samples)} ({done:.0f} s, ~{done / (i + 1) * (len(samples) - i - 1):.0f} s left)",
              file=sys.stderr, flush=True)
    if not hq:
        raise SystemExit("no sample could be scored")

    t2 = time.perf_counter()
    ident = DlibIdentity(cfg.face_size)
    hq_arr = np.stack(hq)
    box = ident.fit_box(hq_arr)
    target_desc = ident.descriptors(hq_arr)
    hq_lap = np.array([laplacian_variance(x) for x in hq_detail])
    hq_lap128 = np.array([laplacian_variance(x) for x in hq_arr])
    scores: dict = {}
    for (c, r), d in rec.items():
        crops = np.stack(d["crop"])
        dist = np.linalg.norm(ident.descriptors(crops) - target_desc, axis=1)
        scores[(c, r)] = {
            "psnr": psnr(crops, hq_arr), "ssim": ssim(crops, hq_arr),
            "sim": 1.0 - dist / DLIB_SCALE, "same": (dist < DLIB_SAME_PERSON).astype(np.float64),
            "detail128": np.array([laplacian_variance(x) for x in crops]) / np.maximum(hq_lap128, 1e-9),
            "detail": np.array([laplacian_variance(x) for x in d["dcrop"]]) / np.maximum(hq_lap, 1e-9),
            "dE": np.array([colour_shift(a, b) for a, b in zip(crops, hq_arr)]),
            "detected": np.array(d["detected"]), "strength": np.array(d["strength"])}
    t_metrics = time.perf_counter() - t2
    t3 = time.perf_counter()
    lfw = lfw_reference_case(pipes, detector, ident) if cfg.lfw_case else []
    t_lfw = time.perf_counter() - t3
    return summarize(cfg, scores, np.array(person), skipped, box, ident.box_detections,
                     {"v1": describe_model(v1), "v2": describe_model(v2)}, lfw,
                     {"model_s": t_model, "metrics_s": t_metrics, "lfw_case_s": t_lfw,
                      "total_s": time.perf_counter() - t0}, face_sizes)


# ----------------------------------------------------------------------------- the LFW reference case


LFW_PEOPLE = ("Eliane_Karp", "Elin_Nordegren", "Jesse_Ventura", "Michael_Chang")


def dlib_descriptor(ident: "DlibIdentity", rgb: np.ndarray) -> Optional[np.ndarray]:
    """Descriptor of the largest face dlib's HOG detector finds (upsampling once), or None."""
    dets = ident.dlib.get_frontal_face_detector()(rgb, 1)
    if not dets:
        return None
    d = max(dets, key=lambda r: r.width() * r.height())
    img = np.ascontiguousarray(rgb)
    return np.array(ident.net.compute_face_descriptor(img, ident.shape_predictor(img, d)))


def lfw_reference_case(pipes: dict, detector: Any, ident: "DlibIdentity") -> list:
    """Per person: dlib similarity to the `_0001` ground truth of the real LQ crop and of each row's
    output (automatic strength, and strength 1), references = the person's other photos."""
    from restorer_core.restore.bank import build_bank
    from restorer_core.restore.pipeline import RestoreOptions

    real_lq = shared_dir() / "data" / "real_lq"
    refs = {p: sorted(f for f in (real_lq / "lfw_references" / p).glob("*.jpg") if not f.stem.endswith("_0001"))
            for p in LFW_PEOPLE}
    out = []
    for k, p in enumerate(LFW_PEOPLE):
        lq_path = real_lq / "vqfr" / "cropped_faces" / f"{p}_0001_00_lq.png"
        gt_path = real_lq / "lfw_references" / p / f"{p}_0001.jpg"
        if not lq_path.is_file() or not gt_path.is_file() or not refs[p]:
            continue
        lq, gt = read_rgb(lq_path), read_rgb(gt_path)
        gt_desc = dlib_descriptor(ident, gt)
        if gt_desc is None:
            continue
        wrong = LFW_PEOPLE[(k + 1) % len(LFW_PEOPLE)]
        banks = {"right": build_bank(refs[p][:4], detector), "wrong": build_bank(refs[wrong][:4], detector)}

        def sim(img: np.ndarray) -> Optional[float]:
            d = dlib_descriptor(ident, img)
            return None if d is None else float(1.0 - np.linalg.norm(d - gt_desc) / DLIB_SCALE)

        entry = {"person": p, "references": [f.name for f in refs[p][:4]], "wrong": wrong,
                 "rows": {"input": {"auto": sim(lq), "full": sim(lq)}}}
        for row, model, bank in (("v1", "v1", None), ("v2 no refs", "v2", None), ("v2 wrong refs", "v2", "wrong"),
                                 (f"v2 {len(refs[p][:4])} refs", "v2", "right")):
            entry["rows"][row] = {}
            for name, strength in (("auto", "auto"), ("full", 1.0)):
                res = pipes[model].restore_images([lq], banks.get(bank) if bank else None,
                                                  RestoreOptions(strength=strength, use_cache=False))[0]
                entry["rows"][row][name] = sim(np.asarray(res.pixels))
                if name == "auto":
                    entry["rows"][row]["strength"] = [round(float(f.info.get("strength", 1.0)), 2) for f in res.faces]
        out.append(entry)
    return out


# ----------------------------------------------------------------------------- summary


def per_person(values: np.ndarray, person: np.ndarray) -> np.ndarray:
    """Mean of values per person (people in sorted order; NaN entries ignored)."""
    out = []
    for p in np.unique(person):
        v = values[person == p]
        v = v[~np.isnan(v)]
        out.append(v.mean() if len(v) else np.nan)
    return np.array(out)


def mean_std(x: np.ndarray) -> dict:
    x = x[~np.isnan(x)]
    if not len(x):
        return {"mean": None, "std": None}
    return {"mean": float(np.mean(x)), "std": float(np.std(x, ddof=1)) if len(x) > 1 else 0.0}


def bootstrap_ci(x: np.ndarray, reps: int, seed: int, level: float = 0.95) -> tuple:
    """Percentile bootstrap CI of the mean of x (resampling its entries with replacement)."""
    x = x[~np.isnan(x)]
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(reps, len(x)))].mean(1)
    a = (1.0 - level) / 2.0
    return float(np.quantile(means, a)), float(np.quantile(means, 1.0 - a))


MARGINS = (("sim", "v2 4 refs", "v2 no refs"), ("sim", "v2 4 refs", "bicubic"), ("sim", "v2 wrong refs", "v2 no refs"),
           ("sim", "v2 no refs", "bicubic"), ("sim", "v1", "bicubic"), ("psnr", "v2 4 refs", "bicubic"),
           ("psnr", "v2 no refs", "bicubic"))


@dataclass(frozen=True)
class Target:
    """One of the issue's targets: `row` (minus `base`, when given) of `metric` at `cond` must lie in [low, high]."""

    label: str
    cond: str
    metric: str
    row: str
    base: Optional[str] = None
    low: float = -np.inf
    high: float = np.inf


TARGETS = (
    Target("x8: 4 refs ≥ no refs + .05 similarity", "x8", "sim", "v2 4 refs", "v2 no refs", low=0.05),
    Target("x8: 4 refs ≥ bicubic + .10 similarity", "x8", "sim", "v2 4 refs", "bicubic", low=0.10),
    Target("x4: 4 refs ≥ bicubic + .05 similarity", "x4", "sim", "v2 4 refs", "bicubic", low=0.05),
    *(Target(f"{c}: wrong-person refs ≤ no refs (similarity)", c, "sim", "v2 wrong refs", "v2 no refs", high=0.0)
      for c in ("x4", "x8", "x16")),
    *(Target(f"{c}: PSNR ≥ bicubic + 1 dB ({r})", c, "psnr", r, "bicubic", low=1.0)
      for c in ("x4", "x8") for r in ("v2 no refs", "v2 4 refs")),
    *(Target(f"{c}: detail ratio at 128 px 0.8-1.2 ({r})", c, "detail128", r, low=0.8, high=1.2)
      for c in ("x4", "x8") for r in ("v2 no refs", "v2 4 refs")),
    *(Target(f"clean: similarity drop ≤ .01 ({r})", "clean", "sim", r, "bicubic", low=-0.01)
      for r in ("v2 no refs", "v2 4 refs")),
    *(Target(f"clean: detail ratio at the face's own size ≥ 0.9 ({r})", "clean", "detail", r, low=0.9)
      for r in ("v2 no refs", "v2 4 refs")),
    *(Target(f"clean: colour ΔE ≤ 1 ({r})", "clean", "dE", r, high=1.0) for r in ("v2 no refs", "v2 4 refs")),
)


def summarize(cfg: QualityConfig, scores: dict, person: np.ndarray, skipped: list, box: tuple, box_n: int,
              models: dict, lfw: list, times: dict, face_sizes: list) -> dict:
    table: dict = {}
    for (c, r), metrics in scores.items():
        table.setdefault(c, {})[r] = {m: {"people": mean_std(per_person(v, person)), "samples": mean_std(v)}
                                      for m, v in metrics.items()}
    margins: dict = {}
    for c in {c for c, _ in scores}:
        for m, row, base in MARGINS:
            if (c, row) not in scores:
                continue
            diff = per_person(scores[(c, row)][m] - scores[(c, base)][m], person)
            margins.setdefault(c, {})[f"{m}: {row} - {base}"] = {**mean_std(diff), "ci95": list(
                bootstrap_ci(diff, cfg.bootstrap, cfg.bootstrap_seed))}
    checks = []
    for t in TARGETS:
        if (t.cond, t.row) not in scores:
            continue
        v = scores[(t.cond, t.row)][t.metric] - (scores[(t.cond, t.base)][t.metric] if t.base else 0.0)
        pp = per_person(v, person)
        mean = float(np.nanmean(pp))
        ci = bootstrap_ci(pp, cfg.bootstrap, cfg.bootstrap_seed)
        checks.append({"target": t.label, "value": mean, "ci95": list(ci),
                       "verdict": "PASS" if t.low <= mean <= t.high else "MISS"})
    return {
        "config": asdict(cfg),
        "samples": int(len(person)),
        "people": int(len(np.unique(person))),
        "skipped": skipped,
        "face_box_px": {"min": int(min(face_sizes)), "median": int(np.median(face_sizes)), "max": int(max(face_sizes))},
        "identity_box_256": {"box": list(box), "from_detections": box_n},
        "table": table,
        "margins": margins,
        "targets": checks,
        "lfw_reference_case": lfw,
        "models": {k: {kk: vv for kk, vv in v.items() if kk != "info"} for k, v in models.items()},
        "machine": {"cpu": platform.processor() or platform.machine(), "logical_cores": os.cpu_count(),
                    "torch": torch.__version__, "threads": torch.get_num_threads(),
                    "load_average_end": round(os.getloadavg()[0], 2)},
        "runtime_s": {k: round(v, 1) for k, v in times.items()},
    }


def _fmt(d: dict, digits: int) -> str:
    if d["mean"] is None:
        return "–"
    return f"{d['mean']:.{digits}f} ± {d['std']:.{digits}f}"


def markdown(res: dict, title: str) -> str:
    cfg = res["config"]
    m = res["models"]
    lines = [
        f"# {title}", "",
        f"Models: **v1** `{m['v1'].get('path')}` (sha256 {str(m['v1'].get('weights_sha256'))[:12]}…), "
        f"**v2** (the model under test) `{m['v2'].get('path')}` (sha256 {str(m['v2'].get('weights_sha256'))[:12]}…). "
        f"{res['samples']} samples of {res['people']} validation people ({cfg['targets_per_identity']} target "
        f"photo(s) each; identity split of the face cache `{cfg['data']}`, never trained on); target faces "
        f"{res['face_box_px']['min']}-{res['face_box_px']['max']} px (detector box, median "
        f"{res['face_box_px']['median']}) in their original photos. Skipped: {len(res['skipped'])}.", "",
        "Each condition's input is the whole target photo (degraded with `degrade_fixed` at x4 / x8 / x16, or "
        "clean); `bicubic` is that input itself; every model row runs the library pipeline with its defaults "
        "(YuNet with the second pass, 512 px crops, automatic strength, wavelet colour fix, paste-back). Scores "
        "compare each output photo, cut with the clean photo's alignment, with the clean target: PSNR / SSIM "
        "on 128 px crops; dlib similarity 1 − d/1.2 and same person (d < 0.6); detail ratio = Laplacian "
        "variance of the face centre over the target's, on the 128 px crop (the model's resolution) and at the "
        "face's own size in the photo (128-512 px: what a viewer sees); colour ΔE = distance of the "
        "mean Lab colours of the face centre; detected = the pipeline restored the target face; strength = "
        "what the pipeline used (auto).", "",
        f"Run: `python benchmarks/quality.py --data {cfg['data']} --v1 V1 --model V2 --targets-per-identity "
        f"{cfg['targets_per_identity']}"
        f"{' --identity-gate ' + str(cfg['identity_gate']) if cfg.get('identity_gate') else ''}"
        f"{''.join(f' --{k.replace(chr(95), chr(45))} {cfg[k]}' for k in ('no_refs_strength', 'v1_no_refs_strength') if cfg.get(k) is not None)}{''.join(f' --{k.replace(chr(95), chr(45))}' for k in ('no_structure_gate', 'v1_no_structure_gate') if cfg.get(k))}` on the 2-core CPU dev machine ({res['machine']['threads']} torch threads, "
        f"torch {res['machine']['torch']}, float32): {res['runtime_s']['total_s'] / 60:.1f} min (model rows "
        f"{res['runtime_s']['model_s']:.0f} s, metrics {res['runtime_s']['metrics_s']:.0f} s); load average "
        f"{res['machine']['load_average_end']} at the end.", "",
        "## Mean per person (± std over people)", ""]
    metrics = METRICS
    for c, rows in res["table"].items():
        lines += [f"**{c}**", "", "| row | " + " | ".join(LABELS[x] for x in metrics) + " |",
                  "|---" * (len(metrics) + 1) + "|"]
        for r, v in rows.items():
            lines.append(f"| {r} | " + " | ".join(_fmt(v[x]["people"], DIGITS[x]) for x in metrics) + " |")
        lines.append("")
    lines += ["## Targets (issue 13), on the mean over people", "",
              "| target | value | 95% CI over people | |", "|---|---|---|---|"]
    for t in res["targets"]:
        lines.append(f"| {t['target']} | {t['value']:+.3f} | [{t['ci95'][0]:+.3f}, {t['ci95'][1]:+.3f}] | "
                     f"**{t['verdict']}** |")
    lines += ["", "## Paired margins over people", "",
              f"Per-person mean of the per-sample difference; 95% percentile bootstrap CI over people "
              f"({cfg['bootstrap']} resamples).", "", "| condition | margin | mean | std | 95% CI |",
              "|---|---|---|---|---|"]
    for c, comps in res["margins"].items():
        for k, d in comps.items():
            lines.append(f"| {c} | {k} | {d['mean']:+.3f} | {d['std']:.3f} | [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}] |")
    lines += ["", "## Real LQ with references: real_lq/lfw_references", "",
              "VQFR's real LQ crop of each person (`real_lq/vqfr/cropped_faces/<Name>_0001_00_lq.png`) through the "
              "pipeline; references: the person's other LFW photos (never `_0001`, the crop's clean source); wrong: "
              "the next person's. dlib similarity (1 − d/1.2, dlib's own detection) to `<Name>_0001.jpg`, at the "
              "automatic strength (the strength used in brackets) / at strength 1.", ""]
    case = res["lfw_reference_case"]
    if case:
        rows = list(case[0]["rows"])
        rows = ["input", "v1", "v2 no refs", "v2 wrong refs", "v2 refs"]
        lines += ["| person | " + " | ".join(rows) + " |", "|---" * (len(rows) + 1) + "|"]
        for e in case:
            cells = []
            for r in rows:
                key = r if r != "v2 refs" else next(k for k in e["rows"] if k.startswith("v2 ") and k.endswith("refs")
                                                    and k not in ("v2 no refs", "v2 wrong refs"))
                v = e["rows"][key]
                fa = "–" if v["auto"] is None else f"{v['auto']:.3f}"
                ff = "–" if v["full"] is None else f"{v['full']:.3f}"
                st = f" ({', '.join(map(str, v['strength']))})" if v.get("strength") else ""
                cells.append(f"{fa}{st} / {ff}" if r != "input" else fa)
            lines.append(f"| {e['person']} ({len(e['references'])} refs) | " + " | ".join(cells) + " |")
    lines += ["", "Reading: dlib's similarity crowds near its scale's middle (two photos of one person at d ≈ 0.45 "
              "score ≈ 0.62); the CIs resample the people only, not other seeds or training runs."]
    return "\n".join(lines) + "\n"


def results_path(ap: argparse.ArgumentParser, write: Optional[str]) -> Optional[Path]:
    """--write MD checked before any work: a new file (with its .json) in an existing folder."""
    out = Path(write) if write else None
    if out is not None and (out.exists() or out.with_suffix(".json").exists()):
        ap.error(f"{out} or its .json exists; choose a new name (results are never overwritten)")
    if out is not None and not out.parent.is_dir():
        ap.error(f"folder {out.parent} does not exist")
    return out


def write_results(out: Optional[Path], res: dict, md: str) -> None:
    """The markdown at `out` and the JSON next to it, atomically (nothing when out is None)."""
    if out is not None:
        write_text_atomic(out.with_suffix(".json"), json.dumps(res, indent=1) + "\n")
        write_text_atomic(out, md)
        print(f"wrote {out} and {out.with_suffix('.json')}", file=sys.stderr)


def write_markdown(out: Optional[Path], md: str) -> None:
    """Only the markdown at `out` (checked by results_path), atomically; nothing when out is None."""
    if out is not None:
        write_text_atomic(out, md)
        print(f"wrote {out}", file=sys.stderr)


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=QualityConfig.data, help="face cache .npz (restorer_core.train.prepare)")
    ap.add_argument("--v1", default=None, help="the v1 restorer (default: the embedded default)")
    ap.add_argument("--model", default=None, help="the restorer under test, 'v2' (default: the embedded default)")
    ap.add_argument("--targets-per-identity", type=int, default=QualityConfig.targets_per_identity)
    ap.add_argument("--people", type=int, default=0, help="only the first N validation people (0: all)")
    ap.add_argument("--scales", default="4,8,16", help="degradation scales, comma-separated")
    ap.add_argument("--no-clean", action="store_true", help="skip the clean condition")
    ap.add_argument("--no-lfw-case", action="store_true", help="skip the real_lq/lfw_references case")
    ap.add_argument("--identity-gate", type=float, default=0.0, metavar="T",
                    help="run the model under test with the identity gate at cosine threshold T (0: off, the default)")
    ap.add_argument("--no-refs-strength", type=float, default=None, metavar="F",
                    help="the model under test's no-references strength scale (RestoreOptions.no_refs_strength; "
                         "default: the library's)")
    ap.add_argument("--v1-no-refs-strength", type=float, default=None, metavar="F", help="the same for v1")
    ap.add_argument("--no-structure-gate", action="store_true",
                    help="the model under test without the no-references structure gate (RestoreOptions."
                         "no_refs_structure_gate)")
    ap.add_argument("--v1-no-structure-gate", action="store_true", help="the same for v1")
    ap.add_argument("--threads", type=int, default=QualityConfig.threads, help="torch intra-op threads")
    ap.add_argument("--title", default="Quality on held-out people: v1 and the model under test (v2)")
    ap.add_argument("--write", default=None, metavar="MD",
                    help="write the markdown here and the JSON next to it (.json); never overwrites")
    a = ap.parse_args(argv)
    out = results_path(ap, a.write)
    if not 0.0 <= a.identity_gate <= 1.0:
        ap.error(f"--identity-gate must be a cosine threshold in (0, 1], or 0 for off; got {a.identity_gate}")
    cfg = QualityConfig(data=a.data, v1=a.v1, model=a.model, targets_per_identity=a.targets_per_identity,
                        people=a.people, scales=tuple(int(s) for s in a.scales.split(",") if s),
                        clean=not a.no_clean, lfw_case=not a.no_lfw_case, threads=a.threads,
                        identity_gate=a.identity_gate, no_refs_strength=a.no_refs_strength,
                        v1_no_refs_strength=a.v1_no_refs_strength, no_structure_gate=a.no_structure_gate,
                        v1_no_structure_gate=a.v1_no_structure_gate)
    res = run(cfg)
    md = markdown(res, a.title)
    print(md)
    write_results(out, res, md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
