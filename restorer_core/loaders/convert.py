"""Official weights -> the project's single-safetensors restorer format.

    python -m restorer_core.loaders.convert instantrestore final_model_ckpt.pt out.safetensors
    python -m restorer_core.loaders.convert osdface pretrained/ out.safetensors --base sd21-base/

Everything is loaded and checked before anything is written; the output is written atomically
and an existing file is never replaced.  LoRA is fused, so the result loads without peft,
transformers or the original code.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

import torch

from ..errors import CheckpointError
from .keys import atomic_target

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def _save(restorer, dst: Path, fmt: str, dtype: torch.dtype, overwrite: bool) -> Path:
    from .project_format import save_restorer

    report = restorer.source.load_report
    info = {"converted_from": fmt, "source": restorer.config.notes.get("source", {}),
            "load_report": report.summary() if report is not None else ""}
    try:
        save_restorer(dst, restorer, info, dtype=dtype, overwrite=overwrite)
    except FileExistsError as exc:  # raced with someone else creating it
        raise CheckpointError(str(exc)) from exc
    return dst


def convert_instantrestore(src: Path, dst: Path, *, overwrite: bool = False,
                           dtype: torch.dtype = torch.float16, config=None) -> Path:
    """Official InstantRestore .pt -> project .safetensors at `dst`."""
    from .instantrestore import load_instantrestore

    dst = atomic_target(Path(dst), overwrite)
    restorer = load_instantrestore(Path(src), config=config)
    return _save(restorer, dst, "instantrestore-official", dtype, overwrite)


def convert_osdface(folder: Path, base: Path, dst: Path, *, vae_source: Optional[Path] = None,
                    overwrite: bool = False, dtype: torch.dtype = torch.float16, config=None) -> Path:
    """Official OSDFace folder + SD 2.1-base -> project .safetensors at `dst`."""
    from .osdface import load_osdface

    dst = atomic_target(Path(dst), overwrite)
    restorer = load_osdface(Path(folder), Path(base), config=config, vae_source=vae_source)
    return _save(restorer, dst, "osdface-official", dtype, overwrite)


def convert(source: Path, out: Path, base: Optional[Path] = None, **kwargs) -> Path:
    """Pick the converter from what `source` is: a .pt/.pth file or an OSDFace folder."""
    source = Path(source)
    if source.is_dir():
        if base is None:
            raise CheckpointError("converting OSDFace needs --base: an SD 2.1-base diffusers folder "
                                  "or single .safetensors checkpoint")
        return convert_osdface(source, Path(base), out, **kwargs)
    if source.suffix in (".pt", ".pth", ".ckpt"):
        return convert_instantrestore(source, out, **kwargs)
    raise CheckpointError(f"{source}: expected an InstantRestore .pt file or an OSDFace folder")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m restorer_core.loaders.convert",
                                description="Convert official InstantRestore / OSDFace weights to "
                                            "this project's .safetensors format.")
    p.add_argument("kind", choices=["instantrestore", "osdface", "auto"])
    p.add_argument("source", type=Path, help="InstantRestore .pt, or the OSDFace folder")
    p.add_argument("out", type=Path, help="output .safetensors (must not exist)")
    p.add_argument("--base", type=Path, help="OSDFace: SD 2.1-base folder or single file")
    p.add_argument("--vae", type=Path, help="OSDFace: a separate VAE (folder or file)")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="fp16")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
    dtype = DTYPES[args.dtype]
    try:
        if args.kind == "instantrestore":
            out = convert_instantrestore(args.source, args.out, dtype=dtype)
        elif args.kind == "osdface":
            if args.base is None:
                raise CheckpointError("osdface needs --base (SD 2.1-base folder or single file)")
            out = convert_osdface(args.source, args.base, args.out, vae_source=args.vae, dtype=dtype)
        else:
            out = convert(args.source, args.out, base=args.base, dtype=dtype)
    except CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
