"""InstantRestore inference done the way the official code does it, for speed and output checks.

Written for this project (no official code copied) to do the same work as the official
``Pix2Pix_Turbo.forward`` at inference (``face_replace/models/pix2pix_turbo.py``,
``attn_processors.py``, ``inference/test.py``):

* two UNets and two VAEs: the restoring ``unet`` / ``vae`` carry *unfused* PEFT-style LoRA
  adapters (rank r, alpha r // 2: extra matmuls next to every targeted layer); the frozen
  ``original_unet`` / ``original_vae`` compute the references;
* the references are recomputed for every face: original VAE encode, sample, noise to t = 1,
  a full original-UNet pass recording every up-block self-attention's keys/values, and (as the
  official code does) the one-step x0 of the references decoded by the original VAE;
* attention is materialised (``softmax(Q K^T * scale) V`` through ``baddbmm``/``bmm``, as
  diffusers' classic ``AttnProcessor``) in every layer of the restoring UNet and at the
  recording sites of the original UNet; the original UNet's other layers use diffusers'
  default SDPA processor, as the official code leaves them;
* FreeU (0.9, 0.2, 1.4, 1.6) on both UNets; weights stay float32 and run under
  ``torch.autocast`` (``inference/test.py``: fp32 model, ``torch.cuda.amp.autocast()``).

The noise coefficients are computed in float32 (diffusers' ``add_noise`` first casts alphas to
the latent's half dtype); everything else follows the official order of operations, so with
the same weights (LoRA fused) and the same generators a OneStepRestorer must agree with it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from torch import nn
from diffusers import AutoencoderKL, UNet2DConditionModel
from diffusers.models.attention_processor import AttnProcessor2_0
from diffusers.utils.torch_utils import randn_tensor

UNET_LORA_TARGETS = ("to_k", "to_q", "to_v", "to_out.0", "conv", "conv1", "conv2", "conv_shortcut",
                     "conv_out", "proj_in", "proj_out", "ff.net.2", "ff.net.0.proj")
VAE_LORA_TARGETS = ("conv1", "conv2", "conv_in", "conv_shortcut", "conv", "conv_out",
                    "to_k", "to_q", "to_v", "to_out.0")


# ------------------------------------------------------------------------------------ LoRA
class LoraAdapter(nn.Module):
    """PEFT-style unfused LoRA around a Linear or Conv2d: base(x) + scaling * B(A(x))."""

    def __init__(self, base: nn.Module, rank: int, alpha: float):
        super().__init__()
        self.base_layer = base
        self.scaling = alpha / rank
        if isinstance(base, nn.Linear):
            self.lora_A = nn.Linear(base.in_features, rank, bias=False)
            self.lora_B = nn.Linear(rank, base.out_features, bias=False)
        elif isinstance(base, nn.Conv2d):
            self.lora_A = nn.Conv2d(base.in_channels, rank, base.kernel_size, base.stride,
                                    base.padding, base.dilation, bias=False)
            self.lora_B = nn.Conv2d(rank, base.out_channels, 1, bias=False)
        else:
            raise TypeError(f"LoRA on {type(base).__name__} is not supported")

    @property
    def weight(self) -> torch.Tensor:
        return self.base_layer.weight

    @property
    def bias(self) -> Optional[torch.Tensor]:
        return self.base_layer.bias

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        return self.base_layer(x) + self.lora_B(self.lora_A(x)) * self.scaling

    @torch.no_grad()
    def merged(self) -> nn.Module:
        """A plain layer with the adapter folded into its weight (what LoRA fusion produces)."""
        fused = copy.deepcopy(self.base_layer)
        a = self.lora_A.weight.float().reshape(self.lora_A.weight.shape[0], -1)
        b = self.lora_B.weight.float().reshape(self.lora_B.weight.shape[0], -1)
        delta = (b @ a).reshape(fused.weight.shape) * self.scaling
        fused.weight.copy_((fused.weight.float() + delta).to(fused.weight.dtype))
        return fused


def _targets(module: nn.Module, targets: Sequence[str]) -> list:
    found = []
    for name, sub in module.named_modules():
        if any(name == t or name.endswith("." + t) for t in targets) and isinstance(sub, (nn.Linear, nn.Conv2d)):
            found.append(name)
    return found


def _set_submodule(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)


def add_lora(module: nn.Module, targets: Sequence[str], rank: int, alpha: float,
             generator: Optional[torch.Generator] = None, b_std: float = 0.02) -> int:
    """Wrap every targeted layer; A ~ N(0, 1/rank) (PEFT 'gaussian'), B ~ N(0, b_std) (a trained B
    is non-zero). Returns the number of adapters."""
    names = _targets(module, targets)
    for name in names:
        base = module.get_submodule(name)
        lora = LoraAdapter(base, rank, alpha).to(base.weight.device, base.weight.dtype)
        with torch.no_grad():
            for p, std in ((lora.lora_A.weight, 1.0 / rank), (lora.lora_B.weight, b_std)):
                where = generator.device if generator is not None else p.device
                p.copy_(torch.randn(p.shape, generator=generator, device=where).to(p) * std)
        _set_submodule(module, name, lora)
    return len(names)


def fused_copy(module: nn.Module) -> nn.Module:
    """A copy of `module` with every LoraAdapter replaced by its merged plain layer."""
    out = copy.deepcopy(module)
    for name, sub in list(out.named_modules()):
        if isinstance(sub, LoraAdapter):
            _set_submodule(out, name, sub.merged())
    return out


# ------------------------------------------------------------------------------------ attention
def _materialised(attn, query, key, value) -> torch.Tensor:
    """diffusers AttnProcessor math: heads to batch, baddbmm scores, softmax, bmm."""
    q = attn.head_to_batch_dim(query)
    k = attn.head_to_batch_dim(key)
    v = attn.head_to_batch_dim(value)
    probs = attn.get_attention_scores(q, k, None)
    return attn.batch_to_head_dim(torch.bmm(probs, v))


def _adain(ref: torch.Tensor, own: torch.Tensor) -> torch.Tensor:
    """Official AdaIN on head-split values: ref [B*h, T, d] to own [B*h, N, d] token stats."""
    mean, std = own.mean(dim=1, keepdim=True), own.std(dim=1, keepdim=True) + 1e-5
    r_mean, r_std = ref.mean(dim=1, keepdim=True), ref.std(dim=1, keepdim=True) + 1e-5
    return (ref - r_mean) / r_std * std + mean


class _Finish:
    @staticmethod
    def project(attn, out, residual, shape4d):
        out = attn.to_out[1](attn.to_out[0](out))
        if shape4d is not None:
            out = out.transpose(-1, -2).reshape(shape4d)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


def _begin(attn, hidden_states, encoder_hidden_states, temb):
    residual = hidden_states
    if attn.spatial_norm is not None:
        hidden_states = attn.spatial_norm(hidden_states, temb)
    shape4d = None
    if hidden_states.ndim == 4:
        shape4d = hidden_states.shape
        b, c, h, w = shape4d
        hidden_states = hidden_states.view(b, c, h * w).transpose(1, 2)
    if attn.group_norm is not None:
        hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
    query = attn.to_q(hidden_states)
    context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
    if encoder_hidden_states is not None and attn.norm_cross:
        context = attn.norm_encoder_hidden_states(context)
    return residual, shape4d, query, attn.to_k(context), attn.to_v(context)


class SharedAttention:
    """The restoring UNet's processor (every layer): materialised attention; at up-block
    self-attention site `index` it attends to reference keys/values given per call."""

    def __init__(self, index: Optional[int], train_input: bool, use_adain: bool):
        self.index, self.train_input, self.use_adain = index, train_input, use_adain

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None,
                 temb=None, ref_keys=None, ref_values=None):
        residual, shape4d, query, key, value = _begin(attn, hidden_states, encoder_hidden_states, temb)
        if self.index is not None and ref_keys is not None:
            rk, rv = ref_keys[self.index], ref_values[self.index]  # [B, R, T, C]
            q = attn.head_to_batch_dim(query)
            k, v = attn.head_to_batch_dim(key), attn.head_to_batch_dim(value)
            rks = [attn.head_to_batch_dim(rk[:, i]) for i in range(rk.shape[1])]
            rvs = [attn.head_to_batch_dim(rv[:, i]) for i in range(rv.shape[1])]
            if self.use_adain:
                rvs = [_adain(r, v) for r in rvs]
            keys = torch.cat(([k] if self.train_input else []) + rks, dim=1)
            values = torch.cat(([v] if self.train_input else []) + rvs, dim=1)
            probs = attn.get_attention_scores(q, keys, None)
            out = attn.batch_to_head_dim(torch.bmm(probs, values))
        else:
            out = _materialised(attn, query, key, value)
        return _Finish.project(attn, out, residual, shape4d)


class RecordingAttention:
    """The original UNet's up-block self-attention: materialised, keeps its keys/values."""

    def __init__(self):
        self.keys = self.values = None

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None,
                 temb=None, **kwargs):
        residual, shape4d, query, key, value = _begin(attn, hidden_states, encoder_hidden_states, temb)
        self.keys, self.values = key, value
        return _Finish.project(attn, _materialised(attn, query, key, value), residual, shape4d)


