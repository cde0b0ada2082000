"""One entry point for every restorer file a user may have.

`load_any_restorer` looks at what it is given and hands it to the right loader: the embedded
default model, a restorer in this project's .safetensors format, an official InstantRestore
checkpoint (.pt), or an official OSDFace folder plus its Stable Diffusion 2.1-base. The names
"instantrestore" and "osdface" find the official weights in a models folder (downloaded from
the Hub only when allowed; see loaders/download.py).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional, Union

import torch

from .errors import CheckpointError, ModelNotFoundError

DEFAULT_MODEL_PATH = Path(__file__).resolve().parent / "assets" / "models" / "default_restorer.safetensors"
PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin")
OSDFACE_MARKER = "pytorch_lora_weights.safetensors"
OFFICIAL_NAMES = ("instantrestore", "osdface")
MODELS_ENV = "ONESTEP_FACE_RESTORE_MODELS"
_DTYPES = {
    "fp32": torch.float32, "float32": torch.float32, "float": torch.float32,
    "fp16": torch.float16, "float16": torch.float16, "half": torch.float16,
    "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
}

PathLike = Union[str, os.PathLike]


def parse_dtype(value: Any) -> Optional[torch.dtype]:
    """"fp16" / "bf16" / "fp32" / a torch.dtype -> torch.dtype; None or "auto" -> None."""
    if value is None or isinstance(value, torch.dtype):
        return value
    key = str(value).strip().lower().replace("torch.", "")
    if key in ("", "auto"):
        return None
    if key not in _DTYPES:
        raise ValueError(f"unknown dtype {value!r}; use auto, fp32, fp16 or bf16")
    return _DTYPES[key]


def pick_device_dtype(device: Any = None, dtype: Any = None) -> tuple:
    """(torch.device, dtype): CUDA when available (bf16 where supported, else fp16), else CPU
    float32. An explicit device or dtype is checked and kept."""
    name = str(device).strip().lower() if device is not None else "auto"
    if name in ("", "auto"):
        dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            dev = torch.device(name)
        except RuntimeError as exc:
            raise ValueError(f"unknown device {device!r}; use auto, cpu or cuda[:N]") from exc
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("CUDA was requested but this torch has no usable GPU; use --device cpu")
    chosen = parse_dtype(dtype)
    if chosen is None:
        if dev.type == "cuda":
            chosen = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        else:
            chosen = torch.float32
    elif dev.type == "cpu" and chosen == torch.float16:
        raise ValueError("fp16 is not supported on CPU (too slow, some layers missing); use fp32 or bf16")
    return dev, chosen


def default_models_dir() -> Path:
    """Where official weights are looked for by name: $ONESTEP_FACE_RESTORE_MODELS, else
    $XDG_CACHE_HOME/onestep-face-restore/models (~/.cache/...)."""
    if os.environ.get(MODELS_ENV):
        return Path(os.environ[MODELS_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "onestep-face-restore" / "models"


def resolve_official(spec: Optional[PathLike], base: Optional[PathLike], models_dir: Optional[PathLike] = None,
                     allow_download: bool = False) -> tuple:
    """(spec, base) with the official names replaced by paths in the models folder; an OSDFace
    model without `base` gets the folder's sd21-base. ModelNotFoundError says what to put where."""
    from .loaders.download import resolve_weights

    folder = Path(models_dir) if models_dir is not None else default_models_dir()
    if spec is not None and str(spec).strip().lower() in OFFICIAL_NAMES and not Path(spec).exists():
        spec = resolve_weights(str(spec).strip().lower(), folder, allow_download)
    if base is None and spec is not None and model_kind(spec) == "osdface":
        try:
            base = resolve_weights("sd21-base", folder, allow_download)
        except ModelNotFoundError as exc:
            raise ModelNotFoundError(f"OSDFace runs on Stable Diffusion 2.1-base: pass it with --base, or {exc}") from exc
    return spec, base


def model_kind(spec: Optional[PathLike]) -> str:
    """"default" | "project" | "instantrestore" | "osdface" for a model spec (no loading)."""
    if spec is None or str(spec).strip().lower() in ("", "default"):
        return "default"
    path = Path(spec)
    if path.is_dir():
        if (path / OSDFACE_MARKER).is_file():
            return "osdface"
        raise CheckpointError(f"{path} is a folder but not an OSDFace model folder (no {OSDFACE_MARKER}); "
                              "give a restorer .safetensors file, an InstantRestore .pt, or the "
                              "OSDFace folder")
    if path.suffix.lower() in PICKLE_SUFFIXES:
        return "instantrestore"
    if path.suffix.lower() == ".safetensors":
        if path.name == OSDFACE_MARKER:
            return "osdface"
        return "project"
    raise CheckpointError(f"{path.name}: unknown model file type; use a .safetensors restorer, an "
                          "InstantRestore .pt checkpoint, or an OSDFace folder")


def load_any_restorer(spec: Optional[PathLike] = None, base: Optional[PathLike] = None,
                      device: Any = "cpu", dtype: Any = None, models_dir: Optional[PathLike] = None,
                      allow_download: bool = False) -> Any:
    """Load a OneStepRestorer from the default model, a project .safetensors, an InstantRestore
    .pt, or an OSDFace folder (+ `base`: the SD 2.1-base folder or single file), in eval mode.
    `spec` may also be "instantrestore" / "osdface": official weights found in `models_dir`."""
    dev, dt = pick_device_dtype(device, dtype)
    spec, base = resolve_official(spec, base, models_dir, allow_download)
    kind = model_kind(spec)
    if kind == "default":
        if not DEFAULT_MODEL_PATH.is_file():
            raise ModelNotFoundError(
                f"the embedded default restorer is missing ({DEFAULT_MODEL_PATH}); reinstall the "
                "package, or pass a model file with --model (a converted .safetensors, an "
                "InstantRestore .pt, or an OSDFace folder with --base)")
        path = DEFAULT_MODEL_PATH
    else:
        path = Path(spec)
        if kind == "osdface" and path.is_file():
            path = path.parent
        if not path.exists():
            raise ModelNotFoundError(f"model not found: {path}. Check the path, or omit --model to use "
                                     "the embedded default")
    if kind in ("default", "project"):
        from .loaders.project_format import load_restorer

        model = load_restorer(path, device=dev, dtype=dt)  # explains non-project files itself
    elif kind == "instantrestore":
        from .loaders.instantrestore import load_instantrestore

        model = load_instantrestore(path, device=dev, dtype=dt)
    else:
        if base is None:
            raise ModelNotFoundError(
                f"OSDFace ({path}) runs on Stable Diffusion 2.1-base: pass its folder or single "
                ".safetensors file with --base")
        if not Path(base).exists():
            raise ModelNotFoundError(f"SD 2.1-base not found: {base}. Check the --base path")
        from .loaders.osdface import load_osdface

        model = load_osdface(path, Path(base), device=dev, dtype=dt)
    model.source.kind = kind
    model.source.path = str(path)
    return model.eval()


def describe_model(restorer: Any) -> dict:
    """JSON-able summary for run reports."""
    cfg = restorer.config
    return {
        "kind": restorer.source.kind,
        "path": restorer.source.path,
        "method": cfg.method,
        "resolution": cfg.resolution,
        "visual_prompt": cfg.vre is not None,
        "weights_sha256": restorer.weight_hash(),
        "device": str(restorer.device),
        "dtype": str(restorer.dtype).replace("torch.", ""),
        "info": restorer.source.info,
    }
