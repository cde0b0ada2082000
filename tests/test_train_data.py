"""Face cache packing, identity split, training/validation datasets and the training losses."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch

from restorer_core.train.dataset import (
    FLIP_PERMUTATION,
    FaceCache,
    RestorationDataset,
    TrainDataConfig,
    ValidationDataset,
    build_validation_set,
    flip_landmarks,
)
from restorer_core.train.degrade import DegradationConfig
from restorer_core.train.losses import (
    LandmarkLossConfig,
    landmark_attention_loss,
    pixel_loss,
    query_region_labels,
    reference_keys_to_heads,
    region_masks,
    split_heads,
    ssim,
    ssim_loss,
)
from restorer_core.train.prepare import (
    SPLIT_TRAIN,
    SPLIT_VAL,
    PrepareConfig,
    encode_image,
    face_priority,
    pack_cache,
    split_identities,
    write_cache,
)

S = 64
# template-like landmarks for a 64 px crop: image-left eye, image-right eye, nose, mouth corners
BASE_LM = np.array([[24, 30], [40, 30], [32, 39], [26, 48], [38, 48]], np.float32)
COLORS = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0], [0, 255, 255]], np.uint8)


def _crop(rng: np.random.Generator, lm: np.ndarray) -> np.ndarray:
    """Smooth gradient + light noise with a 5x5 coloured block at each landmark (flips are checked by colour)."""
    yy, xx = np.mgrid[0:S, 0:S] / S
    tint = rng.uniform(0.3, 0.7, size=3)
    base = 60 + 120 * (0.5 * xx[..., None] + 0.5 * yy[..., None] * tint)
    img = np.clip(base + rng.normal(0, 3, (S, S, 3)), 0, 255).astype(np.uint8)
    for (x, y), c in zip(np.round(lm).astype(int), COLORS):
        img[y - 2:y + 3, x - 2:x + 3] = c
    return img


def _synthetic(counts=(7, 6, 6, 5, 5, 5, 4, 3, 2, 1, 6, 8), val_fraction=0.34, seed=0):
    rng = np.random.default_rng(0)
    blobs, ids, sources, lms, crops = [], [], [], [], []
    for p, n in enumerate(counts):
        for _ in range(n):
            lm = BASE_LM + rng.uniform(-2, 2, size=(5, 2)).astype(np.float32)
            img = _crop(rng, lm)
            crops.append(img)
            blobs.append(encode_image(img, 100, "jpeg"))
            ids.append(f"{'celeba' if p % 2 else 'lfw'}/person{p:02d}")
            sources.append("celeba" if p % 2 else "lfw")
            lms.append(lm)
    cfg = PrepareConfig(val_fraction=val_fraction, val_min_images=5, split_seed=seed)
    arrays = pack_cache(blobs, ids, sources, np.stack(lms), S, cfg, filenames=[f"{i}.jpg" for i in range(len(ids))])
    return arrays, crops, ids


@pytest.fixture(scope="module")
def cache_file(tmp_path_factory):
    arrays, crops, ids = _synthetic()
    path = tmp_path_factory.mktemp("cache") / "faces.npz"
    write_cache(path, arrays)
    return path, crops, ids


@pytest.fixture(scope="module")
def cache(cache_file):
    return FaceCache.load(cache_file[0])


def _no_degradation() -> DegradationConfig:
    return DegradationConfig(blur_prob=0, downsample_prob=0, gaussian_noise_prob=0, poisson_noise_prob=0, jpeg_prob=0)


# ----------------------------------------------------------------------------- cache + split


def test_cache_loads_without_pickle_and_round_trips(cache_file):
    path, crops, ids = cache_file
    with np.load(path, allow_pickle=False) as npz:
        assert all(npz[k].dtype != object for k in npz.files)
    c = FaceCache.load(path)
    assert len(c) == len(crops) and c.crop_size == S
    for i in (0, len(crops) // 2, len(crops) - 1):
        err = np.abs(c.image(i).astype(int) - crops[i].astype(int)).mean()
        assert err < 4.0
        assert c.identity_names[c.identity[i]] == ids[i]


def test_split_is_by_identity_and_seeded(cache):
    ids_train = set(cache.identity[cache.split == SPLIT_TRAIN])
    ids_val = set(cache.identity[cache.split == SPLIT_VAL])
    assert ids_val and ids_train and not (ids_train & ids_val)
    for i in ids_val:  # only people with >= 5 crops are eligible for val
        assert len(cache.by_identity[i]) >= 5
    names = [f"p{i}" for i in range(60)]
    counts = [5 + i % 3 for i in range(60)] 
    a = split_identities(counts, names, 0.1, 5, seed=1)
    assert np.array_equal(a, split_identities(counts, names, 0.1, 5, seed=1))
    assert (a == SPLIT_VAL).sum() == 6
    assert any(not np.array_equal(a, split_identities(counts, names, 0.1, 5, seed=s)) for s in range(2, 6))
    few = split_identities([4, 3, 9], ["a", "b", "c"], 1.0, 5, seed=0)
    assert list(few) == [SPLIT_TRAIN, SPLIT_TRAIN, SPLIT_VAL]


def test_write_cache_is_atomic_and_never_overwrites(tmp_path):
    arrays, _, _ = _synthetic(counts=(2, 2))
    path = tmp_path / "c.npz"
    write_cache(path, arrays)
    before = path.read_bytes()
    with pytest.raises(FileExistsError):
        write_cache(path, arrays)
    assert path.read_bytes() == before
    write_cache(path, arrays, overwrite=True)
    assert sorted(os.listdir(tmp_path)) == ["c.npz"]


def test_face_priority_prefers_large_and_central():
    hw = (200, 200)
    central = np.array([70, 70, 130, 130.0])
    corner_same_size = np.array([0, 0, 60, 60.0])
    big_corner = np.array([0, 0, 150, 150.0])
    assert face_priority(central, hw) > face_priority(corner_same_size, hw)
    assert face_priority(big_corner, hw) > face_priority(central, hw)


# ----------------------------------------------------------------------------- training dataset


def test_flip_landmarks_mirrors_and_swaps():
    f = flip_landmarks(BASE_LM, S)
    assert np.allclose(f[:, 0], (S - 1) - BASE_LM[FLIP_PERMUTATION, 0])
    assert f[0, 0] < f[1, 0] and f[3, 0] < f[4, 0]  # image-left points stay first
    assert np.allclose(flip_landmarks(f, S), BASE_LM)


def test_flipped_sample_keeps_landmarks_on_their_features(cache):
    cfg = TrainDataConfig(flip_prob=1.0, no_ref_prob=0.0, degradation=_no_degradation())
    ds = RestorationDataset(cache, "train", cfg)
    sample = ds[0]
    target = int(sample["index"])
    orig_lm = cache.landmarks[target]
    hq = (sample["hq"].permute(1, 2, 0).numpy() * 255).round().astype(int)
    for k, (x, y) in enumerate(np.round(sample["landmarks"].numpy()).astype(int)):
        # the feature now at landmark k is the one that was at landmark FLIP_PERMUTATION[k]
        expected = COLORS[FLIP_PERMUTATION[k]].astype(int)
        assert np.abs(hq[y, x] - expected).max() < 60, (k, hq[y, x], expected)
        assert abs(x - ((S - 1) - orig_lm[FLIP_PERMUTATION[k], 0])) < 1e-3 + 0.5
    for j in np.flatnonzero(sample["ref_mask"].numpy()):
        ref = (sample["refs"][j].permute(1, 2, 0).numpy() * 255).round().astype(int)
        x, y = np.round(sample["ref_landmarks"][j, 0].numpy()).astype(int)
        assert np.abs(ref[y, x] - COLORS[1].astype(int)).max() < 60


def test_references_are_same_person_never_the_target(cache):
    ds = RestorationDataset(cache, "train", TrainDataConfig(no_ref_prob=0.0, degradation=_no_degradation()))
    seen_counts = set()
    for i in range(len(ds)):
        s = ds[i]
        t = int(s["index"])
        mask = s["ref_mask"].numpy()
        refs = s["ref_index"].numpy()[mask]
        others = len(cache.by_identity[cache.identity[t]]) - 1
        assert mask.sum() == len(refs) <= min(4, others)
        assert (s["ref_index"].numpy()[~mask] == -1).all()
        if others:
            assert mask.sum() >= 1
        assert t not in refs and (cache.identity[refs] == cache.identity[t]).all()
        assert cache.split[t] == SPLIT_TRAIN
        assert float(s["refs"][~torch.from_numpy(mask)].abs().sum()) == 0.0
        seen_counts.add(int(mask.sum()))
    assert len(seen_counts) > 2
    ds0 = RestorationDataset(cache, "train", TrainDataConfig(no_ref_prob=1.0, degradation=_no_degradation()))
    assert not any(bool(ds0[i]["ref_mask"].any()) for i in range(10))


def test_lq_is_degraded_and_rng_streams_differ(cache):
    ds_a = RestorationDataset(cache, "train", TrainDataConfig(seed=5))
    ds_b = RestorationDataset(cache, "train", TrainDataConfig(seed=5))
    a1, a2 = ds_a[3], ds_a[3]
    b1 = ds_b[3]
    assert torch.equal(a1["lq"], b1["lq"])  # reproducible
    assert not torch.equal(a1["lq"], a2["lq"])  # a second draw of the same index differs
    assert float((a1["lq"] - a1["hq"]).abs().mean()) > 0.01
    assert a1["hq"].shape == a1["lq"].shape == (3, S, S) and a1["refs"].shape == (4, 3, S, S)


def test_dataloader_workers_get_distinct_streams(cache):
    ds = RestorationDataset(cache, "train", TrainDataConfig(seed=0))
    loader = torch.utils.data.DataLoader(ds, batch_size=1, sampler=[0, 0, 0, 0], num_workers=2,
                                         multiprocessing_context="fork")
    lqs = [b["lq"][0] for b in loader]
    assert all(not torch.equal(lqs[i], lqs[j]) for i in range(4) for j in range(i + 1, 4))


def test_validation_set_is_fixed_and_identity_pure(cache):
    v1 = build_validation_set(cache, scales=(4, 8), seed=3)
    v2 = build_validation_set(cache, scales=(4, 8), seed=3)
    expected = sum(1 for i, m in enumerate(cache.by_identity) if cache.identity_split[i] == SPLIT_VAL and len(m) >= 5)
    assert len(v1) == expected > 0
    assert np.array_equal(v1.lq[8], v2.lq[8]) and np.array_equal(v1.ref_index, v2.ref_index)
    assert not np.array_equal(v1.lq[4], v1.lq[8])
    for i in range(len(v1)):
        t, refs = v1.target_index[i], v1.ref_index[i]
        assert t not in refs and len(set(refs)) == 4
        assert (cache.identity[refs] == cache.identity[t]).all() and cache.split[t] == SPLIT_VAL
    sample = ValidationDataset(v1, 8)[0]
    assert bool(sample["ref_mask"].all()) and torch.equal(sample["ref_index"], torch.from_numpy(v1.ref_index[0]))


# ----------------------------------------------------------------------------- pixel / SSIM losses


def test_pixel_and_ssim_losses():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 32, 32)
    assert float(pixel_loss(x, x)) == 0.0 and float(pixel_loss(x, x + 0.1, "l2")) == pytest.approx(0.01, rel=1e-4)
    assert float(ssim(x, x)) == pytest.approx(1.0, abs=1e-5)
    noisy = (x + 0.1 * torch.randn_like(x)).clamp(0, 1)
    very_noisy = (x + 0.4 * torch.randn_like(x)).clamp(0, 1)
    assert 0 < float(ssim_loss(x, noisy)) < float(ssim_loss(x, very_noisy))
    y = noisy.clone().requires_grad_(True)
    ssim_loss(y, x).backward()
    assert torch.isfinite(y.grad).all() and y.grad.abs().sum() > 0


# ----------------------------------------------------------------------------- landmark attention loss

CROP = 128
LM128 = torch.tensor([[44.0, 58], [84, 58], [64, 78], [48, 98], [80, 98]])


def test_region_masks_follow_the_landmarks():
    masks, _ = region_masks(LM128[None], CROP, 16, 16)
    assert masks.shape == (1, 4, 256) and bool(masks.any(-1).all())
    labels = query_region_labels(LM128[None], CROP, 16, 16)[0].view(16, 16)
    for region, (x, y) in zip((0, 1, 2, 3), LM128[:4]):
        assert int(labels[int(y // 8), int(x // 8)]) == region
    assert int(labels[0, 0]) == -1 and int(labels[15, 15]) == -1
    coarse, _ = region_masks(LM128[None], CROP, 2, 2)  # every region still gets a cell on a coarse grid
    assert bool(coarse.any(-1).all())
    outside = LM128.clone()
    outside[2] = torch.tensor([-50.0, -50.0])
    m, _ = region_masks(outside[None], CROP, 16, 16)
    assert not bool(m[0, 2].any())


def _attention_case(shift: int, big: float = 30.0):
    """Queries of input region l point along axis l; reference keys of region (l + shift) % 4 too."""
    b, r, h, d, heads, side = 2, 3, 16, 8, 2, 16
    land = torch.stack([LM128, LM128 + torch.tensor([3.0, -2.0])])
    ref_land = torch.stack([torch.stack([LM128 + torch.tensor([2.0 * i, i]) for i in range(r)])] * b)
    ref_mask = torch.tensor([[True, True, False], [True, False, False]])
    labels = query_region_labels(land, CROP, side, side)
    ref_regions, _ = region_masks(ref_land, CROP, side, side)
    q = torch.zeros(b, heads, side * side, d)
    k = torch.zeros(b, heads, r * side * side, d)
    for bi in range(b):
        for l in range(4):
            q[bi, :, labels[bi] == l, l] = big
            for ri in range(r):
                cells = ref_regions[bi, ri, (l + shift) % 4].nonzero().squeeze(1)
                k[bi, :, ri * side * side + cells, l] = big / 5
    return q, k, land, ref_land, ref_mask


@pytest.mark.parametrize("normalize", ["per_reference", "joint"])
def test_landmark_loss_small_when_attention_hits_the_right_region(normalize):
    cfg = LandmarkLossConfig(normalize=normalize)
    q, k, land, ref_land, ref_mask = _attention_case(shift=0)
    right = landmark_attention_loss([q], [k], land, ref_land, ref_mask, CROP, cfg)
    q2, k2, *_ = _attention_case(shift=1)
    q2.requires_grad_(True)
    wrong = landmark_attention_loss([q2], [k2], land, ref_land, ref_mask, CROP, cfg)
    assert float(right) < 1e-3
    assert float(wrong.detach()) > 10.0
    wrong.backward()
    assert torch.isfinite(q2.grad).all() and q2.grad.abs().sum() > 0
    # uniform attention sits in between: -log(region share of the tokens)
    flat = landmark_attention_loss([torch.zeros_like(q)], [torch.zeros_like(k)], land, ref_land, ref_mask, CROP, cfg)
    assert float(right) < float(flat) < float(wrong.detach())


def test_landmark_loss_ignores_padded_references_and_broadcast_keys():
    q, k, land, ref_land, ref_mask = _attention_case(shift=0)
    base = landmark_attention_loss([q], [k], land, ref_land, ref_mask, CROP)
    k_bad = k.clone()
    side2 = 16 * 16
    k_bad[0, :, 2 * side2:] = torch.randn_like(k_bad[0, :, 2 * side2:]) * 50  # reference 2 of sample 0 is padding
    assert float(landmark_attention_loss([q], [k_bad], land, ref_land, ref_mask, CROP)) == pytest.approx(float(base), abs=1e-5)
    none = landmark_attention_loss([q], [k], land, ref_land, torch.zeros_like(ref_mask), CROP)
    assert float(none) == 0.0
    # keys with batch 1 broadcast over the batch
    one = landmark_attention_loss([q[:1]], [k[:1]], land[:1], ref_land[:1], ref_mask[:1], CROP)
    bc = landmark_attention_loss([q[:1].expand(2, -1, -1, -1)], [k[:1]], land[:1].expand(2, -1, -1),
                                 ref_land[:1].expand(2, -1, -1, -1), ref_mask[:1].expand(2, -1), CROP)
    assert float(bc) == pytest.approx(float(one), rel=1e-5)
    assert math.isfinite(float(one))


def test_head_layout_helpers_match_the_loss_layout():
    b, r, t, heads, d = 2, 3, 16, 2, 4
    keys = torch.randn(b, r, t, heads * d)
    k = reference_keys_to_heads(keys, heads)
    assert k.shape == (b, heads, r * t, d)
    # token j of reference i, head h, is channel block h of keys[:, i, j]
    assert torch.equal(k[:, 1, 2 * t + 5], keys[:, 2, 5, d:2 * d])
    q = split_heads(torch.randn(b, t, heads * d), heads)
    assert q.shape == (b, heads, t, d)


def test_clean_samples_are_the_target_itself(cache):
    ds = RestorationDataset(cache, "train", TrainDataConfig(clean_prob=1.0))
    for i in range(5):
        s = ds[i]
        assert torch.equal(s["lq"], s["hq"])
    degraded = RestorationDataset(cache, "train", TrainDataConfig(clean_prob=0.0))
    assert not torch.equal(degraded[0]["lq"], degraded[0]["hq"])


def test_wrong_references_come_from_another_training_person(cache):
    ds = RestorationDataset(cache, "train", TrainDataConfig(wrong_ref_prob=1.0, no_ref_prob=0.0,
                                                            degradation=_no_degradation()))
    for i in range(len(ds)):
        s = ds[i]
        t, mask = int(s["index"]), s["ref_mask"].numpy()
        refs = s["ref_index"].numpy()[mask]
        assert bool(s["wrong_refs"]) == bool(mask.any()) and mask.any()
        assert (cache.identity[refs] != cache.identity[t]).all()
        assert (cache.split[refs] == SPLIT_TRAIN).all()
        assert len(set(cache.identity[refs].tolist())) == 1  # one other person, not a mix
    right = RestorationDataset(cache, "train", TrainDataConfig(wrong_ref_prob=0.0, no_ref_prob=0.0))
    assert not any(bool(right[i]["wrong_refs"]) for i in range(len(right)))
