"""The project's own restorer format: one .safetensors file, config and provenance in its metadata.

metadata keys: format ("onestep-face-restore/1"), restorer_config (RestorerConfig JSON),
weights_sha256 (content hash of the tensors, used to key reference caches), and free-form
provenance (source, model card fields) under "info" as JSON.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import torch

from ..io.atomic import atomic_path
from ..io.digest import tensors_sha256
from ..errors import CheckpointError
from ..models.config import RestorerConfig

FORMAT = "onestep-face-restore/1"


def _atomic_save(tensors: dict, metadata: dict, path: Path) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_file(tensors, tmp, metadata=metadata)


def save_restorer(path, restorer, info: Optional[dict] = None, dtype: torch.dtype = torch.float16,
                  overwrite: bool = False) -> str:
    """Write `restorer` to `path` (atomic; refuses to overwrite unless asked). Returns the hash."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; choose another output name or pass overwrite")
    tensors = {k: v.detach().to("cpu", dtype if v.is_floating_point() else v.dtype).contiguous()
               for k, v in restorer.state_dict().items()}
    digest = tensors_sha256(tensors)
    metadata = {
        "format": FORMAT,
        "restorer_config": restorer.config.to_json(),
        "weights_sha256": digest,
        "info": json.dumps(info or {}, sort_keys=True),
    }
    _atomic_save(tensors, metadata, path)
    return digest


def read_metadata(path) -> dict:
    """The metadata of a project-format file; CheckpointError if it is not one."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"restorer file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as exc:  # safetensors raises its own error types
        raise CheckpointError(f"{path} is not a readable .safetensors file ({exc}); "
                              "re-download or re-convert it") from exc
    if meta.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is a safetensors file but not a restorer in this project's format "
            f"(metadata format={meta.get('format')!r}). Convert official weights with "
            "`python -m restorer_core convert`, or load an SD base checkpoint as the base model.")
    return meta


def load_restorer(path, device="cpu", dtype: torch.dtype = torch.float32):
    """Build the restorer described by the file's metadata and load its weights (strict)."""
    from safetensors.torch import load_file

    from ..models.restorer import ModelSource, OneStepRestorer

    path = Path(path)
    meta = read_metadata(path)
    try:
        config = RestorerConfig.from_json(meta["restorer_config"])
    except (KeyError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: its restorer_config metadata is invalid ({exc})") from exc
    tensors = load_file(str(path))
    model = OneStepRestorer(config)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = sorted(k for k in set(expected) & set(tensors) if expected[k].shape != tensors[k].shape)
    if missing or unexpected or wrong:
        def head(keys):
            return ", ".join(keys[:5]) + (" ..." if len(keys) > 5 else "")
        raise CheckpointError(
            f"{path} does not fit its own config: {len(missing)} missing keys ({head(missing)}), "
            f"{len(unexpected)} unexpected ({head(unexpected)}), {len(wrong)} with wrong shapes "
            f"({head(wrong)}). The file is damaged or was written by an incompatible version.")
    model.load_state_dict(tensors, strict=True)
    model.set_weight_hash(meta.get("weights_sha256") or tensors_sha256(tensors))
    model.source = ModelSource("project", str(path), json.loads(meta.get("info", "{}")))
    return model.to(device=device, dtype=dtype).eval()
