"""Detect -> align -> restore (batched across images) -> paste back, for whole images.

Faces from all images of a call are restored in batches of `batch_size`, in a stable order
(image, then left to right). What the restorer is conditioned on is decided once per call
(restorer_core.restore.conditioning); the reference bank's keys/values come from
restorer_core.restore.reference_cache (memo + disk file) and are shared by every batch. Each face gets its own
CPU generator seeded with `seed`, so a face's result does not depend on the batch it lands in.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence, Union

import cv2
import numpy as np
import torch

from .conditioning import Capabilities, Conditioning, decide
from .detail import AUTO, check_strength, face_strength, kept_reason
from .identity_gate import (DEFAULT_THRESHOLD, KEPT_STRUCTURELESS, NO_REFS_STRENGTH, check_no_refs_strength,
                            check_threshold, gate_applies, gate_strengths, no_refs_scale, structure_factor)
from ..errors import CancelledError
from ..options import SPEEDS
from ..threads import ThreadMap
from ..faces import warp_torch
from ..faces.locate import rgb_float
from ..faces.records import AlignedFace
from ..faces.identity import IdentityScorer
from .paste import PasteConfig, paste_faces
from .reference_cache import ReferenceCache
from .streams import side_stream
from ..io.report import KEPT, RESTORED, UNCHANGED, FaceRecord, ImageRecord
from ..faces.select import FaceSelection
from ..faces.temporal import strength_smoother

if TYPE_CHECKING:
    from .bank import ReferenceBank
    from ..faces.identity import IdentityEmbedder
    from ..models.restorer import OneStepRestorer

ProgressFn = Callable[[int, int], None]
MEASURED_AHEAD = "detail_measured"  # face info: (resolution, face_strength's answer) from locate_images
CancelFn = Callable[[], bool]


@dataclass
class RestoreOptions:
    """How to restore.

    mode: the restorer's conditioning ("auto" | "references" | "visual_prompt" | "both" |
    "none"). max_refs: references used from the bank. strength: 0 keeps the input face, 1 the
    restored one (blended in crop space, before colour fix and paste); "auto" (default) sets it per
    face from the detail the face already has at the restorer's resolution (restorer_core.restore.detail:
    sharp, large faces ~0, blurred or small ones 1). crop_size: the aligned
    crop faces are cut at (None: max(restorer resolution, 512)). detail_transfer: keep the input's
    detail finer than the restorer's resolution (see transfer_detail). cache_dir / use_cache: where the
    bank's reference keys/values are cached (None: next to the bank file). temporal: a
    restorer_core.faces.temporal.LandmarkSmoother when the images are consecutive frames of one video,
    in order: each face's landmarks are smoothed over the frames before alignment, and with
    strength "auto" each tracked face's strength follows its track (temporal.StrengthSmoothing) so
    that it does not flip between kept and restored (the smoother keeps its state between calls,
    so frames may come in chunks).
    identity_gate: without references, pull a face's strength back where the restored face drifts
    from the input's identity (restorer_core.restore.identity_gate; the pack's embedder, cosine below
    identity_gate_threshold); off by default (see the docs for the measurements). Does nothing with
    references. no_refs_strength: without references, an automatic strength is scaled by it (1: not
    at all); manual strengths are used as given. no_refs_structure_gate: without references, an
    automatic strength is also scaled down with the face's remaining structure, to 0 (kept) for
    faces too blurred to guess who they are (identity_gate.structure_factor).
    """

    mode: str = "auto"
    max_refs: int = 4
    batch_size: int = 8
    seed: int = 0
    strength: Union[float, str] = AUTO
    paste: PasteConfig = field(default_factory=PasteConfig)
    selection: FaceSelection = field(default_factory=FaceSelection)
    detector: str = "yunet"
    detector_model: Optional[str] = None
    crop_size: Optional[int] = None
    detail_transfer: bool = True
    cache_dir: Optional[str] = None
    use_cache: bool = True
    temporal: Optional[Any] = None
    identity_gate: bool = False
    identity_gate_threshold: float = DEFAULT_THRESHOLD
    no_refs_strength: float = NO_REFS_STRENGTH
    no_refs_structure_gate: bool = True

    def __post_init__(self) -> None:
        self.identity_gate_threshold = check_threshold(self.identity_gate_threshold)
        self.no_refs_strength = check_no_refs_strength(self.no_refs_strength)
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")
        self.strength = check_strength(self.strength)
        if self.max_refs < 1:
            raise ValueError(f"max_refs must be at least 1, got {self.max_refs}")
        if self.crop_size is not None and self.crop_size < 32:
            raise ValueError(f"crop_size must be at least 32 px, got {self.crop_size}")


@dataclass
class ImageResult:
    """One restored image: pixels like the input, the blend mask [H, W] in 0..1 (None where
    paste_result was asked for none), the faces (restored ones carry `.restored`) and the report record."""

    pixels: np.ndarray
    mask: Optional[np.ndarray]
    faces: list
    record: ImageRecord
    pasted: bool = True  # False: pixels are still the input's (finish_images(paste=False)); see paste_result


def resize_square(image: np.ndarray, size: int) -> np.ndarray:
    """[S, S, 3] float -> [size, size, 3] float32 (area when shrinking, cubic when growing)."""
    image = np.asarray(image, dtype=np.float32)
    if image.shape[0] == size and image.shape[1] == size:
        return image
    interp = cv2.INTER_AREA if image.shape[0] > size else cv2.INTER_CUBIC
    return np.clip(cv2.resize(image, (size, size), interpolation=interp), 0.0, 1.0)


def transfer_detail(restored: torch.Tensor, crop: torch.Tensor, resolution: int) -> torch.Tensor:
    """Add back the input crop's detail finer than the restorer's native resolution ([..., S, S]
    tensors on any device).

    A restorer that works at `resolution` px cannot represent anything finer, so a face cut at a
    larger crop size would come back blurred. The band above the restorer's Nyquist is taken from
    the input (crop - up(down(crop))); for faces no larger than `resolution` that band is empty and
    nothing changes. An identity restorer thus gives back the input crop exactly.
    """
    size = crop.shape[-1]
    fine = crop - warp_torch.resize_square(warp_torch.resize_square(crop, resolution), size)
    return (restored + fine).clamp_(0.0, 1.0)


def crop_tensor(face: AlignedFace, device: Any) -> torch.Tensor:
    """A face's aligned crop as [3, S, S] float32 on `device`."""
    return torch.from_numpy(np.asarray(face.crop, dtype=np.float32)).to(device).permute(2, 0, 1)


