"""Official OSDFace weights -> OneStepRestorer (LoRA fused at load).

Files (official ``pretrained/`` folder): ``pytorch_lora_weights.safetensors`` (UNet LoRA, rank 16,
alpha 16 -> scale 1.0, keys ``unet.<module>.lora_A.weight`` / ``lora_B``, or the older
``lora.down`` / ``lora.up``), ``embedding_change_weights.pth`` (the TwoLayerConv1x1 token
projection), ``associate_2.ckpt`` (VQ encoder; keys under ``vqvae_LQ.``, decoder keys ignored),
plus an SD 2.1-base (diffusers folder or single file, see sd_base.py).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Optional

import torch

from ..errors import CheckpointError
from .keys import LoadReport, fuse_lora_file, load_checked, read_safetensors, read_weights, torch_load_safe

log = logging.getLogger(__name__)

LORA_FILE = "pytorch_lora_weights.safetensors"
PROJ_FILE = "embedding_change_weights.pth"
VRE_FILE = "associate_2.ckpt"
VRE_PREFIX = "vqvae_LQ."
OFFICIAL_LORA_SCALE = 16 / 16  # infer.py defaults: --lora_alpha 16 --lora_rank 16


def _find(folder: Path, name: str, explicit: Optional[Path]) -> Path:
    if explicit is not None:
        return Path(explicit)
    for cand in (folder / name, folder / "pretrained" / name):
        if cand.is_file():
            return cand
    raise CheckpointError(f"{folder}: {name} not found. Put the official OSDFace files "
                          f"({LORA_FILE}, {PROJ_FILE}, {VRE_FILE}) in this folder.")


def _lora_scale(meta: dict, default: float) -> float:
    """alpha / r from diffusers' ``lora_adapter_metadata`` when the file carries it."""
    raw = meta.get("lora_adapter_metadata")
    if not raw:
        return default
    try:
        info = json.loads(raw)
        info = info.get("unet", info) if isinstance(info, dict) else {}
        return float(info["lora_alpha"]) / float(info["r"])
    except (ValueError, KeyError, TypeError, ZeroDivisionError):
        return default


def vre_state_from_official(vre_ckpt: Path, proj_file: Path, report: Optional[LoadReport] = None) -> dict:
    """VisualPromptEmbedder state dict from associate_2.ckpt + embedding_change_weights.pth."""
    obj = torch_load_safe(vre_ckpt, inert_objects=True)
    sd = obj.get("state_dict") if isinstance(obj, dict) else None
    if not isinstance(sd, dict):
        raise CheckpointError(f"{vre_ckpt}: no 'state_dict' entry; not the OSDFace VQ checkpoint")
    out = {}
    skipped = 0
    for k, v in sd.items():
        if not k.startswith(VRE_PREFIX):
            skipped += 1
            continue
        if k.startswith(VRE_PREFIX + "decoder.") or not isinstance(v, torch.Tensor):
            skipped += 1
            continue
        out[k[len(VRE_PREFIX):]] = v
    if not out:
        raise CheckpointError(f"{vre_ckpt}: no {VRE_PREFIX}* weights; not the OSDFace VQ checkpoint")
    if report is not None and skipped:
        report.ignored[f"{vre_ckpt.name} outside {VRE_PREFIX} / decoder"] = skipped
    proj = read_weights(proj_file)
    out.update({f"proj.{k}": v for k, v in proj.items()})
    return out


def load_osdface(folder: Path, base: Path, config=None, *, vae_source: Optional[Path] = None,
                 lora_file: Optional[Path] = None, proj_file: Optional[Path] = None,
                 vre_file: Optional[Path] = None, lora_scale: Optional[float] = None,
                 device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
    """OSDFace folder + SD 2.1-base -> OneStepRestorer.  Report at ``restorer.source.load_report``."""
    from ..models.config import RestorerConfig
    from ..models.restorer import ModelSource, OneStepRestorer
    from ..models.sd_configs import full_size_config
    from .sd_base import load_base_state

    folder = Path(folder)
    lora_path = _find(folder, LORA_FILE, lora_file)
    proj_path = _find(folder, PROJ_FILE, proj_file)
    vre_path = _find(folder, VRE_FILE, vre_file)
    if config is None:
        config = RestorerConfig.from_dict(full_size_config("osdface"))
    report = LoadReport(str(folder))

    unet_sd, vae_sd = load_base_state(Path(base), config.unet, config.vae, vae_source)
    lora, meta = read_safetensors(lora_path)
    scale = lora_scale if lora_scale is not None else _lora_scale(meta, OFFICIAL_LORA_SCALE)
    unet_sd, n_fused = fuse_lora_file(unet_sd, lora, scale, str(lora_path))
    report.lora_fused["unet"] = n_fused
    if scale != OFFICIAL_LORA_SCALE:
        report.notes.append(f"LoRA scale {scale:g}")

    restorer = OneStepRestorer(config)
    if restorer.vre is None:
        raise CheckpointError("the OSDFace config has no visual-prompt embedder (vre is None)")
    load_checked(restorer.unet, unet_sd, str(base), "UNet", report,
                 "Use the SD 2.1-base weights OSDFace was trained on.")
    load_checked(restorer.vae, vae_sd, str(vae_source or base), "VAE", report)
    vre_sd = vre_state_from_official(vre_path, proj_path, report)
    expected = set(restorer.vre.state_dict())
    extra = sorted(set(vre_sd) - expected)
    if extra:  # the official code loads this file with strict=False: extras are dropped there too
        report.ignored[f"{vre_path.name} extra {VRE_PREFIX} keys"] = len(extra)
        for k in extra:
            vre_sd.pop(k)
    load_checked(restorer.vre, vre_sd, f"{vre_path} + {proj_path.name}", "visual prompt embedder",
                 report, "Expected the official associate_2.ckpt and embedding_change_weights.pth.")
    restorer.config.notes["source"] = {"format": "osdface-official", "files": [
        lora_path.name, proj_path.name, vre_path.name], "lora_scale": scale}
    restorer.source = ModelSource("osdface", str(folder), load_report=report)
    log.info(report.summary())
    return restorer.to(device=device, dtype=dtype).eval()
