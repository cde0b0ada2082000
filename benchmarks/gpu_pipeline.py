#!/usr/bin/env python
"""End-to-end pipeline benchmark (issue 19): files and frames in, restored images out.

Inputs are made here, from the faces of examples/family_10045.png: a folder of synthetic
1920x1080 JPEG frames with one (moving) face each, and a 1024x1024 PNG with four faces; a
reference bank of four faces. Two restorers: the full-size InstantRestore architecture with
random weights (benchmarks/gpu_profile.build) and the embedded default model. Two paths each:

* cli    restorer_core.cli.run.run_restore (read ahead / write behind threads, faces of up to
         `batch` frames in one restorer batch), as `python -m restorer_core restore` runs;
* nodes  Detect Faces -> One-Step Restore -> Paste Faces Back on the comfy stand-in of the tests
         (tests/comfy_stub), the model handle made as Load Face Restorer makes it;

the default detector alone (`detect`: OpenCV's YuNet on one CPU thread, and the torch YuNet that
a GPU pipeline detects with, batched on the device), and the restorer's own step at the batch size (`step`: the runner on a ready batch, with the
bank's cached keys/values), which the nodes path is compared with. Per row: frames (images)/s,
ms per face in total and per stage (detect_align, restore, paste, io = read + write; the CLI's
stages overlap, so they may add up to more than the total). The first run of each path (compile,
CUDA-graph capture, reference keys/values) is timed apart as first_run_s. Writes
gpu_pipeline.json and gpu_pipeline.md to --out.

    python benchmarks/gpu_pipeline.py --device cuda --out $OUT/gpu_pipeline_h100   # H100, < 5 min
    python benchmarks/gpu_pipeline.py --quick --out /tmp/gpu_pipeline_quick         # CPU check, tiny sizes
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
STUB = REPO / "tests" / "comfy_stub"
for p in (str(REPO), str(HERE), str(STUB)):
    if p not in sys.path:
        sys.path.insert(0, p)
# the stand-in keeps its models (and the nodes' compiled code) here between benchmark runs
os.environ.setdefault("COMFY_STUB_BASE_DIR", str(Path(tempfile.gettempdir()) / "gpu_pipeline_comfy"))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from gpu_profile import build as build_full_size  # noqa: E402
from restorer_core.io.atomic import write_text_atomic  # noqa: E402

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
FAMILY = REPO / "examples" / "family_10045.png"
TARGET_NODES_RATIO = 1.3  # nodes path ms/face <= 1.3 x the step's ms/face at the batch size
TARGET_VIDEO_FPS = 40.0  # full-size model, 1080p frames end to end


@dataclass
class Settings:
    device: str
    dtype: str
    quick: bool
    frames: int
    batch: int
    refs: int
    models: list
    paths: list
    speed: str
    strength: str
    group_images: int
    max_seconds: float
    out: str
    cpus_per_worker: list = field(default_factory=list)
    marks: str = ""


@dataclass
class Row:
    model: str
    path: str
    input: str
    images: int = 0
    faces: int = 0
    restored: int = 0
    wall_s: Optional[float] = None
    images_per_s: Optional[float] = None
    ms_per_face: Optional[float] = None
    stages_ms_per_face: dict = field(default_factory=dict)
    first_run_s: Optional[float] = None
    note: str = ""


# ----------------------------------------------------------------------------- inputs


def face_patches(count: int, side: int) -> list:
    """`count` square uint8 RGB patches of side px, each a face of the family photo with its
    surroundings (the face spans about 40 % of the patch); the fourth face is a mirrored first."""
    from restorer_core.faces.detect import create_detector

    rgb = cv2.cvtColor(cv2.imread(str(FAMILY)), cv2.COLOR_BGR2RGB)
    found = sorted(create_detector("yunet").detect(rgb), key=lambda d: d.box[0])
    patches = []
    for det in found:
        x0, y0, x1, y1 = det.box
        cx, cy, half = (x0 + x1) / 2, (y0 + y1) / 2, 1.25 * max(x1 - x0, y1 - y0)
        box = [int(round(v)) for v in (cx - half, cy - half, cx + half, cy + half)]
        padded = cv2.copyMakeBorder(rgb, 400, 400, 400, 400, cv2.BORDER_REFLECT_101)
        patch = padded[box[1] + 400:box[3] + 400, box[0] + 400:box[2] + 400]
        patches.append(cv2.resize(patch, (side, side), interpolation=cv2.INTER_CUBIC))
    while len(patches) < count:
        patches.append(patches[len(patches) % len(found)][:, ::-1].copy())
    return patches[:count]


def background(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    planes = [0.45 + 0.3 * np.sin(xx / (97 + 13 * c) + c) * np.cos(yy / 71 - c) for c in range(3)]
    img = np.stack(planes, axis=2) + rng.normal(0, 0.02, (h, w, 3))
    return np.clip(img * 255, 0, 255).astype(np.uint8)


def make_inputs(folder: Path, s: Settings) -> dict:
    """Frames, the group image and the bank's sources, written under folder."""
    w, h = (320, 180) if s.quick else (1920, 1080)
    face_side = 120 if s.quick else 720
    group_side, group_patch = (256, 128) if s.quick else (1024, 512)
    patches = face_patches(4, face_side)
    frames_dir = folder / "frames"
    frames_dir.mkdir(parents=True, exist_ok=True)
    base = background(h, w, 0)
    frames = []
    for i in range(s.frames):
        img = base.copy()
        x = int((w - face_side) * (0.5 + 0.35 * np.sin(i / 15.0)))
        y = (h - face_side) // 2 + int(0.05 * h * np.cos(i / 11.0))
        img[y:y + face_side, x:x + face_side] = patches[0]
        path = frames_dir / f"frame_{i:05d}.jpg"
        cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
        frames.append(path)
    group = background(group_side, group_side, 1)
    for k, patch in enumerate(face_patches(4, group_patch)):
        r, c = divmod(k, 2)
        group[r * group_patch:(r + 1) * group_patch, c * group_patch:(c + 1) * group_patch] = patch
    groups = []
    for k in range(s.group_images):
        path = folder / "group" / f"group_{k:02d}.png"
        path.parent.mkdir(exist_ok=True)
        cv2.imwrite(str(path), cv2.cvtColor(group, cv2.COLOR_RGB2BGR))
        groups.append(path)
    refs = [cv2.resize(p, (256, 256), interpolation=cv2.INTER_AREA) for p in face_patches(s.refs, face_side)]
    return dict(frames=frames, groups=groups, refs=refs)


