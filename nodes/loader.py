"""Load Face Restorer: a restorer file (or the embedded default) -> FACE_RESTORER."""

from __future__ import annotations

import os
from typing import Optional

import torch

from ..restorer_core.errors import ModelNotFoundError
from ..restorer_core.model_zoo import DEFAULT_MODEL_PATH, OSDFACE_MARKER, load_any_restorer
from ..restorer_core.options import SPEEDS
from ..restorer_core.restore.pipeline import FaceRestorePipeline
from . import comfy_bridge as cb
from .ops import log
from .similarity import try_identity
from .spec import NodeSpec, Output
from .types import FACE_RESTORER, FaceRestorerHandle

DEFAULT_CHOICE = "default (embedded)"
# Official weights by name: found in models/face_restore_onestep/<name>/, or fetched when allowed.
OFFICIAL = {"InstantRestore (official)": "instantrestore", "OSDFace (official)": "osdface"}
BASE_WEIGHTS = ("sd21-base", "sd-turbo", "sd-vae-ft-mse")  # base models kept beside, not restorers
NO_BASE = "none"


def restorer_choices() -> list[str]:
    """The default model, the official models by name, then every restorer file of the
    face_restore_onestep folder (base models kept there are not restorers and are not listed).

    In an OSDFace folder only its pytorch_lora_weights.safetensors is listed (it stands for
    the folder); the folder's other weight files are parts of that model, not models.
    """
    names = cb.list_models(cb.RESTORER_FOLDER, cb.RESTORER_EXTENSIONS)
    names = [n for n in names if n.replace("\\", "/").split("/")[0] not in BASE_WEIGHTS]
    osdface_dirs = {os.path.dirname(n) for n in names if os.path.basename(n) == OSDFACE_MARKER}
    shown = [n for n in names if os.path.dirname(n) not in osdface_dirs or os.path.basename(n) == OSDFACE_MARKER]
    return [DEFAULT_CHOICE] + list(OFFICIAL) + shown


def base_choices() -> list[str]:
    """Stable Diffusion 2.1-base for OSDFace: a checkpoint file or a diffusers folder."""
    ckpts = ["checkpoints/" + n for n in cb.list_models("checkpoints", (".safetensors", ".ckpt"))]
    folders = ["diffusers/" + d for d in cb.list_diffusers_folders()]
    return [NO_BASE] + ckpts + folders


def resolve_base(choice: str) -> Optional[str]:
    if choice in (None, "", NO_BASE):
        return None
    kind, _, name = choice.partition("/")
    if kind == "checkpoints":
        return cb.model_path("checkpoints", name)
    if kind == "diffusers":
        return cb.diffusers_path(name)
    raise ValueError(f"base model '{choice}' is not a checkpoints/ or diffusers/ entry; pick one from the list.")


def missing_default_message(allow_download: bool) -> str:
    where = f"file '{DEFAULT_MODEL_PATH.name}' in folder '{DEFAULT_MODEL_PATH.parent}'"
    if allow_download:
        return (f"the embedded default restorer is missing ({where}); it ships with the node pack and "
                "has no download source: reinstall the pack, or pick another restorer.")
    return (f"the embedded default restorer is missing ({where}). Reinstall the node pack, or put a "
            f"restorer into ComfyUI/models/{cb.RESTORER_FOLDER} and pick it.")


DESCRIPTION = ("Load a one-step face restorer: the embedded default, a converted .safetensors, an "
               f"InstantRestore .pt, or an OSDFace folder (+ SD 2.1-base) from models/{cb.RESTORER_FOLDER}. "
               "ComfyUI's memory manager moves it to the GPU when it runs and offloads it when "
               "another model needs the memory.")


