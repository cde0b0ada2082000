"""Architecture configs of the official base models, embedded so nothing is ever fetched.

Each dict holds exactly the keyword arguments of the diffusers class it builds
(``UNet2DConditionModel(**cfg)`` / ``AutoencoderKL(**cfg)``); hub metadata such as
``_class_name`` is left out.  Sources, checked against public copies of the hub files:

* SD 2.1-base UNet / VAE / scheduler: ``stabilityai/stable-diffusion-2-1-base``
  ``unet/config.json``, ``vae/config.json``, ``scheduler/scheduler_config.json``
  (vendored verbatim in the public repo ``jack-op11/stable-diffusion-2-1-base``).
* SD-Turbo is a distillation of SD 2.1 (512 px): the same UNet architecture and weight
  layout (``attention_head_dim`` [5, 10, 20, 20], ``use_linear_projection`` true,
  ``cross_attention_dim`` 1024, ``sample_size`` 64).  Its config differs only in keys
  that newer diffusers versions write with their defaults (``upcast_attention`` null,
  which diffusers treats as False).  SD 2.1 *768* would differ (``sample_size`` 96,
  ``upcast_attention`` true); neither official method uses it.
* ``stabilityai/sd-vae-ft-mse``: the SD 1.x/2.x AutoencoderKL architecture, fine-tuned
  decoder; ``sample_size`` 256 in its config.json; scaling factor 0.18215 (the diffusers
  default, not written in the file).
* Schedule: 1000 steps, ``scaled_linear`` betas 0.00085..0.012, epsilon prediction,
  ``clip_sample`` false (both SD-Turbo's and SD 2.1-base's scheduler configs).
* OSDFace VRE: ``lq_embed/inference.py`` defaults of the official repo
  (``vqvae_encoder``: 1024 codes of 512, ch 64, ch_mult (1,2,2,2,4,8), attention at 16 px,
  z 512, 512 px input, 77 tokens; ``TwoLayerConv1x1(512, 1024)``).
"""

from __future__ import annotations

import copy
from typing import Any, Mapping

_DOWN = ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"]
_UP = ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]

SD21_BASE_UNET: dict[str, Any] = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "center_input_sample": False,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "down_block_types": list(_DOWN),
    "up_block_types": list(_UP),
    "block_out_channels": [320, 640, 1280, 1280],
    "layers_per_block": 2,
    "downsample_padding": 1,
    "mid_block_scale_factor": 1,
    "act_fn": "silu",
    "norm_num_groups": 32,
    "norm_eps": 1e-5,
    "cross_attention_dim": 1024,
    "attention_head_dim": [5, 10, 20, 20],
    "use_linear_projection": True,
    "upcast_attention": False,
    "dual_cross_attention": False,
    "only_cross_attention": False,
    "num_class_embeds": None,
}

# Same architecture (see module docstring); kept as its own name so callers say what they mean.
SD_TURBO_UNET: dict[str, Any] = copy.deepcopy(SD21_BASE_UNET)

_VAE_COMMON: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "block_out_channels": [128, 256, 512, 512],
    "layers_per_block": 2,
    "act_fn": "silu",
    "latent_channels": 4,
    "norm_num_groups": 32,
    "scaling_factor": 0.18215,
}

SD_VAE_FT_MSE: dict[str, Any] = {**copy.deepcopy(_VAE_COMMON), "sample_size": 256}
SD21_BASE_VAE: dict[str, Any] = {**copy.deepcopy(_VAE_COMMON), "sample_size": 768}

# DDPM schedule shared by SD-Turbo and SD 2.1-base.
NUM_TRAIN_TIMESTEPS = 1000
BETA_START = 0.00085
BETA_END = 0.012

# OSDFace visual representation embedder (kwargs of restorer_core.models.vre.VisualPromptEmbedder).
OSDFACE_VRE: dict[str, Any] = {
    "resolution": 512,
    "in_channels": 3,
    "ch": 64,
    "ch_mult": [1, 2, 2, 2, 4, 8],
    "num_res_blocks": 2,
    "attn_resolutions": [16],
    "z_channels": 512,
    "codebook_size": 1024,
    "codebook_dim": 512,
    "out_dim": 1024,
    "tokens": 77,
    "head_size": 1,
    "norm_groups": 32,
    "renormalize_input": True,
}

INSTANTRESTORE_FREEU = (0.9, 0.2, 1.4, 1.6)  # (s1, s2, b1, b2), pix2pix_turbo.py
INSTANTRESTORE_TIMESTEP = 249
OSDFACE_TIMESTEP = 399


def _model_section(checkpoint_cfg: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """The ``model`` part of an InstantRestore training cfg (pyrallis-encoded dict)."""
    if not checkpoint_cfg:
        return {}
    section = checkpoint_cfg.get("model", checkpoint_cfg)
    return section if isinstance(section, Mapping) else {}


def full_size_config(method: str, checkpoint_cfg: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A RestorerConfig-compatible dict for an official full-size model.

    ``method`` is "instantrestore" or "osdface".  For InstantRestore, ``checkpoint_cfg`` is
    the ``cfg`` dict stored in the official ``.pt``; its ``model.train_input``,
    ``model.use_adain`` and ``model.use_shortcuts`` win over the defaults, which are those of
    the released final model (train_input False, use_adain True, no skip convs).
    """
    common: dict[str, Any] = {
        "resolution": 512,
        "ref_timestep": 1,
        "num_train_timesteps": NUM_TRAIN_TIMESTEPS,
        "beta_start": BETA_START,
        "beta_end": BETA_END,
        "prompt_tokens": 77,
        "skip_gamma": 1.0,
        "latent_sample": "sample",
    }
    if method == "instantrestore":
        model = _model_section(checkpoint_cfg)
        return {
            **common,
            "method": "instantrestore",
            "unet": copy.deepcopy(SD_TURBO_UNET),
            "vae": copy.deepcopy(SD_VAE_FT_MSE),
            "vre": None,
            "separate_ref_unet": True,
            "timestep": INSTANTRESTORE_TIMESTEP,
            "add_noise": True,
            "x0_in_float64": False,
            "train_input": bool(model.get("train_input", False)),
            "use_adain": bool(model.get("use_adain", True)),
            "freeu": INSTANTRESTORE_FREEU,
            "vae_skip_convs": bool(model.get("use_shortcuts", False)),
        }
    if method == "osdface":
        return {
            **common,
            "method": "osdface",
            "unet": copy.deepcopy(SD21_BASE_UNET),
            "vae": copy.deepcopy(SD21_BASE_VAE),
            "vre": copy.deepcopy(OSDFACE_VRE),
            "separate_ref_unet": False,
            "timestep": OSDFACE_TIMESTEP,
            "add_noise": False,
            "x0_in_float64": True,
            "train_input": False,
            "use_adain": False,
            "freeu": None,
            "vae_skip_convs": False,
        }
    raise ValueError(f"unknown method {method!r}; expected 'instantrestore' or 'osdface'")