def _is_site(name: str) -> bool:
    return name.startswith("up_blocks") and "attn1" in name


# ------------------------------------------------------------------------------------ model
@dataclass
class OfficialStyleConfig:
    unet: dict
    vae: dict
    lora_rank: int = 32
    lora_alpha: Optional[float] = None  # None: rank // 2, as the official configs
    freeu: Optional[tuple] = (0.9, 0.2, 1.4, 1.6)
    train_input: bool = False
    use_adain: bool = True
    timestep: int = 249
    ref_timestep: int = 1
    decode_references: bool = True  # the official forward decodes the references' x0 too
    num_train_timesteps: int = 1000
    beta_start: float = 0.00085
    beta_end: float = 0.012


class OfficialStyleInstantRestore(nn.Module):
    """Official-style InstantRestore; inputs and outputs in [-1, 1] like the official code."""

    def __init__(self, cfg: OfficialStyleConfig, generator: Optional[torch.Generator] = None):
        super().__init__()
        self.cfg = cfg
        self.unet = UNet2DConditionModel(**cfg.unet)
        self.original_unet = UNet2DConditionModel(**cfg.unet)
        self.vae = AutoencoderKL(**cfg.vae)
        self.original_vae = AutoencoderKL(**cfg.vae)
        if cfg.freeu is not None:
            self.unet.enable_freeu(*cfg.freeu)
            self.original_unet.enable_freeu(*cfg.freeu)
        alpha = cfg.lora_alpha if cfg.lora_alpha is not None else cfg.lora_rank // 2
        self.n_unet_lora = add_lora(self.unet, UNET_LORA_TARGETS, cfg.lora_rank, alpha, generator)
        self.n_vae_lora = add_lora(self.vae, VAE_LORA_TARGETS, cfg.lora_rank, alpha, generator)
        cross = int(cfg.unet.get("cross_attention_dim", 1280))
        self.register_buffer("caption_enc", torch.zeros(1, 77, cross))
        betas = torch.linspace(cfg.beta_start**0.5, cfg.beta_end**0.5, cfg.num_train_timesteps) ** 2
        self.register_buffer("alphas_cumprod", torch.cumprod(1 - betas, 0), persistent=False)
        self._install_processors()

    def _install_processors(self) -> None:
        procs, index = {}, 0
        for name in self.unet.attn_processors:
            site = _is_site(name)
            procs[name] = SharedAttention(index if site else None, self.cfg.train_input, self.cfg.use_adain)
            index += int(site)
        self.unet.set_attn_processor(procs)
        self.recorders = []
        procs = {}
        for name in self.original_unet.attn_processors:
            if _is_site(name):
                rec = RecordingAttention()
                self.recorders.append(rec)
                procs[name] = rec
            else:
                procs[name] = AttnProcessor2_0()
        self.original_unet.set_attn_processor(procs)

    def _noise(self, z: torch.Tensor, t: int, generator) -> torch.Tensor:
        a = self.alphas_cumprod[t].float()
        noise = randn_tensor(z.shape, generator=generator, device=z.device, dtype=z.dtype)
        return (a.sqrt() * z.float() + (1 - a).sqrt() * noise.float()).to(z.dtype)

    def _x0(self, z_t: torch.Tensor, eps: torch.Tensor, t: int) -> torch.Tensor:
        a = self.alphas_cumprod[t].float()
        return (z_t.float() - (1 - a).sqrt() * eps.float()) / a.sqrt()

    def reference_kv(self, conds: torch.Tensor, generator=None):
        """conds [B, R, 3, S, S] in [-1, 1] -> (keys, values) lists [B, R, T, C] (+ decoded refs)."""
        b, r = conds.shape[:2]
        flat = conds.reshape(b * r, *conds.shape[2:])
        scale = self.vae.config.scaling_factor
        z = self.original_vae.encode(flat).latent_dist.sample(generator) * scale
        t = self.cfg.ref_timestep
        z_t = self._noise(z, t, generator)
        caption = self.caption_enc.expand(z_t.shape[0], -1, -1)
        eps = self.original_unet(z_t, torch.tensor([t], device=z_t.device),
                                 encoder_hidden_states=caption).sample
        keys = [rec.keys.reshape(b, r, *rec.keys.shape[1:]) for rec in self.recorders]
        values = [rec.values.reshape(b, r, *rec.values.shape[1:]) for rec in self.recorders]
        for rec in self.recorders:
            rec.keys = rec.values = None
        decoded = None
        if self.cfg.decode_references:
            x0 = self._x0(z_t, eps, t)
            decoded = self.original_vae.decode((x0 / scale).to(z_t.dtype)).sample.clamp(-1, 1)
        return keys, values, decoded

    def forward(self, c_t: torch.Tensor, conds: Optional[torch.Tensor] = None,
                generator=None, ref_generator=None) -> torch.Tensor:
        """c_t [B, 3, S, S] in [-1, 1], conds [B, R, 3, S, S] in [-1, 1] -> image in [-1, 1]."""
        scale = self.vae.config.scaling_factor
        z = self.vae.encode(c_t).latent_dist.sample(generator) * scale
        keys = values = None
        if conds is not None:
            keys, values, _ = self.reference_kv(conds, ref_generator)
        t = self.cfg.timestep
        z_t = self._noise(z, t, generator)
        caption = self.caption_enc.expand(z_t.shape[0], -1, -1)
        eps = self.unet(z_t, torch.tensor([t], device=z_t.device), encoder_hidden_states=caption,
                        cross_attention_kwargs={"ref_keys": keys, "ref_values": values}).sample
        x0 = self._x0(z_t, eps, t)
        return self.vae.decode((x0 / scale).to(z_t.dtype)).sample.clamp(-1, 1)


