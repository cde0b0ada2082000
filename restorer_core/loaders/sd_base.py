"""SD-Turbo / SD 2.1-base UNet and VAE weights from what users have on disk, never fetched.

Accepted layouts:
* a diffusers folder: ``unet/`` and ``vae/`` each with ``diffusion_pytorch_model[.fp16].safetensors``
  (config.json optional; when present it must describe the embedded architecture); a bare
  component folder (e.g. ``sd-vae-ft-mse/`` with ``diffusion_pytorch_model.safetensors``) works
  for the part it holds;
* a single file in the original (ldm) layout, as ComfyUI keeps in ``models/checkpoints``
  (``model.diffusion_model.*``, ``first_stage_model.*``): converted with diffusers' own
  ``convert_ldm_unet_checkpoint`` / ``convert_ldm_vae_checkpoint`` and the embedded configs;
* a standalone VAE file (``models/vae``), ldm or diffusers key names.
``.safetensors`` is preferred; ``.ckpt`` / ``.bin`` are read with ``weights_only=True``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping, Optional

import torch

from ..errors import CheckpointError
from .keys import StateDict, read_weights

LDM_UNET_PREFIX = "model.diffusion_model."
LDM_VAE_PREFIXES = ("first_stage_model.", "vae.")
WEIGHT_NAMES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors",
                "diffusion_pytorch_model.bin", "diffusion_pytorch_model.fp16.bin")
# config.json entries that change weight shapes or names; they must agree with the embedded config
_SHAPE_KEYS = ("block_out_channels", "cross_attention_dim", "attention_head_dim", "layers_per_block",
               "in_channels", "out_channels", "latent_channels", "down_block_types", "up_block_types",
               "use_linear_projection", "transformer_layers_per_block", "num_attention_heads")


def _norm(v):
    return list(v) if isinstance(v, (list, tuple)) else v


def check_config_json(folder: Path, expected: Mapping) -> None:
    """Refuse a component folder whose config.json describes another architecture."""
    cfg_path = folder / "config.json"
    if not cfg_path.is_file():
        return
    try:
        found = json.loads(cfg_path.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{cfg_path}: unreadable config ({exc})") from exc
    for key in _SHAPE_KEYS:
        if key in found and key in expected and _norm(found[key]) != _norm(expected[key]):
            raise CheckpointError(
                f"{cfg_path}: {key} is {found[key]!r}, expected {expected[key]!r}. This folder holds "
                "a different model (SD 1.x has cross_attention_dim 768); use SD 2.1-base / SD-Turbo.")


def _weights_in(folder: Path) -> Optional[Path]:
    for name in WEIGHT_NAMES:
        if (folder / name).is_file():
            return folder / name
    return None


def _component_folder(root: Path, name: str) -> Optional[Path]:
    """root/<name>/ if it holds weights, or root itself when root is that component folder."""
    for cand in (root / name, root):
        if cand.is_dir() and _weights_in(cand) is not None:
            return cand
    return None


def is_ldm_layout(sd: Mapping[str, torch.Tensor]) -> bool:
    return any(k.startswith(LDM_UNET_PREFIX) for k in sd) or any(
        k.startswith(p) for k in sd for p in LDM_VAE_PREFIXES)


def convert_ldm_unet(sd: Mapping[str, torch.Tensor], unet_config: Mapping, source: str) -> StateDict:
    """ldm UNet keys (``model.diffusion_model.*``) -> diffusers names, every source key accounted for."""
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    n_src = sum(k.startswith(LDM_UNET_PREFIX) for k in sd)
    if n_src == 0:
        raise CheckpointError(f"{source}: no UNet weights (keys under {LDM_UNET_PREFIX})")
    try:
        out = convert_ldm_unet_checkpoint(dict(sd), dict(unet_config))
    except (KeyError, IndexError) as exc:
        raise CheckpointError(f"{source}: UNet weights do not follow the SD 2.x layout ({exc})") from exc
    if len(out) != n_src:
        raise CheckpointError(f"{source}: {n_src - len(out)} UNet tensors could not be mapped to the "
                              "SD 2.x architecture; is this an SD 2.1 / SD-Turbo checkpoint?")
    return out


def convert_ldm_vae(sd: Mapping[str, torch.Tensor], vae_config: Mapping, source: str) -> StateDict:
    """ldm VAE keys (with ``first_stage_model.`` / ``vae.`` or bare ``encoder.*``) -> diffusers names."""
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    prefix = next((p for p in LDM_VAE_PREFIXES if any(k.startswith(p) for k in sd)), "")
    src = {k: v for k, v in sd.items() if k.startswith(prefix)}
    src = {k: v for k, v in src.items()
           if k[len(prefix):].split(".")[0] in ("encoder", "decoder", "quant_conv", "post_quant_conv")}
    if not src:
        raise CheckpointError(f"{source}: no VAE weights (keys under first_stage_model.encoder / decoder)")
    try:
        out = convert_ldm_vae_checkpoint(src, dict(vae_config))
    except (KeyError, IndexError) as exc:
        raise CheckpointError(f"{source}: VAE weights do not follow the SD layout ({exc})") from exc
    if len(out) != len(src):
        raise CheckpointError(f"{source}: {len(src) - len(out)} VAE tensors could not be mapped; "
                              "is this an SD VAE?")
    return out


def _is_diffusers_vae(sd: Mapping[str, torch.Tensor]) -> bool:
    return any(k.startswith("encoder.down_blocks.") for k in sd)


def _is_diffusers_unet(sd: Mapping[str, torch.Tensor]) -> bool:
    return any(k.startswith("down_blocks.") for k in sd) and "conv_in.weight" in sd


def load_base_state(source: Path, unet_config: Optional[Mapping], vae_config: Optional[Mapping],
                    vae_source: Optional[Path] = None) -> tuple[Optional[StateDict], Optional[StateDict]]:
    """(unet state dict, vae state dict) in diffusers names from `source` (see module docstring).

    A part whose config is None is not read.  `vae_source` overrides where the VAE comes from.
    A part that is asked for but absent raises CheckpointError naming what is missing.
    """
    source = Path(source)
    if not source.exists():
        raise CheckpointError(f"{source}: not found")
    unet_sd = vae_sd = None
    if source.is_dir():
        if unet_config is not None:
            folder = _component_folder(source, "unet")
            if folder is None:
                raise CheckpointError(f"{source}: no unet/diffusion_pytorch_model.safetensors found; "
                                      "give a diffusers model folder or a single .safetensors checkpoint")
            check_config_json(folder, unet_config)
            unet_sd = read_weights(_weights_in(folder))
        if vae_config is not None and vae_source is None:
            folder = _component_folder(source, "vae")
            if folder is None:
                raise CheckpointError(f"{source}: no vae/diffusion_pytorch_model.safetensors found")
            check_config_json(folder, vae_config)
            vae_sd = _vae_from(read_weights(_weights_in(folder)), vae_config, str(folder))
    else:
        sd = read_weights(source)
        if unet_config is not None:
            unet_sd = convert_ldm_unet(sd, unet_config, str(source)) if is_ldm_layout(sd) else (
                sd if _is_diffusers_unet(sd) else None)
            if unet_sd is None:
                raise CheckpointError(f"{source}: holds no UNet weights in a known layout")
        if vae_config is not None and vae_source is None:
            vae_sd = _vae_from(sd, vae_config, str(source))
    if vae_config is not None and vae_source is not None:
        _, vae_sd = load_base_state(vae_source, None, vae_config)
    return unet_sd, vae_sd


def _vae_from(sd: Mapping[str, torch.Tensor], vae_config: Mapping, source: str) -> StateDict:
    if _is_diffusers_vae(sd):
        return dict(sd)
    return convert_ldm_vae(sd, vae_config, source)


def build_base_models(source: Path, unet_config: Mapping, vae_config: Mapping,
                      vae_source: Optional[Path] = None, dtype: torch.dtype = torch.float32):
    """(UNet2DConditionModel, AutoencoderKL) with the embedded configs and the weights on disk."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from .keys import load_checked

    unet_sd, vae_sd = load_base_state(source, unet_config, vae_config, vae_source)
    unet = UNet2DConditionModel(**unet_config)
    vae = AutoencoderKL(**vae_config)
    load_checked(unet, unet_sd, str(source), "UNet")
    load_checked(vae, vae_sd, str(vae_source or source), "VAE")
    return unet.to(dtype), vae.to(dtype)
