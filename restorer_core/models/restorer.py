"""OneStepRestorer: the single restoration module for every model size.

One network pass per face: VAE-encode the aligned low-quality face, (optionally) noise the latent
to the method's timestep, predict epsilon with the UNet conditioned on a prompt (the constant
caption embedding or the visual prompt) and on reference keys/values in the up-block
self-attention, take x0 in one DDPM step, VAE-decode.
"""

from __future__ import annotations

import contextlib
import hashlib
from typing import Optional

import torch
from torch import nn
from diffusers import AutoencoderKL, UNet2DConditionModel
from diffusers.utils.torch_utils import randn_tensor

from . import vae_io
from .attention import RecordingDone, ReferenceContext, install_processors
from .config import RestorerConfig
from .ref_identity import ReferenceIdentityTokens, pooled_identity
from .reference_kv import ReferenceKV
from .schedule import add_noise, alphas_cumprod, predict_x0

MODES = ("auto", "references", "visual_prompt", "both", "none")


def _build_unet(cfg: RestorerConfig) -> UNet2DConditionModel:
    unet = UNet2DConditionModel(**cfg.unet)
    if cfg.freeu is not None:
        unet.enable_freeu(*cfg.freeu)
    return unet


def _build_vae(cfg: RestorerConfig, skip_convs: bool) -> AutoencoderKL:
    vae = AutoencoderKL(**cfg.vae)
    if skip_convs:
        vae_io.add_skip_convs(vae, cfg.vae)
    return vae


