"""Shared helpers for official checkpoints: safe reading, key checks, LoRA fusion.

Every loader goes through :func:`load_checked`, which refuses a state dict that does not fit the
module (missing keys, unexpected keys, shape mismatches) with a :class:`CheckpointError` naming
the file and the first offending keys, and through the LoRA fusers here, which fold
``W = W0 + scale * B @ A`` into the base weights (linear and conv LoRA alike).
"""

from __future__ import annotations

import pickle
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping, Optional

import torch
from torch import nn

from ..errors import CheckpointError

StateDict = dict[str, torch.Tensor]


@dataclass
class LoadReport:
    """What a loader did with a file: tensors loaded per part, LoRA layers fused, keys ignored."""

    source: str
    loaded: dict[str, int] = field(default_factory=dict)
    lora_fused: dict[str, int] = field(default_factory=dict)
    ignored: dict[str, int] = field(default_factory=dict)  # key prefix -> number of tensors skipped
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        parts = ", ".join(f"{k} {v}" for k, v in self.loaded.items())
        text = f"{Path(self.source).name}: loaded {parts}"
        if self.lora_fused:
            text += "; LoRA fused: " + ", ".join(f"{k} {v} layers" for k, v in self.lora_fused.items())
        if self.ignored:
            text += "; ignored: " + ", ".join(f"{k} ({v})" for k, v in self.ignored.items())
        return text + "".join(f"; {n}" for n in self.notes)


def _list(keys: Iterable[str], limit: int = 6) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


# ----------------------------------------------------------------------------- safe reading
class _Inert:
    """Stand-in for a Python object inside a checkpoint: accepts anything, does nothing."""

    def __init__(self, *args, **kwargs) -> None:
        pass

    def __new__(cls, *args, **kwargs):
        return object.__new__(cls)

    def __setstate__(self, state) -> None:
        pass

    def __call__(self, *args, **kwargs) -> "_Inert":
        return _Inert()


def _inert_class(name: str) -> type:
    return type(name.rsplit(".", 1)[-1], (_Inert,), {})


# torch.save's legacy format starts with a protocol-2 pickle of this magic number.
_LEGACY_TORCH_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"


def _looks_like_torch_save(path: Path) -> bool:
    """True for a zip archive (torch >= 1.6) or a legacy torch.save file."""
    with open(path, "rb") as fh:
        head = fh.read(len(_LEGACY_TORCH_MAGIC))
    return head.startswith(b"PK\x03\x04") or head == _LEGACY_TORCH_MAGIC


def torch_load_safe(path: Path, inert_objects: bool = False) -> object:
    """``torch.load(weights_only=True)`` with errors that say what to do.

    inert_objects=False: a pickle that names any Python global outside torch's weights-only
    allowlist (for example a ``__reduce__`` that would run code) is refused.
    inert_objects=True: such globals are replaced by inert stand-ins that are never executed,
    so training checkpoints that carry harmless extras (argparse namespaces, Lightning callback
    classes) still give up their tensors.  No code from the file runs in either case.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    extra: list = []
    if inert_objects:
        try:
            names = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
        except Exception as exc:  # noqa: BLE001 - reported as a corrupt file below
            raise CheckpointError(f"{path}: not a readable torch checkpoint ({exc}); "
                                  "download it again") from exc
        extra = [(_inert_class(n), n) for n in names]
    try:
        with torch.serialization.safe_globals(extra):
            try:
                return torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError as exc:
                if "mmap" not in str(exc) and "zip" not in str(exc).lower():
                    raise
                return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if not _looks_like_torch_save(path):
            raise CheckpointError(f"{path}: not a torch checkpoint (neither torch's zip format nor its "
                                  "legacy pickle format; the file may be damaged or something else "
                                  "renamed to .pt); download it again") from exc
        raise CheckpointError(
            f"{path}: refused to load. The file contains Python objects or code, not only "
            f"weights, and this package never unpickles those (details: {str(exc).splitlines()[0]}). "
            "If you trust its origin, convert it once to safetensors with the official code, or "
            "download the file again from the official source.") from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as exc:
        raise CheckpointError(f"{path}: corrupt or not a torch checkpoint ({exc}); "
                              "download it again") from exc


def read_safetensors(path: Path) -> tuple[StateDict, dict[str, str]]:
    """(tensors, metadata) of a safetensors file, with a clear error when it is corrupt."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # safetensors raises its own error types
        raise CheckpointError(f"{path}: corrupt or not a safetensors file ({exc}); "
                              "download it again") from exc
    return tensors, meta


