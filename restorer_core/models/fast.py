"""Run OneStepRestorer's own restore step faster, computing the same function.

The restorer does the work in named steps (restorer.py); the one with the network in it,
`restore_step`, takes every random number and the timestep as inputs. This module changes only
how that step is executed, through ``forward(..., run_step=...)``:

* ``compile_mode``: ``torch.compile`` of restore_step as one graph ("default",
  "max-autotune-no-cudagraphs", "reduce-overhead", ...; ``inductor``: extra Inductor settings);
* ``cuda_graph``: restore_step captured once per input signature and replayed (no Python or
  kernel-launch overhead; static input buffers are refilled each call). A capture is keyed by
  where the weights live too: a host that moves the model (ComfyUI offloading it and loading it
  back) gets a fresh capture instead of a replay reading freed memory. Ignored off CUDA. A
  reference mask with masked-out entries needs a host check inside attention: such calls run
  without the graph.

The speed-ups that change how the network computes (same function) are the restorer's named,
reversible methods: ``fuse_upsample``, ``set_attention_backend("wide_head")``,
``set_channels_last``, ``offload_reference_networks``. `SpeedConfig.apply_to(restorer)` sets
them as the config says; that changes the restorer, so it is never done behind a caller's
back: `FastRestorer(restorer, speed)` leaves the restorer as it is and refuses a config whose
model settings are not in effect, and `speed_up(restorer, speed)` does both, on request.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from .reference_kv import ReferenceKV

log = logging.getLogger(__name__)

COMPILE_MODES = (None, "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


@dataclass
class SpeedConfig:
    """Speed-ups (all keep the restorer's output): model settings (fuse_upsample,
    wide_head_attention, channels_last, offload_references: the restorer's methods, set by
    `apply_to`) and how FastRestorer runs the step (compile_mode, inductor, cuda_graph)."""

    channels_last: bool = False
    compile_mode: Optional[str] = None
    cuda_graph: bool = False
    fuse_upsample: bool = False
    wide_head_attention: bool = False
    offload_references: bool = False
    inductor: tuple = ()  # ((name, value), ...) Inductor config for compile_mode, e.g. (("freezing", True),)
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

    def model_settings(self) -> dict:
        """The restorer's speed_settings() this config asks for (offloading aside: a memory choice)."""
        return {"fuse_upsample": self.fuse_upsample,
                "attention": "wide_head" if self.wide_head_attention else "sdpa",
                "channels_last": self.channels_last}

    def apply_to(self, restorer) -> None:
        """Set the restorer's speed-up methods as this config says (undoing the ones it does not
        name, offloading aside); this changes `restorer`."""
        if self.fuse_upsample:
            restorer.fuse_upsample()
        else:
            restorer.unfuse_upsample()
        restorer.set_attention_backend("wide_head" if self.wide_head_attention else "sdpa")
        restorer.set_channels_last(self.channels_last)
        if self.offload_references and restorer.device.type != "cpu":
            restorer.offload_reference_networks("cpu")

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


def run_step(restorer, **inputs) -> torch.Tensor:
    """restorer.restore_step(**inputs): the function compiled once per mode and shared by every
    restorer (torch.compile guards on the restorer it is given)."""
    return restorer.restore_step(**inputs)


_COMPILED: dict = {}


def compiled_step(mode: str, inductor: tuple = ()) -> Callable:
    """One torch.compile of run_step per (mode, Inductor settings), shared so that variants reuse
    compiled code. torch.compile takes a mode or options, not both: with settings, the mode's
    own options are spelled out."""
    key = (mode, tuple(inductor))
    if key not in _COMPILED:
        if inductor:
            options = {"max_autotune": mode.startswith("max-autotune"),
                       "triton.cudagraphs": mode in ("reduce-overhead", "max-autotune")}
            options.update(dict(inductor))
            _COMPILED[key] = torch.compile(run_step, options=options, dynamic=False)
        else:
            _COMPILED[key] = torch.compile(run_step, mode=mode, dynamic=False)
    return _COMPILED[key]


_NOT_IN_STEP = ("ref_unet.", "ref_vae.")  # the reference networks never run inside a restore


class WeightLocations:
    """Where the tensors a restore reads live, cheap to read on every call.

    The slots (module, name) of every parameter and buffer outside the reference networks are
    listed once; `key()` hashes their current data pointers, which change when a host moves or
    reallocates the weights (the slots stay valid through ``module.to``, which swaps the tensors
    in them). Bank builds may move the reference networks: they are left out. Listing the slots
    again per call cost 4.3 ms for the full-size model on this project's CPU; reading them, 0.1.
    The slots are listed again when the module tree changes (fuse_upsample swaps blocks).
    """

    def __init__(self, module: torch.nn.Module):
        self.slots = []
        for prefix, m in module.named_modules():
            if (prefix + ".").startswith(_NOT_IN_STEP):
                continue
            self.slots += [(m._parameters, n) for n, t in m._parameters.items() if t is not None]
            self.slots += [(m._buffers, n) for n, t in m._buffers.items() if t is not None]

    def key(self) -> int:
        return hash(tuple(slots[name].data_ptr() for slots, name in self.slots))


