"""Nearest 2x upsampling followed by a 3x3 conv, computed at the low resolution (same output).

diffusers' ``Upsample2D`` (every VAE-decoder and UNet up block) repeats each pixel 2x2 and then
runs a 3x3 convolution over the 4x larger map. Each output pixel of a given phase (row parity a,
column parity b) sees only a 2x2 window of the original pixels, with some of the 3x3 taps
summed together. So the same function is four 2x2 convolutions of the original map, one per
phase, interleaved afterwards:

    K[a, b] = R[a] . W . R[b]^T         R[0] = [[1,0,0],[0,1,1]],  R[1] = [[1,1,0],[0,0,1]]

That is 16 instead of 36 multiply-adds per input channel and output quad (4/9 of the FLOPs) and
no 4x-sized upsampled copy of the input. For the full-size InstantRestore model at 512 px it
takes the FLOPs per face from 4,656 to 4,239 GFLOP (FlopCounterMode). The four phases run as one convolution with 4x the output channels on
the input padded by one pixel; phase (a, b) is that output shifted by (a, b).

Exact in real arithmetic; in fp16/bf16 the summed taps are rounded once (they are summed in
float32), which moves outputs by about one unit in the last place.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# Which 3x3 taps land on the two low-resolution rows (or columns) each output parity reads.
_ROW_SUMS = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]],   # even output rows: rows i-1, i
                          [[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]],  # odd output rows: rows i, i+1
                         dtype=torch.float64)


def phase_weights(weight: torch.Tensor) -> torch.Tensor:
    """(Co, Ci, 3, 3) conv weight -> (4*Co, Ci, 2, 2): the kernels of phases (a, b) in order 2a+b."""
    if weight.dim() != 4 or tuple(weight.shape[2:]) != (3, 3):
        raise ValueError(f"expected a 3x3 conv weight, got shape {tuple(weight.shape)}")
    r = _ROW_SUMS.to(weight.device)
    w = weight.detach().to(torch.float64)
    k = torch.einsum("apk,oikl,bql->aboipq", r, w, r)  # (2, 2, Co, Ci, 2, 2)
    return k.reshape(4 * weight.shape[0], weight.shape[1], 2, 2).to(weight.dtype)


def upsample_conv(x: torch.Tensor, phase_weight: torch.Tensor, bias) -> torch.Tensor:
    """conv3x3(nearest_upsample_2x(x)) from the phase kernels of `phase_weights`.

    The result keeps x's memory format (NCHW, or NHWC for channels_last inputs), as the conv does.
    """
    n, _, h, w = x.shape
    co = phase_weight.shape[0] // 4
    y = F.conv2d(F.pad(x, (1, 1, 1, 1)), phase_weight, bias)  # (n, 4*co, h+1, w+1), phase 2a+b
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        y = y.permute(0, 2, 3, 1).reshape(n, h + 1, w + 1, 2, 2, co)  # NHWC
        rows = [torch.stack([y[:, a:a + h, b:b + w, a, b] for b in (0, 1)], dim=3) for a in (0, 1)]
        return torch.stack(rows, dim=2).reshape(n, 2 * h, 2 * w, co).permute(0, 3, 1, 2)
    y = y.view(n, 2, 2, co, h + 1, w + 1)
    rows = [torch.stack([y[:, a, b, :, a:a + h, b:b + w] for b in (0, 1)], dim=-1) for a in (0, 1)]
    return torch.stack(rows, dim=-3).reshape(n, co, 2 * h, 2 * w)  # out[..., 2i+a, 2j+b]


class PhaseUpsample2D(nn.Module):
    """Drop-in for a diffusers ``Upsample2D(use_conv=True)``: keeps its ``conv`` (so the state
    dict is unchanged) and adds the phase kernels as a non-persistent buffer.

    The kernels are derived when the module is built: call `fuse_upsample_convs` again after
    changing the conv's weights. The original block is kept outside the module tree (not in
    the state dict) for `unfuse_upsample_convs`.
    """

    def __init__(self, original: nn.Module):
        super().__init__()
        self._original = (original,)  # a tuple: not registered as a submodule
        self.channels = original.channels
        self.out_channels = original.out_channels
        self.use_conv = True
        self.use_conv_transpose = False
        self.name = "conv"
        self.interpolate = True
        self.conv = original.conv
        self.register_buffer("phase_weight", phase_weights(self.conv.weight), persistent=False)
        bias = self.conv.bias
        self.register_buffer("phase_bias", None if bias is None else bias.detach().repeat(4), persistent=False)

    def forward(self, hidden_states: torch.Tensor, output_size=None, *args, **kwargs) -> torch.Tensor:
        h, w = hidden_states.shape[-2:]
        if output_size is not None and tuple(output_size) != (2 * h, 2 * w):
            # an odd target size (UNet inputs not divisible by 8): the plain path
            return self.conv(F.interpolate(hidden_states, size=output_size, mode="nearest"))
        if hidden_states.is_cuda and not torch.compiler.is_compiling():
            # Eager CUDA: the interleave is two strided copies of the 4x output; the eager
            # CUDA-graph row with the phase convs (and wide-head attention) was slower (H100,
            # batch 1: 48.4 vs 44.6 ms/face). Compiled, Inductor fuses the interleave and the
            # phase convs win (15.1 vs 15.9 ms/face at batch 8); on the CPU they win (-9%).
            return self.conv(F.interpolate(hidden_states, scale_factor=2.0, mode="nearest"))
        return upsample_conv(hidden_states, self.phase_weight, self.phase_bias)


def _fusable(module: nn.Module) -> bool:
    conv = getattr(module, "conv", None)
    return (type(module).__name__ == "Upsample2D" and getattr(module, "use_conv", False)
            and not getattr(module, "use_conv_transpose", False) and getattr(module, "norm", None) is None
            and getattr(module, "interpolate", True) and getattr(module, "name", "conv") == "conv"
            and isinstance(conv, nn.Conv2d) and tuple(conv.kernel_size) == (3, 3)
            and tuple(conv.padding) == (1, 1) and tuple(conv.stride) == (1, 1)
            and tuple(conv.dilation) == (1, 1) and conv.groups == 1)


def fuse_upsample_convs(model: nn.Module) -> int:
    """Replace every plain nearest-2x ``Upsample2D`` + 3x3 conv in `model` by a PhaseUpsample2D
    (or refresh the kernels of ones already replaced). Returns how many there are."""
    count = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, PhaseUpsample2D):
                child.phase_weight = phase_weights(child.conv.weight)
                if child.conv.bias is not None:
                    child.phase_bias = child.conv.bias.detach().repeat(4)
                count += 1
            elif _fusable(child):
                setattr(parent, name, PhaseUpsample2D(child))
                count += 1
    return count


def unfuse_upsample_convs(model: nn.Module) -> int:
    """Put the original ``Upsample2D`` blocks back in place of every PhaseUpsample2D (they share
    the conv, so the weights are the current ones). Returns how many were replaced."""
    count = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, PhaseUpsample2D):
                original = child._original[0]
                original.conv = child.conv
                setattr(parent, name, original)
                count += 1
    return count