def read_weights(path: Path, inert_objects: bool = False) -> StateDict:
    """A plain {name: tensor} dict from .safetensors, or from a torch file read safely."""
    path = Path(path)
    if path.suffix == ".safetensors":
        return read_safetensors(path)[0]
    obj = torch_load_safe(path, inert_objects=inert_objects)
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: expected a dict of tensors (a state dict)")
    return dict(obj)


# ----------------------------------------------------------------------------- key plumbing
def take_prefix(sd: Mapping[str, torch.Tensor], prefix: str) -> StateDict:
    """The entries under `prefix`, with the prefix removed."""
    return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}


def check_fits(module: nn.Module, sd: Mapping[str, torch.Tensor], source: str, part: str,
               hint: str = "") -> None:
    """Raise CheckpointError unless `sd` has exactly the module's keys with the same shapes."""
    expected = module.state_dict()
    missing = set(expected) - set(sd)
    unexpected = set(sd) - set(expected)
    wrong = [k for k in set(expected) & set(sd) if tuple(expected[k].shape) != tuple(sd[k].shape)]
    if not (missing or unexpected or wrong):
        return
    lines = [f"{source}: the {part} weights do not fit this architecture."]
    if wrong:
        k = sorted(wrong)[0]
        lines.append(f"{len(wrong)} shape mismatches, e.g. {k}: file {tuple(sd[k].shape)} "
                     f"vs model {tuple(expected[k].shape)}.")
    if missing:
        lines.append(f"{len(missing)} missing keys: {_list(missing)}.")
    if unexpected:
        lines.append(f"{len(unexpected)} unexpected keys: {_list(unexpected)}.")
    lines.append(hint or "Is this the right file for this model?")
    raise CheckpointError(" ".join(lines))


def load_checked(module: nn.Module, sd: Mapping[str, torch.Tensor], source: str, part: str,
                 report: Optional[LoadReport] = None, hint: str = "") -> None:
    """check_fits, then a strict load (values are cast to the module's dtypes)."""
    check_fits(module, sd, source, part, hint)
    module.load_state_dict(dict(sd), strict=True)
    if report is not None:
        report.loaded[part] = len(sd)


# ----------------------------------------------------------------------------- LoRA fusion
def lora_delta(down: torch.Tensor, up: torch.Tensor, base_shape: torch.Size) -> torch.Tensor:
    """B @ A reshaped to the base weight: linear (A [r, in], B [out, r]) or conv
    (A [r, in, kh, kw] with the base's kernel, B [out, r, 1, 1])."""
    r = down.shape[0]
    if up.shape[1] != r or up.shape[0] != base_shape[0]:
        raise ValueError(f"LoRA shapes {tuple(down.shape)} / {tuple(up.shape)} do not fit {tuple(base_shape)}")
    delta = up.reshape(up.shape[0], r).float() @ down.reshape(r, -1).float()
    if delta.numel() != torch.Size(base_shape).numel():
        raise ValueError(f"LoRA shapes {tuple(down.shape)} / {tuple(up.shape)} do not fit {tuple(base_shape)}")
    return delta.reshape(base_shape)


def _fused(base: torch.Tensor, deltas: list[tuple[float, torch.Tensor]]) -> torch.Tensor:
    w = base.float()
    for scale, delta in deltas:
        w = w + scale * delta
    return w.to(base.dtype)


_PEFT_A = re.compile(r"^(?P<mod>.+)\.lora_A\.(?P<adapter>[^.]+)\.weight$")


