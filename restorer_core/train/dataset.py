"""Torch datasets over the face cache written by ``restorer_core.train.prepare``.

Training samples: a clean target crop (HQ), its on-the-fly degraded input (LQ), 0..4 other
crops of the same person as references (padded to ``max_refs`` with a bool mask) and the
5-point landmarks of all of them (for the landmark attention loss). Validation samples are
fixed by a seed: 1 target + 4 references per validation identity, degraded at x4 and x8.

Landmark order (restorer_core.faces.records): right eye, left eye, nose, right mouth, left mouth
(image-left eye first). Landmarks use cv2's pixel-centre convention: pixel j has centre j,
so a horizontal flip maps x -> S - 1 - x and swaps the left/right points.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from .degrade import DegradationConfig, degrade, degrade_fixed
from .prepare import CACHE_FORMAT, SPLIT_TRAIN, SPLIT_VAL, decode_image

FLIP_PERMUTATION = np.array([1, 0, 2, 4, 3])
_SPLITS = {"train": SPLIT_TRAIN, "val": SPLIT_VAL}


# ----------------------------------------------------------------------------- geometry


def flip_image(img: np.ndarray) -> np.ndarray:
    """Mirror an [H, W, C] image left-right (contiguous copy)."""
    return np.ascontiguousarray(img[:, ::-1])


def flip_landmarks(landmarks: np.ndarray, width: int) -> np.ndarray:
    """Mirror [..., 5, 2] landmarks of a ``width`` px image and swap eyes and mouth corners."""
    out = np.array(landmarks, np.float32, copy=True)
    out[..., 0] = (width - 1) - out[..., 0]
    return out[..., FLIP_PERMUTATION, :]


def to_chw(img_uint8: np.ndarray) -> np.ndarray:
    """[H, W, 3] uint8 -> [3, H, W] float32 in 0..1 (numpy: no torch thread pool in data workers)."""
    return img_uint8.transpose(2, 0, 1).astype(np.float32) * np.float32(1.0 / 255.0)


# ----------------------------------------------------------------------------- cache


class FaceCache:
    """In-memory view of a face cache .npz (loaded with allow_pickle=False)."""

    def __init__(self, arrays: dict[str, np.ndarray]):
        meta = json.loads(str(arrays["meta_json"]))
        if meta.get("format") != CACHE_FORMAT:
            raise ValueError(f"face cache has format {meta.get('format')!r}, expected {CACHE_FORMAT!r}; "
                             "rebuild it with python -m restorer_core.train.prepare")
        self.meta = meta
        self.data = arrays["image_data"]
        self.offsets = arrays["image_offsets"]
        self.identity = arrays["identity"].astype(np.int64)
        self.identity_names = [str(n) for n in arrays["identity_names"]]
        self.identity_split = arrays["identity_split"]
        self.split = arrays["split"]
        self.source = arrays["source"]
        self.source_names = [str(n) for n in arrays["source_names"]]
        self.landmarks = arrays["landmarks"].astype(np.float32)
        self.crop_size = int(arrays["crop_size"])
        self.filenames = [str(n) for n in arrays["filenames"]] if "filenames" in arrays else None
        order = np.argsort(self.identity, kind="stable")
        bounds = np.searchsorted(self.identity[order], np.arange(len(self.identity_names) + 1))
        self.by_identity: list[np.ndarray] = [order[bounds[i]:bounds[i + 1]] for i in range(len(self.identity_names))]

    @classmethod
    def load(cls, path: str | os.PathLike) -> "FaceCache":
        if not os.path.isfile(path):
            raise FileNotFoundError(f"face cache {path} not found; build it with "
                                    "python -m restorer_core.train.prepare --faces <dir> --out <file.npz>")
        with np.load(path, allow_pickle=False) as npz:
            return cls({k: npz[k] for k in npz.files})

    def __len__(self) -> int:
        return len(self.identity)

    def image(self, index: int) -> np.ndarray:
        """Decoded crop ``index`` as RGB uint8 [S, S, 3]."""
        return decode_image(self.data[self.offsets[index]:self.offsets[index + 1]])

    def images(self, indices: Sequence[int], threads: int = 1) -> np.ndarray:
        """Decoded crops as one uint8 array [N, S, S, 3] (cv2 decodes in parallel on ``threads``)."""
        s = self.crop_size
        out = np.empty((len(indices), s, s, 3), np.uint8)

        def work(j: int) -> None:
            out[j] = self.image(int(indices[j]))

        if threads > 1 and len(indices) > 64:
            with ThreadPoolExecutor(max_workers=threads) as ex:
                list(ex.map(work, range(len(indices)), chunksize=64))
        else:
            for j in range(len(indices)):
                work(j)
        return out

    def indices(self, split: str) -> np.ndarray:
        """Crop indices of ``split`` ("train" | "val" | "all")."""
        if split == "all":
            return np.arange(len(self))
        return np.flatnonzero(self.split == _SPLITS[split])


# ----------------------------------------------------------------------------- training


@dataclass(frozen=True)
class TrainDataConfig:
    max_refs: int = 4
    no_ref_prob: float = 0.2  # so the restorer also learns the reference-free path
    flip_prob: float = 0.5
    # the input is the clean target itself: the restorer learns to leave a clean face alone
    clean_prob: float = 0.0
    # references of another person (target unchanged): the restorer learns not to follow
    # references that disagree with the input
    wrong_ref_prob: float = 0.0
    seed: int = 0
    degradation: DegradationConfig = field(default_factory=DegradationConfig)


class RestorationDataset(Dataset):
    """(HQ target, degraded LQ, 0..max_refs same-person references) samples of one split.

    Randomness is drawn from a generator seeded by (config seed, epoch, torch's per-worker
    seed, index, draw count), so DataLoader workers never share a stream and epochs differ.
    """

    def __init__(self, cache: FaceCache, split: str = "train", cfg: TrainDataConfig = TrainDataConfig()):
        self.cache = cache
        self.cfg = cfg
        self.items = cache.indices(split)
        if len(self.items) == 0:
            raise ValueError(f"the face cache has no {split!r} crops")
        self.identities = np.unique(cache.identity[self.items])  # wrong-person references come from these
        self.epoch = 0
        self._draws = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.items)

    def _rng(self, idx: int) -> np.random.Generator:
        self._draws += 1
        return np.random.default_rng([self.cfg.seed, self.epoch, torch.initial_seed(), idx, self._draws])

    def pick_references(self, target: int, rng: np.random.Generator, wrong: bool = False) -> np.ndarray:
        """0..max_refs other crops of the target's identity (0 with probability no_ref_prob);
        ``wrong``: crops of another identity of the same split instead."""
        own = int(self.cache.identity[target])
        if wrong:
            ids = self.identities
            other = int(ids[rng.integers(len(ids))])
            if other == own:
                other = int(ids[(np.searchsorted(ids, own) + 1) % len(ids)])
            others = self.cache.by_identity[other]
        else:
            others = self.cache.by_identity[own]
            others = others[others != target]
        if len(others) == 0 or rng.random() < self.cfg.no_ref_prob:
            return others[:0]
        k = int(rng.integers(1, min(self.cfg.max_refs, len(others)) + 1))
        return rng.choice(others, size=k, replace=False)

    def __getitem__(self, idx: int) -> dict[str, torch.Tensor]:
        rng = self._rng(idx)
        target = int(self.items[idx])
        wrong = rng.random() < self.cfg.wrong_ref_prob
        clean = rng.random() < self.cfg.clean_prob
        ref_idx = self.pick_references(target, rng, wrong)
        flip = rng.random() < self.cfg.flip_prob
        s = self.cache.crop_size

        hq = self.cache.image(target)
        lm = self.cache.landmarks[target]
        refs = [self.cache.image(int(r)) for r in ref_idx]
        ref_lm = self.cache.landmarks[ref_idx] if len(ref_idx) else np.zeros((0, 5, 2), np.float32)
        if flip:
            hq, lm = flip_image(hq), flip_landmarks(lm, s)
            refs = [flip_image(r) for r in refs]
            ref_lm = flip_landmarks(ref_lm, s)
        lq = hq.copy() if clean else degrade(hq, rng, self.cfg.degradation)
        sample = pack_sample(hq, lq, refs, lm, ref_lm, self.cfg.max_refs, int(self.cache.identity[target]),
                             target, ref_idx)
        sample["wrong_refs"] = torch.tensor(bool(wrong and len(ref_idx)))
        return sample


def pack_sample(
    hq: np.ndarray,
    lq: np.ndarray,
    refs: Sequence[np.ndarray],
    landmarks: np.ndarray,
    ref_landmarks: np.ndarray,
    max_refs: int,
    identity: int,
    index: int,
    ref_index: Sequence[int] = (),
) -> dict[str, torch.Tensor]:
    """Tensors of one sample; references padded with zeros to ``max_refs`` (``ref_mask`` marks real ones,
    ``ref_index`` holds their cache indices, -1 for padding)."""
    s = hq.shape[0]
    ref_t = np.zeros((max_refs, 3, s, s), np.float32)
    ref_lm = np.zeros((max_refs, 5, 2), np.float32)
    mask = np.zeros(max_refs, bool)
    ref_idx = np.full(max_refs, -1, np.int64)
    n = min(len(refs), max_refs)
    ref_idx[:n] = np.asarray(ref_index, np.int64)[:n] if len(ref_index) else -1
    for j in range(n):
        ref_t[j] = to_chw(refs[j])
        ref_lm[j] = ref_landmarks[j]
        mask[j] = True
    return {
        "hq": torch.from_numpy(to_chw(hq)),
        "lq": torch.from_numpy(to_chw(lq)),
        "refs": torch.from_numpy(ref_t),
        "ref_mask": torch.from_numpy(mask),
        "landmarks": torch.from_numpy(np.array(landmarks, np.float32)),
        "ref_landmarks": torch.from_numpy(ref_lm),
        "identity": torch.tensor(identity, dtype=torch.int64),
        "index": torch.tensor(index, dtype=torch.int64),
        "ref_index": torch.from_numpy(ref_idx),
    }


# ----------------------------------------------------------------------------- validation


@dataclass
class ValidationSet:
    """Fixed validation samples: arrays are uint8 images [N, S, S, 3] / landmarks in crop pixels."""

    hq: np.ndarray
    lq: dict[int, np.ndarray]  # scale -> [N, S, S, 3]
    refs: np.ndarray  # [N, R, S, S, 3]
    landmarks: np.ndarray  # [N, 5, 2]
    ref_landmarks: np.ndarray  # [N, R, 5, 2]
    identity: np.ndarray  # [N] identity ids of the cache
    target_index: np.ndarray  # [N] crop indices of the cache
    ref_index: np.ndarray  # [N, R]
    identity_names: list[str]

    def __len__(self) -> int:
        return len(self.hq)


def _derived_seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


def build_validation_set(
    cache: FaceCache,
    scales: Sequence[int] = (4, 8),
    num_refs: int = 4,
    seed: int = 0,
    targets_per_identity: int = 1,
    split: str = "val",
) -> ValidationSet:
    """For every ``split`` identity with >= num_refs + 1 crops: seeded target(s) + num_refs references,
    the target degraded with ``degrade_fixed`` at each scale. Same cache + seed -> same set."""
    rows: list[tuple[int, int, np.ndarray]] = []
    split_code = _SPLITS[split]
    for ident, members in enumerate(cache.by_identity):
        if cache.identity_split[ident] != split_code or len(members) < num_refs + 1:
            continue
        rng = np.random.default_rng([seed, ident])
        perm = rng.permutation(np.sort(members))
        for t in range(min(targets_per_identity, len(perm))):
            target = int(perm[t])
            pool = np.delete(perm, t)
            rows.append((ident, target, np.sort(pool[:num_refs])))
    s = cache.crop_size
    n = len(rows)
    hq = np.empty((n, s, s, 3), np.uint8)
    refs = np.empty((n, num_refs, s, s, 3), np.uint8)
    lq = {int(sc): np.empty((n, s, s, 3), np.uint8) for sc in scales}
    for i, (_, target, ref_idx) in enumerate(rows):
        hq[i] = cache.image(target)
        refs[i] = cache.images(ref_idx)
        for sc in scales:
            lq[int(sc)][i] = degrade_fixed(hq[i], sc, _derived_seed(seed, target, int(sc)))
    return ValidationSet(
        hq=hq,
        lq=lq,
        refs=refs,
        landmarks=cache.landmarks[[r[1] for r in rows]].reshape(n, 5, 2),
        ref_landmarks=np.stack([cache.landmarks[r[2]] for r in rows]) if n else np.zeros((0, num_refs, 5, 2), np.float32),
        identity=np.array([r[0] for r in rows], np.int64),
        target_index=np.array([r[1] for r in rows], np.int64),
        ref_index=np.stack([r[2] for r in rows]).astype(np.int64) if n else np.zeros((0, num_refs), np.int64),
        identity_names=[cache.identity_names[r[0]] for r in rows],
    )


class ValidationDataset(Dataset):
    """One scale of a ValidationSet, with the same sample keys as RestorationDataset."""

    def __init__(self, vset: ValidationSet, scale: int, max_refs: Optional[int] = None):
        if scale not in vset.lq:
            raise KeyError(f"validation set has scales {sorted(vset.lq)}, not {scale}")
        self.vset = vset
        self.scale = int(scale)
        self.max_refs = max_refs or vset.refs.shape[1]

    def __len__(self) -> int:
        return len(self.vset)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        v = self.vset
        return pack_sample(v.hq[i], v.lq[self.scale][i], list(v.refs[i]), v.landmarks[i], v.ref_landmarks[i],
                           self.max_refs, int(v.identity[i]), int(v.target_index[i]), v.ref_index[i])