def weights_key(module: torch.nn.Module) -> int:
    """A hash of where the tensors a restore reads live (see WeightLocations)."""
    return WeightLocations(module).key()


class _CapturedStep:
    """A CUDA graph of run_step for one input signature, with static input buffers."""

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
        # other threads (paste, detection: restore.streams) may allocate and copy during a capture
        with torch.cuda.graph(self.graph, capture_error_mode="thread_local"):
            self.output = self._run(fn)

    def _run(self, fn: Callable) -> torch.Tensor:
        with self.restorer.references_installed(self.refs):
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


class CompileError(RuntimeError):
    """torch.compile could not compile the restore step (no Triton, no C compiler, an Inductor
    error, ...); the message says why in one line."""


class FastRestorer:
    """Calls the restorer (``fast(lq, refs, mode, generator)``, same arguments, same output)
    with its restore step compiled and/or replayed from a CUDA graph. Never changes the
    restorer; see the module docstring.

    persist: a restorer_core.models.compile_cache.PersistedCompile: the first compiled call of each
    input signature loads the compiled code stored for it, or compiles (saying so in one line)
    and stores it. A failure to compile raises CompileError (FallbackRunner falls back on it).
    """

    def __init__(self, restorer, speed: Optional[SpeedConfig] = None, persist=None):
        self.restorer = restorer
        self.speed = speed or SpeedConfig()
        have = restorer.speed_settings()
        wanted = self.speed.model_settings()
        differ = sorted(k for k, v in wanted.items() if have[k] != v)
        if differ:
            raise ValueError(f"the restorer's speed settings {differ} are not what {self.speed.label()} "
                             "asks for; call speed.apply_to(restorer) first (it changes the restorer), "
                             "or use speed_up(restorer, speed)")
        self._graphs: dict = {}
        s = self.speed
        self._step = compiled_step(s.compile_mode, s.inductor) if s.compile_mode else run_step
        self._weights: Optional[WeightLocations] = None
        self._compiled: set = set()  # input signatures already compiled (or loaded) in this runner
        self.persist = persist
        if persist is not None and s.compile_mode:
            from .compile_cache import persistable

            why_not = persistable(s.inductor)
            if why_not:
                log.warning("compiled code is not saved for %s: %s", s.label(), why_not)
                self.persist = None

    @torch.no_grad()
    def __call__(self, lq: torch.Tensor, refs: Optional[ReferenceKV] = None, mode: str = "auto",
                 generator=None) -> torch.Tensor:
        return self.restorer(lq, refs, mode, generator=generator, run_step=self._run)

    def _run(self, inputs: dict, refs: Optional[ReferenceKV]) -> torch.Tensor:
        """forward's run_step: restore_step(**inputs) with refs, compiled and/or graph-replayed."""
        r = self.restorer
        inputs = dict(inputs, context=inputs["context"].contiguous())
        if refs is not None and refs.keys[0].device != r.device:
            refs = refs.to(r.device)
        signature = _signature(inputs, refs)  # the mask is no part of it: same before and after it is dropped
        if self.speed.compile_mode:
            self._compile_once(inputs, refs, signature)
        graphable = refs is None or refs.mask is None or bool(refs.mask.all())
        if not (self.speed.cuda_graph and r.device.type == "cuda" and graphable):
            with r.references_installed(refs):
                return self._step(r, **inputs)
        if refs is not None and refs.mask is not None:
            refs = ReferenceKV(list(refs.layers), refs.keys, refs.values, None)
        if self._weights is None:
            self._weights = WeightLocations(r)
        key = (signature, self._weights.key())
        captured = self._graphs.get(key)
        if captured is None:
            # captures for weights that since moved would replay reading freed memory
            self._graphs = {k: g for k, g in self._graphs.items() if k[1] == key[1]}
            captured = _CapturedStep(self._step, r, inputs, refs, self.speed.warmup_runs)
            self._graphs[key] = captured
        return captured.replay(inputs, refs)

    def _compile_once(self, inputs: dict, refs: Optional[ReferenceKV], signature: tuple) -> None:
        """The first compiled call of an input signature, outside any CUDA graph: loads the
        persisted compiled code when there is some, else compiles (announced) and saves it.
        Any failure becomes CompileError."""
        r = self.restorer
        sig = (signature, refs is not None and refs.mask is not None)
        if sig in self._compiled:
            return
        key, loaded, where = None, False, ""
        if self.persist is not None:
            from .compile_cache import make_key

            # where the reference networks wait is no part of the compiled step
            label = dataclasses.replace(self.speed, offload_references=False).label()
            key = make_key(r, label, sig, inputs["x"].shape[0])
            loaded = self.persist.load(key)
            where = f"; cached in {self.persist.cache.folder}"
        what = (f"batch {inputs['x'].shape[0]}, {inputs['x'].shape[-1]} px, "
                f"{str(r.dtype).replace('torch.', '')} on {r.device}")
        if not loaded:
            log.warning("compiling the restore step with torch.compile (%s): once per GPU, dtype, batch size, "
                        "resolution and model, about 1-2 minutes on a GPU; it makes every later batch "
                        "faster%s", what, where)
        misses = _inductor_misses()
        t0 = time.perf_counter()
        try:
            with r.references_installed(refs):
                self._step(r, **inputs)
        except Exception as exc:  # noqa: BLE001 - any compile failure: the caller falls back
            text = str(exc).strip().splitlines()
            raise CompileError(f"{type(exc).__name__}: {text[0][:200] if text else ''}".rstrip(": ")) from exc
        seconds = time.perf_counter() - t0
        self._compiled.add(sig)
        if loaded and _inductor_misses() > misses:  # torch did not take the stored code: store it anew
            log.warning("the stored compiled code did not fit this process (Inductor compiled anew in %.0f s)", seconds)
            loaded = False
        if loaded:
            log.info("loaded compiled code for %s (first call %.1f s)", what, seconds)
        elif key is not None:
            path = self.persist.save(key)
            if path is not None:
                log.warning("compiled in %.0f s; saved %s (%.1f MB): later starts load it", seconds, path,
                            path.stat().st_size / 1e6)

    def prepare(self, lq: torch.Tensor, use_visual_prompt: bool, generator=None,
                refs: Optional[ReferenceKV] = None) -> dict:
        """restore_step's inputs for a batch, as forward makes them (for benchmarks and tests)."""
        r = self.restorer
        x = r.model_input(lq)
        noise = r.draw_noise(x, generator)
        context = r.with_reference_tokens(r.prompt(x, use_visual_prompt), refs)
        return dict(x=x, sample_noise=noise.sample, time_noise=noise.time,
                    context=context.contiguous(), timestep=r.timestep_tensor(x.device))

    def release_graphs(self) -> None:
        """Free the captured graphs and their buffers (e.g. after the batch size changes)."""
        self._graphs.clear()


