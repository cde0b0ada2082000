"""VAE encode/decode with pix2pix-turbo's optional encoder->decoder skip convolutions.

The official InstantRestore VAE may carry `decoder.skip_conv_1..4`: 1x1 convs adding the
encoder's down-block inputs (deepest first, times gamma) to the decoder's up-block inputs. With
no skip convs this is exactly diffusers' AutoencoderKL encode/decode.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution


def skip_conv_shapes(vae_config: dict) -> list:
    """(in_channels, out_channels) of skip_conv_1..N for an AutoencoderKL config."""
    ch = list(vae_config.get("block_out_channels", (64,)))
    enc_acts = [ch[0]] + ch[:-1]  # channels entering each encoder down block
    rev = ch[::-1]
    dec_inputs = [rev[0]] + rev[:-1]  # channels entering each decoder up block
    return list(zip(enc_acts[::-1], dec_inputs))


def add_skip_convs(vae: nn.Module, vae_config: dict) -> None:
    """Attach zero-initialised skip convs to `vae.decoder` under the official names."""
    for i, (cin, cout) in enumerate(skip_conv_shapes(vae_config), start=1):
        conv = nn.Conv2d(cin, cout, kernel_size=1, bias=False)
        nn.init.zeros_(conv.weight)
        setattr(vae.decoder, f"skip_conv_{i}", conv)


def encode(vae, x: torch.Tensor, keep_skips: bool = False):
    """x in [-1, 1] -> (latent distribution, encoder activations or None)."""
    enc = vae.encoder
    h = enc.conv_in(x)
    skips = [] if keep_skips else None
    for block in enc.down_blocks:
        if keep_skips:
            skips.append(h)
        h = block(h)
    h = enc.mid_block(h)
    h = enc.conv_out(enc.conv_act(enc.conv_norm_out(h)))
    if getattr(vae, "quant_conv", None) is not None:
        h = vae.quant_conv(h)
    return DiagonalGaussianDistribution(h), skips


def decode(vae, z: torch.Tensor, skips: Optional[list] = None, gamma: float = 1.0) -> torch.Tensor:
    """Unscaled latents -> image in about [-1, 1]; skip activations added when given."""
    if getattr(vae, "post_quant_conv", None) is not None:
        z = vae.post_quant_conv(z)
    dec = vae.decoder
    h = dec.conv_in(z)
    h = dec.mid_block(h, None)
    h = h.to(next(iter(dec.up_blocks.parameters())).dtype)
    rev = skips[::-1] if skips is not None else None
    for i, block in enumerate(dec.up_blocks):
        if rev is not None:
            h = h + getattr(dec, f"skip_conv_{i + 1}")(rev[i] * gamma)
        h = block(h, None)
    h = dec.conv_norm_out(h)
    return dec.conv_out(dec.conv_act(h))
