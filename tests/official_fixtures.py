"""Builders of tiny checkpoints in the OFFICIAL layouts, saved as the official tools save them.

* InstantRestore: ``torch.save({"cfg", "state_dict", "optimizer"})`` of a FaceReplaceModel-like
  state dict (``net.unet.`` ... ``net.text_encoder.``) whose LoRA layers are PEFT-wrapped
  (``base_layer`` / ``lora_A.<adapter>`` / ``lora_B.<adapter>``).
* OSDFace: ``pytorch_lora_weights.safetensors`` (``unet.<module>.lora_A.weight`` or the older
  ``lora.down`` / ``lora.up``), ``embedding_change_weights.pth``, ``associate_2.ckpt`` (a
  Lightning-style checkpoint with Python objects besides the ``vqvae_LQ.`` tensors).
* SD base: a diffusers folder, or a single ldm-layout file written by the inverse of the key
  mapping diffusers' ``convert_ldm_*_checkpoint`` applies (``to_ldm_unet`` / ``to_ldm_vae``).
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

TINY_UNET = dict(
    sample_size=8, in_channels=4, out_channels=4,
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    block_out_channels=(32, 64), layers_per_block=1, attention_head_dim=(2, 4),
    cross_attention_dim=64, use_linear_projection=True, norm_num_groups=8,
)
TINY_VAE = dict(
    in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
    up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), layers_per_block=1,
    latent_channels=4, norm_num_groups=4, sample_size=32, scaling_factor=0.18215,
)
TINY_VRE = dict(resolution=32, ch=8, ch_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(8,),
                codebook_size=64, codebook_dim=32, out_dim=64, tokens=77)
TEXT_HIDDEN = 64  # one 64-wide head, like SD's text encoders
TEXT_LAYERS = 2

UNET_TARGETS = ["to_k", "to_q", "to_v", "to_out.0", "conv", "conv1", "conv2", "conv_shortcut", "conv_out",
                "proj_in", "proj_out", "ff.net.2", "ff.net.0.proj"]  # pix2pix_turbo.py
VAE_TARGETS = ["conv1", "conv2", "conv_in", "conv_shortcut", "conv", "conv_out", "to_k", "to_q", "to_v",
               "to_out.0"]
OSDFACE_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]


def tiny_config(method: str = "instantrestore", **over):
    from restorer_core.models.config import RestorerConfig

    if method == "instantrestore":
        base = dict(method="instantrestore", resolution=32, unet=dict(TINY_UNET), vae=dict(TINY_VAE),
                    vre=None, separate_ref_unet=True, timestep=249, add_noise=True,
                    train_input=False, use_adain=True, freeu=(0.9, 0.2, 1.4, 1.6))
    else:
        base = dict(method="osdface", resolution=32, unet=dict(TINY_UNET), vae=dict(TINY_VAE),
                    vre=dict(TINY_VRE), separate_ref_unet=False, timestep=399, add_noise=False,
                    x0_in_float64=True, train_input=False, use_adain=False, freeu=None)
    base.update(over)
    return RestorerConfig(**base)


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def random_like_module(module: nn.Module, gen: torch.Generator) -> dict:
    """A state dict of `module` with random values (so that every tensor is distinguishable)."""
    return {k: torch.randn(v.shape, generator=gen) * 0.1 for k, v in module.state_dict().items()}


def matches(name: str, targets) -> bool:
    """PEFT's rule: the module name equals a target or ends with '.' + target."""
    return any(name == t or name.endswith("." + t) for t in targets)


@dataclass
class LoraLayer:
    name: str
    base_weight: torch.Tensor
    bias: torch.Tensor | None
    down: torch.Tensor  # lora_A
    up: torch.Tensor  # lora_B
    scale: float
    stride: tuple = (1, 1)
    padding: tuple = (0, 0)


@dataclass
class PeftPart:
    state: dict
    layers: dict = field(default_factory=dict)  # module name -> LoraLayer


