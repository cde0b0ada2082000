"""Persisted torch.compile artefacts: compile once per GPU, dtype, shape and model layout.

What is stored is torch's "mega-cache" (``torch.compiler.save_cache_artifacts()``): the
Inductor FX-graph and AOTAutograd cache entries of the compiled restore step, with the Triton
kernels bundled in, and autotuning results. A new process hands them to
``torch.compiler.load_cache_artifacts()`` before its first compiled call; torch.compile then
still traces the step (Dynamo) and loads the kernels, but finds the generated code instead of
generating and compiling it again: on an H100, 30 s in a new process instead of a 2-minute
compile (benchmarks/results/gpu_speed_cold_h100.md).

The file is ``<folder>/<digest of the key>.compiled``: a magic line, a JSON header line
(format version, the full key, the payload's size and sha256), then the payload. It is written
atomically (restorer_core.io.atomic), so a reader never sees half a file.

Trust boundary: torch unpickles what ``load_cache_artifacts`` puts into Inductor's cache when
the compiled code is looked up, so a payload is code. Only a file this module wrote, in the
cache folder the user chose, whose header names exactly the expected key and whose payload
matches the header's sha256 ever reaches torch. A corrupt, truncated or foreign file (another
key, another format, a wrong hash) is reported in one line, removed and rebuilt, never loaded.
The hash guards against damage, not against someone who can write to the folder: such a person
can already replace this program's own files; keep the folder private (it is created 0o700).

The key holds everything the compiled code depends on: the GPU (name and compute capability),
torch, Triton, CUDA and Python versions, dtype, batch, resolution, the speed configuration
(its label names compile mode, Inductor options and layout choices), the step's input
signature (reference count, prompt length) and the restorer's weights layout (names, shapes,
dtypes and memory formats of its parameters and buffers, plus its config). The weights' values
are not in the key: torch.compile passes parameters as graph inputs (nothing is constant-folded
unless Inductor's ``freezing`` is on, which ``persistable`` refuses), so two models of one
architecture share the compiled code, while two architectures never do.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import torch

from ..io.atomic import remove_stale_temp_files, write_bytes_atomic

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
MAGIC = b"onestep-face-restore compiled code\n"
SUFFIX = ".compiled"
MAX_HEADER_BYTES = 1 << 16
CACHE_ENV = "ONESTEP_FACE_RESTORE_COMPILE_CACHE"
PathLike = Union[str, os.PathLike]


def default_compile_cache_dir() -> Path:
    """$ONESTEP_FACE_RESTORE_COMPILE_CACHE, else $XDG_CACHE_HOME/onestep-face-restore/compiled
    (~/.cache/...)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "onestep-face-restore" / "compiled"


