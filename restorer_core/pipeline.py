"""Detect -> align -> restore (batched across images) -> paste back, for whole images.

Faces from all images of a call are restored in batches of `batch_size`, in a stable order
(image, then left to right). The reference bank's keys/values are computed once per bank
(through bank.reference_kv's disk cache) and shared by every batch. Each face gets its own
CPU generator seeded with `seed`, so a face's result does not depend on the batch it lands in.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import cv2
import numpy as np
import torch

from .errors import CancelledError
from .faces import AlignedFace
from .paste import PasteConfig, paste_faces
from .report import RESTORED, UNCHANGED, FaceRecord, ImageRecord
from .select import FaceSelection

ProgressFn = Callable[[int, int], None]
CancelFn = Callable[[], bool]
REFERENCE_MODES = ("auto", "references", "both")


@dataclass
class RestoreOptions:
    """How to restore.

    mode: the restorer's conditioning ("auto" | "references" | "visual_prompt" | "both" |
    "none"). max_refs: references used from the bank. strength: 0 keeps the input face, 1 the
    restored one (blended in crop space, before colour fix and paste). crop_size: the aligned
    crop faces are cut at (None: max(restorer resolution, 512)). detail_transfer: keep the input's
    detail finer than the restorer's resolution (see transfer_detail). cache_dir / use_cache: where the
    bank's reference keys/values are cached (None: next to the bank file). temporal: a
    restorer_core.temporal.LandmarkSmoother when the images are consecutive frames of one video,
    in order: each face's landmarks are smoothed over the frames before alignment (the smoother
    keeps its state between calls, so frames may come in chunks).
    """

    mode: str = "auto"
    max_refs: int = 4
    batch_size: int = 8
    seed: int = 0
    strength: float = 1.0
    paste: PasteConfig = field(default_factory=PasteConfig)
    selection: FaceSelection = field(default_factory=FaceSelection)
    detector: str = "yunet"
    detector_model: Optional[str] = None
    crop_size: Optional[int] = None
    detail_transfer: bool = True
    cache_dir: Optional[str] = None
    use_cache: bool = True
    temporal: Optional[Any] = None

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")
        if not 0.0 <= self.strength <= 1.0:
            raise ValueError(f"strength must be in 0..1, got {self.strength}")
        if self.max_refs < 1:
            raise ValueError(f"max_refs must be at least 1, got {self.max_refs}")
        if self.crop_size is not None and self.crop_size < 32:
            raise ValueError(f"crop_size must be at least 32 px, got {self.crop_size}")


@dataclass
class ImageResult:
    """One restored image: pixels like the input, the blend mask [H, W] in 0..1, the faces
    (restored ones carry `.restored`) and the report record."""

    pixels: np.ndarray
    mask: np.ndarray
    faces: list
    record: ImageRecord


def resize_square(image: np.ndarray, size: int) -> np.ndarray:
    """[S, S, 3] float -> [size, size, 3] float32 (area when shrinking, cubic when growing)."""
    image = np.asarray(image, dtype=np.float32)
    if image.shape[0] == size and image.shape[1] == size:
        return image
    interp = cv2.INTER_AREA if image.shape[0] > size else cv2.INTER_CUBIC
    return np.clip(cv2.resize(image, (size, size), interpolation=interp), 0.0, 1.0)


def transfer_detail(restored: np.ndarray, crop: np.ndarray, resolution: int) -> np.ndarray:
    """Add back the input crop's detail finer than the restorer's native resolution.

    A restorer that works at `resolution` px cannot represent anything finer, so a face cut at a
    larger crop size would come back blurred. The band above the restorer's Nyquist is taken from
    the input (crop - up(down(crop))); for faces no larger than `resolution` that band is empty and
    nothing changes. An identity restorer thus gives back the input crop exactly.
    """
    crop = np.asarray(crop, dtype=np.float32)
    size = crop.shape[0]
    fine = crop - resize_square(resize_square(crop, resolution), size)
    return np.clip(restored + fine, 0.0, 1.0)


def _rgb_float(pixels: np.ndarray) -> np.ndarray:
    """Any image layout -> HxWx3 float32 0..1 (alpha dropped, gray repeated) for alignment."""
    from .imageio import to_float01

    arr = np.asarray(pixels)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[..., :3]
    arr = to_float01(arr)
    return np.repeat(arr[..., None], 3, axis=2) if arr.ndim == 2 else arr


def make_runner(restorer: Any, speed: Any = "auto") -> Any:
    """The callable that restores batches: the restorer itself, or a FastRestorer around it.

    speed: "auto" (upsampling convs at low resolution; on a CUDA device also CUDA graphs and the
    VAE's wide attention head as matmuls),
    "eager" (the restorer as it is), "graph" (same as auto), "compile" (auto + channels-last +
    torch.compile: the fastest on a GPU, about a minute of compiling per batch shape), or a
    restorer_core.models.fast.SpeedConfig. Every choice computes the same function.
    """
    from .models.fast import FastRestorer, SpeedConfig

    if isinstance(speed, SpeedConfig):
        return FastRestorer(restorer, speed)
    if speed == "eager":
        return restorer
    # On a GPU the reference networks wait on the CPU between bank builds (restores read the
    # cached K/V); a host that manages the model's memory itself (ComfyUI) builds on the CPU.
    offload = torch.device(restorer.device).type == "cuda"
    if speed in ("auto", "graph"):
        return FastRestorer(restorer, SpeedConfig(fuse_upsample=True, wide_head_attention=True, cuda_graph=True,
                                                  offload_references=offload))
    if speed == "compile":
        return FastRestorer(restorer, SpeedConfig(fuse_upsample=True, wide_head_attention=True, channels_last=True,
                                                  compile_mode="default", cuda_graph=True,
                                                  offload_references=offload))
    raise ValueError(f"speed must be auto, eager, graph or compile, got {speed!r}")


class FaceRestorePipeline:
    """A restorer plus everything around it: detection, selection, references, paste-back.

    identity: an optional restorer_core.identity.IdentityEmbedder; with it, selection mode
    "similar" works and reports carry each face's similarity to the bank.
    """

    def __init__(self, restorer: Any, device: Any = None, dtype: Optional[torch.dtype] = None,
                 identity: Any = None, speed: Any = "auto"):
        if device is not None or dtype is not None:
            restorer = restorer.to(device=device, dtype=dtype)
        self.restorer = restorer.eval()
        self.runner = make_runner(self.restorer, speed)
        self.identity = identity
        self._detectors: dict = {}
        self._kv_memo: dict = {}
        self._bank_embeddings: dict = {}
        self.last_cache_info: Any = None

    @property
    def device(self) -> torch.device:
        return self.restorer.device

    @property
    def dtype(self) -> torch.dtype:
        return self.restorer.dtype

    @property
    def resolution(self) -> int:
        return int(self.restorer.config.resolution)

    # ----------------------------------------------------------------------------- helpers
    def add_detector(self, options: RestoreOptions, detector: Any) -> None:
        """Use an already created detector for options.detector / options.detector_model."""
        self._detectors[(options.detector, options.detector_model)] = detector

    def detector(self, options: RestoreOptions) -> Any:
        """The detector the options name (created once, then reused: ONNX sessions are slow to make)."""
        key = (options.detector, options.detector_model)
        if key not in self._detectors:
            from .detect import create_detector

            self._detectors[key] = create_detector(options.detector, options.detector_model)
        return self._detectors[key]

    def crop_size(self, options: RestoreOptions) -> int:
        """Faces are cut at >= 512 px so that paste-back (and detail transfer) keep large faces sharp."""
        return int(options.crop_size or max(self.resolution, 512))

    def uses_references(self, bank: Any, options: RestoreOptions) -> bool:
        if options.mode in ("references", "both") and bank is None:
            raise ValueError(f"mode {options.mode!r} needs reference photos: give a reference bank "
                             "(--refs FOLDER or BANK.safetensors), or use mode 'auto'")
        return bank is not None and options.mode in REFERENCE_MODES

    def reference_kv(self, bank: Any, options: RestoreOptions) -> Any:
        """The bank's keys/values for this restorer (memoised here, cached on disk by bank.py)."""
        from .bank import load_or_compute_reference_kv

        key = (bank.bank_hash(), options.max_refs, options.seed, str(self.dtype), str(self.device),
               self.restorer.weight_hash(), str(options.cache_dir), options.use_cache)
        if key not in self._kv_memo:
            kv, info = load_or_compute_reference_kv(bank, self.restorer, options.max_refs, options.seed,
                                                    options.cache_dir, options.use_cache)
            self._kv_memo = {key: (kv, info)}  # one bank at a time: K/V of big models are large
        kv, self.last_cache_info = self._kv_memo[key]
        return kv

    def bank_embedding(self, bank: Any) -> Optional[np.ndarray]:
        """Mean identity embedding of the bank's faces (unit length), or None without an embedder."""
        if self.identity is None or bank is None:
            return None
        key = bank.bank_hash()
        if key not in self._bank_embeddings:
            from .identity import mean_identity

            self._bank_embeddings[key] = mean_identity(self.identity, bank.crops_hwc())
        return self._bank_embeddings[key]

    def similarity(self, crops: Sequence[np.ndarray], bank: Any) -> Optional[list]:
        """Cosine similarity of aligned crops [S, S, 3] (0..1) to the bank's identity, or None."""
        target = self.bank_embedding(bank)
        if target is None:
            return None
        from .identity import similarities

        return similarities(self.identity, crops, target)

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
        return lambda faces: self.similarity([f.crop for f in faces], bank)

    # ----------------------------------------------------------------------------- faces
    def restore_faces(self, faces: Sequence[AlignedFace], bank: Any = None,
                      options: Optional[RestoreOptions] = None, progress: Optional[ProgressFn] = None,
                      should_cancel: Optional[CancelFn] = None, refs: Any = None) -> list:
        """Restore aligned faces in batches; returns new AlignedFaces (sorted by image, then
        face index) whose `.restored` is at their crop size, blended with `strength`.

        Raises CancelledError when should_cancel() is true before a batch.
        """
        options = options or RestoreOptions()
        ordered = sorted(faces, key=lambda f: (f.image_index, f.face_index))
        if not ordered:
            self.uses_references(bank, options)  # still reject a mode that cannot work
            return []
        if refs is None and self.uses_references(bank, options):
            refs = self.reference_kv(bank, options)
        self.restorer.resolve_mode(options.mode, refs)  # clear errors before any work
        total, done, out = len(ordered), 0, []
        res = self.resolution
        for start in range(0, total, options.batch_size):
            if should_cancel is not None and should_cancel():
                raise CancelledError(f"cancelled after {done} of {total} faces; nothing was written "
                                     "for the unfinished images")
            chunk = ordered[start:start + options.batch_size]
            t0 = time.perf_counter()
            batch = np.stack([resize_square(f.crop, res) for f in chunk])
            x = torch.from_numpy(batch).permute(0, 3, 1, 2).to(self.device, self.dtype)
            generators = [torch.Generator("cpu").manual_seed(int(options.seed)) for _ in chunk]
            with torch.inference_mode():
                y = self.runner(x, refs, options.mode, generator=generators)
            y = y.float().clamp(0.0, 1.0).permute(0, 2, 3, 1).cpu().numpy()
            share = (time.perf_counter() - t0) / len(chunk)
            for face, restored in zip(chunk, y):
                restored = resize_square(restored, face.crop_size)
                if options.detail_transfer and face.crop_size > res:
                    restored = transfer_detail(restored, face.crop, res)
                if options.strength < 1.0:
                    crop = face.crop.astype(np.float32)
                    restored = crop + np.float32(options.strength) * (restored - crop)
                new = face.with_restored(restored.astype(np.float32))
                new.info["restore_seconds"] = share
                out.append(new)
            done += len(chunk)
            if progress is not None:
                progress(done, total)
        return out

    # ----------------------------------------------------------------------------- images
    def locate(self, pixels: np.ndarray, options: RestoreOptions, image_index: int = 0,
               bank: Any = None) -> tuple:
        """(faces to restore, skipped faces) of one image; crops keep the image's bit depth."""
        from .align import align_face
        from .imageio import to_rgb8
        from .locate import locate_faces_report

        rgb8 = to_rgb8(np.asarray(pixels))
        report = locate_faces_report(rgb8, self.detector(options), self.crop_size(options),
                                     options.selection, image_index, self.similarity_fn(bank, options))
        faces = report.faces
        arr = np.asarray(pixels)
        if not (arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[2] == 3) and faces:
            rgb = _rgb_float(arr)  # 16-bit / float / gray / alpha: crop from the full-depth pixels
            faces = [align_face(rgb, f.detection, f.crop_size, f.image_index, f.face_index) for f in faces]
            for new, old in zip(faces, report.faces):
                new.info.update(old.info)
        return faces, report.skipped

    def restore_images(self, images: Sequence[np.ndarray], bank: Any = None,
                       options: Optional[RestoreOptions] = None, progress: Optional[ProgressFn] = None,
                       should_cancel: Optional[CancelFn] = None, names: Optional[Sequence[str]] = None) -> list:
        """Restore several images with their faces batched together -> list[ImageResult]."""
        options = options or RestoreOptions()
        records, faces_by_image, all_faces = [], [], []
        use_refs = self.uses_references(bank, options)
        for i, pixels in enumerate(images):
            arr = np.asarray(pixels)
            name = names[i] if names is not None else f"image[{i}]"
            record = ImageRecord(input=name, width=int(arr.shape[1]), height=int(arr.shape[0]))
            t0 = time.perf_counter()
            faces, skipped = self.locate(arr, options, i, bank)
            if options.temporal is not None:
                pixels_rgb = arr if arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[2] == 3 else _rgb_float(arr)
                faces = options.temporal.realign(faces, pixels_rgb, frame_key=name)
            record.add_time("detect_align", time.perf_counter() - t0)
            for f in faces:
                record.faces.append(FaceRecord(f.face_index, list(map(float, f.box)), f.score,
                                               f.detection.size, similarity_before=f.info.get("similarity")))
            for s in skipped:
                record.faces.append(FaceRecord(s.face_index, list(map(float, s.detection.box)),
                                               s.detection.score, s.detection.size, "skipped", s.reason))
            records.append(record)
            faces_by_image.append(faces)
            all_faces.extend(faces)
        refs = None
        if use_refs and all_faces:
            refs = self.reference_kv(bank, options)
        restored = self.restore_faces(all_faces, bank, options, progress, should_cancel, refs)
        by_image: dict = {}
        for face in restored:
            by_image.setdefault(face.image_index, []).append(face)
        results = []
        for i, pixels in enumerate(images):
            arr, record, faces = np.asarray(pixels), records[i], by_image.get(i, [])
            self._annotate(record, faces, bank)
            t0 = time.perf_counter()
            if faces:
                out, mask = paste_faces(arr, faces, options.paste)
                record.status = RESTORED
            else:
                out, mask = arr, np.zeros(arr.shape[:2], np.float32)
                record.status = UNCHANGED
                record.note = (f"no face selected ({record.faces_skipped} skipped); passed through unchanged"
                               if record.faces else "no face found; passed through unchanged")
            record.add_time("paste", time.perf_counter() - t0)
            results.append(ImageResult(out, mask, faces, record))
        return results

    def _annotate(self, record: ImageRecord, faces: list, bank: Any) -> None:
        """Mark restored faces in the record, with their restore time and identity similarity."""
        after = self.similarity([f.restored for f in faces], bank) if faces else None
        before = self.similarity([f.crop for f in faces], bank) if after is not None else None
        by_index = {f.index: f for f in record.faces}
        for k, face in enumerate(faces):
            rec = by_index[face.face_index]
            rec.status = "restored"
            record.add_time("restore", face.info.get("restore_seconds", 0.0))
            if after is not None:
                rec.similarity_after = after[k]
                rec.similarity_before = before[k]

    def restore_image(self, pixels: np.ndarray, bank: Any = None, options: Optional[RestoreOptions] = None,
                      progress: Optional[ProgressFn] = None, should_cancel: Optional[CancelFn] = None) -> tuple:
        """One image -> (pixels like the input, blend mask [H, W] float32, report dict)."""
        result = self.restore_images([pixels], bank, options, progress, should_cancel)[0]
        return result.pixels, result.mask, result.record.to_dict()
