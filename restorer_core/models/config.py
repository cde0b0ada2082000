"""RestorerConfig: everything that defines a restorer besides its weights.

The same dataclass describes the official InstantRestore / OSDFace models (SD 2.1 sized) and the
project's small embedded model; it travels as JSON in the project's safetensors metadata.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Optional

METHODS = ("instantrestore", "osdface", "hybrid")
LATENT_SAMPLING = ("sample", "mode")


@dataclass
class RestorerConfig:
    """Architecture and inference math of a one-step restorer.

    method: "instantrestore" (constant caption prompt + reference attention), "osdface" (visual
    prompt, no noise), or "hybrid" (the project's own: visual prompt + reference attention).
    unet / vae / vre: constructor kwargs of diffusers' UNet2DConditionModel, AutoencoderKL and
    restorer_core.models.vre.VisualPromptEmbedder (vre None: no visual prompt).
    """

    method: str
    resolution: int
    unet: dict
    vae: dict
    vre: Optional[dict] = None
    separate_ref_unet: bool = False
    timestep: int = 249
    add_noise: bool = True
    x0_in_float64: bool = False
    latent_sample: str = "sample"
    ref_timestep: int = 1
    train_input: bool = True
    use_adain: bool = False
    freeu: Optional[tuple] = None
    vae_skip_convs: bool = False
    skip_gamma: float = 1.0
    num_train_timesteps: int = 1000
    beta_start: float = 0.00085
    beta_end: float = 0.012
    prompt_tokens: int = 77
    # reference-identity channel (models/ref_identity.py): {"tokens": T, "network": NAME} appends T
    # tokens made from the references' face-ID embeddings (NAME: "identity_embedder", the default,
    # or "mobilefacenet") to the prompt when references are used; None: absent
    ref_id: Optional[dict] = None
    notes: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.latent_sample not in LATENT_SAMPLING:
            raise ValueError(f"latent_sample must be one of {LATENT_SAMPLING}, got {self.latent_sample!r}")
        if not 0 <= self.timestep < self.num_train_timesteps:
            raise ValueError(f"timestep {self.timestep} outside [0, {self.num_train_timesteps})")
        if self.ref_id is not None and int(self.ref_id.get("tokens", 0)) < 1:
            raise ValueError(f"ref_id needs a positive 'tokens' count, got {self.ref_id!r}")
        if self.ref_id is not None and self.ref_id.get("network", "identity_embedder") not in (
                "identity_embedder", "mobilefacenet"):
            raise ValueError(f"ref_id network must be 'identity_embedder' or 'mobilefacenet', got {self.ref_id!r}")
        if self.freeu is not None:
            self.freeu = tuple(float(v) for v in self.freeu)
            if len(self.freeu) != 4:
                raise ValueError("freeu must be (s1, s2, b1, b2)")

    @property
    def cross_attention_dim(self) -> int:
        return int(self.unet.get("cross_attention_dim", 1280))

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict) -> "RestorerConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown restorer config keys {unknown}; is this file from a newer version?")
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> "RestorerConfig":
        return cls.from_dict(json.loads(text))


def small_default_config(resolution: int = 128) -> RestorerConfig:
    """The project's embedded default: a small hybrid restorer at `resolution` px.

    VAE downsamples x4 (32x32x4 latent at 128 px) so that fine facial detail survives the latent;
    the UNet keeps SD's block layout (cross-attention down/up blocks, reference attention in the
    up blocks) at a fraction of the width.
    """
    unet = dict(
        sample_size=resolution // 4,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(64, 128, 192),
        layers_per_block=1,
        attention_head_dim=(2, 4, 6),  # diffusers' legacy name: heads per level (head dim 32)
        cross_attention_dim=256,
        use_linear_projection=True,
        norm_num_groups=32,
    )
    vae = dict(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(32, 64, 128),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=16,
        sample_size=resolution,
        scaling_factor=1.0,
    )
    vre = dict(
        resolution=resolution,
        in_channels=3,
        ch=16,
        ch_mult=(1, 2, 2, 4),
        num_res_blocks=1,
        codebook_size=256,
        codebook_dim=64,
        out_dim=256,
        tokens=77,
    )
    return RestorerConfig(
        method="hybrid",
        resolution=resolution,
        unet=unet,
        vae=vae,
        vre=vre,
        separate_ref_unet=False,
        timestep=399,
        add_noise=False,
        x0_in_float64=False,
        latent_sample="mode",
        train_input=True,
        use_adain=True,
        freeu=None,
    )