@dataclass(frozen=True)
class CompileKey:
    """What one compiled restore step depends on; equal keys may share the compiled code."""

    device: str  # "NVIDIA H100 80GB HBM3 (sm90)" or "cpu x86_64"
    torch: str
    triton: str  # "" without Triton
    cuda: str  # "" on a CPU build
    python: str
    dtype: str
    batch: int
    resolution: int
    speed: str  # SpeedConfig.label(): compile mode, Inductor options, layout choices
    inputs: str  # sha256 of the step's input signature (shapes, dtypes, strides, references)
    layout: str  # weights_layout(restorer)

    def digest(self) -> str:
        text = json.dumps(dataclasses.asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def file_name(self) -> str:
        return self.digest()[:32] + SUFFIX

    def describe(self) -> str:
        return f"batch {self.batch}, {self.resolution} px, {self.dtype} on {self.device}"


def device_name(device: Any) -> str:
    device = torch.device(device)
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        major, minor = torch.cuda.get_device_capability(index)
        return f"{torch.cuda.get_device_name(index)} (sm{major}{minor})"
    return f"{device.type} {platform.machine()}"


def _triton_version() -> str:
    try:
        import triton
    except Exception:  # noqa: BLE001 - absent or broken: no Triton code can be in the artefact
        return ""
    return str(getattr(triton, "__version__", "unknown"))


def weights_layout(restorer: torch.nn.Module) -> str:
    """sha256 of the restorer's parameter and buffer names, shapes, dtypes and memory formats,
    and of its config (never of the values)."""
    h = hashlib.sha256()
    config = getattr(restorer, "config", None)
    if dataclasses.is_dataclass(config):
        h.update(json.dumps(dataclasses.asdict(config), sort_keys=True, default=str).encode("utf-8"))
    for kind, items in (("p", restorer.named_parameters()), ("b", restorer.named_buffers())):
        for name, t in items:
            h.update(f"{kind}|{name}|{tuple(t.shape)}|{t.dtype}|{tuple(t.stride())}\n".encode("utf-8"))
    return h.hexdigest()


def signature_digest(signature: Any) -> str:
    return hashlib.sha256(repr(signature).encode("utf-8")).hexdigest()


def make_key(restorer: torch.nn.Module, speed_label: str, signature: Any, batch: int, device: Any = None) -> CompileKey:
    """The key of the compiled step of `restorer` for one input signature (models/fast.py's
    `_signature`) on `device` (default: the restorer's)."""
    device = torch.device(device if device is not None else restorer.device)
    resolution = int(getattr(getattr(restorer, "config", None), "resolution", 0) or 0)
    return CompileKey(device=device_name(device), torch=torch.__version__, triton=_triton_version(),
                      cuda=str(torch.version.cuda or ""), python=platform.python_version(),
                      dtype=str(restorer.dtype).replace("torch.", ""), batch=int(batch),
                      resolution=resolution, speed=speed_label, inputs=signature_digest(signature),
                      layout=weights_layout(restorer))


def persistable(inductor: tuple) -> Optional[str]:
    """Why compiled code with these Inductor options must not be shared (None: it can be)."""
    if dict(inductor).get("freezing"):
        return "Inductor freezing folds the weights' values into the compiled code"
    return None


class CompileCache:
    """The compiled-code files of one folder: `store` writes one atomically, `load` gives back a
    verified payload or None (see the module docstring for what is verified, and why)."""

    def __init__(self, folder: PathLike):
        self.folder = Path(folder).expanduser()

    def path(self, key: CompileKey) -> Path:
        return self.folder / key.file_name()

    def store(self, key: CompileKey, payload: bytes) -> Path:
        """Write header + payload at path(key), replacing what is there. OSError when the folder
        cannot be written."""
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        remove_stale_temp_files(self.folder)
        header = dict(format=FORMAT_VERSION, key=dataclasses.asdict(key), size=len(payload),
                      sha256=hashlib.sha256(payload).hexdigest(), written=time.strftime("%Y-%m-%dT%H:%M:%S"))
        blob = MAGIC + json.dumps(header, sort_keys=True).encode("utf-8") + b"\n" + payload
        return write_bytes_atomic(self.path(key), blob, overwrite=True, fsync=True)

    def load(self, key: CompileKey) -> Optional[bytes]:
        """The payload stored for `key`, verified; None when there is none. A file that fails a
        check is reported in one line and removed (the caller compiles and stores it anew)."""
        path = self.path(key)
        try:
            blob = path.read_bytes()
        except (FileNotFoundError, NotADirectoryError):  # nothing stored (or no folder to store in)
            return None
        except OSError as exc:
            log.warning("compiled code %s cannot be read (%s); compiling instead", path, exc)
            return None
        payload, problem = self._verify(blob, key)
        if problem is None:
            return payload
        self.discard(key, problem)
        return None

    def discard(self, key: CompileKey, problem: str) -> None:
        """Report and remove the file of `key` (it is rebuilt by the next compile)."""
        path = self.path(key)
        log.warning("compiled code %s is %s; removed, compiling again", path, problem)
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("could not remove %s: %s", path, exc)

    @staticmethod
    def _verify(blob: bytes, key: CompileKey) -> tuple:
        """(payload, None) when blob is this key's intact artefact, else (None, what is wrong)."""
        if not blob.startswith(MAGIC):
            return None, "not a compiled-code file of this program"
        end = blob.find(b"\n", len(MAGIC), len(MAGIC) + MAX_HEADER_BYTES)
        if end < 0:
            return None, "truncated (no complete header)"
        try:
            header = json.loads(blob[len(MAGIC):end].decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return None, "damaged (unreadable header)"
        if not isinstance(header, dict) or header.get("format") != FORMAT_VERSION:
            return None, f"of another format ({header.get('format') if isinstance(header, dict) else '?'})"
        if header.get("key") != dataclasses.asdict(key):
            return None, "for another model, GPU, shape or torch version (its header names another key)"
        payload = blob[end + 1:]
        if header.get("size") != len(payload):
            return None, f"truncated ({len(payload)} of {header.get('size')} payload bytes)"
        if hashlib.sha256(payload).hexdigest() != header.get("sha256"):
            return None, "damaged (payload sha256 differs from its header)"
        return payload, None


class PersistedCompile:
    """Loads and saves torch's compiled-code artefacts for FastRestorer, one file per key."""

    def __init__(self, cache: CompileCache):
        self.cache = cache

    def load(self, key: CompileKey) -> bool:
        """Hand the verified artefact of `key` to torch; False when there is none (or torch
        refuses it, which is reported and removes the file)."""
        payload = self.cache.load(key)
        if payload is None:
            return False
        try:
            info = torch.compiler.load_cache_artifacts(payload)
        except Exception as exc:  # noqa: BLE001 - a stale artefact must never end the run
            self.cache.discard(key, f"refused by torch ({type(exc).__name__}: {exc})")
            return False
        if info is None:  # torch logged why it could not read it
            self.cache.discard(key, "unreadable for this torch")
            return False
        return True

    def save(self, key: CompileKey) -> Optional[Path]:
        """Store what this process compiled so far under `key`; None (with one line) on failure."""
        try:
            result = torch.compiler.save_cache_artifacts()
        except Exception as exc:  # noqa: BLE001
            log.warning("could not serialise the compiled code (%s: %s); the next start compiles again",
                        type(exc).__name__, exc)
            return None
        if result is None:
            log.warning("torch returned no compiled code to save; the next start compiles again")
            return None
        try:
            return self.cache.store(key, result[0])
        except OSError as exc:
            log.warning("could not save the compiled code in %s (%s); the next start compiles again "
                        "(choose a writable folder: --compile-cache DIR or $%s)", self.cache.folder, exc, CACHE_ENV)
            return None
