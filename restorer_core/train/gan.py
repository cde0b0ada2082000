"""Adversarial training parts: a multi-scale patch discriminator, hinge losses, feature matching.

Used only in training, to give restored faces the local statistics of real photos at the model's
resolution (L1/SSIM alone average plausible details into blur). The generator side adds
`feature_matching_loss` (L1 between the discriminator's intermediate features of the restored
and the real face), which steadies the adversarial term and acts as a learned perceptual loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm


@dataclass(frozen=True)
class DiscriminatorConfig:
    channels: tuple = (64, 128, 256, 256)  # one stride-2 stage each
    scales: int = 2  # full resolution and half resolution
    in_channels: int = 3


class PatchDiscriminator(nn.Module):
    """Spectral-normalised conv stack -> a map of real/fake logits (one per ~patch); returns the
    logits and every stage's features (for feature matching)."""

    def __init__(self, channels: tuple, in_channels: int = 3):
        super().__init__()
        stages, c_in = [], in_channels
        for c in channels:
            stages.append(nn.Sequential(
                spectral_norm(nn.Conv2d(c_in, c, 4, stride=2, padding=1)),
                nn.LeakyReLU(0.2, inplace=True),
                spectral_norm(nn.Conv2d(c, c, 3, padding=1)),
                nn.LeakyReLU(0.2, inplace=True)))
            c_in = c
        self.stages = nn.ModuleList(stages)
        self.head = spectral_norm(nn.Conv2d(c_in, 1, 3, padding=1))

    def forward(self, x: torch.Tensor) -> tuple:
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return self.head(x), feats


class MultiScaleDiscriminator(nn.Module):
    """PatchDiscriminators on the image and on its 2x, 4x, ... average-pooled copies."""

    def __init__(self, cfg: DiscriminatorConfig = DiscriminatorConfig()):
        super().__init__()
        self.nets = nn.ModuleList(PatchDiscriminator(cfg.channels, cfg.in_channels) for _ in range(cfg.scales))

    def forward(self, img: torch.Tensor) -> list:
        """img in 0..1 -> [(logits, features)] per scale."""
        x = img * 2 - 1
        out = []
        for i, net in enumerate(self.nets):
            if i:
                x = F.avg_pool2d(x, 2)
            out.append(net(x))
        return out


def d_hinge_loss(real: list, fake: list) -> torch.Tensor:
    """Discriminator hinge loss, averaged over scales (float32)."""
    terms = [F.relu(1 - r[0].float()).mean() + F.relu(1 + f[0].float()).mean() for r, f in zip(real, fake)]
    return sum(terms) / len(terms)


def g_hinge_loss(fake: list) -> torch.Tensor:
    """Generator's adversarial loss (-D(fake)), averaged over scales."""
    return sum(-f[0].float().mean() for f in fake) / len(fake)


def feature_matching_loss(real: list, fake: list) -> torch.Tensor:
    """Mean L1 between the discriminator's features of the restored and the real face (real
    side detached), over scales and stages."""
    terms = [F.l1_loss(ff.float(), fr.detach().float()) for r, f in zip(real, fake) for fr, ff in zip(r[1], f[1])]
    return sum(terms) / len(terms)
