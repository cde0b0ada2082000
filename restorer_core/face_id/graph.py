"""A TF.js/TensorFlow inference graph run as a differentiable torch module.

``program_from_graph`` prunes a decoded graph (``tfjs.read_graph_model``) to the ops between
its input placeholder and an output, and converts every weight to torch's layout (Conv2D
filters HWIO -> OIHW, depthwise HWCM -> [C*M, 1, H, W]); the program is plain JSON, so it can
travel in a safetensors file's metadata. ``GraphModule`` executes the program with torch ops on
NCHW tensors (TensorFlow's NHWC axes are remapped), so it runs on any device and dtype and
backpropagates to its input. TensorFlow's SAME padding (asymmetric for even sizes with stride 2)
is reproduced exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .tfjs import TfjsFormatError, TfjsGraph, _source

# ops the interpreter runs (graph inputs beyond the first are weights or other ops' outputs)
_CONV_OPS = {"_FusedConv2D", "Conv2D", "FusedDepthwiseConv2dNative", "DepthwiseConv2dNative"}
_UNARY = {"Relu", "Relu6", "Abs", "Neg", "Square", "Sqrt", "Rsqrt", "Sigmoid", "Tanh", "Identity", "Elu"}
_BINARY = {"Add", "AddV2", "Sub", "Mul", "RealDiv", "Maximum", "Minimum", "BiasAdd"}
_REDUCE = {"Sum", "Mean", "Max"}
_OTHER = {"Squeeze", "_PRelu", "AddN", "Pad", "Reshape", "MatMul", "_FusedMatMul"}
_BAKED = _REDUCE | {"Pad", "Reshape"}  # ops whose second input is an integer constant baked into attrs
SUPPORTED_OPS = _CONV_OPS | _UNARY | _BINARY | _REDUCE | _OTHER
_FUSED = {"BiasAdd", "Relu", "Relu6", "Prelu", "LeakyRelu", "Sigmoid", "Elu"}
_NHWC_TO_NCHW = {0: 0, 1: 2, 2: 3, 3: 1}


@dataclass(frozen=True)
class Step:
    """One op of a program: inputs name earlier steps, the placeholder, or constants."""

    name: str
    op: str
    inputs: tuple[str, ...]
    attrs: dict

    def to_json(self) -> dict:
        return {"name": self.name, "op": self.op, "inputs": list(self.inputs), "attrs": self.attrs}

    @classmethod
    def from_json(cls, d: dict) -> "Step":
        return cls(name=d["name"], op=d["op"], inputs=tuple(d["inputs"]), attrs=dict(d.get("attrs", {})))


def _json_attrs(op: str, attrs: dict) -> dict:
    """The attributes the interpreter uses, as JSON-safe values."""
    keep = {
        "strides", "padding", "dilations", "fused_ops", "explicit_paddings", "squeeze_dims",
        "keep_dims", "leakyrelu_alpha", "data_format", "epsilon", "transpose_a", "transpose_b",
    }
    out = {}
    for k, v in attrs.items():
        if k in keep and v is not None:
            out[k] = v
    fmt = out.get("data_format", "NHWC")
    if fmt not in ("NHWC",):
        raise TfjsFormatError(f"op {op} uses data_format {fmt!r}; only NHWC graphs are supported.")
    return out


def program_from_graph(
    graph: TfjsGraph, output: Optional[str] = None, input_name: Optional[str] = None
) -> tuple[dict, dict[str, np.ndarray]]:
    """(program, constants) for the subgraph from the input placeholder to `output`.

    The program is {"input": name, "output": name, "steps": [Step.to_json()...]}; constants are
    float32/int32 arrays in torch layout, keyed by their TF node names.
    """
    by_name = {n.name: n for n in graph.nodes}
    placeholders = graph.placeholders
    if input_name is None:
        if len(placeholders) != 1:
            raise TfjsFormatError(f"the graph has {len(placeholders)} inputs {placeholders}; name the one to use.")
        input_name = placeholders[0]
    outputs = graph.outputs
    if output is None:
        if len(outputs) != 1:
            raise TfjsFormatError(f"the graph has {len(outputs)} outputs {outputs}; name the one to use.")
        output = outputs[0]
    if output not in by_name:
        raise TfjsFormatError(f"output {output!r} is not a node of the graph.")

    needed: list[str] = []
    seen: set[str] = set()

    def visit(name: str) -> None:  # iterative-enough DFS: these graphs are a few hundred nodes deep at most
        stack = [(name, False)]
        while stack:
            cur, done = stack.pop()
            if done:
                needed.append(cur)
                continue
            if cur in seen:
                continue
            seen.add(cur)
            if cur not in by_name:
                raise TfjsFormatError(f"node {cur!r} is used but not defined in the graph.")
            stack.append((cur, True))
            for ref in reversed(by_name[cur].inputs):
                if not ref.startswith("^"):
                    stack.append((_source(ref), False))

    visit(output)
    steps: list[Step] = []
    consts: dict[str, np.ndarray] = {}
    for name in needed:
        node = by_name[name]
        if node.op == "Placeholder":
            if name != input_name:
                raise TfjsFormatError(f"the output depends on a second input {name!r}; not supported.")
            continue
        if node.op == "Const":
            if name not in graph.weights:
                raise TfjsFormatError(f"constant {name!r} has no value in the weights manifest.")
            continue
        if node.op not in SUPPORTED_OPS:
            raise TfjsFormatError(f"op {node.op} (node {name!r}) is not supported by the torch interpreter.")
        inputs = tuple(_source(r) for r in node.inputs if not r.startswith("^"))
        attrs = _json_attrs(node.op, node.attrs)
        if "fused_ops" in attrs:
            bad = [f for f in attrs["fused_ops"] if f not in _FUSED]
            if bad:
                raise TfjsFormatError(f"node {name!r} fuses unsupported ops {bad}.")
        if node.op in _BAKED:  # axis / paddings / shape: a constant input baked into the step
            if len(inputs) < 2 or inputs[1] not in graph.weights:
                raise TfjsFormatError(f"node {name!r} ({node.op}) needs a constant second input.")
            value = np.asarray(graph.weights[inputs[1]]).astype(int)
            key = {"Pad": "paddings", "Reshape": "shape"}.get(node.op, "axis")
            attrs[key] = value.tolist() if node.op == "Pad" else value.reshape(-1).tolist()
            inputs = inputs[:1]
        steps.append(Step(name, node.op, inputs, attrs))
        for pos, ref in enumerate(inputs):
            if by_name[ref].op != "Const" or ref in consts:
                continue
            value = np.asarray(graph.weights[ref])
            if node.op in _CONV_OPS and pos == 1:
                if value.ndim != 4:
                    raise TfjsFormatError(f"filter {ref!r} of {name!r} has shape {value.shape}, expected 4-D.")
                if "Depthwise" in node.op:  # [H, W, C, M] -> [C*M, 1, H, W]
                    h, w, c, m = value.shape
                    value = value.reshape(h, w, c * m).transpose(2, 0, 1)[:, None]
                else:  # [H, W, I, O] -> [O, I, H, W]
                    value = value.transpose(3, 2, 0, 1)
            elif value.ndim == 4:  # an NHWC constant operand
                value = value.transpose(0, 3, 1, 2)
            consts[ref] = np.ascontiguousarray(value.astype(np.int32 if value.dtype.kind in "iu" else np.float32))
    program = {"input": input_name, "output": output, "steps": [s.to_json() for s in steps]}
    return program, consts


def fuse_prelu(program: dict, consts: dict[str, np.ndarray]) -> tuple[dict, dict[str, np.ndarray]]:
    """Rewrite TensorFlow's decomposed PReLU into one `_PRelu` step (same math, fewer tensors).

    Matches add(relu(x), mul(sub(x, abs(x)), a)) -> prelu(x, 2a), and
    add(x, mul(sub(x, abs(x)), a)) -> prelu(x, 1 + 2a), when the inner steps have no other use.
    """
    steps = [Step.from_json(s) for s in program["steps"]]
    by_name = {s.name: s for s in steps}
    uses: dict[str, int] = {}
    for s in steps:
        for r in s.inputs:
            uses[r] = uses.get(r, 0) + 1
    uses[program["output"]] = uses.get(program["output"], 0) + 1
    consts = dict(consts)
    drop: set[str] = set()
    replace: dict[str, Step] = {}
    for s in steps:
        if s.op not in ("Add", "AddV2") or len(s.inputs) != 2:
            continue
        for first, second in (s.inputs, s.inputs[::-1]):
            mul = by_name.get(second)
            if mul is None or mul.op != "Mul" or uses.get(mul.name) != 1:
                continue
            sub_name, alpha_name = (
                (mul.inputs[0], mul.inputs[1]) if mul.inputs[1] in consts else (mul.inputs[1], mul.inputs[0])
            )
            sub = by_name.get(sub_name)
            if alpha_name not in consts or sub is None or sub.op != "Sub" or uses.get(sub.name) != 1:
                continue
            x, abs_name = sub.inputs
            ab = by_name.get(abs_name)
            if ab is None or ab.op != "Abs" or ab.inputs != (x,) or uses.get(ab.name) != 1:
                continue
            head = by_name.get(first)
            alpha = consts[alpha_name].astype(np.float64)
            if head is not None and head.op == "Relu" and head.inputs == (x,) and uses.get(head.name) == 1:
                slope, extra = 2.0 * alpha, [head.name]
            elif first == x:
                slope, extra = 1.0 + 2.0 * alpha, []
            else:
                continue
            key = f"{s.name}/prelu_slope"
            consts[key] = slope.astype(np.float32).reshape(-1)
            replace[s.name] = Step(s.name, "_PRelu", (x, key), {})
            drop.update([mul.name, sub.name, ab.name, *extra])
            break
    new_steps = [replace.get(s.name, s).to_json() for s in steps if s.name not in drop]
    used = {r for s in new_steps for r in s["inputs"]}
    consts = {k: v for k, v in consts.items() if k in used}
    return {**program, "steps": new_steps}, consts


def _same_pads(size: int, k: int, stride: int, dilation: int) -> tuple[int, int]:
    """TensorFlow SAME padding (before, after) along one axis."""
    out = -(-size // stride)
    eff = (k - 1) * dilation + 1
    total = max((out - 1) * stride + eff - size, 0)
    return total // 2, total - total // 2


class GraphModule(nn.Module):
    """Executes a program (see program_from_graph) on NCHW tensors; weights are parameters."""

    def __init__(self, program: dict, consts: dict[str, Any]):
        super().__init__()
        self.program = program
        self.steps = [Step.from_json(s) for s in program["steps"]]
        self.input_name = program["input"]
        self.output_name = program["output"]
        used = {r for s in self.steps for r in s.inputs}
        names = sorted(n for n in used if n in consts)
        self.consts = nn.ParameterDict()
        self._keys: dict[str, str] = {}
        for i, name in enumerate(names):
            key = f"c{i}"  # ParameterDict keys must not contain '.'; TF names map to keys in order
            value = torch.as_tensor(np.asarray(consts[name])) if not torch.is_tensor(consts[name]) else consts[name]
            if not value.is_floating_point():
                raise TfjsFormatError(f"constant {name!r} is not floating point; it must be baked into its op.")
            self.consts[key] = nn.Parameter(value.clone().float(), requires_grad=False)
            self._keys[name] = key
        known = set(self._keys) | {self.input_name} | {s.name for s in self.steps}
        for s in self.steps:
            missing = [r for r in s.inputs if r not in known]
            if missing:
                raise TfjsFormatError(f"step {s.name!r} reads {missing}, which the program does not define.")

    def const_names(self) -> list[str]:
        return list(self._keys)

    def named_constants(self) -> dict[str, torch.Tensor]:
        """TF node name -> parameter."""
        return {name: self.consts[key] for name, key in self._keys.items()}

    # ----------------------------------------------------------------------------- ops

    def _conv(self, s: Step, x: torch.Tensor, w: torch.Tensor, extra: list[torch.Tensor]) -> torch.Tensor:
        strides = s.attrs.get("strides", [1, 1, 1, 1])
        dil = s.attrs.get("dilations", [1, 1, 1, 1])
        sh, sw, dh, dw = strides[1], strides[2], dil[1], dil[2]
        kh, kw = w.shape[-2:]
        padding = s.attrs.get("padding", "VALID")
        if padding == "SAME":
            pt, pb = _same_pads(x.shape[-2], kh, sh, dh)
            pl, pr = _same_pads(x.shape[-1], kw, sw, dw)
        elif padding == "EXPLICIT":
            p = s.attrs.get("explicit_paddings", [0] * 8)
            pt, pb, pl, pr = p[2], p[3], p[4], p[5]
        else:
            pt = pb = pl = pr = 0
        if pt == pb and pl == pr:
            pad = (pt, pl)
        else:
            x = F.pad(x, (pl, pr, pt, pb))
            pad = (0, 0)
        groups = x.shape[1] if "Depthwise" in s.op else 1
        bias = None
        fused = list(s.attrs.get("fused_ops", []))
        args = list(extra)
        if fused and fused[0] == "BiasAdd":
            bias = args.pop(0)
            fused = fused[1:]
        y = F.conv2d(x, w, bias, (sh, sw), pad, (dh, dw), groups)
        for f in fused:
            if f == "Relu":
                y = F.relu(y)
            elif f == "Relu6":
                y = y.clamp(0, 6)
            elif f == "Prelu":
                y = F.prelu(y, args.pop(0).reshape(-1))
            elif f == "LeakyRelu":
                y = F.leaky_relu(y, s.attrs.get("leakyrelu_alpha", 0.2))
            elif f == "Sigmoid":
                y = torch.sigmoid(y)
            elif f == "Elu":
                y = F.elu(y)
        return y

    @staticmethod
    def _operand(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """Broadcast a TF (NHWC-broadcasting) operand against an NCHW 4-D tensor."""
        if like.ndim == 4 and t.ndim == 1 and t.numel() > 1:
            return t.view(-1, 1, 1)
        return t

    def forward(self, x: torch.Tensor, stages: bool = False) -> Any:
        """x: [B, C, H, W] (the NHWC placeholder, transposed) -> the output node's tensor; with
        stages, (that tensor, the last 4-D activation at each spatial size larger than 1x1, in
        the order the sizes first appear): the network's stage outputs, for a perceptual loss."""
        env: dict[str, torch.Tensor] = {self.input_name: x}
        last_at: dict = {}
        for name, key in self._keys.items():
            env[name] = self.consts[key]
        for s in self.steps:
            a = [env[r] for r in s.inputs]
            op = s.op
            if op in _CONV_OPS:
                y = self._conv(s, a[0], a[1], a[2:])
            elif op == "_PRelu":
                y = F.prelu(a[0], a[1].to(a[0].dtype))
            elif op in _UNARY:
                t = a[0]
                y = {
                    "Relu": F.relu, "Relu6": lambda v: v.clamp(0, 6), "Abs": torch.abs, "Neg": torch.neg,
                    "Square": torch.square, "Sqrt": torch.sqrt, "Rsqrt": torch.rsqrt, "Sigmoid": torch.sigmoid,
                    "Tanh": torch.tanh, "Identity": lambda v: v, "Elu": F.elu,
                }[op](t)
            elif op in _BINARY:
                p, q = a
                if p.ndim == 4:
                    q = self._operand(q, p)
                elif q.ndim == 4:
                    p = self._operand(p, q)
                if p.is_floating_point() and q.is_floating_point() and p.dtype != q.dtype:
                    q = q.to(p.dtype)
                if op in ("Add", "AddV2", "BiasAdd"):
                    y = p + q
                elif op == "Sub":
                    y = p - q
                elif op == "Mul":
                    y = p * q
                elif op == "RealDiv":
                    y = p / q
                elif op == "Maximum":
                    y = torch.maximum(p, q)
                else:
                    y = torch.minimum(p, q)
            elif op == "AddN":
                y = a[0]
                for t in a[1:]:
                    y = y + t
            elif op in _REDUCE:
                t = a[0]
                dims = [(_NHWC_TO_NCHW[d % 4] if t.ndim == 4 else d % t.ndim) for d in s.attrs["axis"]]
                keep = bool(s.attrs.get("keep_dims", False))
                if op == "Sum":
                    y = t.sum(dim=dims, keepdim=keep)
                elif op == "Mean":
                    y = t.mean(dim=dims, keepdim=keep)
                else:
                    y = t.amax(dim=dims, keepdim=keep)
            elif op == "Pad":
                t = a[0]
                pads = s.attrs["paddings"]
                if t.ndim == 4:  # NHWC paddings -> F.pad order (W, H, C, N) on NCHW
                    order = [2, 1, 3, 0]
                else:
                    order = list(range(t.ndim - 1, -1, -1))
                flat = [v for d in order for v in pads[d]]
                y = F.pad(t, flat)
            elif op == "Reshape":
                t = a[0]
                if t.ndim == 4:
                    t = t.permute(0, 2, 3, 1)  # reshape follows TF's NHWC element order
                y = t.reshape(s.attrs["shape"])
                if y.ndim == 4:
                    y = y.permute(0, 3, 1, 2)
            elif op in ("MatMul", "_FusedMatMul"):
                p, q = a[0], a[1]
                if s.attrs.get("transpose_a"):
                    p = p.T
                if s.attrs.get("transpose_b"):
                    q = q.T
                y = p @ q.to(p.dtype)
                fused = list(s.attrs.get("fused_ops", []))
                extra = list(a[2:])
                if fused and fused[0] == "BiasAdd":
                    y = y + extra.pop(0)
                    fused = fused[1:]
                for f in fused:
                    y = {"Relu": F.relu, "Relu6": lambda v: v.clamp(0, 6), "Sigmoid": torch.sigmoid,
                         "Elu": F.elu}[f](y) if f != "Prelu" else F.prelu(y, extra.pop(0).reshape(-1))
            elif op == "Squeeze":
                t = a[0]
                dims = s.attrs.get("squeeze_dims") or [i for i, n in enumerate(t.shape) if n == 1]
                dims = sorted(((_NHWC_TO_NCHW[d % 4] if t.ndim == 4 else d % t.ndim) for d in dims), reverse=True)
                y = t
                for d in dims:
                    y = y.squeeze(d)
            else:  # pragma: no cover - rejected when the program is built
                raise TfjsFormatError(f"op {op} is not supported")
            env[s.name] = y
            if stages and y.ndim == 4 and y.shape[-1] * y.shape[-2] > 1:
                last_at[tuple(y.shape[-2:])] = y
        if stages:
            return env[self.output_name], list(last_at.values())
        return env[self.output_name]
