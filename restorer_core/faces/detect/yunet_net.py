"""YuNet (libfacedetection's 2023mar face detector, Apache-2.0) as a plain torch module.

The same network as the shipped ONNX file that OpenCV's FaceDetectorYN runs on the CPU, so the
detector can run batched on the restorer's device (issue 19). The weights are the ONNX file's
own (batch norms already folded into the convolutions by its exporter), converted once into
`assets/yunet/face_detection_yunet_2023mar.safetensors` by `python -m
restorer_core.faces.detect.yunet_net convert` (needs the `onnx` package; the pack does not).

Layout: a backbone of depthwise-separable units (1x1 conv, then 3x3 depthwise conv and ReLU)
with max-pool downsampling, a top-down neck at strides 8 / 16 / 32, and per stride four heads
(class, objectness, box, 5 landmarks) of a 1x1 conv and a 3x3 depthwise conv each.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

ASSETS = Path(__file__).resolve().parents[2] / "assets" / "yunet"
ONNX_FILE = ASSETS / "face_detection_yunet_2023mar.onnx"
TORCH_FILE = ASSETS / "face_detection_yunet_2023mar.safetensors"
STRIDES = (8, 16, 32)
HEADS = (("cls", 1), ("bbox", 4), ("obj", 1), ("kps", 10))  # the ONNX file's order of head convs


class SeparableUnit(nn.Module):
    """1x1 conv, 3x3 depthwise conv, optional ReLU (YuNet's ConvDPUnit, batch norm folded)."""

    def __init__(self, cin: int, cout: int, relu: bool = True):
        super().__init__()
        self.point = nn.Conv2d(cin, cout, 1)
        self.depth = nn.Conv2d(cout, cout, 3, padding=1, groups=cout)
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.depth(self.point(x))
        return F.relu(x) if self.relu else x


class YuNet(nn.Module):
    """Input: [B, 3, H, W] float BGR in 0..255, H and W multiples of 32 (FaceDetectorYN's blob).
    Output: per stride s in (8, 16, 32) the raw head maps as [B, H/s * W/s, C] rows in row-major
    cell order: cls and obj after a sigmoid (C = 1), bbox (C = 4) and kps (C = 10) as regressed."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, stride=2, padding=1)
        self.stem_unit = SeparableUnit(16, 16)
        widths = [(16, 16, 32), (32, 32, 64), (64, 64, 64), (64, 64, 64), (64, 64, 64)]
        self.stages = nn.ModuleList(
            nn.Sequential(SeparableUnit(a, b), SeparableUnit(b, c)) for a, b, c in widths)
        self.lateral = nn.ModuleList(SeparableUnit(64, 64) for _ in STRIDES)  # stride 8, 16, 32
        self.heads = nn.ModuleDict({
            name: nn.ModuleList(SeparableUnit(64, ch, relu=False) for _ in STRIDES) for name, ch in HEADS})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.stem_unit(F.relu(self.stem(x)))            # stride 2
        x = self.stages[1](self.stages[0](F.max_pool2d(x, 2)))  # stride 4
        c8 = self.stages[2](F.max_pool2d(x, 2))
        c16 = self.stages[3](F.max_pool2d(c8, 2))
        c32 = self.stages[4](F.max_pool2d(c16, 2))
        p32 = self.lateral[2](c32)
        p16 = self.lateral[1](c16 + F.interpolate(p32, scale_factor=2.0, mode="nearest"))
        p8 = self.lateral[0](c8 + F.interpolate(p16, scale_factor=2.0, mode="nearest"))
        out: dict[str, torch.Tensor] = {}
        for name, _ in HEADS:
            for level, (stride, feat) in enumerate(zip(STRIDES, (p8, p16, p32))):
                y = self.heads[name][level](feat)
                y = y.permute(0, 2, 3, 1).reshape(y.shape[0], -1, y.shape[1])
                out[f"{name}_{stride}"] = torch.sigmoid(y) if name in ("cls", "obj") else y
        return out

    def convs_in_onnx_order(self) -> Iterator[nn.Conv2d]:
        """The convolutions in the order the ONNX graph runs them (for conversion)."""
        yield self.stem
        yield from (self.stem_unit.point, self.stem_unit.depth)
        for stage in self.stages:
            for unit in stage:
                yield from (unit.point, unit.depth)
        for level in (2, 1, 0):
            yield from (self.lateral[level].point, self.lateral[level].depth)
        for name, _ in HEADS:
            for unit in self.heads[name]:
                yield from (unit.point, unit.depth)


def weights_from_onnx(path: Path = ONNX_FILE) -> dict[str, torch.Tensor]:
    """The ONNX file's conv weights as YuNet's state dict (conv nodes matched in graph order,
    every shape checked)."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    model = YuNet()
    targets = list(model.convs_in_onnx_order())
    if len(convs) != len(targets):
        raise ValueError(f"{path}: {len(convs)} conv nodes, YuNet has {len(targets)}: not the 2023mar layout")
    names = {id(m): n for n, m in model.named_modules()}
    state = {}
    for node, conv in zip(convs, targets):
        w, b = (torch.from_numpy(inits[i].copy()) for i in node.input[1:3])
        if w.shape != conv.weight.shape or b.shape != conv.bias.shape:
            raise ValueError(f"{path}: conv {node.output[0]} has {tuple(w.shape)}, expected {tuple(conv.weight.shape)}")
        state[f"{names[id(conv)]}.weight"], state[f"{names[id(conv)]}.bias"] = w, b
    return state


def load_yunet(path: Path = TORCH_FILE, device: torch.device | str = "cpu") -> YuNet:
    """The shipped converted weights (safetensors: no pickle) in an eval-mode YuNet."""
    from safetensors.torch import load_file

    model = YuNet()
    model.load_state_dict(load_file(str(path)))
    return model.eval().requires_grad_(False).to(device)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Convert YuNet's ONNX weights for the torch detector.")
    parser.add_argument("command", choices=["convert"])
    parser.add_argument("--onnx", type=Path, default=ONNX_FILE)
    parser.add_argument("--out", type=Path, default=TORCH_FILE)
    args = parser.parse_args(argv)
    from safetensors.torch import save_file

    from ...io.atomic import atomic_path

    state = weights_from_onnx(args.onnx)
    with atomic_path(args.out) as tmp:
        save_file(state, str(tmp), metadata={"source": args.onnx.name, "format": "yunet-torch/1"})
    print(f"wrote {args.out} ({sum(t.numel() for t in state.values())} parameters)")


if __name__ == "__main__":
    main()