def project_config_dict(cfg: OfficialStyleConfig) -> dict:
    """RestorerConfig fields for a OneStepRestorer doing the same math (LoRA fused)."""
    return dict(method="instantrestore", unet=copy.deepcopy(cfg.unet), vae=copy.deepcopy(cfg.vae),
                vre=None, separate_ref_unet=True, timestep=cfg.timestep, add_noise=True,
                x0_in_float64=False, latent_sample="sample", ref_timestep=cfg.ref_timestep,
                train_input=cfg.train_input, use_adain=cfg.use_adain, freeu=cfg.freeu,
                vae_skip_convs=False, num_train_timesteps=cfg.num_train_timesteps,
                beta_start=cfg.beta_start, beta_end=cfg.beta_end, prompt_tokens=77)


@torch.no_grad()
def fused_state_dicts(model: OfficialStyleInstantRestore) -> dict:
    """Plain (LoRA-fused) state dicts for OneStepRestorer's unet / vae / ref_unet / ref_vae."""
    return {
        "unet": fused_copy(model.unet).state_dict(),
        "vae": fused_copy(model.vae).state_dict(),
        "ref_unet": model.original_unet.state_dict(),
        "ref_vae": model.original_vae.state_dict(),
        "prompt_embeds": model.caption_enc.clone(),
    }


@torch.no_grad()
def load_into_restorer(restorer, parts: dict) -> None:
    """Copy fused official-style weights into a OneStepRestorer built from project_config_dict."""
    restorer.unet.load_state_dict(parts["unet"])
    restorer.vae.load_state_dict(parts["vae"])
    restorer.ref_unet.load_state_dict(parts["ref_unet"])
    restorer.ref_vae.load_state_dict(parts["ref_vae"])
    restorer.prompt_embeds.copy_(parts["prompt_embeds"])
    restorer.invalidate_weight_hash()
