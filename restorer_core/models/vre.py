"""OSDFace's visual representation embedder (VRE): a low-quality face -> 77 prompt tokens.

Module tree and parameter names follow the official ``lq_embed/vqvae.py`` so that the keys of
``associate_2.ckpt`` under ``vqvae_LQ.`` (prefix removed, decoder keys dropped) load 1:1
(``encoder.*``, ``quant_conv.*``, ``quantize.embedding.weight``), and the keys of
``embedding_change_weights.pth`` load under ``proj.`` (``conv1``/``conv2``, 1x1 Conv1d).

Tokenisation (official ``VectorQuantizer.inference``, made batched): every latent position takes
its nearest code; positions are ordered by that distance, ascending (stable on ties); walking
them, codes are collected skipping repeats until ``tokens``; rows after the last distinct code
are zeros.  The official loop is only right for batch size 1; this one is right for any batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class VREConfig:
    """Architecture of the embedder.  Defaults are the official OSDFace ones."""

    resolution: int = 512
    in_channels: int = 3
    ch: int = 64
    ch_mult: tuple = (1, 2, 2, 2, 4, 8)
    num_res_blocks: int = 2
    attn_resolutions: tuple = (16,)
    z_channels: Optional[int] = None  # None: ch * ch_mult[-1] (512 officially)
    codebook_size: int = 1024
    codebook_dim: int = 512
    out_dim: int = 1024
    tokens: int = 77
    head_size: int = 1
    norm_groups: Optional[int] = None  # None: 32 when every width allows it (official), else gcd
    renormalize_input: bool = True  # official quirk: (x - 0.5) / 0.5 applied to a [-1, 1] input
    beta: float = 0.25  # commitment weight of the training loss (official VectorQuantizer beta)

    def __post_init__(self) -> None:
        self.ch_mult = tuple(int(m) for m in self.ch_mult)
        self.attn_resolutions = tuple(int(r) for r in self.attn_resolutions)
        if self.z_channels is None:
            self.z_channels = self.ch * self.ch_mult[-1]
        if self.norm_groups is None:
            widths = [self.ch * m for m in self.ch_mult] + [self.ch, self.z_channels]
            self.norm_groups = 32 if all(w % 32 == 0 for w in widths) else math.gcd(32, *widths)
        if self.resolution % (2 ** (len(self.ch_mult) - 1)):
            raise ValueError(f"resolution {self.resolution} not divisible by the encoder's downsampling")

    @property
    def latent_size(self) -> int:
        return self.resolution // 2 ** (len(self.ch_mult) - 1)


def _norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=groups, num_channels=channels, eps=1e-6, affine=True)


class _ResBlock(nn.Module):
    """Taming-style residual block without time embedding (official ``ResnetBlock``, temb 0)."""

    def __init__(self, cin: int, cout: int, groups: int) -> None:
        super().__init__()
        self.norm1 = _norm(cin, groups)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2 = _norm(cout, groups)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        skip = x if self.nin_shortcut is None else self.nin_shortcut(x)
        return skip + h


class _AttnBlock(nn.Module):
    """Self-attention over positions (official ``MultiHeadAttnBlock``; ``norm2`` is only used
    by its cross-attention variant and exists here so the official keys load)."""

    def __init__(self, channels: int, heads: int, groups: int) -> None:
        super().__init__()
        if channels % heads:
            raise ValueError(f"{channels} channels not divisible into {heads} heads")
        self.heads = heads
        self.norm1 = _norm(channels, groups)
        self.norm2 = _norm(channels, groups)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, hgt, wid = x.shape
        h = self.norm1(x)

        def split(t: torch.Tensor) -> torch.Tensor:  # [b, c, H, W] -> [b, heads, HW, c/heads]
            return t.reshape(b, self.heads, c // self.heads, hgt * wid).transpose(2, 3)

        out = F.scaled_dot_product_attention(split(self.q(h)), split(self.k(h)), split(self.v(h)))
        out = out.transpose(2, 3).reshape(b, c, hgt, wid)
        return x + self.proj_out(out)


class _Downsample(nn.Module):
    """Stride-2 3x3 conv with the asymmetric (0, 1, 0, 1) zero padding of the official code."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class _Level(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.block = nn.ModuleList()
        self.attn = nn.ModuleList()


