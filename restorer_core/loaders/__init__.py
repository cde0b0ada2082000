"""Weight loaders, offline first.

* project_format: the project's single-safetensors restorer format.
* instantrestore: official InstantRestore ``.pt`` -> OneStepRestorer (LoRA fused).
* osdface: official OSDFace folder + SD 2.1-base -> OneStepRestorer (LoRA fused).
* sd_base: SD-Turbo / SD 2.1-base UNet + VAE from a diffusers folder or an ldm single file.
* download: where weights must be on disk, and opt-in downloads from the Hugging Face Hub.
* convert: official formats -> project format (also ``python -m restorer_core.loaders.convert``).

Submodules are imported on use so that importing this package stays cheap.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "load_instantrestore": "instantrestore",
    "load_osdface": "osdface",
    "load_base_state": "sd_base",
    "build_base_models": "sd_base",
    "resolve_weights": "download",
    "convert_instantrestore": "convert",
    "convert_osdface": "convert",
    "LoadReport": "keys",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        module = importlib.import_module(f".{_EXPORTS[name]}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