def _one_transfer(items: Sequence, batched: Optional[bool], device: Any) -> bool:
    """Whether a batch of same-shaped items moves between host and `device` in one copy (default:
    off the CPU, where each copy is a transfer; on the CPU a stack would only add a copy)."""
    if batched is None:
        batched = torch.device(device).type != "cpu"
    return batched and len(items) > 1 and len({tuple(x.shape) for x in items}) == 1


def crops_to_device(faces: Sequence[AlignedFace], device: Any, batched: Optional[bool] = None) -> list:
    """The faces' aligned crops as [3, S, S] float32 tensors on `device`, in one host-to-device
    copy when they share a size (see _one_transfer); the same values as crop_tensor each."""
    if not _one_transfer([f.crop for f in faces], batched, device):
        return [crop_tensor(f, device) for f in faces]
    crops = np.stack([np.asarray(f.crop, dtype=np.float32) for f in faces])
    return list(torch.from_numpy(crops).to(device).permute(0, 3, 1, 2).unbind(0))


def tensors_to_host(tensors: Sequence[torch.Tensor], batched: Optional[bool] = None) -> list:
    """[S, S, 3] tensors -> float32 arrays, in one device-to-host copy when they share a size."""
    if not tensors:
        return []
    if not _one_transfer(tensors, batched, tensors[0].device):
        return [t.cpu().numpy() for t in tensors]
    return list(torch.stack(list(tensors)).cpu().numpy())


