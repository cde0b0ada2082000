"""One-step, reference-based face restoration: detection, alignment, restoration, paste-back.

Pure Python + torch; never imports ComfyUI. Submodules are imported lazily by callers so that
`import restorer_core` stays cheap (no torch/diffusers import until a model is needed).
"""

__version__ = "0.2.0"
