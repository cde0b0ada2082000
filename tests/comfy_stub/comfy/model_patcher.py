"""Stand-in for comfy/model_patcher.py: the ModelPatcher parts a plain torch module meets.

Kept from ComfyUI: the constructor sets `model.device = offload_device` only when the model has
no `device` attribute or it is None, and adds its bookkeeping attributes to the model; loading
and unloading move the module and then ASSIGN `model.device` (ModelPatcher.load /
unpatch_model), so a module whose `device` is a read-only property breaks here as in ComfyUI.
Weight patches (LoRA), hooks and low-VRAM partial loading are left out.
"""

from __future__ import annotations
from . import model_management


class ModelPatcher:
    def __init__(self, model, load_device, offload_device, size=0, weight_inplace_update=False):
        self.size = size
        self.model = model
        if not hasattr(self.model, "device"):
            self.model.device = offload_device
        elif self.model.device is None:
            self.model.device = offload_device
        self.patches = {}
        self.model_options = {"transformer_options": {}}
        self.model_size()
        self.load_device = load_device
        self.offload_device = offload_device
        self.weight_inplace_update = weight_inplace_update
        self.parent = None
        if not hasattr(self.model, "model_loaded_weight_memory"):
            self.model.model_loaded_weight_memory = 0
        if not hasattr(self.model, "lowvram_patch_counter"):
            self.model.lowvram_patch_counter = 0
        if not hasattr(self.model, "model_lowvram"):
            self.model.model_lowvram = False

    def model_size(self) -> int:
        if self.size > 0:
            return self.size
        self.size = model_management.module_size(self.model)
        return self.size

    def loaded_size(self) -> int:
        return self.model.model_loaded_weight_memory

    def clone(self) -> "ModelPatcher":
        n = self.__class__(self.model, self.load_device, self.offload_device, self.size,
                           weight_inplace_update=self.weight_inplace_update)
        n.parent = self
        return n

    def is_clone(self, other) -> bool:
        return hasattr(other, "model") and self.model is other.model

    def model_dtype(self):
        if hasattr(self.model, "get_dtype"):
            return self.model.get_dtype()
        return None

    def current_loaded_device(self):
        return self.model.device

    def load(self, device_to=None, lowvram_model_memory=0, force_patch_weights=False, full_load=False):
        self.model.to(device_to)
        self.model.device = device_to
        self.model.model_loaded_weight_memory = self.model_size()

    def patch_model(self, device_to=None, lowvram_model_memory=0, load_weights=True, force_patch_weights=False):
        if load_weights:
            self.load(device_to, lowvram_model_memory=lowvram_model_memory,
                      force_patch_weights=force_patch_weights, full_load=lowvram_model_memory == 0)
        return self.model

    def unpatch_model(self, device_to=None, unpatch_weights=True):
        if unpatch_weights and device_to is not None:
            self.model.to(device_to)
            self.model.device = device_to
            self.model.model_loaded_weight_memory = 0

    def detach(self, unpatch_all=True):
        if unpatch_all:
            self.unpatch_model(self.offload_device, unpatch_weights=unpatch_all)
        return self.model
