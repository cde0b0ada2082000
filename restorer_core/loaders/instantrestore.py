"""Official InstantRestore checkpoints (``final_model_ckpt.pt`` and the ablations) -> OneStepRestorer.

The file is a torch pickle of ``{"cfg": <training config as plain dicts>, "state_dict": ...,
"optimizer": ...}``; it is read with ``weights_only=True`` only, so a file that would run code is
refused.  The state dict is the whole ``FaceReplaceModel``: ``net.unet.``, ``net.original_unet.``,
``net.vae.``, ``net.original_vae.``, ``net.text_encoder.``, with PEFT LoRA layers
(``base_layer`` / ``lora_A.<adapter>`` / ``lora_B.<adapter>``) that are fused into the base
weights here with the official scale ``lora_alpha / r`` where ``lora_alpha = r // 2``
(pix2pix_turbo.py; 0.5 for the released ranks).  The text encoder is only used to compute the
constant caption embedding (see clip_text.py); it is not kept.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping, Optional

import torch

from ..errors import CheckpointError
from .clip_text import caption_embedding
from .keys import LoadReport, StateDict, fuse_peft, load_checked, take_prefix, torch_load_safe

log = logging.getLogger(__name__)

PARTS = {  # checkpoint prefix -> OneStepRestorer attribute
    "net.unet.": "unet",
    "net.original_unet.": "ref_unet",
    "net.vae.": "vae",
    "net.original_vae.": "ref_vae",
}
TEXT_ENCODER_PREFIX = "net.text_encoder."
# transformers < 4.31 saved this buffer; it is not a weight
_IGNORABLE_TEXT_KEYS = ("text_model.embeddings.position_ids", "embeddings.position_ids")


def official_lora_scale(rank: int) -> float:
    """lora_alpha / r with the official lora_alpha = r // 2."""
    return (rank // 2) / rank


def read_checkpoint(path: Path) -> tuple[dict, StateDict]:
    """(cfg, state_dict) of an official InstantRestore .pt; refuses anything but data."""
    obj = torch_load_safe(Path(path), inert_objects=False)
    if not isinstance(obj, Mapping) or not isinstance(obj.get("state_dict"), Mapping):
        raise CheckpointError(f"{path}: not an InstantRestore checkpoint (no 'state_dict' entry)")
    cfg = obj.get("cfg") or {}
    if not isinstance(cfg, Mapping):
        raise CheckpointError(f"{path}: its 'cfg' entry is not a plain dict")
    sd = {}
    for k, v in obj["state_dict"].items():
        if not isinstance(v, torch.Tensor):
            raise CheckpointError(f"{path}: state_dict entry {k} is not a tensor")
        k = k.removeprefix("module.")
        if k.startswith("net.module."):  # saved from a DataParallel/DDP-wrapped net
            k = "net." + k[len("net.module."):]
        sd[k] = v
    return dict(cfg), sd


def _model_cfg(cfg: Mapping[str, Any]) -> Mapping[str, Any]:
    model = cfg.get("model", {})
    return model if isinstance(model, Mapping) else {}


def restorer_config_for(cfg: Mapping[str, Any], source: str):
    """The RestorerConfig of the official full-size model, flags from the checkpoint's cfg."""
    from ..models.config import RestorerConfig
    from ..models.sd_configs import full_size_config

    model = _model_cfg(cfg)
    unsupported = [k for k in ("condition_on_face_embeds", "concat_mask_and_landmarks") if model.get(k)]
    if unsupported:
        raise CheckpointError(f"{source}: trained with {', '.join(unsupported)}, a variant this "
                              "package does not implement; use final_model_ckpt.pt or an ablation")
    if model.get("net_type", "pix2pix_turbo") != "pix2pix_turbo":
        raise CheckpointError(f"{source}: net_type {model.get('net_type')!r} is not pix2pix_turbo")
    return RestorerConfig.from_dict(full_size_config("instantrestore", cfg))


def _expected_rank(model_cfg: Mapping[str, Any], part: str) -> Optional[int]:
    key = {"unet": "lora_rank_unet", "vae": "lora_rank_vae"}.get(part)
    return int(model_cfg[key]) if key and key in model_cfg else None


def load_instantrestore(path: Path, config=None, device: str | torch.device = "cpu",
                        dtype: torch.dtype = torch.float32, text_pad_id: Optional[int] = None):
    """Official InstantRestore .pt -> OneStepRestorer with every LoRA fused.

    config: a RestorerConfig to build instead of the official full-size one (tests use tiny
    architectures in the official layout).  The load report is at ``restorer.source.load_report``.
    """
    from ..models.restorer import ModelSource, OneStepRestorer
    from .clip_text import SD2_PAD_ID

    path = Path(path)
    source = str(path)
    cfg, sd = read_checkpoint(path)
    if config is None:
        config = restorer_config_for(cfg, source)
    model_cfg = _model_cfg(cfg)
    report = LoadReport(source)

    known = tuple(PARTS) + (TEXT_ENCODER_PREFIX,)
    stray = [k for k in sd if not k.startswith(known)]
    if stray:
        raise CheckpointError(f"{source}: {len(stray)} tensors outside the known parts "
                              f"(unet, original_unet, vae, original_vae, text_encoder), e.g. "
                              f"{sorted(stray)[:4]}; this is not an InstantRestore checkpoint "
                              "this package understands")
    if not any(k.startswith("net.unet.") for k in sd):
        raise CheckpointError(f"{source}: no net.unet.* weights; not an InstantRestore checkpoint")

    restorer = OneStepRestorer(config)
    for prefix, attr in PARTS.items():
        module = getattr(restorer, attr)
        part_sd = take_prefix(sd, prefix)
        if module is None:
            if part_sd:
                raise CheckpointError(f"{source}: has {prefix}* weights but the target config has "
                                      "no separate reference networks")
            continue
        name = prefix[4:-1]
        want = _expected_rank(model_cfg, name)

        def scale_for(adapter: str, rank: int, name=name, want=want) -> float:
            if want is not None and rank != want:
                raise CheckpointError(f"{source}: {name} LoRA rank {rank} differs from the "
                                      f"checkpoint's cfg ({want}); the file is inconsistent")
            return official_lora_scale(rank)

        plain, n_fused = fuse_peft(part_sd, scale_for, source, name)
        if n_fused:
            report.lora_fused[name] = n_fused
        hint = ("The checkpoint's VAE skip convs (use_shortcuts) must match the config."
                if "vae" in name else "")
        load_checked(module, plain, source, name, report, hint)

    text_sd = take_prefix(sd, TEXT_ENCODER_PREFIX)
    for k in _IGNORABLE_TEXT_KEYS:
        if text_sd.pop(k, None) is not None:
            report.ignored[k] = 1
    if not text_sd:
        raise CheckpointError(f"{source}: no text encoder (net.text_encoder.*) to compute the "
                              "caption embedding with")
    emb = caption_embedding(text_sd, SD2_PAD_ID if text_pad_id is None else text_pad_id)
    if tuple(emb.shape) != tuple(restorer.prompt_embeds.shape):
        raise CheckpointError(f"{source}: caption embedding {tuple(emb.shape)} does not fit the "
                              f"UNet's cross-attention {tuple(restorer.prompt_embeds.shape)}")
    with torch.no_grad():
        restorer.prompt_embeds.copy_(emb)
    report.loaded["caption_embedding"] = 1
    report.ignored["text_encoder (only used for the caption)"] = len(text_sd)
    restorer.config.notes["source"] = {"format": "instantrestore-official", "file": path.name,
                                       "lora_fused": dict(report.lora_fused)}
    restorer.source = ModelSource("instantrestore", str(path), load_report=report)
    log.info(report.summary())
    return restorer.to(device=device, dtype=dtype).eval()