def speed_config(restorer: Any, speed: Any = "auto", device: Any = None) -> Any:
    """The SpeedConfig a speed choice stands for (None: "eager"); the one place this is decided.

    device: where the restorer will run (default: where it is now; ComfyUI loads it on the CPU
    and moves it to the GPU for each run).
    "graph": upsampling convs at low resolution, and on a CUDA device CUDA graphs and the VAE's
    wide attention head as matmuls (on the CPU these two do nothing; upsampling stays on the
    plain path on eager CUDA, see PhaseUpsample2D). "compile": graph + channels-last +
    torch.compile (default mode) inside the CUDA graph: the fastest on a GPU, a minute or two of
    compiling per GPU, dtype, batch size and model the first time, then loaded from the compile
    cache (restorer_core.models.compile_cache). "auto": "compile" on a CUDA device, "graph" elsewhere.
    On a GPU the reference networks wait on the CPU between bank builds (restores read the
    cached K/V); a host that manages the model's memory itself (ComfyUI) builds on the CPU.
    """
    from ..models.fast import SpeedConfig

    if isinstance(speed, SpeedConfig):
        return speed
    if speed not in SPEEDS:
        raise ValueError(f"speed must be one of {', '.join(SPEEDS)}, got {speed!r}")
    if speed == "eager":
        return None
    run_on = torch.device(device if device is not None else restorer.device)
    offload = torch.device(restorer.device).type == "cuda"
    common = dict(fuse_upsample=True, wide_head_attention=True, cuda_graph=True, offload_references=offload)
    if speed == "compile" or (speed == "auto" and run_on.type == "cuda"):
        return SpeedConfig(channels_last=True, compile_mode="default", **common)
    return SpeedConfig(**common)


def make_runner(restorer: Any, speed: Any = "auto", device: Any = None, compile_cache: Any = None) -> Any:
    """The callable that restores batches: the restorer itself ("eager"), or a FastRestorer
    around it after setting the restorer's speed-up methods (this changes `restorer`: the
    pipeline owns its restorer). Every choice computes the same function; see speed_config.

    A compiling choice gives a FallbackRunner: compiled code is loaded from / saved to
    `compile_cache` (a folder; None: restorer_core.models.compile_cache.default_compile_cache_dir();
    False: not persisted), and any failure to compile falls back to the "graph" choice with
    one line saying why.
    """
    from ..models.compile_cache import CompileCache, PersistedCompile, default_compile_cache_dir
    from ..models.fast import FallbackRunner, speed_up

    config = speed_config(restorer, speed, device)
    if config is None:
        return restorer
    if not config.compile_mode:
        return speed_up(restorer, config)
    persist = None
    if compile_cache is not False:
        persist = PersistedCompile(CompileCache(compile_cache or default_compile_cache_dir()))
    fallback = speed_config(restorer, "graph", device)
    return FallbackRunner(restorer, config, fallback, persist)


@dataclass
class LocatedImages:
    """Images with their faces found and aligned, ready to restore: the images as given, one
    ImageRecord each (detections, skipped faces, detect_align time) and all their faces."""

    images: list
    records: list
    faces: list


