"""Reader for the TensorFlow.js graph-model format, in pure numpy (no tensorflow).

A graph model is a JSON file (``format: graph-model``) with ``modelTopology`` (a GraphDef as
JSON: nodes with op, inputs and attributes) and ``weightsManifest`` (groups of binary shard
files and the ordered list of tensors packed in them: name, shape, dtype and an optional
``quantization`` of uint8/uint16 with scale/min or float16). ``read_graph_model`` returns the
nodes with decoded attributes and every weight as a numpy array in TensorFlow's layout.
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from ..errors import CheckpointError

_DTYPES = {
    "float32": np.float32,
    "int32": np.int32,
    "bool": np.bool_,
    "float16": np.float16,
    "uint8": np.uint8,
    "uint16": np.uint16,
    "int8": np.int8,
    "int16": np.int16,
}
_TF_DTYPES = {
    "DT_FLOAT": np.float32,
    "DT_INT32": np.int32,
    "DT_BOOL": np.bool_,
    "DT_HALF": np.float16,
    "DT_INT64": np.int64,
}


class TfjsFormatError(CheckpointError):
    """A TF.js model file that cannot be read (bad JSON, missing or short shard, unknown dtype)."""


@dataclass(frozen=True)
class GraphNode:
    """One GraphDef node: inputs are node names (":k" output suffixes and "^" control marks kept)."""

    name: str
    op: str
    inputs: tuple[str, ...] = ()
    attrs: dict[str, Any] = field(default_factory=dict)


@dataclass
class TfjsGraph:
    """A decoded graph model: nodes in file order, weights by node name (TensorFlow layouts)."""

    nodes: list[GraphNode]
    weights: dict[str, np.ndarray]
    signature: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    def node(self, name: str) -> GraphNode:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    @property
    def placeholders(self) -> list[str]:
        return [n.name for n in self.nodes if n.op == "Placeholder"]

    def placeholder_shape(self, name: str) -> Optional[tuple]:
        """The declared shape of an input placeholder (NHWC, -1 for any), or None."""
        shape = self.node(name).attrs.get("shape")
        return tuple(shape) if shape else None

    @property
    def outputs(self) -> list[str]:
        """Nodes no other node consumes (the graph's outputs), in file order."""
        used = {_source(i) for n in self.nodes for i in n.inputs}
        return [n.name for n in self.nodes if n.name not in used and n.op not in ("Const", "Placeholder")]


def _source(ref: str) -> str:
    """Node name of an input reference ('^ctrl', 'node:1' -> 'node')."""
    return ref.lstrip("^").split(":")[0]


def _decode_attr(value: dict) -> Any:
    """A GraphDef AttrValue (JSON form) -> Python value; strings are base64 in the JSON."""
    if not isinstance(value, dict) or not value:
        return None
    if "s" in value:
        return base64.b64decode(value["s"]).decode("utf-8", errors="replace")
    if "i" in value:
        return int(value["i"])
    if "f" in value:
        return float(value["f"])
    if "b" in value:
        return bool(value["b"])
    if "type" in value:
        return value["type"]
    if "shape" in value:
        dims = value["shape"].get("dim", [])
        return tuple(int(d.get("size", -1)) for d in dims) if not value["shape"].get("unknownRank") else None
    if "list" in value:
        lst = value["list"]
        if "s" in lst:
            return [base64.b64decode(s).decode("utf-8", errors="replace") for s in lst["s"]]
        if "i" in lst:
            return [int(v) for v in lst["i"]]
        if "f" in lst:
            return [float(v) for v in lst["f"]]
        if "b" in lst:
            return [bool(v) for v in lst["b"]]
        if "type" in lst:
            return list(lst["type"])
        return []
    if "tensor" in value:
        return _decode_inline_tensor(value["tensor"])
    return None


def _decode_inline_tensor(t: dict) -> np.ndarray:
    """A small TensorProto stored inline in a Const node's 'value' attribute."""
    dtype = _TF_DTYPES.get(t.get("dtype", ""))
    if dtype is None:
        raise TfjsFormatError(f"inline tensor of unsupported dtype {t.get('dtype')!r}")
    shape = tuple(int(d.get("size", 1)) for d in t.get("tensorShape", {}).get("dim", []))
    for key in ("floatVal", "intVal", "boolVal", "int64Val", "halfVal"):
        if key in t:
            vals = np.asarray(t[key], dtype=dtype)
            n = int(np.prod(shape)) if shape else 1
            if vals.size == 1 and n > 1:
                vals = np.full(n, vals[0], dtype=dtype)
            return vals.reshape(shape)
    if "tensorContent" in t:
        return np.frombuffer(base64.b64decode(t["tensorContent"]), dtype=dtype).reshape(shape).copy()
    return np.zeros(shape, dtype=dtype)


def dequantize(raw: bytes, spec: dict) -> np.ndarray:
    """Decode one manifest entry's bytes into an array of its shape and (original) dtype.

    Quantized entries store uint8/uint16 codes q with value = q * scale + min (TF.js affine
    quantization), or float16 values; the result has the entry's declared dtype.
    """
    name = spec.get("name", "?")
    shape = tuple(int(s) for s in spec.get("shape", []))
    dtype = spec.get("dtype", "float32")
    if dtype not in _DTYPES:
        raise TfjsFormatError(f"weight {name!r} has unsupported dtype {dtype!r}")
    quant = spec.get("quantization")
    if quant:
        qdtype = quant.get("dtype")
        if qdtype not in ("uint8", "uint16", "float16"):
            raise TfjsFormatError(f"weight {name!r} has unsupported quantization dtype {qdtype!r}")
        codes = np.frombuffer(raw, dtype=_DTYPES[qdtype])
        if qdtype == "float16":
            values = codes.astype(np.float32)
        else:
            if "scale" not in quant or "min" not in quant:
                raise TfjsFormatError(f"weight {name!r}: {qdtype} quantization needs 'scale' and 'min'")
            values = codes.astype(np.float32) * np.float32(quant["scale"]) + np.float32(quant["min"])
        if dtype == "int32":
            values = np.round(values)
        return values.astype(_DTYPES[dtype]).reshape(shape)
    return np.frombuffer(raw, dtype=_DTYPES[dtype]).reshape(shape).copy()


def _entry_nbytes(spec: dict) -> int:
    n = int(np.prod([int(s) for s in spec.get("shape", [])])) if spec.get("shape") else 1
    quant = spec.get("quantization")
    dtype = quant["dtype"] if quant and "dtype" in quant else spec.get("dtype", "float32")
    if dtype not in _DTYPES:
        raise TfjsFormatError(f"weight {spec.get('name')!r} has unsupported dtype {dtype!r}")
    return n * np.dtype(_DTYPES[dtype]).itemsize


def read_graph_model(json_path: Union[str, os.PathLike]) -> TfjsGraph:
    """Read a TF.js graph model (model.json + its shard files next to it)."""
    json_path = Path(json_path)
    if not json_path.is_file():
        raise TfjsFormatError(f"TF.js model file {json_path} not found; pass the path of the model's .json.")
    try:
        doc = json.loads(json_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TfjsFormatError(f"{json_path} is not valid JSON ({exc}); re-download the model.") from exc
    if not isinstance(doc, dict) or "modelTopology" not in doc or "weightsManifest" not in doc:
        raise TfjsFormatError(
            f"{json_path} is not a TF.js graph model (needs 'modelTopology' and 'weightsManifest')."
        )
    if doc.get("format", "graph-model") != "graph-model":
        raise TfjsFormatError(f"{json_path} has format {doc.get('format')!r}; only 'graph-model' is supported.")
    topo = doc["modelTopology"]
    nodes = [
        GraphNode(
            name=n["name"],
            op=n["op"],
            inputs=tuple(n.get("input", [])),
            attrs={k: _decode_attr(v) for k, v in n.get("attr", {}).items()},
        )
        for n in topo.get("node", [])
    ]
    weights: dict[str, np.ndarray] = {}
    for gi, group in enumerate(doc["weightsManifest"]):
        data = bytearray()
        for rel in group.get("paths", []):
            shard = json_path.parent / rel
            if not shard.is_file():
                raise TfjsFormatError(
                    f"weight shard {shard} (listed in {json_path.name}) is missing; "
                    "put every .bin file of the model next to its .json."
                )
            data += shard.read_bytes()
        offset = 0
        for spec in group.get("weights", []):
            nbytes = _entry_nbytes(spec)
            if offset + nbytes > len(data):
                raise TfjsFormatError(
                    f"weight shards of group {gi} in {json_path.name} are too short: {spec.get('name')!r} needs bytes "
                    f"{offset}..{offset + nbytes} but the shards hold {len(data)}; the download is truncated or "
                    "the wrong .bin file is next to the .json."
                )
            weights[spec["name"]] = dequantize(bytes(data[offset:offset + nbytes]), spec)
            offset += nbytes
        if offset != len(data):
            raise TfjsFormatError(
                f"weight shards of group {gi} in {json_path.name} hold {len(data)} bytes but the manifest "
                f"describes {offset}; the .bin files do not belong to this .json."
            )
    for n in nodes:  # small constants may be stored inline instead of in a shard
        if n.op == "Const" and n.name not in weights and isinstance(n.attrs.get("value"), np.ndarray):
            weights[n.name] = n.attrs["value"]
    meta = {k: v for k, v in doc.items() if k not in ("modelTopology", "weightsManifest")}
    signature = doc.get("signature") or topo.get("signature") or {}
    return TfjsGraph(nodes=nodes, weights=weights, signature=signature, meta=meta)
