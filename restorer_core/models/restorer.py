"""OneStepRestorer: the single restoration module for every model size.

One network pass per face. `forward` reads as the method, one named step per line:

    cond   = self.conditioning(mode, refs)      # what it uses, and why (restorer_core.restore.conditioning)
    x      = self.model_input(lq)               # 0..1 -> -1..1
    noise  = self.draw_noise(x, generator)      # every random number, in a fixed order
    prompt = self.prompt(x, cond.use_visual_prompt)  # constant caption or visual prompt
    refs   = refs if cond.use_references else None
    prompt = self.with_reference_tokens(prompt, refs)  # + reference-identity tokens (config.ref_id)
    with self.references_installed(refs):       # reference K/V for the up-block self-attention
        img = self.restore_step(x, noise, prompt, timestep)  # encode -> denoise -> decode
    return self.model_output(img, lq.dtype)     # -1..1 -> 0..1

`restore_step` is the whole network computation with no randomness and no host reads, the
only code that runs the restoring UNet (`denoise`); the speed wrapper (models/fast.py:
torch.compile, CUDA graphs) wraps that same callable. Speed-ups that change how the network
computes the same function are named, reversible methods: `fuse_upsample` / `unfuse_upsample`,
`set_attention_backend`, `set_channels_last`, `offload_reference_networks`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch
from torch import nn
from diffusers import AutoencoderKL, UNet2DConditionModel
from diffusers.utils.torch_utils import randn_tensor

from ..restore.conditioning import Capabilities, Conditioning, decide
from ..io.digest import tensors_sha256
from . import vae_io
from .attention import RecordingDone, ReferenceContext, install_processors, set_attention_backend
from .config import RestorerConfig
from .ref_identity import ReferenceIdentityTokens, build_face_id_network, pooled_identity
from .reference_kv import ReferenceKV
from .schedule import add_noise, alphas_cumprod, predict_x0
from .upsample_fusion import fuse_upsample_convs, unfuse_upsample_convs


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


@dataclass
class ModelSource:
    """Where a restorer's weights came from, for reports: the loader's kind ("default",
    "project", "instantrestore", "osdface"; "custom" for one built in code), the file or
    folder, provenance from the file's metadata, and the loader's key-mapping report."""

    kind: str = "custom"
    path: Optional[str] = None
    info: dict = field(default_factory=dict)
    load_report: Any = None


@dataclass
class StepNoise:
    """The random numbers of one restore, drawn before the network runs: the latent sample's
    noise (latent_sample "sample") and the timestep noise (add_noise); None when unused."""

    sample: Optional[torch.Tensor] = None
    time: Optional[torch.Tensor] = None


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
            # frozen face-recognition network; its weights travel in the restorer's file
            self.face_id, dim = build_face_id_network(config.ref_id.get("network", "identity_embedder"))
            self.face_id.eval().requires_grad_(False)
            self.ref_id_proj = ReferenceIdentityTokens(dim, config.ref_id["tokens"], config.cross_attention_dim)
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
        self.capabilities = Capabilities.of(config)
        self.source = ModelSource()
        self._weight_hash: Optional[str] = None
        self._timesteps: dict = {}  # device -> the timestep as an int64 [1] tensor there
        self._speed = {"fuse_upsample": False, "attention": "sdpa", "channels_last": False}

    # ----------------------------------------------------------------------------- properties
    def train(self, mode: bool = True) -> "OneStepRestorer":
        super().train(mode)
        if self.face_id is not None:
            self.face_id.eval()  # frozen: its BatchNorm statistics never follow a training batch
        return self

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
        """restorer_core.io.digest.tensors_sha256 of the weights (the value a project file stores
        as weights_sha256; its loader passes it in). Keys the reference cache."""
        if self._weight_hash is None:
            self._weight_hash = tensors_sha256(self.state_dict())
        return self._weight_hash

    def set_weight_hash(self, digest: Optional[str]) -> None:
        """Remember the hash of the weights just loaded (None: recompute on next use). Call with
        None after changing weights in place (training)."""
        self._weight_hash = digest

    def invalidate_weight_hash(self) -> None:
        self.set_weight_hash(None)

    # ----------------------------------------------------------------------------- speed-ups
    def fuse_upsample(self) -> int:
        """Compute every nearest-2x upsample + 3x3 conv at the low resolution (four 2x2 phase
        convs: same function, 4/9 of the FLOPs; models/upsample_fusion.py). The state dict is
        unchanged. Call again after changing weights. Returns how many blocks are fused."""
        self._speed["fuse_upsample"] = True
        return fuse_upsample_convs(self)

    def unfuse_upsample(self) -> int:
        """Undo fuse_upsample (the original diffusers blocks, same weights). Returns how many."""
        self._speed["fuse_upsample"] = False
        return unfuse_upsample_convs(self)

    def set_attention_backend(self, backend: str = "sdpa") -> int:
        """"sdpa": every attention layer through torch SDPA; "wide_head": heads wider than the
        fused kernels take (the VAE's 512-wide head) as matmuls + float32 softmax on CUDA (same
        function). Reference attention is unaffected. Returns how many layers have the backend."""
        count = set_attention_backend(self, backend)
        self._speed["attention"] = backend
        return count

    def set_channels_last(self, enabled: bool = True) -> None:
        """NHWC weights and inputs (cuDNN's native layout for fp16/bf16 convolutions), or back."""
        if bool(enabled) != self._speed["channels_last"]:
            self.to(memory_format=torch.channels_last if enabled else torch.contiguous_format)
            self._speed["channels_last"] = bool(enabled)

    def speed_settings(self) -> dict:
        """The speed-up methods in effect: fuse_upsample, attention (backend), channels_last,
        and whether the reference networks wait on another device (offload_reference_networks)."""
        offloaded = self.ref_unet is not None and self.ref_unet.conv_in.weight.device != self.device
        return dict(self._speed, references_offloaded=offloaded)

    # ----------------------------------------------------------------------------- references
    def offload_reference_networks(self, device="cpu") -> bool:
        """Keep InstantRestore's separate reference UNet and VAE on `device` (the CPU) between
        bank builds: restoring from cached reference K/V never runs them, and on the GPU they
        are half of the weights (1.8 GiB in fp16 at full size). encode_references brings them
        over for its call; `offload_reference_networks(restorer.device)` brings them back for
        good. Returns False when the restorer has no separate reference networks."""
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
        and records every up-block self-attention layer's keys and values (the pass stops after
        the last one: this is a recording pass, not a restore). With a reference-identity channel
        (config.ref_id) also each reference's face-ID embedding.
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
            dist, _ = vae_io.encode(vae, flat)
            z = dist.sample(generator) if self.config.latent_sample == "sample" else dist.mode()
            z = z * self.scaling_factor
            t = self.config.ref_timestep
            if self.config.add_noise:
                noise = randn_tensor(z.shape, generator=generator, device=z.device, dtype=z.dtype)
                z = add_noise(z, noise, self.alpha_value(t))
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
    def references_installed(self, refs: Optional[ReferenceKV]):
        """Reference keys/values read by the restoring UNet's up-block self-attention for the
        duration (None: plain self-attention)."""
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

    # ----------------------------------------------------------------------------- the steps
    def conditioning(self, mode: str, refs: Optional[ReferenceKV]) -> Conditioning:
        """What this restorer is conditioned on for `mode` with these references, and why."""
        return decide(self.capabilities, mode, refs is not None and refs.num_refs > 0)

    def model_input(self, lq: torch.Tensor) -> torch.Tensor:
        """Faces in 0..1 -> the network's input in -1..1, on the restorer's device and dtype."""
        x = lq.to(self.device, self.dtype) * 2 - 1
        return x.contiguous(memory_format=torch.channels_last) if self._speed["channels_last"] else x

    def latent_shape(self, x: torch.Tensor) -> tuple:
        """Shape of the VAE latent of network input x."""
        factor = 2 ** (len(self.config.vae.get("block_out_channels", (64,))) - 1)
        channels = int(self.config.vae.get("latent_channels", 4))
        return (x.shape[0], channels, x.shape[-2] // factor, x.shape[-1] // factor)

    def draw_noise(self, x: torch.Tensor, generator=None) -> StepNoise:
        """The restore's random numbers, latent sample first, then timestep noise (a list of
        generators: one per face, so a face's result does not depend on its batch)."""
        shape, cfg = self.latent_shape(x), self.config
        draw = lambda: randn_tensor(shape, generator=generator, device=self.device, dtype=self.dtype)  # noqa: E731
        sample = draw() if cfg.latent_sample == "sample" else None
        time = draw() if cfg.add_noise else None
        return StepNoise(sample, time)

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

    def timestep_tensor(self, device: torch.device) -> torch.Tensor:
        """The restore timestep as the int64 [1] tensor diffusers makes of an int, kept per device
        (building it per call is a host-to-device copy, which CUDA graph capture forbids)."""
        key = str(device)
        if key not in self._timesteps:
            with torch.inference_mode(False):  # usable in training too
                self._timesteps[key] = torch.tensor([self.config.timestep], dtype=torch.int64, device=device)
        return self._timesteps[key]

    def encode(self, x: torch.Tensor, sample_noise: Optional[torch.Tensor]) -> tuple:
        """VAE encode: x in [-1, 1] -> (scaled latent, encoder skips or None)."""
        dist, skips = vae_io.encode(self.vae, x, keep_skips=self.config.vae_skip_convs)
        z = dist.mode() if sample_noise is None else dist.mean + dist.std * sample_noise
        return z * self.scaling_factor, skips

    def denoise(self, z: torch.Tensor, time_noise: Optional[torch.Tensor], context: torch.Tensor,
                timestep: torch.Tensor) -> torch.Tensor:
        """Noise to the timestep, the restoring UNet's one pass (reference attention reads the
        installed K/V), one DDPM step to x0. The schedule value is a Python float: no host read."""
        cfg = self.config
        alpha = self.alpha_value(cfg.timestep)
        z_t = z if time_noise is None else add_noise(z, time_noise, alpha)
        eps = self.unet(z_t, timestep, encoder_hidden_states=context).sample
        return predict_x0(z_t, eps, alpha, cfg.x0_in_float64)

    def decode(self, x0: torch.Tensor, skips: Optional[list]) -> torch.Tensor:
        """VAE decode of the scaled latent x0 (with the encoder skips when the model has them)."""
        return vae_io.decode(self.vae, x0 / self.scaling_factor, skips, self.config.skip_gamma)

    def restore_step(self, x: torch.Tensor, sample_noise: Optional[torch.Tensor],
                     time_noise: Optional[torch.Tensor], context: torch.Tensor,
                     timestep: torch.Tensor) -> torch.Tensor:
        """encode -> denoise -> decode: x in [-1, 1] -> the decoded image before clamping.

        Everything random or host-side is an input, so this is what torch.compile compiles and
        a CUDA graph captures. Reference K/V are installed by the caller (references_installed).
        """
        z, skips = self.encode(x, sample_noise)
        return self.decode(self.denoise(z, time_noise, context, timestep), skips)

    @staticmethod
    def model_output(img: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """The decoded image -> faces in 0..1 in `dtype`."""
        return ((img.clamp(-1, 1) + 1) / 2).to(dtype)

    def forward(self, lq: torch.Tensor, refs: Optional[ReferenceKV] = None, mode: str = "auto",
                generator=None, context: Optional[torch.Tensor] = None,
                run_step: Optional[Callable] = None) -> torch.Tensor:
        """Aligned faces [B, 3, S, S] in 0..1 -> restored faces [B, 3, S, S] in 0..1.

        context: a precomputed cross-attention prompt [B, tokens, C] that replaces the one the
        mode selects (training passes the visual prompt's straight-through version here).
        run_step(inputs, refs): runs restore_step(**inputs) with `refs` installed, another way
        (models/fast.py: compiled, or a CUDA graph replay); None runs it here.
        """
        cond = self.conditioning(mode, refs)
        x = self.model_input(lq)
        noise = self.draw_noise(x, generator)
        if context is None:
            context = self.prompt(x, cond.use_visual_prompt)
        refs = refs if cond.use_references else None
        context = self.with_reference_tokens(context, refs)
        inputs = dict(x=x, sample_noise=noise.sample, time_noise=noise.time, context=context,
                      timestep=self.timestep_tensor(x.device))
        if run_step is not None:
            img = run_step(inputs, refs)
        else:
            with self.references_installed(refs):
                img = self.restore_step(**inputs)
        return self.model_output(img, lq.dtype)