# ----------------------------------------------------------------------------- models


def load_restorer(name: str, s: Settings):
    dev, dtype = torch.device(s.device), DTYPES[s.dtype]
    if name == "full":
        return build_full_size(dev, dtype, tiny=s.quick)
    from restorer_core.model_zoo import load_any_restorer

    return load_any_restorer(None, device=dev, dtype=dtype).eval()


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


# ----------------------------------------------------------------------------- cli path


def cli_options(s: Settings, cache: Path):
    from restorer_core.restore.pipeline import RestoreOptions

    strength = "auto" if s.strength == "auto" else float(s.strength)
    return RestoreOptions(max_refs=s.refs, batch_size=s.batch, strength=strength, cache_dir=str(cache))


def mark(s: Settings, run: str, event: str) -> None:
    """With --marks, a line "EVENT RUN" appended to that file when a timed run starts or ends
    (benchmarks/gil_profile.py samples the process between the two)."""
    if s.marks:
        with open(s.marks, "a", encoding="utf-8") as f:
            f.write(f"{event} {run}\n")


def cli_rows(name: str, restorer, s: Settings, inputs: dict, work: Path, bank, compile_dir: Optional[Path]) -> tuple:
    """(rows, pipeline) of the CLI path: video frames, group images, and the bare step."""
    from restorer_core import threads
    from restorer_core.cli.run import RunSettings, run_restore
    from restorer_core.restore.pipeline import FaceRestorePipeline

    default_cpw = threads.CPUS_PER_WORKER

    pipeline = FaceRestorePipeline(restorer, speed=s.speed, compile_cache=compile_dir)
    options = cli_options(s, work / "kv_cache")
    rows = []
    runs = [(None, label, files) for label, files in (("video", inputs["frames"]), ("group", inputs["groups"]))]
    runs += [(cpw, "video", inputs["frames"]) for cpw in s.cpus_per_worker]
    for cpw, label, files in runs:
        if cpw is not None:  # the CLI's file / locate threads: one per cpw cores (restorer_core.threads)
            threads.CPUS_PER_WORKER = cpw
            n = threads.cpu_workers(s.batch)
            label = f"video, {n} CPU thread{'' if n == 1 else 's'}"
        t0 = time.perf_counter()
        warm = RunSettings(work / f"warm_{name}_{label}", images_per_chunk=s.batch, show_progress=False,
                           resume=False, rotate=False)
        run_restore(files[:s.batch], pipeline, bank, options, warm)
        first = time.perf_counter() - t0
        settings = RunSettings(work / f"cli_{name}_{label}", images_per_chunk=s.batch, show_progress=False,
                               resume=False, rotate=False)
        mark(s, f"{name} cli {label}", "start")
        t0 = time.perf_counter()
        report = run_restore(files, pipeline, bank, options, settings)
        wall = time.perf_counter() - t0
        mark(s, f"{name} cli {label}", "end")
        rows.append(cli_row(name, label, report, wall, first))
    threads.CPUS_PER_WORKER = default_cpw
    rows.append(step_row(name, pipeline, bank, options, s))
    return rows, pipeline


