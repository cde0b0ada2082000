"""Blockwise 8-bit codes for training state that has to travel between sessions.

A resumable run carries the restorer, its EMA, the discriminator and both optimisers' moments from
one GPU machine to the next through small files. 8-bit blockwise codes (as in 8-bit Adam) keep that
to about a byte per value: `signed` for weights deltas and first moments (absmax per block),
`log` for second moments (log2 range per block, so small values keep their relative precision and
never decode to the zero that would blow up Adam's step).
"""

from __future__ import annotations

from typing import Tuple

import torch

BLOCK = 256
LOG_FLOOR_OCTAVES = 40.0  # second moments below max / 2**40 of their block decode as that floor


def _blocks(t: torch.Tensor) -> Tuple[torch.Tensor, int]:
    flat = t.detach().to("cpu", torch.float32).flatten()
    n = flat.numel()
    pad = (-n) % BLOCK
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    return flat.view(-1, BLOCK), n


def quantize_signed(t: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """(int8 codes of t's shape, float32 absmax/127 per block); error <= scale/2 per value."""
    blocks, n = _blocks(t)
    scale = blocks.abs().amax(1) / 127.0
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    codes = torch.round(blocks / safe[:, None]).clamp_(-127, 127).to(torch.int8)
    return codes.flatten()[:n].view(t.shape), scale


def dequantize_signed(codes: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    blocks, n = _blocks(codes)
    return (blocks * scale[:, None]).flatten()[:n].view(codes.shape)


def quantize_log(t: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """(uint8 codes, float32 [lo, hi] of log2 per block) for a non-negative tensor. An all-zero
    block stays zero; other values decode within 2**((hi-lo)/510) of themselves, clamped below at
    the block's max / 2**LOG_FLOOR_OCTAVES."""
    blocks, n = _blocks(t)
    if bool((blocks < 0).any()):
        raise ValueError("quantize_log takes non-negative values (second moments)")
    top = blocks.amax(1)
    live = top > 0
    floor = torch.where(live, top * 2.0 ** -LOG_FLOOR_OCTAVES, torch.ones_like(top))
    logs = torch.log2(torch.maximum(blocks, floor[:, None]))
    lo, hi = logs.amin(1), logs.amax(1)
    span = torch.where(hi > lo, hi - lo, torch.ones_like(hi))
    codes = torch.round((logs - lo[:, None]) / span[:, None] * 255).clamp_(0, 255).to(torch.uint8)
    neg_inf = torch.full_like(lo, float("-inf"))
    bounds = torch.stack([torch.where(live, lo, neg_inf), torch.where(live, hi, neg_inf)], 1)
    return codes.flatten()[:n].view(t.shape), bounds


def dequantize_log(codes: torch.Tensor, bounds: torch.Tensor) -> torch.Tensor:
    blocks, n = _blocks(codes)
    lo, hi = bounds[:, 0:1], bounds[:, 1:2]
    dead = torch.isinf(lo)
    logs = torch.where(dead, lo, lo + blocks / 255.0 * torch.where(dead, torch.zeros_like(hi), hi - lo))
    return torch.exp2(logs).flatten()[:n].view(codes.shape)