def loader_inputs() -> dict:
    """Load Face Restorer's widgets (the model lists as they are on disk now)."""
    return {
        "required": {
            "model_name": (restorer_choices(), {"default": DEFAULT_CHOICE,
                           "tooltip": "Restorer weights. default (embedded): the small model that ships with "
                                      "the pack (offline, CPU friendly, 128 px). The official "
                                      "InstantRestore / OSDFace models are found in (or, with "
                                      "allow_download, fetched into) models/"
                                      f"{cb.RESTORER_FOLDER}; other files there are listed too."}),
            "base_model": (base_choices(), {"default": NO_BASE,
                           "tooltip": "Stable Diffusion 2.1-base (a checkpoint or a diffusers folder), "
                                     "needed only by OSDFace models. Default none."}),
            "device": (["auto", "cpu"], {"default": "auto",
                       "tooltip": "auto (default): ComfyUI's device (the GPU when there is one, "
                                 "offloaded when other models need the memory). cpu: keep it on the "
                                 "CPU to leave all GPU memory to other models."}),
            "precision": (["auto", "fp32", "fp16", "bf16"], {"default": "auto",
                          "tooltip": "auto (default): bf16 or fp16 where ComfyUI says the GPU supports "
                                    "it, fp32 on the CPU. fp32: exact but slower and twice the memory; "
                                    "fp16 / bf16: force half precision on a GPU."}),
            "allow_download": ("BOOLEAN", {"default": False,
                               "tooltip": "Off (default): offline; a missing official model gives an "
                                          "error naming the files and the folder to put them in. On: "
                                          "download the official models and SD 2.1-base from the "
                                          "Hugging Face Hub when missing."}),
        },
        "optional": {
            "speed": (list(SPEEDS), {"default": "auto",
                      "tooltip": "auto (default): compile on a GPU, graph on the CPU. compile: "
                                 "torch.compile + CUDA graphs (fastest); the first run per GPU, precision, "
                                 "batch size and model compiles for 1-2 minutes, then the compiled code is "
                                 "loaded from models/" + f"{cb.CACHE_FOLDER}/compiled; if compiling fails, "
                                 "graph is used and the console says why. graph: CUDA graphs without "
                                 "compile (captured once per batch size, freed when ComfyUI offloads the "
                                 "model); upsampling convs at "
                                 "low resolution on the CPU. eager: the plain model. All give the same "
                                 "faces."}),
        },
    }


def load_face_restorer(model_name: str, base_model: str, device: str, precision: str, allow_download: bool,
                       speed: str = "auto") -> tuple:
    """The restorer the widgets name, on ComfyUI's memory manager -> (FaceRestorerHandle,)."""
    if speed not in SPEEDS:
        raise ValueError(f"speed must be one of {', '.join(SPEEDS)}, got {speed!r}")
    if model_name == DEFAULT_CHOICE:
        spec = None
        if not DEFAULT_MODEL_PATH.is_file():
            raise ModelNotFoundError(missing_default_message(allow_download))
    elif model_name in OFFICIAL:
        spec = OFFICIAL[model_name]  # restorer_core finds (or fetches) it in the models folder
    else:
        spec = cb.model_path(cb.RESTORER_FOLDER, model_name)
    base = resolve_base(base_model)
    dev, dtype = cb.choose_device_dtype(device, precision)
    # Load on the CPU in fp32 and cast: the memory manager moves it to `dev` when needed.
    restorer = load_any_restorer(spec, base, device="cpu", dtype=torch.float32,
                                 models_dir=cb.restorer_dir(), allow_download=bool(allow_download))
    if dtype != torch.float32:
        restorer = restorer.to(dtype)
    # The fast path (restorer_core.models.fast): its CUDA graphs are keyed by where the
    # weights live, so ComfyUI offloading and reloading the model re-captures them.
    # speed "auto" compiles when `dev` is a GPU; the compiled code is kept under the models folder
    # (not ComfyUI's temp folder, which ComfyUI empties at every start).
    pipeline = FaceRestorePipeline(restorer, identity=try_identity(), speed=speed, run_device=dev,
                                   compile_cache=cb.compile_cache_dir())
    # The pipeline (and its runner's CUDA graphs) lives as long as this handle: graphs are captured
    # once per batch shape and released when ComfyUI moves the model (loads or offloads it).
    patcher = cb.make_patcher(restorer, dev, on_move=pipeline.release_graphs)
    handle = FaceRestorerHandle(name=model_name, pipeline=pipeline, patcher=patcher, load_device=dev, dtype=dtype)
    log(f"loaded {handle.describe()}")
    return (handle,)


LOAD_FACE_RESTORER = NodeSpec(
    "OneStepLoadFaceRestorer", "Load Face Restorer (One-Step)", DESCRIPTION, loader_inputs,
    (Output(FACE_RESTORER, "restorer", "The loaded restorer, for One-Step Restore or Restore Faces."),),
    load_face_restorer, "load")