def cli_row(name: str, label: str, report, wall: float, first: float) -> Row:
    faces = sum(im.faces_found for im in report.images)
    restored = sum(im.faces_restored for im in report.images)
    stages: dict = {}
    for im in report.images:
        for stage, seconds in im.timings.items():
            key = "io" if stage in ("load", "save") else stage
            stages[key] = stages.get(key, 0.0) + seconds
    failed = [im.error for im in report.images if im.error]
    return Row(name, "cli", label, len(report.images), faces, restored, wall, len(report.images) / wall,
               1000 * wall / max(faces, 1), {k: 1000 * v / max(faces, 1) for k, v in stages.items()}, first,
               f"{len(failed)} failed: {failed[0]}" if failed else "")


def step_row(name: str, pipeline, bank, options, s: Settings) -> Row:
    """The runner alone on a ready batch of `batch` faces (inputs on the device)."""
    dev = pipeline.device
    res = pipeline.resolution
    x = torch.rand(s.batch, 3, res, res, generator=torch.Generator().manual_seed(0)).to(dev, pipeline.dtype)
    refs = pipeline.reference_kv(bank, options) if pipeline.uses_references(bank, options) else None
    iters = 20 if dev.type == "cuda" else 2
    times = []
    for i in range(iters + 2):
        gens = [torch.Generator("cpu").manual_seed(0) for _ in range(s.batch)]
        sync(dev)
        t0 = time.perf_counter()
        with torch.inference_mode():
            pipeline.runner(x, refs, options.mode, generator=gens)
        sync(dev)
        if i >= 2:
            times.append(time.perf_counter() - t0)
    ms = 1000 * statistics.median(times) / s.batch
    return Row(name, "step", f"batch {s.batch}", 0, s.batch, s.batch, None, None, ms, {"restore": ms})


# ----------------------------------------------------------------------------- nodes path


NODE_DETECT = dict(detector="yunet", detector_model="default", threshold=0.6, selection="all", max_faces=0,
                   face_indices="0", min_face_size=0, similarity_threshold=0.4, track_faces=True, crop_size=512)
NODE_PASTE = dict(color_fix="wavelet", mask_shape="landmarks", feather=24.0, erosion=8.0)


def node_handle(pack, name: str, restorer, s: Settings):
    """The FACE_RESTORER Load Face Restorer gives: its own loader for the default model; for the
    random full-size one, the same construction around the restorer in memory."""
    import harness

    nodes = {k: cls() for k, cls in pack.NODE_CLASS_MAPPINGS.items()}
    if name == "default":
        precision = "fp32" if s.dtype == "fp32" else s.dtype
        device = "cpu" if s.device == "cpu" else "auto"
        return nodes, nodes["OneStepLoadFaceRestorer"].load("default (embedded)", "none", device, precision,
                                                            False, speed=s.speed)[0]
    cb = sys.modules[f"{pack.__name__}.nodes.comfy_bridge"]
    types = sys.modules[f"{pack.__name__}.nodes.types"]
    pipe_mod = harness.core(pack, "restore.pipeline")
    dev = torch.device(s.device)
    pipeline = pipe_mod.FaceRestorePipeline(restorer, speed=s.speed, run_device=dev,
                                            compile_cache=cb.compile_cache_dir())
    patcher = cb.make_patcher(restorer, dev, on_move=pipeline.release_graphs)
    return nodes, types.FaceRestorerHandle("full-size (random weights)", pipeline, patcher, dev, DTYPES[s.dtype])