class FaceRestorePipeline:
    """A restorer plus everything around it: detection, selection, references, paste-back.

    identity: an optional restorer_core.faces.identity.IdentityEmbedder; with it, selection mode
    "similar" works and reports carry each face's similarity to the bank.
    speed, run_device, compile_cache: see make_runner (run_device: where the restorer will run
    when a host moves it there later, as ComfyUI does).
    """

    def __init__(self, restorer: "OneStepRestorer", device: Any = None, dtype: Optional[torch.dtype] = None,
                 identity: Optional["IdentityEmbedder"] = None, speed: Any = "auto", run_device: Any = None,
                 compile_cache: Any = None, cpu_workers: Optional[int] = None):
        if device is not None or dtype is not None:
            restorer = restorer.to(device=device, dtype=dtype)
        self.restorer = restorer.eval()
        self.runner = make_runner(self.restorer, speed, run_device, compile_cache)
        self.identity = identity
        self._detectors: dict = {}  # (detector, model) -> a detector, or a DetectorPool (one per thread)
        self._detect_lock = threading.RLock()  # a single detector is not thread-safe; see locate_images
        self.cpu_workers = cpu_workers  # threads locating images side by side (None: restorer_core.threads.cpu_workers)
        self._threads = ThreadMap("locate")  # long-lived threads: each keeps its own detector
        self.references = ReferenceCache()
        self.scorer = IdentityScorer(identity) if identity is not None else None
        self._gate_embedder: Any = identity

    def gate_embedder(self) -> Any:
        """The embedder the identity gate measures with: the pipeline's identity network, else the
        shipped embedder (loaded once); None when neither is available."""
        if self._gate_embedder is None:
            from ..errors import ModelNotFoundError
            from ..faces.identity import load_identity_embedder

            try:
                self._gate_embedder = load_identity_embedder(device=self.device)
            except ModelNotFoundError:
                return None
        return self._gate_embedder

    @property
    def device(self) -> torch.device:
        return self.restorer.device

    @property
    def dtype(self) -> torch.dtype:
        return self.restorer.dtype

    @property
    def resolution(self) -> int:
        return int(self.restorer.config.resolution)

    def release_graphs(self) -> None:
        """Free the runner's CUDA graphs (their memory pool is invisible to a host's memory manager)."""
        release = getattr(self.runner, "release_graphs", None)
        if release is not None:
            release()

    def batch_shape(self, faces: int, options: "RestoreOptions") -> int:
        """How many faces the network runs for a batch of `faces`: options.batch_size while the
        runner is compiled (a partial batch is padded, so a compile of one batch size serves
        every batch; each face has its own generator and batch rows never mix, so padding does
        not change the real faces), else `faces`."""
        return max(faces, options.batch_size) if getattr(self.runner, "compiles", False) else faces

    # ----------------------------------------------------------------------------- helpers
    def add_detector(self, options: RestoreOptions, detector: Any, factory: Optional[Callable[[], Any]] = None) -> None:
        """Use an already created detector for options.detector / options.detector_model; with
        `factory` (makes another like it) each locating thread gets its own, so images are
        located side by side; without, they are located one at a time with `detector`."""
        from ..faces.detect.pool import DetectorPool

        key = (options.detector, options.detector_model)
        pooled = factory is not None and not getattr(detector, "thread_safe", False)
        self._detectors[key] = DetectorPool(factory, first=detector) if pooled else detector

    def detector(self, options: RestoreOptions) -> Any:
        """The detector for the options: one given to add_detector, else the process-wide one
        (restorer_core.faces.detect.cached_detector: a DetectorPool, one instance per thread, or
        on a CUDA restorer the batched torch detector on its device)."""
        from ..faces.detect import cached_detector

        key = (options.detector, options.detector_model)
        if key not in self._detectors:
            self._detectors[key] = cached_detector(options.detector, options.detector_model, device=self.device)
        return self._detectors[key]

    def locate_workers(self, images: int, options: RestoreOptions) -> int:
        """Threads to locate `images` images with: 1 where the detector is a single object (given
        without a factory) or selection "similar" runs the identity network per face, else
        self.cpu_workers (None: restorer_core.threads.cpu_workers decides)."""
        from ..threads import cpu_workers

        if images < 2 or options.selection.mode == "similar" or not getattr(self.detector(options), "thread_safe", False):
            return 1
        return max(1, min(images, self.cpu_workers)) if self.cpu_workers else cpu_workers(images)

    def crop_size(self, options: RestoreOptions) -> int:
        """Faces are cut at >= 512 px so that paste-back (and detail transfer) keep large faces sharp."""
        return int(options.crop_size or max(self.resolution, 512))

    def conditioning(self, bank: Optional["ReferenceBank"], options: RestoreOptions) -> Conditioning:
        """What the restorer will be conditioned on with this bank and mode, and why
        (restorer_core.restore.conditioning decides); ValueError saying what to do when it cannot work."""
        have_refs = bank is not None and len(bank) > 0
        return decide(Capabilities.of(self.restorer.config), options.mode, have_refs)

    def uses_references(self, bank: Any, options: RestoreOptions) -> bool:
        return self.conditioning(bank, options).use_references

    def reference_kv(self, bank: Any, options: RestoreOptions) -> Any:
        """The bank's keys/values for this restorer (restorer_core.restore.reference_cache)."""
        return self.references.get(bank, self.restorer, options.max_refs, options.seed,
                                   options.cache_dir, options.use_cache)

    @property
    def last_cache_info(self) -> Any:
        """Where the last reference keys/values came from (CacheInfo), or None."""
        return self.references.last_info

    def similarity(self, crops: Sequence[np.ndarray], bank: Any) -> Optional[list]:
        """Cosine similarity of aligned crops [S, S, 3] (0..1) to the bank's identity, or None
        without an identity embedder or a bank."""
        if self.scorer is None or bank is None:
            return None
        return self.scorer.similarity(crops, bank)

    def similarity_fn(self, bank: Any, options: RestoreOptions) -> Optional[Callable]:
        """For selection mode "similar": faces -> similarity to the bank; None for other modes.
        ValueError saying what is missing when the bank or the identity embedder is."""
        if options.selection.mode != "similar":
            return None
        if bank is None:
            raise ValueError("face selection 'similar' picks faces that look like the reference person: "
                             "give reference photos (--refs), or choose another selection")
        if self.identity is None:
            raise ValueError("face selection 'similar' needs the identity embedder "
                             "(restorer_core/assets/models/identity_embedder.safetensors), which is not "
                             "loaded; choose another selection (all, largest, index, min-size)")
        return self.scorer.for_selection(bank)

    # ----------------------------------------------------------------------------- faces
    def restore_faces(self, faces: Sequence[AlignedFace], bank: Any = None,
                      options: Optional[RestoreOptions] = None, progress: Optional[ProgressFn] = None,
                      should_cancel: Optional[CancelFn] = None, refs: Any = None) -> list:
        """Restore aligned faces in batches; returns new AlignedFaces (sorted by image, then
        face index) whose `.restored` is at their crop size, blended with `strength`; each face's
        info carries the strength used (and, for "auto", the detail estimate behind it). A face at
        strength 0 skips the restorer: `.restored` is its input crop and info["kept"] says why.
        Automatic strengths of faces tracked over frames (info["track"], from options.temporal or
        temporal.smooth_frames) follow their track; info["detail"] keeps the frame's own estimate.

        Raises CancelledError when should_cancel() is true before a batch.
        """
        options = options or RestoreOptions()
        ordered = sorted(faces, key=lambda f: (f.image_index, f.face_index))
        cond = self.conditioning(bank, options)  # a mode that cannot work fails before any work
        if not ordered:
            return []
        if not cond.use_references:
            refs = None
        elif refs is None:
            refs = self.reference_kv(bank, options)
        total, done, out = len(ordered), 0, []
        res = self.resolution
        follow = strength_smoother(options.temporal, ordered) if options.strength == AUTO else None
        automatic = options.strength == AUTO
        scale = no_refs_scale(automatic, cond.use_references, options.no_refs_strength)
        for start in range(0, total, options.batch_size):
            if should_cancel is not None and should_cancel():
                raise CancelledError(f"cancelled after {done} of {total} faces; nothing was written "
                                     "for the unfinished images")
            chunk = ordered[start:start + options.batch_size]
            t0 = time.perf_counter()
            decided = [self._strength(f, options) for f in chunk]
            factors = [structure_factor(automatic, cond.use_references, est.structure if est is not None else None,
                                        options.no_refs_structure_gate) for _, est in decided]
            structureless = [s > 0.0 and f == 0.0 for (s, _), f in zip(decided, factors)]
            decided = [(s * f, est) for (s, est), f in zip(decided, factors)]
            if follow is not None:  # frames of a clip: each track's automatic strength over time
                decided = [(follow.follow(f, s), est) for f, (s, est) in zip(chunk, decided)]
            if scale != 1.0:
                decided = [(s * scale, est) for s, est in decided]
            work = [k for k, (strength, est) in enumerate(decided) if not kept_reason(strength, est)]
            outputs, gates = {}, {}
            if work:
                crops = dict(zip(work, crops_to_device([chunk[k] for k in work], self.device)))
                x = [warp_torch.resize_square(crops[k], res) for k in work]
                x += x[-1:] * (self.batch_shape(len(work), options) - len(work))  # dropped below
                x = torch.stack(x).to(self.dtype)
                generators = [torch.Generator("cpu").manual_seed(int(options.seed)) for _ in x]
                with torch.inference_mode():
                    y = self.runner(x, refs, options.mode, generator=generators)[:len(work)]
                y = y.float().clamp(0.0, 1.0)
                gated = self._gate(x[:len(work)].float(), y, [decided[k][0] for k in work], cond, options)
                for i, k in enumerate(work):
                    if gated[i] is not None:
                        decided[k] = (gated[i].strength, decided[k][1])
                        gates[k] = gated[i]
                finished = [self._finish(y[i], crops[k], decided[k][0], options) for i, k in enumerate(work)]
                outputs = dict(zip(work, tensors_to_host(finished)))
            share = (time.perf_counter() - t0) / len(chunk)
            for k, face in enumerate(chunk):
                strength, estimate = decided[k]
                gate = gates.get(k)
                kept = kept_reason(strength, estimate) if gate is None or strength > 0 else gate.reason
                kept = KEPT_STRUCTURELESS if kept and structureless[k] else kept
                # strength 0: the input face exactly, no restorer pass
                restored = face.crop.astype(np.float32) if kept else outputs[k]
                new = face.with_restored(restored)
                new.info.pop(MEASURED_AHEAD, None)
                new.info["strength"] = strength
                if scale != 1.0:
                    new.info["no_refs_scale"] = scale
                if factors[k] != 1.0:
                    new.info["structure_factor"] = round(factors[k], 4)
                if kept:
                    new.info["kept"] = kept
                if gate is not None:
                    new.info["identity_gate"] = gate.to_dict()
                    if gate.reason:
                        new.info["lowered_reason"] = gate.reason
                if estimate is not None:
                    new.info["detail"] = estimate.to_dict()
                new.info["restore_seconds"] = share
                out.append(new)
            done += len(chunk)
            if progress is not None:
                progress(done, total)
        return out

    def _gate(self, x: torch.Tensor, y: torch.Tensor, strengths: list, cond: Conditioning,
              options: RestoreOptions) -> list:
        """GateDecision per worked face (None each when the gate does not apply: off, references,
        no embedder); the policy is restorer_core.restore.identity_gate's."""
        embedder = self.gate_embedder() if options.identity_gate and not cond.use_references else None
        if not gate_applies(options.identity_gate, cond.use_references, embedder):
            return [None] * len(strengths)
        return gate_strengths(embedder, x, y, strengths, options.identity_gate_threshold)

    def _strength(self, face: AlignedFace, options: RestoreOptions) -> tuple:
        """(strength, DetailEstimate or None) of a face (detail.face_strength): for "auto", the
        estimate locate_images measured ahead when it is for this restorer's resolution."""
        ahead = face.info.get(MEASURED_AHEAD) if options.strength == AUTO else None
        if ahead is not None and ahead[0] == self.resolution:
            return ahead[1]
        return face_strength(options.strength, face.crop, face.matrix, self.resolution)

    def _finish(self, restored: torch.Tensor, crop: torch.Tensor, strength: float,
                options: RestoreOptions) -> torch.Tensor:
        """A restorer output [3, R, R] back at the crop's size, with the input's finer detail
        and the strength blend, on the restorer's device -> [S, S, 3] float32 tensor there."""
        size = crop.shape[-1]
        restored = warp_torch.resize_square(restored, size)
        if options.detail_transfer and size > self.resolution:
            restored = transfer_detail(restored, crop, self.resolution)
        if strength < 1.0:
            restored = crop + float(strength) * (restored - crop)
        return restored.permute(1, 2, 0)

    # ----------------------------------------------------------------------------- images
    def locate(self, pixels: np.ndarray, options: RestoreOptions, image_index: int = 0,
               bank: Any = None, rgb8: Optional[np.ndarray] = None, detections: Optional[list] = None) -> tuple:
        """(faces to restore, skipped faces) of one image; crops keep the image's bit depth.
        rgb8 / detections: the image's 8-bit RGB copy and detections when made already."""
        from ..io.imageio import to_rgb8
        from ..faces.locate import locate_faces_report, recut_full_depth

        rgb8 = to_rgb8(np.asarray(pixels)) if rgb8 is None else rgb8
        report = locate_faces_report(rgb8, self.detector(options), self.crop_size(options),
                                     options.selection, image_index, self.similarity_fn(bank, options),
                                     detections=detections)
        faces = recut_full_depth(pixels, report.faces)  # 16-bit / float / gray / alpha: full depth
        return faces, report.skipped

    def _detect_batched(self, arrays: list, options: RestoreOptions, workers: int) -> tuple:
        """(8-bit RGB copies, detections, seconds per image) of every image where the detector
        batches (one on the GPU: a chunk's frames in one pass), else (None, None, 0.0)."""
        from ..faces.locate import detect_all
        from ..io.imageio import to_rgb8

        detector = self.detector(options)
        if len(arrays) < 2 or getattr(detector, "detect_batch", None) is None:
            return None, None, 0.0
        t0 = time.perf_counter()
        rgb8 = self._threads.map(to_rgb8, arrays, workers)  # on this thread when workers is 1
        with self._detect_lock, side_stream(self.device):  # beside the restorer's batch, not behind it
            detected = detect_all(rgb8, detector)
        return rgb8, detected, (time.perf_counter() - t0) / len(arrays)

    def locate_images(self, images: Sequence[np.ndarray], bank: Any = None, options: Optional[RestoreOptions] = None,
                      names: Optional[Sequence[str]] = None) -> LocatedImages:
        """The first half of restore_images: every image's faces found, selected and aligned, and
        with strength "auto" their detail measured (CPU work a caller may do ahead, on another
        thread, while the restorer works on earlier images). The images are located side by side
        on locate_workers threads, each with its own detector; faces tracked over frames
        (options.temporal) are realigned in frame order after. Two threads may call this.
        record time "detect_align" is each image's own work (side-by-side images overlap).
        ValueError for a mode that cannot work, before any detection."""
        options = options or RestoreOptions()
        self.conditioning(bank, options)
        arrays = [np.asarray(p) for p in images]
        workers = self.locate_workers(len(arrays), options)
        measure_now = options.strength == AUTO and options.temporal is None
        rgb8, detected, shared = self._detect_batched(arrays, options, workers)

        def one(i: int) -> tuple:
            t0 = time.perf_counter() - shared
            faces, skipped = self.locate(arrays[i], options, i, bank, rgb8[i] if rgb8 else None,
                                         detected[i] if detected else None)
            if measure_now:
                self._measure_ahead(faces)
            return faces, skipped, time.perf_counter() - t0

        if workers > 1:
            found = self._threads.map(one, range(len(arrays)), workers)
        else:
            with self._detect_lock:
                found = [one(i) for i in range(len(arrays))]
        records, all_faces = [], []
        for i, (arr, (faces, skipped, seconds)) in enumerate(zip(arrays, found)):
            name = names[i] if names is not None else f"image[{i}]"
            record = ImageRecord(input=name, width=int(arr.shape[1]), height=int(arr.shape[0]))
            t0 = time.perf_counter()
            if options.temporal is not None:  # in frame order: the smoother follows tracks over frames
                pixels_rgb = arr if arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[2] == 3 else rgb_float(arr)
                with self._detect_lock:
                    faces = options.temporal.realign(faces, pixels_rgb, frame_key=name)
                if options.strength == AUTO:
                    self._measure_ahead(faces)
            record.add_time("detect_align", seconds + time.perf_counter() - t0)
            for f in faces:
                record.faces.append(FaceRecord(f.face_index, list(map(float, f.box)), f.score,
                                               f.detection.size, similarity_before=f.info.get("similarity")))
            for sk in skipped:
                record.faces.append(FaceRecord(sk.face_index, list(map(float, sk.detection.box)),
                                               sk.detection.score, sk.detection.size, "skipped", sk.reason))
            records.append(record)
            all_faces.extend(faces)
        return LocatedImages(list(images), records, all_faces)

    def _measure_ahead(self, faces: Sequence[AlignedFace]) -> None:
        """The automatic strength's detail estimate of each face, stored for restore_faces (CPU
        work done while locating, off the restorer's thread)."""
        for f in faces:
            f.info[MEASURED_AHEAD] = (self.resolution, face_strength(AUTO, f.crop, f.matrix, self.resolution))

    def finish_images(self, located: LocatedImages, bank: Any = None, options: Optional[RestoreOptions] = None,
                      progress: Optional[ProgressFn] = None, should_cancel: Optional[CancelFn] = None,
                      paste: bool = True) -> list:
        """The second half of restore_images: restore the located faces (batched across the
        images) and paste them back on the restorer's device -> list[ImageResult].
        paste=False leaves the paste-back to paste_result (results with pasted False), so that a
        caller can paste on another thread while the restorer goes on with the next images."""
        options = options or RestoreOptions()
        refs = None
        if located.faces and self.conditioning(bank, options).use_references:
            refs = self.reference_kv(bank, options)
        restored = self.restore_faces(located.faces, bank, options, progress, should_cancel, refs)
        by_image: dict = {}
        for face in restored:
            by_image.setdefault(face.image_index, []).append(face)
        results = []
        for i, pixels in enumerate(located.images):
            record, faces = located.records[i], by_image.get(i, [])
            self._annotate(record, faces, bank)
            result = ImageResult(np.asarray(pixels), None, faces, record, pasted=False)
            results.append(self.paste_result(result, options) if paste else result)
        return results

    def paste_result(self, result: ImageResult, options: Optional[RestoreOptions] = None,
                     mask: bool = True) -> ImageResult:
        """Paste an ImageResult's restored faces into its pixels on the restorer's device (in
        place: pixels, mask, record status and note; nothing when already pasted). Safe to call
        from another thread than the restorer's. mask=False: no blend mask is made (result.mask
        None), which spares a frame-sized array and its device work where nobody reads it."""
        if result.pasted:
            return result
        options = options or RestoreOptions()
        arr, record, faces = result.pixels, result.record, result.faces
        t0 = time.perf_counter()
        changed = [f for f in faces if not f.info.get("kept")]
        if changed:
            with side_stream(self.device):  # file threads paste beside the restorer's next batch
                out, blend = paste_faces(arr, changed, options.paste, return_mask=mask, device=self.device)
            record.status = RESTORED
        else:
            out, blend = arr, (np.zeros(arr.shape[:2], np.float32) if mask else None)
            record.status = UNCHANGED
            if faces:
                reasons = sorted({f.info["kept"] for f in faces})
                record.note = f"{len(faces)} face(s) kept: {'; '.join(reasons)}; passed through unchanged"
            else:
                record.note = (f"no face selected ({record.faces_skipped} skipped); passed through unchanged"
                               if record.faces else "no face found; passed through unchanged")
        record.add_time("paste", time.perf_counter() - t0)
        result.pixels, result.mask, result.pasted = out, blend, True
        return result

    def restore_images(self, images: Sequence[np.ndarray], bank: Any = None,
                       options: Optional[RestoreOptions] = None, progress: Optional[ProgressFn] = None,
                       should_cancel: Optional[CancelFn] = None, names: Optional[Sequence[str]] = None) -> list:
        """Restore several images with their faces batched together -> list[ImageResult]
        (locate_images, then finish_images)."""
        located = self.locate_images(images, bank, options, names)
        return self.finish_images(located, bank, options, progress, should_cancel)

    def _annotate(self, record: ImageRecord, faces: list, bank: Any) -> None:
        """Mark restored (or kept) faces in the record, with their restore time and identity similarity."""
        after = self.similarity([f.restored for f in faces], bank) if faces else None
        before = self.similarity([f.crop for f in faces], bank) if after is not None else None
        by_index = {f.index: f for f in record.faces}
        for k, face in enumerate(faces):
            rec = by_index[face.face_index]
            kept = face.info.get("kept", "")
            rec.status, rec.reason = (KEPT, kept) if kept else ("restored", face.info.get("lowered_reason", ""))
            rec.strength = face.info.get("strength")
            record.add_time("restore", face.info.get("restore_seconds", 0.0))
            if after is not None:
                rec.similarity_after = after[k]
                rec.similarity_before = before[k]

    def restore_image(self, pixels: np.ndarray, bank: Any = None, options: Optional[RestoreOptions] = None,
                      progress: Optional[ProgressFn] = None, should_cancel: Optional[CancelFn] = None) -> tuple:
        """One image -> (pixels like the input, blend mask [H, W] float32, report dict)."""
        result = self.restore_images([pixels], bank, options, progress, should_cancel)[0]
        return result.pixels, result.mask, result.record.to_dict()
