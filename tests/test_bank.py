"""Reference banks: building from real photos, files, and the reference K/V disk cache."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from tiny_models import tiny_config
from restorer_core.restore.bank import BankError, build_bank, load_bank, save_bank, select_reference_indices
from restorer_core.restore.reference_cache import cache_path, load_or_compute_reference_kv, reference_kv

ALIGN = 96  # small crops keep these tests fast; the restorer resizes them to its resolution




def make_restorer(seed: int):
    from restorer_core.models.restorer import OneStepRestorer

    torch.manual_seed(seed)
    return OneStepRestorer(tiny_config()).eval()


@pytest.fixture(scope="module")
def restorer():
    return make_restorer(0)


@pytest.fixture(scope="module")
def other_restorer():
    return make_restorer(1)


@pytest.fixture(scope="module")
def chang_dir(real_lq_dir: Path) -> Path:
    return real_lq_dir / "lfw_references" / "Michael_Chang"


@pytest.fixture(scope="module")
def chang_bank(chang_dir, yunet):
    return build_bank([chang_dir], yunet, align_size=ALIGN)


# ----------------------------------------------------------------------------- building


def test_build_bank_one_face_per_photo_and_reasons(chang_dir, chang_bank, yunet):
    photos = sorted(chang_dir.glob("*.jpg"))
    accepted = [Path(e.source).name for e in chang_bank.entries]
    rejected = {Path(r.source).name: r.reason for r in chang_bank.rejected}
    # every photo is accounted for exactly once, in sorted order
    assert sorted(accepted + list(rejected)) == [p.name for p in photos]
    assert accepted == sorted(accepted)
    # a photo whose detector finds two faces of similar size is ambiguous; one clear face is kept
    for p in photos:
        from restorer_core.io.imageio import load_image

        sizes = sorted((f.size for f in yunet.detect(load_image(p).rgb8)), reverse=True)
        ambiguous = len(sizes) > 1 and sizes[1] >= 0.8 * sizes[0]
        assert (p.name in rejected) == ambiguous, (p.name, sizes)
        if ambiguous:
            assert "ambiguous" in rejected[p.name]
    assert chang_bank.crops.dtype == torch.uint8
    assert tuple(chang_bank.crops.shape) == (len(accepted), 3, ALIGN, ALIGN)
    # aligned crops are faces, not empty borders: their centre has real contrast
    centre = chang_bank.crops[:, :, ALIGN // 4: 3 * ALIGN // 4, ALIGN // 4: 3 * ALIGN // 4].float()
    assert float(centre.std()) > 10


def test_build_bank_rejects_no_face_duplicates_and_unreadable(chang_dir, yunet, tmp_path):
    photo = sorted(chang_dir.glob("*.jpg"))[1]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not really a jpeg")
    gray = np.full((120, 120, 3), 127, np.uint8)
    bank = build_bank([photo, gray, photo, broken], yunet, align_size=ALIGN)
    assert len(bank) == 1
    reasons = [r.reason for r in bank.rejected]
    assert reasons[0] == "no face found"
    assert reasons[1].startswith("duplicate of")
    assert reasons[2].startswith("unreadable")


def test_empty_or_faceless_sources_raise_bank_error(tmp_path, yunet):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(BankError, match="no reference images"):
        build_bank([empty], yunet)
    with pytest.raises(BankError, match="no face found"):
        build_bank([np.zeros((100, 100, 3), np.uint8)], yunet)


# ----------------------------------------------------------------------------- files


def test_save_load_roundtrip_and_no_overwrite(chang_bank, tmp_path):
    path = tmp_path / "chang.safetensors"
    save_bank(chang_bank, path)
    loaded = load_bank(path)
    assert torch.equal(loaded.crops, chang_bank.crops)
    assert loaded.bank_hash() == chang_bank.bank_hash()
    assert [e.source for e in loaded.entries] == [e.source for e in chang_bank.entries]
    assert [r.reason for r in loaded.rejected] == [r.reason for r in chang_bank.rejected]
    before = path.read_bytes()
    with pytest.raises(BankError, match="already exists"):
        save_bank(chang_bank, path)
    assert path.read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_load_rejects_damaged_and_foreign_files(chang_bank, tmp_path):
    from safetensors.torch import load_file, save_file
    from safetensors import safe_open

    path = tmp_path / "bank.safetensors"
    save_bank(chang_bank, path)
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    crops = load_file(str(path))["crops"].clone()
    crops[0, 0, 0, 0] ^= 1
    damaged = tmp_path / "damaged.safetensors"
    save_file({"crops": crops}, str(damaged), metadata=meta)
    with pytest.raises(BankError, match="damaged"):
        load_bank(damaged)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"weight": torch.zeros(2)}, str(foreign), metadata={"format": "something-else"})
    with pytest.raises(BankError, match="not a reference bank"):
        load_bank(foreign)
    with pytest.raises(BankError, match="not found"):
        load_bank(tmp_path / "missing.safetensors")


# ----------------------------------------------------------------------------- K/V cache


def _kv_equal(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.keys + a.values, b.keys + b.values))


def test_reference_selection_prefers_large_faces(chang_bank):
    idx = select_reference_indices(chang_bank, 2)
    sizes = [e.face_size for e in chang_bank.entries]
    assert len(idx) == 2 and list(idx) == sorted(idx)
    assert min(sizes[i] for i in idx) >= max(s for j, s in enumerate(sizes) if j not in idx)
    assert len(select_reference_indices(chang_bank, 100)) == len(chang_bank)


def test_cache_hit_is_exact_and_restores_identically(chang_bank, restorer, tmp_path):
    path = tmp_path / "bank.safetensors"
    save_bank(chang_bank, path)
    bank = load_bank(path)
    kv1, info1 = load_or_compute_reference_kv(bank, restorer, max_refs=3, seed=5)
    assert info1.status == "miss"
    assert info1.path.parent == Path(str(path) + ".kvcache") and info1.path.is_file()
    kv2, info2 = load_or_compute_reference_kv(bank, restorer, max_refs=3, seed=5)
    assert info2.status == "hit" and info2.path == info1.path
    assert _kv_equal(kv1, kv2) and kv2.num_refs == 3
    fresh = reference_kv(bank, restorer, max_refs=3, seed=5, use_cache=False)
    lq = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        out_cached = restorer(lq, kv2, "references")
        out_fresh = restorer(lq, fresh, "references")
        out_none = restorer(lq, None, "none")
    assert torch.equal(out_cached, out_fresh)
    assert not torch.equal(out_cached, out_none)  # the references do change the result
    # other settings are other cache entries
    assert cache_path(bank, restorer, 2, 5) != info1.path
    assert cache_path(bank, restorer, 3, 6) != info1.path


def test_tampered_cache_metadata_is_recomputed(chang_bank, restorer, tmp_path):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    kv_true, info = load_or_compute_reference_kv(chang_bank, restorer, max_refs=2, cache_dir=tmp_path)
    tensors = load_file(str(info.path))
    with safe_open(str(info.path), framework="pt") as f:
        meta = dict(f.metadata())
    # 1) metadata claims other settings
    key = json.loads(meta["key"])
    key["seed"] = 123
    save_file(tensors, str(info.path), metadata={**meta, "key": json.dumps(key, sort_keys=True)})
    kv, info2 = load_or_compute_reference_kv(chang_bank, restorer, max_refs=2, cache_dir=tmp_path)
    assert info2.status == "stale" and "seed" in info2.reason
    assert _kv_equal(kv, kv_true)
    # the bad file was replaced by a good one
    assert load_or_compute_reference_kv(chang_bank, restorer, max_refs=2, cache_dir=tmp_path)[1].status == "hit"
    # 2) tensors edited behind the metadata's back
    poisoned = {k: (v + 1 if k.endswith(".keys") else v) for k, v in tensors.items()}
    save_file(poisoned, str(info.path), metadata=meta)
    kv, info3 = load_or_compute_reference_kv(chang_bank, restorer, max_refs=2, cache_dir=tmp_path)
    assert info3.status == "stale" and "checksum" in info3.reason
    assert _kv_equal(kv, kv_true)
    # 3) truncated file
    info.path.write_bytes(info.path.read_bytes()[:100])
    kv, info4 = load_or_compute_reference_kv(chang_bank, restorer, max_refs=2, cache_dir=tmp_path)
    assert info4.status == "stale" and _kv_equal(kv, kv_true)


def test_cache_of_another_restorer_is_not_used(chang_bank, restorer, other_restorer, tmp_path):
    kv_a, info_a = load_or_compute_reference_kv(chang_bank, restorer, max_refs=2, cache_dir=tmp_path)
    path_b = cache_path(chang_bank, other_restorer, 2, 0, tmp_path)
    assert path_b != info_a.path
    shutil.copyfile(info_a.path, path_b)  # plant A's cache where B will look
    kv_b, info_b = load_or_compute_reference_kv(chang_bank, other_restorer, max_refs=2, cache_dir=tmp_path)
    assert info_b.status == "stale" and "weights" in info_b.reason
    expected_b = reference_kv(chang_bank, other_restorer, max_refs=2, use_cache=False)
    assert _kv_equal(kv_b, expected_b)
    assert not _kv_equal(kv_b, kv_a)


def test_unwritable_cache_dir_still_returns_references(chang_bank, restorer, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    kv, info = load_or_compute_reference_kv(chang_bank, restorer, max_refs=1, cache_dir=blocker / "sub")
    assert info.status == "miss" and "not cached" in info.reason
    assert kv.num_refs == 1


def test_in_memory_bank_caches_under_env_dir(chang_bank, restorer, tmp_path, monkeypatch):
    monkeypatch.setenv("ONESTEP_FACE_RESTORE_CACHE", str(tmp_path / "envcache"))
    assert chang_bank.path is None
    _, info = load_or_compute_reference_kv(chang_bank, restorer, max_refs=1)
    assert info.path.parent == tmp_path / "envcache" and info.path.is_file()


def test_cache_keeps_the_reference_identity(chang_bank, tmp_path, monkeypatch):
    """Restorers with a reference-identity channel get ReferenceKV.identity from encode_references;
    a cache hit gives it back unchanged (and a hit without it would change their output)."""
    from restorer_core.models.reference_kv import ReferenceKV

    model = make_restorer(3)
    encode = model.encode_references

    def with_identity(refs, *args, **kwargs):
        kv = encode(refs, *args, **kwargs)
        ident = torch.randn(kv.keys[0].shape[0], kv.num_refs, 8, generator=torch.Generator().manual_seed(4))
        return ReferenceKV(kv.layers, kv.keys, kv.values, kv.mask, ident)

    monkeypatch.setattr(model, "encode_references", with_identity)
    computed, info = load_or_compute_reference_kv(chang_bank, model, max_refs=2, cache_dir=tmp_path)
    cached, info2 = load_or_compute_reference_kv(chang_bank, model, max_refs=2, cache_dir=tmp_path)
    assert (info.status, info2.status) == ("miss", "hit")
    assert computed.identity is not None and torch.equal(cached.identity, computed.identity)


def test_restorer_with_identity_channel_gets_the_same_faces_from_a_cache_hit(chang_bank, tmp_path):
    """A real reference-identity restorer (config.ref_id, frozen face-ID network): the pipeline's
    first run computes and caches the K/V and identity, a new pipeline reads them back, and the
    speed runner gives the plain forward's faces."""
    from restorer_core.models.restorer import OneStepRestorer
    from restorer_core.restore.pipeline import FaceRestorePipeline, RestoreOptions
    from restorer_core.faces.records import AlignedFace, DetectedFace

    cfg = tiny_config()
    cfg.ref_id = {"tokens": 2}
    torch.manual_seed(0)
    model = OneStepRestorer(cfg).eval()
    with torch.no_grad():
        model.ref_id_proj.proj.weight.mul_(50)  # a visible channel
    rng = np.random.default_rng(1)
    det = DetectedFace(np.array([0, 0, 64, 64], np.float32), 0.9, np.zeros((5, 2), np.float32))
    face = AlignedFace(crop=rng.random((64, 64, 3), dtype=np.float32), matrix=np.eye(2, 3),
                       inverse=np.eye(2, 3), detection=det)
    options = RestoreOptions(cache_dir=str(tmp_path), max_refs=2)
    eager = FaceRestorePipeline(model, speed="eager")
    first = eager.restore_faces([face], chang_bank, options)[0].restored
    assert eager.last_cache_info.status == "miss" and eager.conditioning(chang_bank, options).use_reference_identity
    fast = FaceRestorePipeline(model, speed="auto")  # fused upsampling on the CPU
    again = fast.restore_faces([face], chang_bank, options)[0].restored
    assert fast.last_cache_info.status == "hit"
    np.testing.assert_allclose(again, first, atol=2e-5)