def image_batch(paths: list) -> torch.Tensor:
    arrays = [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in paths]
    return torch.from_numpy(np.stack(arrays).astype(np.float32) / 255.0)


def node_rows(pack, name: str, restorer, s: Settings, inputs: dict) -> list:
    nodes, handle = node_handle(pack, name, restorer, s)
    refs = torch.from_numpy(np.stack(inputs["refs"]).astype(np.float32) / 255.0)
    bank = nodes["OneStepReferenceBankFromImages"].build(refs, detector="yunet", detector_model="default",
                                                         threshold=0.5, align_size=256)[0]
    auto = s.strength == "auto"
    restore = dict(mode="auto", max_refs=s.refs, strength=1.0 if auto else float(s.strength), seed=0,
                   batch_size=s.batch, auto_strength=auto)
    dev = torch.device(s.device)
    rows = []
    for label, files in (("video", inputs["frames"]), ("group", inputs["groups"])):
        images = image_batch(files)

        def run(batch: torch.Tensor) -> tuple:
            times = {}
            sync(dev)
            t0 = time.perf_counter()
            faces = nodes["OneStepDetectFaces"].detect(batch, **NODE_DETECT)[0]
            times["detect_align"] = time.perf_counter() - t0
            t1 = time.perf_counter()
            restored = nodes["OneStepRestore"].restore(handle, faces, **restore, reference_bank=bank)[0]
            sync(dev)
            times["restore"] = time.perf_counter() - t1
            t2 = time.perf_counter()
            nodes["OneStepPasteFacesBack"].paste(batch, restored, **NODE_PASTE)
            sync(dev)
            times["paste"] = time.perf_counter() - t2
            return restored, times, time.perf_counter() - t0

        t0 = time.perf_counter()
        run(images[:s.batch])
        first = time.perf_counter() - t0
        restored, times, wall = run(images)
        n = len(restored.faces)
        rows.append(Row(name, "nodes", label, len(files), n, restored.restored_count, wall, len(files) / wall,
                        1000 * wall / max(n, 1), {k: 1000 * v / max(n, 1) for k, v in times.items()}, first))
    handle.pipeline.release_graphs()
    return rows


# ----------------------------------------------------------------------------- detector


def detector_rows(s: Settings, inputs: dict, frames: int = 32) -> list:
    """The default detector on `frames` video frames: OpenCV's YuNet on one CPU thread against the
    torch YuNet on the device, batched as the pipelines run it (the same network; on a CPU run the
    torch one runs on the CPU too). ms per frame, and how far its landmarks are from OpenCV's."""
    from restorer_core.faces.detect import create_detector
    from restorer_core.faces.detect.yunet_torch import YuNetTorchDetector

    images = [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in inputs["frames"][:frames]]
    cpu = create_detector("yunet", retry=False)
    dev = torch.device(s.device)
    ours = YuNetTorchDetector(cpu.config, dev, batch=s.batch)
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        t0 = time.perf_counter()
        ref = [cpu.detect(im) for im in images]
        cpu_ms = 1000 * (time.perf_counter() - t0) / len(images)
    finally:
        cv2.setNumThreads(threads)
    ours.detect_batch(images[:s.batch])  # warm-up
    sync(dev)
    t0 = time.perf_counter()
    got = ours.detect_batch(images)
    sync(dev)
    dev_ms = 1000 * (time.perf_counter() - t0) / len(images)
    same = [len(a) == len(b) for a, b in zip(got, ref)]
    shift = max((float(np.abs(x.landmarks - y.landmarks).max()) for a, b in zip(got, ref) for x, y in zip(a, b)),
                default=float("nan"))
    faces = sum(len(r) for r in ref)
    return [Row("yunet", "detect", "video, OpenCV 1 CPU thread", len(images), faces, 0, None,
                1000 / cpu_ms, cpu_ms, {"detect_align": cpu_ms}),
            Row("yunet", "detect", f"video, torch on {dev.type}, batch {s.batch}", len(images),
                sum(len(g) for g in got), 0, None, 1000 / dev_ms, dev_ms, {"detect_align": dev_ms},
                note=f"same face count in {sum(same)}/{len(same)} frames; landmarks at most {shift:.3f} px "
                     "from OpenCV's")]