def peft_wrap(module: nn.Module, plain: dict, targets, rank: int, alpha: int, adapter: str,
              gen: torch.Generator) -> PeftPart:
    """Rewrite `plain` (the module's state dict) as PEFT saves a LoRA-wrapped module."""
    out = dict(plain)
    layers = {}
    for name, sub in module.named_modules():
        if not matches(name, targets) or not isinstance(sub, (nn.Linear, nn.Conv2d)):
            continue
        w = out.pop(f"{name}.weight")
        b = out.pop(f"{name}.bias", None)
        out[f"{name}.base_layer.weight"] = w
        if b is not None:
            out[f"{name}.base_layer.bias"] = b
        if isinstance(sub, nn.Linear):
            down = torch.randn(rank, sub.in_features, generator=gen) * 0.1
            up = torch.randn(sub.out_features, rank, generator=gen) * 0.1
            stride, padding = (1, 1), (0, 0)
        else:
            down = torch.randn(rank, sub.in_channels, *sub.kernel_size, generator=gen) * 0.1
            up = torch.randn(sub.out_channels, rank, 1, 1, generator=gen) * 0.1
            stride, padding = sub.stride, sub.padding
        out[f"{name}.lora_A.{adapter}.weight"] = down
        out[f"{name}.lora_B.{adapter}.weight"] = up
        layers[name] = LoraLayer(name, w, b, down, up, alpha / rank, tuple(stride), tuple(padding))
    return PeftPart(out, layers)


def tiny_text_encoder_state(gen: torch.Generator) -> dict:
    """A HF CLIPTextModel state dict (transformers 4.x names) of a tiny text encoder."""
    h = TEXT_HIDDEN
    sd = {
        "text_model.embeddings.token_embedding.weight": torch.randn(49408, h, generator=gen) * 0.02,
        "text_model.embeddings.position_embedding.weight": torch.randn(77, h, generator=gen) * 0.02,
        "text_model.embeddings.position_ids": torch.arange(77).unsqueeze(0),
        "text_model.final_layer_norm.weight": 1 + 0.1 * torch.randn(h, generator=gen),
        "text_model.final_layer_norm.bias": 0.1 * torch.randn(h, generator=gen),
    }
    for i in range(TEXT_LAYERS):
        p = f"text_model.encoder.layers.{i}"
        for n, (o, c) in {"self_attn.q_proj": (h, h), "self_attn.k_proj": (h, h), "self_attn.v_proj": (h, h),
                          "self_attn.out_proj": (h, h), "mlp.fc1": (4 * h, h), "mlp.fc2": (h, 4 * h)}.items():
            sd[f"{p}.{n}.weight"] = torch.randn(o, c, generator=gen) * 0.1
            sd[f"{p}.{n}.bias"] = torch.randn(o, generator=gen) * 0.1
        for n in ("layer_norm1", "layer_norm2"):
            sd[f"{p}.{n}.weight"] = 1 + 0.1 * torch.randn(h, generator=gen)
            sd[f"{p}.{n}.bias"] = 0.1 * torch.randn(h, generator=gen)
    return sd


@dataclass
class InstantRestoreFixture:
    path: Path
    cfg: dict
    unet: PeftPart
    vae: PeftPart
    ref_unet: PeftPart
    ref_vae: PeftPart
    text: dict


def official_cfg(rank_unet: int = 8, rank_vae: int = 4, **model_over) -> dict:
    """The pyrallis-encoded TrainConfig shape: nested plain dicts of strings and numbers."""
    model = {"net_type": "pix2pix_turbo", "use_pretrained": True, "lora_rank_unet": rank_unet,
             "lora_rank_vae": rank_vae, "condition_on_face_embeds": False,
             "concat_mask_and_landmarks": False, "use_shared_attention": True, "noise_timestep": 249,
             "train_vae": True, "train_only_vae_encoder": False, "checkpoint_path": None,
             "use_shortcuts": False, "guidance_scale": 0.0, "train_reference_networks": False,
             "use_adain": True, "train_input": False}
    model.update(model_over)
    return {"compute": {"batch_size": 1, "workers": 12, "seed": 42},
            "optim": {"learning_rate": 0.0005, "scheduler_type": "CONSTANT", "lambda_landmark": 5000.0},
            "data": {"data_root": "path/to/your/data", "max_conditioning_images": 4},
            "model": model, "log": {"exp_root": "path/to/experiments", "exp_name": "exp_name"},
            "steps": {"max_steps": 50000}}


