"""Every call into ComfyUI lives here: model folders, devices, memory management, progress, cancel.

Nothing else in this pack imports `comfy` or `folder_paths`, so when ComfyUI changes one of
these functions there is one file to fix.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Optional

import torch

import comfy.model_management as model_management
import comfy.model_patcher
import comfy.utils
import folder_paths

RESTORER_FOLDER = "face_restore_onestep"
CACHE_FOLDER = "face_restore_onestep_cache"
DETECTOR_FOLDER = "facedetection"  # shared with other face packs (facexlib/insightface weights)
RESTORER_EXTENSIONS = (".safetensors", ".pt", ".pth", ".ckpt")
DETECTOR_EXTENSIONS = (".onnx", ".pth")
INSIGHTFACE_FOLDER = "insightface"  # insightface's model packs (models/buffalo_l, models/antelopev2), as other face packs keep them


def register_model_folders() -> None:
    """Add this pack's model folders under ComfyUI's models dir (idempotent).

    Paths the user set in extra_model_paths.yaml stay; ours is appended, not forced first.
    """
    for name in (RESTORER_FOLDER, CACHE_FOLDER, DETECTOR_FOLDER, INSIGHTFACE_FOLDER):
        folder_paths.add_model_folder_path(name, os.path.join(folder_paths.models_dir, name))


def insightface_dirs() -> list[str]:
    """ComfyUI's insightface model folders (its models/insightface, and any extra_model_paths.yaml adds)."""
    try:
        return list(folder_paths.get_folder_paths(INSIGHTFACE_FOLDER))
    except KeyError:
        return []


def list_models(folder: str, extensions: tuple) -> list[str]:
    """Files of a model folder (relative names, sorted), filtered by extension."""
    try:
        names = folder_paths.get_filename_list(folder)
    except KeyError:
        return []
    return [n for n in names if n.lower().endswith(extensions)]


def list_diffusers_folders() -> list[str]:
    """Diffusers model folders (those holding model_index.json), like ComfyUI's DiffusersLoader."""
    out = []
    for root in folder_paths.get_folder_paths("diffusers"):
        if not os.path.isdir(root):
            continue
        for path, _dirs, files in os.walk(root, followlinks=True):
            if "model_index.json" in files:
                out.append(os.path.relpath(path, root))
    return sorted(out)


def model_path(folder: str, name: str) -> str:
    """Full path of a listed model file; FileNotFoundError names the file and the folders searched."""
    try:
        return folder_paths.get_full_path_or_raise(folder, name)
    except FileNotFoundError:
        where = ", ".join(folder_paths.get_folder_paths(folder))
        raise FileNotFoundError(
            f"model file '{name}' not found in the '{folder}' model folder ({where}); put it there "
            "or pick another file, then refresh the node list.") from None


def diffusers_path(name: str) -> str:
    for root in folder_paths.get_folder_paths("diffusers"):
        path = os.path.join(root, name)
        if os.path.isfile(os.path.join(path, "model_index.json")):
            return path
    raise FileNotFoundError(f"diffusers folder '{name}' not found under "
                            f"{', '.join(folder_paths.get_folder_paths('diffusers'))}.")


def restorer_dir() -> str:
    """Where official restorer weights are looked for (and downloaded to, when allowed)."""
    return folder_paths.get_folder_paths(RESTORER_FOLDER)[0]


def cache_dir() -> str:
    """Where reference keys/values are cached on disk (first path of the cache folder)."""
    return folder_paths.get_folder_paths(CACHE_FOLDER)[0]


def compile_cache_dir() -> str:
    """Where compiled restore steps are kept: `compiled` in the cache folder under ComfyUI's
    models folder (its temp folder is emptied at every start)."""
    return os.path.join(cache_dir(), "compiled")


# ----------------------------------------------------------------------------- devices


def choose_device_dtype(device: str = "auto", precision: str = "auto") -> tuple[torch.device, torch.dtype]:
    """ComfyUI's compute device (or the CPU) and a dtype it supports.

    precision "auto": bf16 where ComfyUI says bf16 is good, else fp16 where fp16 is, else fp32
    (always fp32 on the CPU, where half precision is slow or unsupported).
    """
    dev = torch.device("cpu") if device == "cpu" else model_management.get_torch_device()
    if precision == "fp32" or dev.type == "cpu":
        if precision in ("fp16", "bf16") and dev.type == "cpu":
            raise ValueError(f"precision {precision} is not supported on the CPU; use auto or fp32.")
        return dev, torch.float32
    if precision == "fp16":
        return dev, torch.float16
    if precision == "bf16":
        return dev, torch.bfloat16
    if model_management.should_use_bf16(dev):
        return dev, torch.bfloat16
    if model_management.should_use_fp16(dev):
        return dev, torch.float16
    return dev, torch.float32


def compute_device() -> torch.device:
    """ComfyUI's compute device (the GPU when there is one): where paste-back runs."""
    return model_management.get_torch_device()


def offload_device() -> torch.device:
    return model_management.unet_offload_device()


class PatchableModule(torch.nn.Module):
    """What ComfyUI's memory manager moves between devices: the restorer, behind a plain
    `device` attribute (ModelPatcher assigns `model.device`; the restorer's own `device` is a
    read-only property).

    on_move: called after a move that changed where the weights are (ComfyUI loading the model,
    or offloading it to make room): the pipeline's CUDA graphs, whose memory the manager cannot
    see, are released then and only then, so a model that stays loaded keeps them between runs.
    """

    def __init__(self, restorer: torch.nn.Module, device: torch.device,
                 on_move: Optional[Callable[[], None]] = None):
        super().__init__()
        self.restorer = restorer
        self.device = device
        self.on_move = on_move

    def _apply(self, fn: Callable, *args: Any, **kwargs: Any) -> "PatchableModule":
        before = self.restorer.device
        result = super()._apply(fn, *args, **kwargs)
        if self.on_move is not None and self.restorer.device != before:
            self.on_move()
        return result

    def get_dtype(self) -> torch.dtype:
        return self.restorer.dtype


def make_patcher(restorer: torch.nn.Module, load_device: torch.device,
                 on_move: Optional[Callable[[], None]] = None) -> Any:
    """Wrap the restorer so ComfyUI can load it on demand and offload it under memory pressure
    (on_move: see PatchableModule)."""
    off = offload_device() if load_device.type != "cpu" else load_device
    holder = PatchableModule(restorer, restorer.device, on_move)  # where its weights are now
    return comfy.model_patcher.ModelPatcher(holder, load_device=load_device, offload_device=off)


def load_on_device(patcher: Any) -> None:
    """Make room and put the whole restorer on its load device (never a partial load:
    the restorer is a plain torch module without ComfyUI's per-layer weight casting)."""
    model_management.load_models_gpu([patcher], force_full_load=True)


# ----------------------------------------------------------------------------- progress, cancel


def check_interrupt() -> None:
    """Raise ComfyUI's InterruptProcessingException if the user cancelled the run."""
    model_management.throw_exception_if_processing_interrupted()


def cancel_check() -> bool:
    """A `should_cancel` for restorer_core loops: raises on cancel, so it never returns True."""
    check_interrupt()
    return False


def interrupted_exception() -> type:
    return model_management.InterruptProcessingException


class Progress:
    """A ComfyUI progress bar driven by restorer_core's progress(done, total) callbacks."""

    def __init__(self, total: int):
        self._bar = comfy.utils.ProgressBar(max(int(total), 1))

    def __call__(self, done: int, total: Optional[int] = None) -> None:
        self._bar.update_absolute(int(done), None if total is None else max(int(total), 1))