# ----------------------------------------------------------------------------- report


def _fmt(v, spec: str = ".1f") -> str:
    return "" if v is None else format(v, spec)


def markdown(rows: list, s: Settings, env: dict) -> str:
    stages = ("detect_align", "restore", "paste", "io")
    lines = [f"# End-to-end pipeline ({env['device_name']}, {s.dtype}, batch {s.batch}, {s.refs} cached references, "
             f"speed {s.speed}{', quick' if s.quick else ''})", "",
             "| model | path | input | images | faces (restored) | images/s | ms/face | "
             + " | ".join(f"{k} ms/face" for k in stages) + " | first run s | note |",
             "|" + "---|" * (9 + len(stages))]
    for r in rows:
        cells = [r.model, r.path, r.input, str(r.images), f"{r.faces} ({r.restored})", _fmt(r.images_per_s),
                 _fmt(r.ms_per_face, ".2f")] + [_fmt(r.stages_ms_per_face.get(k), ".2f") for k in stages]
        cells += [_fmt(r.first_run_s), r.note]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [""] + [f"- {t}" for t in targets(rows, s)]
    return "\n".join(lines) + "\n"


def targets(rows: list, s: Settings) -> list:
    """The issue's two targets, checked where this run measured them."""
    out = []
    step = {r.model: r.ms_per_face for r in rows if r.path == "step"}
    for r in rows:
        if r.path == "nodes" and r.input == "video" and step.get(r.model):
            ratio = r.ms_per_face / step[r.model]
            out.append(f"{r.model}: nodes path {r.ms_per_face:.2f} ms/face = {ratio:.2f}x the step's "
                       f"{step[r.model]:.2f} ms/face (target <= {TARGET_NODES_RATIO}x): "
                       f"{'met' if ratio <= TARGET_NODES_RATIO else 'not met'}")
        if r.path == "cli" and r.input.startswith("video") and r.model == "full":
            size = "320x180 (--quick)" if s.quick else "1920x1080"
            out.append(f"full: {size} {r.input} through the CLI at {r.images_per_s:.1f} frames/s (target >= "
                       f"{TARGET_VIDEO_FPS:.0f}): {'met' if r.images_per_s >= TARGET_VIDEO_FPS else 'not met'}")
    return out


def environment(dev: torch.device) -> dict:
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else (platform.processor() or "cpu")
    from restorer_core.threads import cpu_workers

    return dict(device_name=name, torch=torch.__version__, cuda=torch.version.cuda,
                python=platform.python_version(), cpu_threads=torch.get_num_threads(), cpus=os.cpu_count(),
                cpu_workers_per_chunk_of_8=cpu_workers(8))


# ----------------------------------------------------------------------------- main


def parse_args(argv=None) -> Settings:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default=None, choices=sorted(DTYPES), help="default fp16 on a GPU, fp32 on the CPU")
    ap.add_argument("--quick", action="store_true", help="tiny sizes (CPU check): 320x180 frames, tiny full-size stand-in")
    ap.add_argument("--frames", type=int, default=None, help="video frames (default 120; 8 with --quick)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--refs", type=int, default=4)
    ap.add_argument("--models", default="full,default", help="comma list of full, default")
    ap.add_argument("--paths", default="cli,nodes", help="comma list of cli, nodes")
    ap.add_argument("--speed", default="auto", choices=("auto", "compile", "graph", "eager"))
    ap.add_argument("--strength", default="auto", help="auto (per face, as the defaults) or a number 0..1")
    ap.add_argument("--group-images", type=int, default=None, help="copies of the 4-face image (default 8; 2 quick)")
    ap.add_argument("--max-seconds", type=float, default=270.0,
                    help="no further model is started after this many seconds")
    ap.add_argument("--cpus-per-worker", default="",
                    help="comma list: the CLI video row again with one file/locate thread per N cores "
                         "(default: restorer_core.threads.CPUS_PER_WORKER only)")
    ap.add_argument("--marks", default="", metavar="FILE",
                    help="append 'start RUN' / 'end RUN' lines here around each timed CLI run")
    ap.add_argument("--out", default=os.environ.get("OUT", "./bench_out"))
    a = ap.parse_args(argv)
    try:
        cpws = [int(v) for v in a.cpus_per_worker.split(",") if v.strip()]
    except ValueError:
        ap.error(f"--cpus-per-worker takes whole numbers, got {a.cpus_per_worker!r}")
    if any(v < 1 for v in cpws):
        ap.error("--cpus-per-worker values must be at least 1")
    if a.device.startswith("cuda") and not torch.cuda.is_available():
        ap.error("--device cuda but torch sees no CUDA device; use --device cpu (with --quick)")
    models = [m for m in a.models.split(",") if m]
    paths = [p for p in a.paths.split(",") if p]
    if set(models) - {"full", "default"} or set(paths) - {"cli", "nodes"}:
        ap.error("--models takes full and/or default, --paths cli and/or nodes")
    dtype = a.dtype or ("fp32" if a.device == "cpu" else "fp16")
    if a.device == "cpu" and dtype != "fp32":
        ap.error("half precision on the CPU is not supported by the pipeline; use --dtype fp32")
    if a.strength != "auto":
        try:
            if not 0.0 <= float(a.strength) <= 1.0:
                raise ValueError
        except ValueError:
            ap.error(f"--strength takes auto or a number from 0 to 1, got {a.strength!r}")
    frames = a.frames if a.frames is not None else (8 if a.quick else 120)
    groups = a.group_images if a.group_images is not None else (2 if a.quick else 8)
    if frames < 1 or groups < 1 or a.batch < 1:
        ap.error("--frames, --group-images and --batch must be at least 1")
    return Settings(a.device, dtype, a.quick, frames, a.batch, a.refs, models, paths, a.speed, a.strength,
                    groups, a.max_seconds, a.out, cpws, a.marks)


