"""Convert a TF.js face-recognition graph model to the project's safetensors file.

    python -m restorer_core.face_id.convert --json models/mobilefacenet.json \
        --out restorer_core/assets/models/mobilefacenet.safetensors
    python -m restorer_core.face_id.convert --preset faceres --json models/faceres.json --out faceres.safetensors

A preset says which output is the embedding, the input range the network was trained on and how
its input is cut from the project's FFHQ-aligned crops (PRESETS).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import torch

from ..errors import RestorerError
from .mobilefacenet import ARCFACE_FRAMING, INPUT_OFFSET, INPUT_SCALE, INPUT_SIZE, MobileFaceNet, save_face_id
from .tfjs import read_graph_model


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass(frozen=True)
class FaceIdPreset:
    """How one published face-ID graph is run: its embedding output, input range, framing."""

    output: Optional[str] = None  # None: the graph's only output
    input_scale: float = INPUT_SCALE  # network input = crop (RGB 0..1) * scale + offset
    input_offset: float = INPUT_OFFSET
    framing: str = ARCFACE_FRAMING


PRESETS = {
    # sirius-ai/MobileFaceNet_TF: ArcFace-aligned 112 px, (x - 127.5) / 128
    "mobilefacenet": FaceIdPreset(),
    # HSE FaceRes (av-savchenko/HSE_FaceRec_tf, MobileNet on VGGFace2), as @vladmandic/human runs it:
    # the face box resized to 224 px, RGB 0..255, the 1024-d global-pooling features. Centre 80% of
    # the FFHQ crop: the framing that verified best on the validation people (AUC 0.991 vs 0.990).
    "faceres": FaceIdPreset(output="global_pooling/Mean", input_scale=255.0, input_offset=0.0,
                            framing="centre:0.8"),
}


def convert_tfjs(
    json_path: Union[str, os.PathLike], out: Union[str, os.PathLike], dtype: torch.dtype = torch.float32,
    source: Optional[str] = None, overwrite: bool = False, preset: str = "mobilefacenet",
) -> Path:
    """Read a TF.js graph model, build the torch module, and save it to `out` (safetensors)."""
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {', '.join(PRESETS)}, got {preset!r}")
    json_path, out = Path(json_path), Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists; choose another --out or pass --overwrite.")
    if not out.parent.is_dir() or not os.access(out.parent, os.W_OK):
        raise PermissionError(f"cannot write to folder {out.parent}; create it or choose another --out.")
    graph = read_graph_model(json_path)
    p = PRESETS[preset]
    shape = graph.placeholder_shape(graph.placeholders[0]) if len(graph.placeholders) == 1 else None
    size = int(shape[1]) if shape and len(shape) == 4 and shape[1] > 0 else INPUT_SIZE
    model = MobileFaceNet.from_graph(graph, metadata={
        "input_size": size, "input_scale": p.input_scale, "input_offset": p.input_offset, "framing": p.framing},
        output=p.output)
    doc = json.loads(json_path.read_text(encoding="utf-8"))
    shards = [json_path.parent / p for g in doc["weightsManifest"] for p in g.get("paths", [])]
    extra = {
        "source": source or json_path.name,
        "source_sha256": {p.name: _sha256(p) for p in [json_path, *shards]},
        "converted_by": "restorer_core.face_id.convert",
        "weights_dtype": str(dtype).replace("torch.", ""),
        "preset": preset,
    }
    return save_face_id(model, out, dtype=dtype, extra=extra, overwrite=overwrite)


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m restorer_core.face_id.convert", description=__doc__.split("\n")[1])
    parser.add_argument("--json", required=True, help="the TF.js graph model .json (its .bin shards next to it)")
    parser.add_argument("--out", required=True, help="safetensors file to write (must not exist)")
    parser.add_argument("--dtype", choices=["float32", "float16"], default="float32", help="stored weight precision")
    parser.add_argument("--source", default=None, help="provenance note stored in the file's metadata")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="mobilefacenet",
                        help="which network it is: embedding output, input range and framing (default mobilefacenet)")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    args = parser.parse_args(argv)
    try:
        path = convert_tfjs(args.json, args.out, getattr(torch, args.dtype), args.source, args.overwrite, args.preset)
    except (RestorerError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