def fuse_peft(sd: Mapping[str, torch.Tensor], scale_for: Callable[[str, int], float], source: str,
              part: str) -> tuple[StateDict, int]:
    """PEFT-wrapped state dict -> plain module state dict with LoRA folded in.

    Wrapped layer ``M`` has ``M.base_layer.weight`` (+ ``.bias``) and per adapter
    ``M.lora_A.<adapter>.weight`` / ``M.lora_B.<adapter>.weight``; the result has ``M.weight`` =
    base + sum over adapters of ``scale_for(adapter, rank) * B @ A``.
    Returns (state dict, number of layers fused).
    """
    out: StateDict = {}
    adapters: dict[str, list[tuple[str, str]]] = {}
    for k in sd:
        m = _PEFT_A.match(k)
        if m:
            adapters.setdefault(m["mod"], []).append((m["adapter"], k))
    used: set[str] = set()
    for mod, items in adapters.items():
        base_key = f"{mod}.base_layer.weight"
        if base_key not in sd:
            raise CheckpointError(f"{source}: {part} LoRA layer {mod} has no base weight {base_key}")
        deltas = []
        for adapter, a_key in items:
            b_key = f"{mod}.lora_B.{adapter}.weight"
            if b_key not in sd:
                raise CheckpointError(f"{source}: {part} LoRA layer {mod} has {a_key} but no {b_key}")
            try:
                delta = lora_delta(sd[a_key], sd[b_key], sd[base_key].shape)
            except ValueError as exc:
                raise CheckpointError(f"{source}: {part} LoRA layer {mod}: {exc}") from exc
            deltas.append((scale_for(adapter, sd[a_key].shape[0]), delta))
            used |= {a_key, b_key}
        out[f"{mod}.weight"] = _fused(sd[base_key], deltas)
        used.add(base_key)
    for k, v in sd.items():
        if k in used:
            continue
        if ".lora_" in k or "lora_magnitude_vector" in k:
            raise CheckpointError(f"{source}: {part} has LoRA tensors this loader cannot fold in "
                                  f"(e.g. {k}); only plain LoRA (lora_A / lora_B) is supported")
        out[k.replace(".base_layer.", ".")] = v
    return out, len(adapters)


_DIFFUSERS_LORA = (
    (re.compile(r"^(?P<mod>.+)\.lora_A\.weight$"), ".lora_A.weight", ".lora_B.weight"),
    (re.compile(r"^(?P<mod>.+)\.lora\.down\.weight$"), ".lora.down.weight", ".lora.up.weight"),
)


def fuse_lora_file(base: Mapping[str, torch.Tensor], lora: Mapping[str, torch.Tensor], scale: float,
                   source: str, prefix: str = "unet.") -> tuple[StateDict, int]:
    """Fold a diffusers-format LoRA file (``<prefix><module>.lora_A.weight`` / ``lora_B``, or the
    older ``lora.down`` / ``lora.up``) into a plain base state dict.  Every LoRA key must be used
    and must land on an existing base weight."""
    out: StateDict = dict(base)
    used: set[str] = set()
    fused = 0
    for k in lora:
        for pattern, a_suffix, b_suffix in _DIFFUSERS_LORA:
            m = pattern.match(k)
            if not m:
                continue
            mod = m["mod"]
            b_key = mod + b_suffix
            target = (mod[len(prefix):] if mod.startswith(prefix) else mod) + ".weight"
            if b_key not in lora:
                raise CheckpointError(f"{source}: LoRA {k} has no partner {b_key}")
            if target not in base:
                raise CheckpointError(f"{source}: LoRA {k} targets {target}, which the base model "
                                      "does not have; is this LoRA for a different base model?")
            try:
                delta = lora_delta(lora[k], lora[b_key], base[target].shape)
            except ValueError as exc:
                raise CheckpointError(f"{source}: LoRA {mod}: {exc}") from exc
            out[target] = _fused(out[target], [(scale, delta)])
            used |= {k, b_key}
            fused += 1
    left = set(lora) - used
    if left:
        raise CheckpointError(f"{source}: {len(left)} tensors are not LoRA pairs this loader "
                              f"understands: {_list(left)}")
    return out, fused


def atomic_target(dst: Path, overwrite: bool = False) -> Path:
    """Check that `dst` may be written (never overwrite a user's file unless asked); a missing
    folder is fine (the writer creates it) when it can be created."""
    from ..io.outputs import check_folder_writable

    dst = Path(dst)
    if dst.exists() and not overwrite:
        raise CheckpointError(f"{dst} already exists; choose another output name or delete it first")
    problem = check_folder_writable(dst.parent, "output folder")
    if problem:
        raise CheckpointError(f"{problem}; choose another output path")
    return dst