def main(argv=None) -> int:
    s = parse_args(argv)
    t_start = time.perf_counter()
    dev = torch.device(s.device)
    env = environment(dev)
    print(f"{env['device_name']}, torch {env['torch']}, {s.dtype}, batch {s.batch}, {s.frames} frames", flush=True)
    rows: list = []
    with tempfile.TemporaryDirectory(prefix="gpu_pipeline_") as tmp:
        work = Path(tmp)
        inputs = make_inputs(work / "inputs", s)
        from restorer_core.restore.bank import build_bank

        bank = build_bank(list(inputs["refs"]), align_size=256, name="benchmark refs")
        rows += detector_rows(s, inputs)
        for r in rows:
            print(f"{r.input:40s} {r.ms_per_face:.2f} ms/frame {r.note}", flush=True)
        pack, compile_dir = None, None
        if "nodes" in s.paths:
            import harness

            pack = harness.load_pack(comfy_api=False)
            # one compiled-code folder for both paths: the nodes load what the CLI path compiled
            compile_dir = Path(sys.modules[f"{pack.__name__}.nodes.comfy_bridge"].compile_cache_dir())
        for name in s.models:
            if time.perf_counter() - t_start > s.max_seconds:
                rows.append(Row(name, "-", "-", note=f"skipped: past --max-seconds {s.max_seconds:.0f}"))
                continue
            restorer = load_restorer(name, s)
            if "cli" in s.paths:
                new, pipeline = cli_rows(name, restorer, s, inputs, work, bank, compile_dir)
                pipeline.release_graphs()
                rows += new
            if "nodes" in s.paths:
                rows += node_rows(pack, name, restorer, s, inputs)
            for r in rows[-12:]:
                if r.model == name:
                    print(f"{r.model:8s} {r.path:6s} {r.input:8s} {_fmt(r.images_per_s):>7s} img/s "
                          f"{_fmt(r.ms_per_face, '.2f'):>8s} ms/face  first {_fmt(r.first_run_s)} s", flush=True)
            print(f"{name}: done at {time.perf_counter() - t_start:.0f} s", flush=True)
            del restorer
            if dev.type == "cuda":
                torch.cuda.empty_cache()
    total = time.perf_counter() - t_start
    md = markdown(rows, s, env)
    out = Path(s.out)
    out.mkdir(parents=True, exist_ok=True)
    payload = dict(settings=asdict(s), environment=env, total_s=total, rows=[asdict(r) for r in rows],
                   targets=targets(rows, s))
    write_text_atomic(out / "gpu_pipeline.json", json.dumps(payload, indent=1))
    write_text_atomic(out / "gpu_pipeline.md", md)
    print(md)
    print(f"total {total:.0f} s; wrote {out / 'gpu_pipeline.json'} and {out / 'gpu_pipeline.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
