"""Convert a TF.js MobileFaceNet graph model to the project's safetensors file.

    python -m restorer_core.face_id.convert --json models/mobilefacenet.json \
        --out restorer_core/assets/models/mobilefacenet.safetensors
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Optional, Union

import torch

from ..errors import RestorerError
from .mobilefacenet import MobileFaceNet, save_face_id
from .tfjs import read_graph_model


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def convert_tfjs(
    json_path: Union[str, os.PathLike], out: Union[str, os.PathLike], dtype: torch.dtype = torch.float32,
    source: Optional[str] = None, overwrite: bool = False,
) -> Path:
    """Read a TF.js graph model, build the torch module, and save it to `out` (safetensors)."""
    json_path, out = Path(json_path), Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists; choose another --out or pass --overwrite.")
    if not out.parent.is_dir() or not os.access(out.parent, os.W_OK):
        raise PermissionError(f"cannot write to folder {out.parent}; create it or choose another --out.")
    graph = read_graph_model(json_path)
    model = MobileFaceNet.from_graph(graph)
    doc = json.loads(json_path.read_text(encoding="utf-8"))
    shards = [json_path.parent / p for g in doc["weightsManifest"] for p in g.get("paths", [])]
    extra = {
        "source": source or json_path.name,
        "source_sha256": {p.name: _sha256(p) for p in [json_path, *shards]},
        "converted_by": "restorer_core.face_id.convert",
        "weights_dtype": str(dtype).replace("torch.", ""),
    }
    return save_face_id(model, out, dtype=dtype, extra=extra, overwrite=overwrite)


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m restorer_core.face_id.convert", description=__doc__.split("\n")[1])
    parser.add_argument("--json", required=True, help="the TF.js graph model .json (its .bin shards next to it)")
    parser.add_argument("--out", required=True, help="safetensors file to write (must not exist)")
    parser.add_argument("--dtype", choices=["float32", "float16"], default="float32", help="stored weight precision")
    parser.add_argument("--source", default=None, help="provenance note stored in the file's metadata")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    args = parser.parse_args(argv)
    try:
        path = convert_tfjs(args.json, args.out, getattr(torch, args.dtype), args.source, args.overwrite)
    except (RestorerError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