class _Mid(nn.Module):
    def __init__(self, channels: int, heads: int, groups: int) -> None:
        super().__init__()
        self.block_1 = _ResBlock(channels, channels, groups)
        self.attn_1 = _AttnBlock(channels, heads, groups)
        self.block_2 = _ResBlock(channels, channels, groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


class VQEncoder(nn.Module):
    """The official ``MultiHeadEncoder`` (double_z False, mid block on)."""

    def __init__(self, cfg: VREConfig) -> None:
        super().__init__()
        g = cfg.norm_groups
        self.conv_in = nn.Conv2d(cfg.in_channels, cfg.ch, 3, padding=1)
        self.down = nn.ModuleList()
        res, cin = cfg.resolution, cfg.ch
        for level, mult in enumerate(cfg.ch_mult):
            stage = _Level()
            cout = cfg.ch * mult
            for _ in range(cfg.num_res_blocks):
                stage.block.append(_ResBlock(cin, cout, g))
                cin = cout
                if res in cfg.attn_resolutions:
                    stage.attn.append(_AttnBlock(cin, cfg.head_size, g))
            if level != len(cfg.ch_mult) - 1:
                stage.downsample = _Downsample(cin)
                res //= 2
            self.down.append(stage)
        self.mid = _Mid(cin, cfg.head_size, g)
        self.norm_out = _norm(cin, g)
        self.conv_out = nn.Conv2d(cin, cfg.z_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for stage in self.down:
            for i, block in enumerate(stage.block):
                h = block(h)
                if len(stage.attn):
                    h = stage.attn[i](h)
            if hasattr(stage, "downsample"):
                h = stage.downsample(h)
        h = self.mid(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Codebook(nn.Module):
    """The VQ codebook (official ``VectorQuantizer``; key ``quantize.embedding.weight``)."""

    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(size, dim)
        nn.init.uniform_(self.embedding.weight, -1.0 / size, 1.0 / size)

    def distances(self, z: torch.Tensor) -> torch.Tensor:
        """Squared distances [B, N, K] of z [B, N, C] to every code (official formula)."""
        e = self.embedding.weight
        return (z**2).sum(-1, keepdim=True) + (e**2).sum(-1) - 2 * z @ e.t()


def select_tokens(distances: torch.Tensor, tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Official token selection, batched.

    distances: [B, N, K] from N latent positions to K codes.  Returns (codes, positions), both
    [B, tokens] long: the selected code and the latent position it was first met at, -1 where
    fewer than ``tokens`` distinct codes exist.
    """
    b, n, k = distances.shape
    dmin, nearest = distances.min(dim=2)  # [B, N]
    order = torch.sort(dmin, dim=1, stable=True).indices  # positions, nearest first
    codes_sorted = nearest.gather(1, order)
    rank_of = torch.arange(n, device=distances.device).expand(b, n)
    first_rank = torch.full((b, k), n, dtype=torch.long, device=distances.device)
    first_rank.scatter_reduce_(1, codes_sorted, rank_of, reduce="amin")
    is_first = first_rank.gather(1, codes_sorted) == rank_of  # first time this code is met
    slot = is_first.long().cumsum(1) - 1
    keep = is_first & (slot < tokens)
    codes = torch.full((b, tokens), -1, dtype=torch.long, device=distances.device)
    positions = torch.full_like(codes, -1)
    bi, pi = keep.nonzero(as_tuple=True)
    codes[bi, slot[bi, pi]] = codes_sorted[bi, pi]
    positions[bi, slot[bi, pi]] = order[bi, pi]
    return codes, positions


class TwoLayerConv1x1(nn.Module):
    """Token projection (official ``embedding_change_weights.pth``): two 1x1 Conv1d, SiLU after
    each, the hidden width half the input width."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(cin, cin // 2, 1)
        self.conv2 = nn.Conv1d(cin // 2, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, T, cin] -> [B, T, cout]
        h = x.transpose(1, 2)
        h = F.silu(self.conv2(F.silu(self.conv1(h))))
        return h.transpose(1, 2)


class VisualPromptEmbedder(nn.Module):
    """lq face in [-1, 1] [B, 3, S, S] -> prompt [B, tokens, out_dim].

    ``VisualPromptEmbedder(**cfg)`` with the fields of :class:`VREConfig`.
    """

    def __init__(self, **cfg) -> None:
        super().__init__()
        self.cfg = VREConfig(**cfg)
        c = self.cfg
        self.encoder = VQEncoder(c)
        self.quant_conv = nn.Conv2d(c.z_channels, c.codebook_dim, 1)
        self.quantize = Codebook(c.codebook_size, c.codebook_dim)
        self.proj = TwoLayerConv1x1(c.codebook_dim, c.out_dim)

    def preprocess(self, lq: torch.Tensor) -> torch.Tensor:
        """Bilinear resize to the embedder's resolution, then the official renormalisation."""
        r = self.cfg.resolution
        x = F.interpolate(lq, size=(r, r), mode="bilinear", align_corners=False)
        return (x - 0.5) / 0.5 if self.cfg.renormalize_input else x

    def latents(self, lq: torch.Tensor) -> torch.Tensor:
        """Pre-quantisation latents [B, N, codebook_dim], positions in row-major order."""
        h = self.quant_conv(self.encoder(self.preprocess(lq)))
        return h.flatten(2).transpose(1, 2)

    def _gather_codes(self, codes: torch.Tensor) -> torch.Tensor:
        rows = self.quantize.embedding.weight[codes.clamp(min=0)]
        return rows * (codes >= 0).unsqueeze(-1).to(rows.dtype)

    def tokenize(self, lq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(codes [B, T] long, -1 = empty; token vectors [B, T, codebook_dim], empty rows 0)."""
        z = self.latents(lq)
        codes, _ = select_tokens(self.quantize.distances(z), self.cfg.tokens)
        return codes, self._gather_codes(codes)

    def forward(self, lq: torch.Tensor) -> torch.Tensor:
        return self.proj(self.tokenize(lq)[1])

    def forward_train(self, lq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Differentiable path for training: (prompt, vq_loss).

        The prompt has the same values as :meth:`forward`; gradients reach the encoder by the
        straight-through estimator (each token's gradient goes to the latent at the position
        that selected it) and the projection directly.  The choice of codes stays discrete.
        vq_loss is the VQ-VAE objective over all positions and their nearest codes:
        ``|sg(z) - e|^2 + beta * |z - sg(e)|^2`` (mean), which trains the codebook and keeps the
        encoder's latents close to it.
        """
        z = self.latents(lq)
        dist = self.quantize.distances(z)
        codes, positions = select_tokens(dist.detach(), self.cfg.tokens)
        valid = (codes >= 0).unsqueeze(-1).to(z.dtype)
        z_sel = z.gather(1, positions.clamp(min=0).unsqueeze(-1).expand(-1, -1, z.shape[-1]))
        e_sel = self._gather_codes(codes)
        tokens = (z_sel + (e_sel - z_sel).detach()) * valid
        nearest = self.quantize.embedding.weight[dist.detach().argmin(dim=2)]
        vq_loss = F.mse_loss(nearest, z.detach()) + self.cfg.beta * F.mse_loss(z, nearest.detach())
        return self.proj(tokens), vq_loss