def build_instantrestore(path: Path, unet_config=None, rank_unet: int = 8, rank_vae: int = 4,
                         ref_lora_rank: int | None = None, seed: int = 0, **model_over) -> InstantRestoreFixture:
    """Write a tiny official-layout InstantRestore .pt at `path`."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from restorer_core.models.vae_io import add_skip_convs

    gen = seeded(seed)
    ucfg = dict(unet_config or TINY_UNET)
    unet, vae = UNet2DConditionModel(**ucfg), AutoencoderKL(**TINY_VAE)
    ref_vae = AutoencoderKL(**TINY_VAE)
    vae_targets = list(VAE_TARGETS)
    if model_over.get("use_shortcuts"):  # pix2pix_turbo: skip convs on the decoder, LoRA on them too
        add_skip_convs(vae, TINY_VAE)
        vae_targets += ["skip_conv_1", "skip_conv_2", "skip_conv_3", "skip_conv_4"]
    parts = {
        "unet": peft_wrap(unet, random_like_module(unet, gen), UNET_TARGETS, rank_unet, rank_unet // 2,
                          "default", gen),
        "vae": peft_wrap(vae, random_like_module(vae, gen), vae_targets, rank_vae, rank_vae // 2,
                         "vae_skip", gen),
    }
    ref_u, ref_v = random_like_module(unet, gen), random_like_module(ref_vae, gen)
    if ref_lora_rank:
        parts["original_unet"] = peft_wrap(unet, ref_u, UNET_TARGETS, ref_lora_rank, ref_lora_rank // 2,
                                           "default", gen)
        parts["original_vae"] = peft_wrap(ref_vae, ref_v, VAE_TARGETS, ref_lora_rank, ref_lora_rank // 2,
                                          "vae_skip", gen)
    else:
        parts["original_unet"], parts["original_vae"] = PeftPart(ref_u), PeftPart(ref_v)
    text = tiny_text_encoder_state(gen)
    state = {}
    for name, part in parts.items():
        state.update({f"net.{name}.{k}": v for k, v in part.state.items()})
    state.update({f"net.text_encoder.{k}": v for k, v in text.items()})
    cfg = official_cfg(rank_unet, rank_vae, **model_over)
    lora_params = [v for k, v in state.items() if "lora_" in k][:3]
    optimizer = {"state": {i: {"step": torch.tensor(10.0), "exp_avg": torch.zeros_like(p),
                               "exp_avg_sq": torch.zeros_like(p)} for i, p in enumerate(lora_params)},
                 "param_groups": [{"lr": 5e-4, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.01,
                                   "amsgrad": False, "foreach": None, "maximize": False,
                                   "capturable": False, "differentiable": False, "fused": None,
                                   "params": list(range(len(lora_params)))}]}
    torch.save({"state_dict": state, "cfg": cfg, "optimizer": optimizer}, path)
    return InstantRestoreFixture(path, cfg, parts["unet"], parts["vae"], parts["original_unet"],
                                 parts["original_vae"], text)


# ----------------------------------------------------------------------------- OSDFace
@dataclass
class OSDFaceFixture:
    folder: Path
    base_unet: dict
    base_vae: dict
    lora: dict  # module name (diffusers) -> (down, up)
    vre: dict  # VisualPromptEmbedder state dict the files encode


def build_osdface(folder: Path, base_file: Path, old_lora_names: bool = False, seed: int = 1) -> OSDFaceFixture:
    """Write the OSDFace files into `folder` and an ldm single-file SD base at `base_file`."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from safetensors.torch import save_file

    from restorer_core.models.vre import VisualPromptEmbedder

    gen = seeded(seed)
    folder.mkdir(parents=True, exist_ok=True)
    unet, vae = UNet2DConditionModel(**TINY_UNET), AutoencoderKL(**TINY_VAE)
    base_unet, base_vae = random_like_module(unet, gen), random_like_module(vae, gen)
    save_file({**{f"model.diffusion_model.{k}": v for k, v in to_ldm_unet(base_unet, TINY_UNET).items()},
               **{f"first_stage_model.{k}": v for k, v in to_ldm_vae(base_vae, TINY_VAE).items()},
               "cond_stage_model.model.token_embedding.weight": torch.zeros(8, 4)}, str(base_file))

    lora, tensors = {}, {}
    for name, sub in unet.named_modules():
        if matches(name, OSDFACE_TARGETS) and isinstance(sub, nn.Linear):
            down = torch.randn(16, sub.in_features, generator=gen) * 0.05
            up = torch.randn(sub.out_features, 16, generator=gen) * 0.05
            lora[name] = (down, up)
            a, b = ("lora.down.weight", "lora.up.weight") if old_lora_names else ("lora_A.weight", "lora_B.weight")
            tensors[f"unet.{name}.{a}"], tensors[f"unet.{name}.{b}"] = down, up
    save_file(tensors, str(folder / "pytorch_lora_weights.safetensors"))

    vre = VisualPromptEmbedder(**TINY_VRE)
    vre_sd = random_like_module(vre, gen)
    proj = {k[len("proj."):]: v for k, v in vre_sd.items() if k.startswith("proj.")}
    torch.save(proj, folder / "embedding_change_weights.pth")
    lightning = {f"vqvae_LQ.{k}": v for k, v in vre_sd.items() if not k.startswith("proj.")}
    lightning["vqvae_LQ.decoder.conv_in.weight"] = torch.randn(4, 4, 3, 3, generator=gen)
    lightning["vqvae_HQ.encoder.conv_in.weight"] = torch.randn(4, 3, 3, 3, generator=gen)
    torch.save({"epoch": 3, "global_step": 1000, "pytorch-lightning_version": "1.4.2",
                "state_dict": lightning, "hyper_parameters": argparse.Namespace(lr=1e-4, n_embed=64),
                "callbacks": {argparse.ArgumentParser: {"best_model_score": torch.tensor(0.1)}}},
               folder / "associate_2.ckpt")
    return OSDFaceFixture(folder, base_unet, base_vae, lora, vre_sd)


