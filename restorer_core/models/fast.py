"""Inference speed-ups for OneStepRestorer that keep its output.

`FastRestorer(restorer, SpeedConfig(...))` is called like the restorer itself
(``fast(lq, refs, mode, generator)``) and returns the same images:

* the random numbers (latent sample, timestep noise) are drawn outside the network, with the
  same generator(s) and in the same order as ``OneStepRestorer.forward``, so seeded runs agree;
* the timestep goes to the UNet as a device tensor (a Python int makes diffusers build a tensor
  on the device every call, a host-device sync that also forbids CUDA graph capture);
* the prompt (constant caption or visual prompt) is computed eagerly, the network core
  (VAE encode -> noise -> UNet with reference attention -> x0 -> VAE decode) is what gets
  optimised:
    - ``channels_last``: NHWC convolutions (cuDNN's native layout for fp16/bf16),
    - ``compile_mode``: ``torch.compile`` of the core ("default", "max-autotune-no-cudagraphs",
      "reduce-overhead", ...),
    - ``cuda_graph``: the core captured once per input shape and replayed (no Python or
      kernel-launch overhead; static input buffers are refilled each call). A capture is
      keyed by the weights' addresses too: a host that moves the model (ComfyUI offloading it
      and loading it back) gets a fresh capture instead of a replay reading freed memory.
      On a CPU device the option is ignored (there is nothing to capture);
    - ``fuse_upsample``: nearest-2x upsampling + 3x3 conv computed as four 2x2 convs at the
      low resolution (`upsample_fusion`): 4/9 of those convs' FLOPs, same function;
    - ``wide_head_attention``: the VAE's 512-wide attention head as matmuls + softmax on CUDA
      (`attention.WideHeadAttnProcessor`; fused attention kernels stop at 256);
    - ``offload_references``: InstantRestore's reference UNet/VAE kept on the CPU between bank
      builds (restoring from cached K/V never runs them): 1.8 GiB less GPU memory at full size;
    - ``inductor``: extra Inductor settings for the compile (e.g. ``freezing``), as pairs.

Reference keys/values are not touched: compute them once with ``encode_references`` (the bank
cache) and pass them to every call. A reference mask with masked-out entries needs a host
check inside attention, so such calls run without the CUDA graph.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch
from diffusers.utils.torch_utils import randn_tensor

from . import vae_io
from .attention import use_wide_head_attention
from .upsample_fusion import fuse_upsample_convs
from .reference_kv import ReferenceKV
from .schedule import add_noise, predict_x0

COMPILE_MODES = (None, "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


@dataclass
class SpeedConfig:
    """Which speed-ups a FastRestorer uses (all keep the restorer's output)."""

    channels_last: bool = False
    compile_mode: Optional[str] = None
    cuda_graph: bool = False
    fuse_upsample: bool = False
    wide_head_attention: bool = False
    offload_references: bool = False
    inductor: tuple = ()  # ((name, value), ...) Inductor config for compile_mode, e.g. (("freezing", True),)
    # global torch setting, left alone unless True: cuDNN times its conv kernels (faster, but the
    # choice can differ between processes and GPUs, and with it the last bits of the output)
    cudnn_benchmark: bool = False
    warmup_runs: int = 2  # eager runs before a CUDA graph capture (cuDNN autotuning, lazy init)

    def __post_init__(self) -> None:
        if self.compile_mode not in COMPILE_MODES:
            raise ValueError(f"compile_mode must be one of {COMPILE_MODES}, got {self.compile_mode!r}")
        if self.cuda_graph and self.compile_mode in ("reduce-overhead", "max-autotune"):
            raise ValueError(f"compile_mode {self.compile_mode!r} already uses CUDA graphs; "
                             "set cuda_graph=False or pick 'default' / 'max-autotune-no-cudagraphs'")
        if self.inductor and not self.compile_mode:
            raise ValueError("inductor settings need a compile_mode")
        self.inductor = tuple((str(k), v) for k, v in self.inductor)

    def label(self) -> str:
        parts = ["sdpa"]
        if self.channels_last:
            parts.append("channels_last")
        if self.fuse_upsample:
            parts.append("fused_upsample")
        if self.wide_head_attention:
            parts.append("wide_head_mm")
        if self.offload_references:
            parts.append("refs_offloaded")
        if self.compile_mode:
            extra = "".join(f",{k}" if v is True else f",{k}={v}" for k, v in self.inductor)
            parts.append(f"compile[{self.compile_mode}{extra}]")
        if self.cuda_graph:
            parts.append("cuda_graph")
        return "+".join(parts)


def latent_shape(config, batch: int) -> tuple:
    """Shape of the VAE latent of `batch` faces at the restorer's native resolution."""
    vae = config.vae
    factor = 2 ** (len(vae.get("block_out_channels", (64,))) - 1)
    side = config.resolution // factor
    return (batch, int(vae.get("latent_channels", 4)), side, side)


def encode_part(restorer, x: torch.Tensor, sample_noise: Optional[torch.Tensor]) -> tuple:
    """VAE encode: x in [-1, 1] -> (scaled latent, encoder skips or None)."""
    dist, skips = vae_io.encode(restorer.vae, x, keep_skips=restorer.config.vae_skip_convs)
    z = dist.mode() if sample_noise is None else dist.mean + dist.std * sample_noise
    return z * restorer.scaling_factor, skips


def unet_part(restorer, z: torch.Tensor, time_noise: Optional[torch.Tensor], context: torch.Tensor,
              timestep: torch.Tensor) -> torch.Tensor:
    """Noise to the timestep, one UNet pass (with reference attention if installed), x0."""
    cfg = restorer.config
    alpha = restorer.alpha_value(cfg.timestep)  # a Python float: no host read inside compiled code
    z_t = z if time_noise is None else add_noise(z, time_noise, alpha)
    eps = restorer.unet(z_t, timestep, encoder_hidden_states=context).sample
    return predict_x0(z_t, eps, alpha, cfg.x0_in_float64)


def decode_part(restorer, x0: torch.Tensor, skips: Optional[list]) -> torch.Tensor:
    """VAE decode of the scaled latent x0, with the encoder skips when the model has them."""
    return vae_io.decode(restorer.vae, x0 / restorer.scaling_factor, skips, restorer.config.skip_gamma)


def restore_core(restorer, x: torch.Tensor, sample_noise: Optional[torch.Tensor],
                 time_noise: Optional[torch.Tensor], context: torch.Tensor,
                 timestep: torch.Tensor) -> torch.Tensor:
    """The network part of OneStepRestorer.forward with its random numbers given as inputs.

    x in [-1, 1]; returns the decoded image before clamping. Reference K/V (if any) must be
    installed by the caller (``restorer._injecting``). Mirrors forward() step by step; the
    tests check that the two agree exactly.
    """
    z, skips = encode_part(restorer, x, sample_noise)
    return decode_part(restorer, unet_part(restorer, z, time_noise, context, timestep), skips)


_COMPILED: dict = {}


def compiled_core(mode: str, inductor: tuple = ()) -> Callable:
    """One torch.compile wrapper per (mode, Inductor settings), shared so that variants reuse
    compiled code. torch.compile takes a mode or options, not both: with settings, the mode's
    own options are spelled out."""
    key = (mode, tuple(inductor))
    if key not in _COMPILED:
        if inductor:
            options = {"max_autotune": mode.startswith("max-autotune"),
                       "triton.cudagraphs": mode in ("reduce-overhead", "max-autotune")}
            options.update(dict(inductor))
            _COMPILED[key] = torch.compile(restore_core, options=options, dynamic=False)
        else:
            _COMPILED[key] = torch.compile(restore_core, mode=mode, dynamic=False)
    return _COMPILED[key]


_NOT_IN_CORE = ("ref_unet.", "ref_vae.")  # the reference networks never run inside a restore


class WeightLocations:
    """Where the tensors a restore reads live, cheap to read on every call.

    The slots (module, name) of every parameter and buffer outside the reference networks are
    listed once; `key()` hashes their current data pointers, which change when a host moves or
    reallocates the weights (the slots stay valid through ``module.to``, which swaps the tensors
    in them). Bank builds may move the reference networks: they are left out. Listing the slots
    again per call cost 4.3 ms for the full-size model on this project's CPU; reading them, 0.1.
    """

    def __init__(self, module: torch.nn.Module):
        self.slots = []
        for prefix, m in module.named_modules():
            if (prefix + ".").startswith(_NOT_IN_CORE):
                continue
            self.slots += [(m._parameters, n) for n, t in m._parameters.items() if t is not None]
            self.slots += [(m._buffers, n) for n, t in m._buffers.items() if t is not None]

    def key(self) -> int:
        return hash(tuple(slots[name].data_ptr() for slots, name in self.slots))


def weights_key(module: torch.nn.Module) -> int:
    """A hash of where the tensors a restore reads live (see WeightLocations)."""
    return WeightLocations(module).key()


class _CapturedCore:
    """A CUDA graph of the core for one input signature, with static input buffers."""

    def __init__(self, fn: Callable, restorer, inputs: dict, refs: Optional[ReferenceKV],
                 warmup_runs: int):
        self.restorer = restorer
        self.inputs = {k: (None if v is None else v.clone()) for k, v in inputs.items()}
        self.refs = None
        if refs is not None:
            self.refs = ReferenceKV(list(refs.layers), [k.clone() for k in refs.keys],
                                    [v.clone() for v in refs.values], None)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(max(1, warmup_runs)):
                self._run(fn)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.output = self._run(fn)

    def _run(self, fn: Callable) -> torch.Tensor:
        with self.restorer._injecting(self.refs):
            return fn(self.restorer, **self.inputs)

    def replay(self, inputs: dict, refs: Optional[ReferenceKV]) -> torch.Tensor:
        for name, value in inputs.items():
            if value is not None:
                self.inputs[name].copy_(value)
        if refs is not None:
            for dst, src in zip(self.refs.keys + self.refs.values, refs.keys + refs.values):
                dst.copy_(src)
        self.graph.replay()
        return self.output


def _signature(inputs: dict, refs: Optional[ReferenceKV]) -> tuple:
    sig = tuple((k, None if v is None else (tuple(v.shape), v.dtype, v.stride()))
                for k, v in sorted(inputs.items()))
    if refs is not None:
        sig += (tuple(refs.layers), tuple((tuple(k.shape), k.dtype) for k in refs.keys))
    return sig


class FastRestorer:
    """Drop-in for calling a OneStepRestorer: same arguments, same output, faster on CUDA."""

    def __init__(self, restorer, speed: Optional[SpeedConfig] = None):
        self.restorer = restorer
        self.speed = speed or SpeedConfig()
        self._graphs: dict = {}
        self._timestep: Optional[torch.Tensor] = None
        if self.speed.cudnn_benchmark and torch.cuda.is_available():
            torch.backends.cudnn.benchmark = True
        if self.speed.fuse_upsample:
            fuse_upsample_convs(restorer)
        if self.speed.wide_head_attention:
            use_wide_head_attention(restorer)
        if self.speed.offload_references and restorer.device.type != "cpu":
            restorer.offload_reference_networks("cpu")
        if self.speed.channels_last:
            restorer.to(memory_format=torch.channels_last)
        s = self.speed
        self._core = compiled_core(s.compile_mode, s.inductor) if s.compile_mode else restore_core
        self._weights = WeightLocations(restorer)

    # delegation, so callers can use a FastRestorer wherever they used the restorer
    @property
    def config(self):
        return self.restorer.config

    @property
    def device(self) -> torch.device:
        return self.restorer.device

    @property
    def dtype(self) -> torch.dtype:
        return self.restorer.dtype

    def encode_references(self, *args, **kwargs) -> ReferenceKV:
        return self.restorer.encode_references(*args, **kwargs)

    def resolve_mode(self, mode: str, refs: Optional[ReferenceKV]) -> tuple:
        return self.restorer.resolve_mode(mode, refs)

    def weight_hash(self) -> str:
        return self.restorer.weight_hash()

    def _timestep_tensor(self) -> torch.Tensor:
        t = self._timestep
        if t is None or t.device != self.device:
            # int64 [1], exactly what diffusers builds from a Python int
            t = torch.tensor([self.config.timestep], dtype=torch.int64, device=self.device)
            self._timestep = t
        return t

    def prepare(self, lq: torch.Tensor, use_vp: bool, generator=None,
                refs: Optional[ReferenceKV] = None) -> dict:
        """Core inputs for a batch, drawing random numbers exactly like forward() does."""
        r, cfg = self.restorer, self.config
        x = lq.to(r.device, r.dtype) * 2 - 1
        if self.speed.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        shape = latent_shape(cfg, x.shape[0])
        sample_noise = time_noise = None
        if cfg.latent_sample == "sample":
            sample_noise = randn_tensor(shape, generator=generator, device=r.device, dtype=r.dtype)
        if cfg.add_noise:
            time_noise = randn_tensor(shape, generator=generator, device=r.device, dtype=r.dtype)
        return dict(x=x, sample_noise=sample_noise, time_noise=time_noise,
                    context=r.with_reference_tokens(r.prompt(x, use_vp), refs).contiguous(),
                    timestep=self._timestep_tensor())

    @torch.no_grad()
    def __call__(self, lq: torch.Tensor, refs: Optional[ReferenceKV] = None, mode: str = "auto",
                 generator=None) -> torch.Tensor:
        r = self.restorer
        use_refs, use_vp = r.resolve_mode(mode, refs)
        refs = refs if use_refs else None
        if refs is not None and refs.keys[0].device != r.device:
            refs = refs.to(r.device)
        inputs = self.prepare(lq, use_vp, generator, refs)
        graphable = refs is None or refs.mask is None or bool(refs.mask.all())
        if self.speed.cuda_graph and r.device.type == "cuda" and graphable:
            if refs is not None and refs.mask is not None:
                refs = ReferenceKV(list(refs.layers), refs.keys, refs.values, None)
            key = (_signature(inputs, refs), self._weights.key())
            captured = self._graphs.get(key)
            if captured is None:
                # captures for weights that since moved would replay reading freed memory
                self._graphs = {k: g for k, g in self._graphs.items() if k[1] == key[1]}
                captured = _CapturedCore(self._core, r, inputs, refs, self.speed.warmup_runs)
                self._graphs[key] = captured
            img = captured.replay(inputs, refs)
        else:
            with r._injecting(refs):
                img = self._core(r, **inputs)
        return ((img.clamp(-1, 1) + 1) / 2).to(lq.dtype)

    def release_graphs(self) -> None:
        """Free the captured graphs and their buffers (e.g. after the batch size changes)."""
        self._graphs.clear()
