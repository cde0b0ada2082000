"""The reference keys/values of a bank for a restorer: computed once, memoised, cached on disk.

What a restorer derives from a reference bank (ReferenceKV: the up-block keys/values, and the
references' mean identity when the restorer has an identity channel) depends only on the
restorer's weights and config, the bank's crops, which references are used, the dtype and the
seed. This module owns that key, an in-memory memo of the last bank (`ReferenceCache`) and the
disk file. Every file carries its key in its metadata and a hash of its tensors: a file made for
another restorer or bank, or one that was edited or truncated, is recomputed, never silently
used. Files are written atomically; an unwritable cache folder only costs the caching.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import torch

from ..io.atomic import atomic_path
from .bank import ReferenceBank, select_reference_indices
from ..io.digest import tensors_sha256
from ..errors import RestorerError

log = logging.getLogger(__name__)

KV_CACHE_FORMAT = "onestep-face-restore/kvcache/1"
CACHE_ENV = "ONESTEP_FACE_RESTORE_CACHE"
PathLike = Union[str, os.PathLike]


@dataclass
class CacheInfo:
    """Where the keys/values came from: status "hit" | "miss" | "stale" | "disabled", the file, and why."""

    status: str
    path: Optional[Path] = None
    reason: str = ""
    indices: tuple = ()
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {"status": self.status, "path": str(self.path) if self.path else None,
                "reason": self.reason, "references_used": list(self.indices),
                "seconds": round(self.seconds, 4)}


def default_cache_dir(bank: ReferenceBank) -> Path:
    """<bank file>.kvcache/ next to a saved bank; else $ONESTEP_FACE_RESTORE_CACHE or
    $XDG_CACHE_HOME/onestep-face-restore (~/.cache/onestep-face-restore)."""
    if bank.path is not None:
        return Path(str(bank.path) + ".kvcache")
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "onestep-face-restore"


def cache_key_fields(bank: ReferenceBank, restorer: Any, indices: Sequence[int], seed: int) -> dict:
    """Everything the cached keys/values depend on."""
    return {
        "format": KV_CACHE_FORMAT,
        "weights": restorer.weight_hash(),
        "config": hashlib.sha256(restorer.config.to_json().encode()).hexdigest(),
        "bank": bank.bank_hash(),
        "references": [int(i) for i in indices],
        "dtype": str(restorer.dtype).replace("torch.", ""),
        "seed": int(seed),
        "resolution": int(restorer.config.resolution),
        "layers": list(restorer.reference_sites),
    }


def cache_path(bank: ReferenceBank, restorer: Any, max_refs: int = 4, seed: int = 0,
               cache_dir: Optional[PathLike] = None) -> Path:
    """The file that holds the keys/values for these arguments."""
    fields_ = cache_key_fields(bank, restorer, select_reference_indices(bank, max_refs), seed)
    key = hashlib.sha256(json.dumps(fields_, sort_keys=True).encode()).hexdigest()
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir(bank)
    return folder / f"kv-{key[:40]}.safetensors"


def _read(path: Path, expected: dict, layers: list) -> tuple:
    """(ReferenceKV, "") for a valid file, (None, reason) when missing, foreign or damaged."""
    from safetensors import safe_open

    from ..models.reference_kv import ReferenceKV

    if not path.is_file():
        return None, "no cache file yet"
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # a truncated or garbled file
        return None, f"unreadable cache ({exc})"
    if meta.get("format") != KV_CACHE_FORMAT:
        return None, "not a reference cache file"
    try:
        stored = json.loads(meta.get("key", "null"))
    except ValueError:
        stored = None
    if stored != expected:
        diff = sorted(k for k in expected if not isinstance(stored, dict) or stored.get(k) != expected[k])
        return None, f"made for different {', '.join(diff) or 'settings'}"
    if meta.get("tensors_sha256") != tensors_sha256(tensors):
        return None, "cache contents do not match their checksum"
    try:
        kv = ReferenceKV.from_state_dict(layers, tensors)
    except KeyError as exc:
        return None, f"cache is missing tensor {exc}"
    if any(k.shape[1] != len(expected["references"]) for k in kv.keys):
        return None, "cache has the wrong number of references"
    return kv, ""


def _write(path: Path, kv: Any, key_fields: dict) -> Optional[str]:
    """Write atomically; an error message instead of raising (caching is optional)."""
    from safetensors.torch import save_file

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().cpu().contiguous() for k, v in kv.state_dict().items()}
        meta = {"format": KV_CACHE_FORMAT, "key": json.dumps(key_fields, sort_keys=True),
                "tensors_sha256": tensors_sha256(tensors)}
        with atomic_path(path, overwrite=True) as tmp:
            save_file(tensors, tmp, metadata=meta)
    except (OSError, RestorerError) as exc:
        return str(exc)
    return None


def load_or_compute_reference_kv(bank: ReferenceBank, restorer: Any, max_refs: int = 4, seed: int = 0,
                                 cache_dir: Optional[PathLike] = None, use_cache: bool = True) -> tuple:
    """(ReferenceKV on the restorer's device and dtype, CacheInfo): from the disk file when it is
    valid, else computed with `restorer.encode_references` and written."""
    start = time.perf_counter()
    indices = select_reference_indices(bank, max_refs)
    key_fields = json.loads(json.dumps(cache_key_fields(bank, restorer, indices, seed)))
    layers = list(restorer.reference_sites)
    path = cache_path(bank, restorer, max_refs, seed, cache_dir) if use_cache else None
    status, reason = "disabled", "caching turned off"
    if path is not None:
        kv, reason = _read(path, key_fields, layers)
        if kv is not None:
            kv = kv.to(restorer.device, restorer.dtype)
            return kv, CacheInfo("hit", path, "", indices, time.perf_counter() - start)
        status = "miss" if not path.exists() else "stale"
        if status == "stale":
            log.warning("ignoring reference cache %s (%s); recomputing", path, reason)
    refs = bank.crops_float(indices, restorer.config.resolution).to(restorer.device, restorer.dtype)
    generator = torch.Generator("cpu").manual_seed(int(seed))
    with torch.inference_mode():
        kv = restorer.encode_references(refs, generator=generator)
    if path is not None:
        error = _write(path, kv, key_fields)
        if error:
            log.warning("could not write reference cache %s: %s", path, error)
            reason = f"{reason}; not cached: {error}"
    return kv, CacheInfo(status, path, reason, indices, time.perf_counter() - start)


def reference_kv(bank: ReferenceBank, restorer: Any, max_refs: int = 4, seed: int = 0,
                 cache_dir: Optional[PathLike] = None, use_cache: bool = True) -> Any:
    """The bank's reference keys/values for this restorer (see load_or_compute_reference_kv)."""
    return load_or_compute_reference_kv(bank, restorer, max_refs, seed, cache_dir, use_cache)[0]


class ReferenceCache:
    """The in-memory memo in front of the disk cache: the last bank's keys/values, so that a
    run's batches (and a node's repeated runs) do not re-read the file. One bank at a time: the
    keys/values of full-size models are large."""

    def __init__(self) -> None:
        self._key: Optional[tuple] = None
        self._kv: Any = None
        self.last_info: Optional[CacheInfo] = None

    def get(self, bank: ReferenceBank, restorer: Any, max_refs: int = 4, seed: int = 0,
            cache_dir: Optional[PathLike] = None, use_cache: bool = True) -> Any:
        key = (bank.bank_hash(), int(max_refs), int(seed), str(restorer.dtype), str(restorer.device),
               restorer.weight_hash(), str(cache_dir), bool(use_cache))
        if key != self._key:
            self._kv, self.last_info = load_or_compute_reference_kv(bank, restorer, max_refs, seed,
                                                                    cache_dir, use_cache)
            self._key = key
        return self._kv

    def clear(self) -> None:
        self._key, self._kv, self.last_info = None, None, None