# ----------------------------------------------------------------------------- ldm writers
_RESNET_TO_LDM = (("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("time_emb_proj", "emb_layers.1"),
                  ("norm2", "out_layers.0"), ("conv2", "out_layers.3"), ("conv_shortcut", "skip_connection"))


def _resnet_rest(rest: str) -> str:
    for new, old in _RESNET_TO_LDM:
        if rest.startswith(new + "."):
            return old + rest[len(new):]
    raise KeyError(rest)


def to_ldm_unet(sd: dict, config: dict) -> dict:
    """diffusers UNet2DConditionModel names -> original SD (ldm) names, without the prefix."""
    per = config["layers_per_block"]
    direct = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
              "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}
    has_attn_up = ["CrossAttn" in t for t in config["up_block_types"]]
    out = {}
    for k, v in sd.items():
        mod, _, leaf = k.rpartition(".")
        if mod in direct:
            out[f"{direct[mod]}.{leaf}"] = v
            continue
        if m := re.match(r"down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", k):
            b, l, rest = int(m[1]), int(m[2]), m[3]
            out[f"input_blocks.{1 + b * (per + 1) + l}.0.{_resnet_rest(rest)}"] = v
        elif m := re.match(r"down_blocks\.(\d+)\.attentions\.(\d+)\.(.+)", k):
            b, l, rest = int(m[1]), int(m[2]), m[3]
            out[f"input_blocks.{1 + b * (per + 1) + l}.1.{rest}"] = v
        elif m := re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", k):
            out[f"input_blocks.{1 + int(m[1]) * (per + 1) + per}.0.op.{m[2]}"] = v
        elif m := re.match(r"mid_block\.resnets\.(\d+)\.(.+)", k):
            out[f"middle_block.{2 * int(m[1])}.{_resnet_rest(m[2])}"] = v
        elif m := re.match(r"mid_block\.attentions\.0\.(.+)", k):
            out[f"middle_block.1.{m[1]}"] = v
        elif m := re.match(r"up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", k):
            out[f"output_blocks.{int(m[1]) * (per + 1) + int(m[2])}.0.{_resnet_rest(m[3])}"] = v
        elif m := re.match(r"up_blocks\.(\d+)\.attentions\.(\d+)\.(.+)", k):
            out[f"output_blocks.{int(m[1]) * (per + 1) + int(m[2])}.1.{m[3]}"] = v
        elif m := re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", k):
            b = int(m[1])
            out[f"output_blocks.{b * (per + 1) + per}.{2 if has_attn_up[b] else 1}.conv.{m[2]}"] = v
        else:
            raise KeyError(k)
    return out


def to_ldm_vae(sd: dict, config: dict) -> dict:
    """diffusers AutoencoderKL names -> ldm names (attention projections as 1x1 convs)."""
    n = len(config["down_block_types"])
    attn = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
    out = {}
    for k, v in sd.items():
        key = k
        key = re.sub(r"^(encoder|decoder)\.conv_norm_out\.", r"\1.norm_out.", key)
        if m := re.match(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
            key = f"encoder.down.{m[1]}.block.{m[2]}.{m[3].replace('conv_shortcut', 'nin_shortcut')}"
        elif m := re.match(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key):
            key = f"encoder.down.{m[1]}.downsample.conv.{m[2]}"
        elif m := re.match(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
            key = f"decoder.up.{n - 1 - int(m[1])}.block.{m[2]}.{m[3].replace('conv_shortcut', 'nin_shortcut')}"
        elif m := re.match(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", key):
            key = f"decoder.up.{n - 1 - int(m[1])}.upsample.conv.{m[2]}"
        elif m := re.match(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.+)", key):
            key = f"{m[1]}.mid.block_{int(m[2]) + 1}.{m[3].replace('conv_shortcut', 'nin_shortcut')}"
        elif m := re.match(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.+)\.(weight|bias)$", key):
            key = f"{m[1]}.mid.attn_1.{attn[m[2]]}.{m[3]}"
            if m[3] == "weight" and v.ndim == 2:
                v = v[:, :, None, None]
        out[key] = v
    return out
