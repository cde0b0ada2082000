"""Stand-in for comfy/model_management.py (ComfyUI's CPUState.GPU with CUDA, else CPUState.CPU).

Same function names and signatures as ComfyUI. Without CUDA the device is the CPU and the
fp16/bf16 questions answer False exactly as ComfyUI does for a CPU device; with CUDA (the
benchmarks' GPU runs of the nodes) the device is the current CUDA device and fp16/bf16 follow
ComfyUI's compute-capability rules for NVIDIA cards (fp16 from 7.x, bf16 from 8.x; ComfyUI's
exceptions for particular older cards are left out).
"""

from __future__ import annotations

import threading

import torch

current_loaded_models: list = []  # the patchers load_models_gpu has loaded, newest first


def get_torch_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def intermediate_device() -> torch.device:
    return torch.device("cpu")


def unet_offload_device() -> torch.device:
    return torch.device("cpu")


def is_device_cpu(device) -> bool:
    return getattr(device, "type", device) == "cpu"


def _cuda_major(device) -> int:
    if not torch.cuda.is_available():
        return 0  # cpu_mode(): ComfyUI answers False as well
    return torch.cuda.get_device_properties(device if device is not None else get_torch_device()).major


def should_use_fp16(device=None, model_params=0, prioritize_performance=True, manual_cast=False) -> bool:
    if device is not None and is_device_cpu(device):
        return False
    return _cuda_major(device) >= 7


def should_use_bf16(device=None, model_params=0, prioritize_performance=True, manual_cast=False) -> bool:
    if device is not None and is_device_cpu(device):
        return False
    return _cuda_major(device) >= 8


def module_size(module) -> int:
    return sum(t.nelement() * t.element_size() for t in module.state_dict().values())


def soft_empty_cache(force=False) -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def load_models_gpu(models, memory_required=0, force_patch_weights=False, minimum_memory_required=None,
                    force_full_load=False) -> None:
    """Load every patcher onto its load_device (ComfyUI: ModelPatcher.patch_model / load).

    ComfyUI may load a model only partly (low VRAM) unless force_full_load; on a CPU device
    it always loads fully, which is what the stand-in does.
    """
    for patcher in models:
        if patcher in current_loaded_models:
            current_loaded_models.remove(patcher)
        patcher.patch_model(device_to=patcher.load_device, lowvram_model_memory=0,
                            force_patch_weights=force_patch_weights)
        current_loaded_models.insert(0, patcher)


def load_model_gpu(model) -> None:
    return load_models_gpu([model])


def loaded_models(only_currently_used=False) -> list:
    return list(current_loaded_models)


def unload_all_models() -> None:
    """Offload every loaded patcher (ComfyUI: free_memory(1e30, device))."""
    while current_loaded_models:
        current_loaded_models.pop().detach()


class InterruptProcessingException(Exception):
    pass


interrupt_processing_mutex = threading.RLock()
interrupt_processing = False


def interrupt_current_processing(value=True) -> None:
    global interrupt_processing
    with interrupt_processing_mutex:
        interrupt_processing = value


def processing_interrupted() -> bool:
    with interrupt_processing_mutex:
        return interrupt_processing


def throw_exception_if_processing_interrupted() -> None:
    global interrupt_processing
    with interrupt_processing_mutex:
        if interrupt_processing:
            interrupt_processing = False
            raise InterruptProcessingException()
