"""Attention processors (diffusers style) for reference shared attention, all on SDPA.

Every attention layer of a restorer UNet runs `SDPAProcessor`. The self-attention layers of the
UNet's up blocks (InstantRestore's shared-attention sites) run `ReferenceAttnProcessor`, which
reads a `ReferenceContext` owned by the restorer:

* mode "record": keep this layer's keys and values (the reference pass),
* mode "inject": attend to [own K/V | reference K/V] (or reference K/V only when
  `train_input` is False), optionally AdaIN-renormalising each reference's values to the
  statistics of the input's values, as the official code does,
* mode "off": plain self-attention.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
import torch.nn.functional as F


def is_reference_site(name: str) -> bool:
    """True for processor names of up-block self-attention layers (the shared-attention sites)."""
    return name.startswith("up_blocks.") and ".attn1." in name


def adain_values(ref_values: torch.Tensor, own_values: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Renormalise each reference's values to the per-channel token statistics of the input's.

    ref_values [B|1, R, T, C], own_values [B, N, C] -> [B, R, T, C]. Unbiased std + eps on both
    sides, as in the official implementation (per-head statistics there equal per-channel ones).
    """
    mean = own_values.mean(dim=1, keepdim=True).unsqueeze(1)
    std = own_values.std(dim=1, keepdim=True).unsqueeze(1) + eps
    ref_mean = ref_values.mean(dim=2, keepdim=True)
    ref_std = ref_values.std(dim=2, keepdim=True) + eps
    return (ref_values - ref_mean) / ref_std * std + mean


@dataclass
class ReferenceContext:
    """Shared state between a restorer and the reference processors of one UNet."""

    mode: str = "off"  # "off" | "record" | "inject"
    train_input: bool = True
    use_adain: bool = False
    recorded: dict = field(default_factory=dict)  # layer -> (keys [N, T, C], values [N, T, C])
    record_limit: int = 0  # stop the reference pass once this many layers are recorded
    keys: dict = field(default_factory=dict)  # layer -> [Bk, R, T, C]
    values: dict = field(default_factory=dict)
    mask: Optional[torch.Tensor] = None  # [Bk, R] bool: which references are real
    probe: Optional[Callable] = None  # training hook: probe(layer, query, ref_keys, scale, hw)


class RecordingDone(Exception):
    """Raised by the last recording processor: the rest of the reference UNet is not needed."""


def _split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    b, n, c = x.shape
    return x.view(b, n, heads, c // heads).transpose(1, 2)


class SDPAProcessor:
    """Plain attention through torch's scaled_dot_product_attention (self- and cross-attention)."""

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None,
                 temb=None, *args, **kwargs):
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            b, c, h, w = hidden_states.shape
            hidden_states = hidden_states.view(b, c, h * w).transpose(1, 2)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        query = attn.to_q(hidden_states)
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        if encoder_hidden_states is not None and attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)
        key = attn.to_k(context)
        value = attn.to_v(context)
        out = self.attend(attn, query, key, value, hidden_states, attention_mask)

        out = attn.to_out[0](out)
        out = attn.to_out[1](out)
        if input_ndim == 4:
            out = out.transpose(-1, -2).reshape(b, c, h, w)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor

    def attend(self, attn, query, key, value, hidden_states, attention_mask):
        """Multi-head SDPA over [B, N, C] projections; returns [B, N, C]."""
        b = query.shape[0]
        mask = None
        if attention_mask is not None:
            mask = attn.prepare_attention_mask(attention_mask, key.shape[1], b)
            mask = mask.view(b, attn.heads, -1, mask.shape[-1])
        q, k, v = (_split_heads(t, attn.heads) for t in (query, key, value))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=attn.scale)
        return out.transpose(1, 2).reshape(b, -1, query.shape[-1])