class OneStepRestorer(nn.Module):
    """Restores aligned faces [B, 3, S, S] in 0..1 in one UNet pass (see module docstring)."""

    def __init__(self, config: RestorerConfig):
        super().__init__()
        self.config = config
        self.vae = _build_vae(config, config.vae_skip_convs)
        self.unet = _build_unet(config)
        self.ref_unet = _build_unet(config) if config.separate_ref_unet else None
        self.ref_vae = _build_vae(config, False) if config.separate_ref_unet else None
        self.vre = None
        if config.vre is not None:
            from .vre import VisualPromptEmbedder

            self.vre = VisualPromptEmbedder(**config.vre)
        self.face_id = self.ref_id_proj = None
        if config.ref_id is not None:
            from ..face_id import load_face_id

            # frozen face-recognition network; its weights travel in the restorer's file
            self.face_id = load_face_id().eval().requires_grad_(False)
            self.ref_id_proj = ReferenceIdentityTokens(
                self.face_id.embedding_dim, config.ref_id["tokens"], config.cross_attention_dim)
        self.prompt_embeds = nn.Parameter(
            torch.zeros(1, config.prompt_tokens, config.cross_attention_dim), requires_grad=False)
        # Not a buffer: .half()/.to(bf16) must never round the schedule (bf16 makes alpha_bar[1] == 1).
        self._alphas = alphas_cumprod(config.num_train_timesteps, config.beta_start, config.beta_end)
        # the same values as Python floats: compiled code reads them as constants (no graph break)
        self._alpha_values = tuple(self._alphas.tolist())

        self._ctx = ReferenceContext(train_input=config.train_input, use_adain=config.use_adain)
        self.reference_sites = install_processors(self.unet, self._ctx)
        if self.ref_unet is not None:
            self._ref_ctx = ReferenceContext()
            install_processors(self.ref_unet, self._ref_ctx)
        else:
            self._ref_ctx = self._ctx
        self._weight_hash: Optional[str] = None

    # ----------------------------------------------------------------------------- properties
    @property
    def device(self) -> torch.device:
        return self.prompt_embeds.device

    @property
    def dtype(self) -> torch.dtype:
        return self.prompt_embeds.dtype

    @property
    def alphas_cumprod(self) -> torch.Tensor:
        """The DDPM cumulative alphas, float32 on the CPU whatever the module's dtype/device."""
        return self._alphas

    def alpha_value(self, timestep: int) -> float:
        """alphas_cumprod[timestep] as a Python float (exactly the float32 value)."""
        return self._alpha_values[int(timestep)]

    @property
    def scaling_factor(self) -> float:
        return float(self.vae.config.scaling_factor)

    def weight_hash(self) -> str:
        """sha256 over every tensor (sorted names); keys the reference K/V cache."""
        if self._weight_hash is None:
            h = hashlib.sha256(self.config.to_json().encode())
            for name, tensor in sorted(self.state_dict().items()):
                h.update(name.encode())
                h.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
            self._weight_hash = h.hexdigest()
        return self._weight_hash

    def invalidate_weight_hash(self) -> None:
        """Call after changing weights in place (training, loading)."""
        self._weight_hash = None

    # ----------------------------------------------------------------------------- pieces
    def _latents(self, vae, x: torch.Tensor, generator, keep_skips: bool = False):
        dist, skips = vae_io.encode(vae, x, keep_skips=keep_skips)
        z = dist.sample(generator) if self.config.latent_sample == "sample" else dist.mode()
        return z * self.scaling_factor, skips

    def _noise(self, z: torch.Tensor, t: int, generator) -> torch.Tensor:
        noise = randn_tensor(z.shape, generator=generator, device=z.device, dtype=z.dtype)
        return add_noise(z, noise, self.alphas_cumprod[t])

    def resolve_mode(self, mode: str, refs: Optional[ReferenceKV]) -> tuple:
        """(use_references, use_visual_prompt) for a requested mode, with clear errors."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        has_refs = refs is not None and refs.num_refs > 0
        if mode == "auto":
            return has_refs, self.vre is not None
        if mode in ("references", "both") and not has_refs:
            raise ValueError(f"mode {mode!r} needs reference faces: give a reference bank or use "
                             "mode 'visual_prompt' / 'auto'")
        if mode in ("visual_prompt", "both") and self.vre is None:
            raise ValueError(f"this {self.config.method} restorer has no visual-prompt embedder; "
                             "use mode 'references' or 'auto'")
        return mode in ("references", "both"), mode in ("visual_prompt", "both")

    def prompt(self, x: torch.Tensor, use_visual_prompt: bool) -> torch.Tensor:
        """Cross-attention context [B, tokens, C]: visual prompt of x in [-1, 1], or the constant."""
        if use_visual_prompt:
            return self.vre(x).to(x.dtype)
        return self.prompt_embeds.to(x.dtype).expand(x.shape[0], -1, -1)

    def with_reference_tokens(self, context: torch.Tensor, refs: Optional[ReferenceKV]) -> torch.Tensor:
        """The prompt with the reference-identity tokens appended, when this restorer has that
        channel and references are used; the prompt unchanged otherwise."""
        if self.ref_id_proj is None or refs is None or refs.identity is None:
            return context
        tokens = self.ref_id_proj(pooled_identity(refs.identity, refs.mask)).to(context.dtype)
        if tokens.shape[0] != context.shape[0]:
            tokens = tokens.expand(context.shape[0], -1, -1)
        return torch.cat([context, tokens], dim=1)

    # ----------------------------------------------------------------------------- references
    def offload_reference_networks(self, device="cpu") -> bool:
        """Keep InstantRestore's separate reference UNet and VAE on `device` (the CPU) between
        bank builds: restoring from cached reference K/V never runs them, and on the GPU they
        are half of the weights (1.8 GiB in fp16 at full size). encode_references brings them
        over for its call. Returns False when the restorer has no separate reference networks."""
        if self.ref_unet is None:
            return False
        self.ref_unet.to(device)
        self.ref_vae.to(device)
        return True

    @contextlib.contextmanager
    def _reference_networks_here(self):
        """The reference networks on the restorer's device for the duration (then back)."""
        if self.ref_unet is None:
            yield
            return
        home = self.ref_unet.conv_in.weight.device
        if home == self.device:
            yield
            return
        self.ref_unet.to(self.device)
        self.ref_vae.to(self.device)
        try:
            yield
        finally:
            self.offload_reference_networks(home)

    def encode_references(self, refs: torch.Tensor, mask: Optional[torch.Tensor] = None,
                          generator=None) -> ReferenceKV:
        """Reference faces [R, 3, S, S] (or per face [B, R, 3, S, S]) in 0..1 -> ReferenceKV.

        Runs the reference UNet (InstantRestore's frozen original UNet, or the restoring UNet
        itself) on the references' latents noised to `ref_timestep`, with the constant prompt,
        and records every up-block self-attention layer's keys and values.
        """
        per_face = refs.dim() == 5
        if not per_face:
            refs = refs.unsqueeze(0)
        bk, r = refs.shape[:2]
        if mask is not None and mask.shape != (bk, r):
            raise ValueError(f"reference mask must have shape {(bk, r)}, got {tuple(mask.shape)}")
        flat = refs.reshape(bk * r, *refs.shape[2:]).to(self.device, self.dtype) * 2 - 1
        vae = self.ref_vae if self.ref_vae is not None else self.vae
        unet = self.ref_unet if self.ref_unet is not None else self.unet
        ctx = self._ref_ctx
        with self._reference_networks_here():
            z, _ = self._latents(vae, flat, generator)
            t = self.config.ref_timestep
            if self.config.add_noise:
                z = self._noise(z, t, generator)
            ctx.mode, ctx.recorded, ctx.record_limit = "record", {}, len(self.reference_sites)
            try:
                unet(z, t, encoder_hidden_states=self.prompt(flat, False))
            except RecordingDone:
                pass
            finally:
                ctx.mode, ctx.record_limit = "off", 0
        identity = None
        if self.face_id is not None:
            emb = self.face_id(((flat + 1) / 2).to(next(self.face_id.parameters()).dtype))
            identity = emb.reshape(bk, r, -1).to(self.dtype)
        recorded, ctx.recorded = ctx.recorded, {}
        keys, values = [], []
        for layer in self.reference_sites:
            k, v = recorded[layer]
            keys.append(k.reshape(bk, r, *k.shape[1:]))
            values.append(v.reshape(bk, r, *v.shape[1:]))
        return ReferenceKV(list(self.reference_sites), keys, values, mask, identity)

    @contextlib.contextmanager
    def _injecting(self, refs: Optional[ReferenceKV]):
        ctx = self._ctx
        if refs is None:
            yield
            return
        if list(refs.layers) != list(self.reference_sites):
            raise ValueError("these reference keys/values were made for a different architecture; "
                             "rebuild the reference bank for this restorer")
        ctx.mode = "inject"
        ctx.keys = dict(zip(refs.layers, refs.keys))
        ctx.values = dict(zip(refs.layers, refs.values))
        ctx.mask = refs.mask
        try:
            yield
        finally:
            ctx.mode, ctx.keys, ctx.values, ctx.mask = "off", {}, {}, None

    # ----------------------------------------------------------------------------- restore
    def forward(self, lq: torch.Tensor, refs: Optional[ReferenceKV] = None, mode: str = "auto",
                generator=None, context: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Aligned faces [B, 3, S, S] in 0..1 -> restored faces [B, 3, S, S] in 0..1.

        context: a precomputed cross-attention prompt [B, tokens, C] that replaces the one the
        mode selects (training passes the visual prompt's straight-through version here).
        """
        use_refs, use_vp = self.resolve_mode(mode, refs)
        cfg = self.config
        x = lq.to(self.device, self.dtype) * 2 - 1
        z, skips = self._latents(self.vae, x, generator, keep_skips=cfg.vae_skip_convs)
        t = cfg.timestep
        z_t = self._noise(z, t, generator) if cfg.add_noise else z
        if context is None:
            context = self.prompt(x, use_vp)
        context = self.with_reference_tokens(context, refs if use_refs else None)
        with self._injecting(refs if use_refs else None):
            eps = self.unet(z_t, t, encoder_hidden_states=context).sample
        x0 = predict_x0(z_t, eps, self.alphas_cumprod[t], cfg.x0_in_float64)
        img = vae_io.decode(self.vae, x0 / self.scaling_factor, skips, cfg.skip_gamma)
        return ((img.clamp(-1, 1) + 1) / 2).to(lq.dtype)