def speed_up(restorer, speed: SpeedConfig, persist=None) -> FastRestorer:
    """Apply `speed`'s model settings to `restorer` (this changes it) and wrap it."""
    speed.apply_to(restorer)
    return FastRestorer(restorer, speed, persist)


def _inductor_misses() -> int:
    """How many graphs Inductor compiled (FX-graph cache misses) in this process so far."""
    try:
        from torch._dynamo.utils import counters
    except ImportError:
        return 0
    return int(counters["inductor"]["fxgraph_cache_miss"])


def _generator_states(generator) -> list:
    gens = generator if isinstance(generator, (list, tuple)) else [generator]
    return [(g, g.get_state()) for g in gens if isinstance(g, torch.Generator)]


class FallbackRunner:
    """A compiled FastRestorer that turns into `fallback` (e.g. the CUDA-graph path) the first
    time compiling fails, saying why in one line; the failed batch is redone from the same
    generator states, so its faces are those the fallback gives. Owns the restorer: it sets
    the restorer's speed-up methods (SpeedConfig.apply_to) for the config in use.
    Same call as FastRestorer."""

    def __init__(self, restorer, speed: SpeedConfig, fallback: Optional[SpeedConfig], persist=None):
        self.restorer = restorer
        self.fallback = fallback
        self.fast = speed_up(restorer, speed, persist)
        self.failure: Optional[str] = None

    @property
    def speed(self) -> SpeedConfig:
        return self.fast.speed

    @property
    def compiles(self) -> bool:
        """True while the step runs compiled (a new batch shape would mean a new compile)."""
        return bool(self.fast.speed.compile_mode)

    @torch.no_grad()
    def __call__(self, lq: torch.Tensor, refs: Optional[ReferenceKV] = None, mode: str = "auto",
                 generator=None) -> torch.Tensor:
        states = _generator_states(generator)
        try:
            return self.fast(lq, refs, mode, generator)
        except CompileError as exc:
            self.failure = str(exc)
            fallback = self.fallback or SpeedConfig()
            log.warning("torch.compile failed (%s); restoring with %s instead (same faces, slower)",
                        exc, fallback.label())
            for g, state in states:
                g.set_state(state)
            self.fast.release_graphs()
            self.fast = speed_up(self.restorer, fallback)
            return self.fast(lq, refs, mode, generator)

    def release_graphs(self) -> None:
        self.fast.release_graphs()