class ReferenceAttnProcessor(SDPAProcessor):
    """Up-block self-attention that records or consumes reference keys/values."""

    def __init__(self, layer: str, context: ReferenceContext):
        self.layer = layer
        self.context = context

    def attend(self, attn, query, key, value, hidden_states, attention_mask):
        ctx = self.context
        if ctx.mode == "record":
            ctx.recorded[self.layer] = (key, value)
            if ctx.record_limit and len(ctx.recorded) >= ctx.record_limit:
                raise RecordingDone()
            return super().attend(attn, query, key, value, hidden_states, attention_mask)
        if ctx.mode != "inject" or self.layer not in ctx.keys:
            return super().attend(attn, query, key, value, hidden_states, attention_mask)

        b, n, c = query.shape
        ref_k, ref_v = ctx.keys[self.layer], ctx.values[self.layer]  # [Bk, R, T, C]
        bk, r, t, _ = ref_k.shape
        ref_k = ref_k.to(query.dtype)
        ref_v = ref_v.to(query.dtype)
        if ctx.use_adain:
            ref_v = adain_values(ref_v, value)  # -> [B, R, T, C]
        ref_k = ref_k.expand(b, -1, -1, -1).reshape(b, r * t, c)
        ref_v = ref_v.expand(b, -1, -1, -1).reshape(b, r * t, c)
        partial = ctx.mask is not None and not bool(ctx.mask.all())
        # Own keys join when the model was trained that way, and also (refs-only models) for
        # faces whose every reference is masked out: they fall back to plain self-attention.
        with_own = ctx.train_input or partial
        if with_own:
            k_all = torch.cat([key, ref_k], dim=1)
            v_all = torch.cat([value, ref_v], dim=1)
        else:
            k_all, v_all = ref_k, ref_v

        mask = None
        if partial:
            ref_ok = ctx.mask.to(query.device).repeat_interleave(t, dim=1).expand(b, -1)  # [B, R*T]
            own_ok = ref_ok.new_ones(b, n) if ctx.train_input else ~ref_ok.any(dim=1, keepdim=True).expand(b, n)
            mask = torch.cat([own_ok, ref_ok], dim=1)[:, None, None, :]
        if ctx.probe is not None:
            ctx.probe(self.layer, _split_heads(query, attn.heads), _split_heads(ref_k, attn.heads),
                      attn.scale, n)
        q, k, v = (_split_heads(x, attn.heads) for x in (query, k_all, v_all))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=attn.scale)
        return out.transpose(1, 2).reshape(b, n, c)


def install_processors(unet, context: ReferenceContext) -> list:
    """Give every attention layer of `unet` an SDPA processor; reference sites share `context`.

    Returns the names of the reference sites in forward order.
    """
    procs, sites = {}, []
    for name in unet.attn_processors.keys():
        if is_reference_site(name):
            layer = name[: -len(".processor")]
            procs[name] = ReferenceAttnProcessor(layer, context)
            sites.append(layer)
        else:
            procs[name] = SDPAProcessor()
    unet.set_attn_processor(procs)
    return sites


class WideHeadAttnProcessor(SDPAProcessor):
    """SDPA, except for heads wider than the fused kernels take (the VAE's single 512-wide head).

    Flash and cuDNN attention stop at head_dim 256, so torch runs a 512-wide head through its
    memory-efficient kernel at a fraction of the matmul rate. Here such a head is two matmuls
    and a float32 softmax, one face at a time (the score matrix of a 64x64 latent is 4096^2
    per face). Same function; the scores are rounded to the input dtype once, as in diffusers'
    classic processor. Masked attention keeps SDPA.
    """

    max_fused_head_dim = 256
    devices = ("cuda",)  # elsewhere SDPA has no such limit (the CPU kernel takes any width)

    def attend(self, attn, query, key, value, hidden_states, attention_mask):
        head_dim = query.shape[-1] // attn.heads
        if (head_dim <= self.max_fused_head_dim or attention_mask is not None
                or query.device.type not in self.devices):
            return super().attend(attn, query, key, value, hidden_states, attention_mask)
        b = query.shape[0]
        q, k, v = (_split_heads(t, attn.heads) for t in (query * attn.scale, key, value))
        out = []
        for i in range(b):
            probs = torch.matmul(q[i], k[i].transpose(-1, -2)).float().softmax(dim=-1).to(v.dtype)
            out.append(torch.matmul(probs, v[i]))
        return torch.stack(out).transpose(1, 2).reshape(b, -1, query.shape[-1])


ATTENTION_BACKENDS = ("sdpa", "wide_head")


def set_attention_backend(model: torch.nn.Module, backend: str = "sdpa") -> int:
    """"wide_head": WideHeadAttnProcessor on every plain attention layer of `model` with heads
    wider than 256; "sdpa": SDPAProcessor back on those layers. Reference processors are left
    alone. Returns how many layers have the backend's processor afterwards."""
    from diffusers.models.attention_processor import Attention, AttnProcessor2_0

    if backend not in ATTENTION_BACKENDS:
        raise ValueError(f"attention backend must be one of {ATTENTION_BACKENDS}, got {backend!r}")
    count = 0
    for module in model.modules():
        if not isinstance(module, Attention) or module.heads <= 0:
            continue
        if module.inner_dim // module.heads <= WideHeadAttnProcessor.max_fused_head_dim:
            continue
        proc = module.processor
        if backend == "wide_head":
            if type(proc) in (AttnProcessor2_0, SDPAProcessor):
                module.set_processor(WideHeadAttnProcessor())
                count += 1
            elif isinstance(proc, WideHeadAttnProcessor):
                count += 1
        elif isinstance(proc, WideHeadAttnProcessor):
            module.set_processor(SDPAProcessor())
            count += 1
        elif type(proc) is SDPAProcessor:
            count += 1
    return count


def use_wide_head_attention(model: torch.nn.Module) -> int:
    """set_attention_backend(model, "wide_head")."""
    return set_attention_backend(model, "wide_head")
