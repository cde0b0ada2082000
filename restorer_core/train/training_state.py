"""A training checkpoint as small verified files, so one training programme resumes across sessions.

    python -m restorer_core.train.training_state export --checkpoint RUN/checkpoint.pt --out STATE \
        [--max-file-mib 15]
    python -m restorer_core.train.training_state import --state STATE --checkpoint RUN/checkpoint.pt \
        [--allow-partial]
    python -m restorer_core.train.training_state restorer --state STATE --out candidate.safetensors

A GPU machine returns at most 8 files of 16 MiB and takes 64 MiB with the working tree, and nothing
on it outlasts a session. `export` turns train_restorer's checkpoint.pt (restorer, EMA, AdamW,
discriminator and its AdamW, global step: the cosine schedule follows it) into safetensors files no
larger than --max-file-mib plus manifest.json (sha256 of every file). Weights travel as float16,
the EMA as an 8-bit delta to them, first moments as 8-bit blockwise codes and second moments as
8-bit log codes (`quant.py`). `import` checks every hash and writes a checkpoint.pt that
train_restorer resumes from. `restorer` writes a state's EMA weights as a project-format restorer
file (what the benchmarks and the pack load), so a session's candidate is judged from its state.
Files come in tiers (`TIERS`: weights, restorer second moments, restorer first moments,
discriminator moments) and never mix them, so a machine that can return only some files returns
the weights first. `import --allow-partial` resumes from whatever tiers came back: missing moments
start fresh (AdamW rebuilds them within about 1/(1-beta) steps) and are reported; missing weights
are refused. No pickle is read: safetensors and JSON only.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple

import torch
from safetensors.torch import load_file, save_file

from ..io.atomic import atomic_path
from .quant import dequantize_log, dequantize_signed, quantize_log, quantize_signed

FORMAT = "onestep-face-restore/training-state-1"
MANIFEST = "manifest.json"
WEIGHT_SECTIONS = ("model", "disc")
OPTIMISER_SECTIONS = {"opt": "model", "d_opt": "disc"}
# What a state's files hold, in the order they are written and should be brought back: weights
# first (they are the run), then the restorer's second moments, then what AdamW rebuilds within a
# few dozen steps (first moments with beta1 0.9, the discriminator's moments with betas 0.5/0.99).
TIERS = ("weights", "restorer second moments", "restorer first moments", "discriminator moments")


def entry_tier(name: str) -> int:
    """The TIERS index of a state entry (its name as in the manifest)."""
    section = name.split("/", 1)[0]
    if section not in OPTIMISER_SECTIONS:
        return 0
    if section == "d_opt":
        return 3
    return 2 if name.endswith("/exp_avg") else 1


class StateError(ValueError):
    """A state folder that cannot be resumed from, with what to do about it."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def encode_checkpoint(ckpt: dict) -> Tuple[Dict[str, torch.Tensor], dict]:
    """(tensors to store, JSON-able description) of a train_restorer checkpoint dict."""
    tensors: Dict[str, torch.Tensor] = {}
    entries: Dict[str, dict] = {}

    def put(name: str, encoding: str, like: torch.Tensor, **parts: torch.Tensor) -> None:
        entries[name] = {"encoding": encoding, "dtype": str(like.dtype).replace("torch.", ""),
                         "shape": list(like.shape)}
        for suffix, t in parts.items():
            tensors[f"{name}:{suffix}"] = t.contiguous()

    for section in WEIGHT_SECTIONS:
        for key, t in ckpt.get(section, {}).items():
            if t.is_floating_point():
                put(f"{section}/{key}", "fp16", t, v=t.to("cpu", torch.float16))
            else:
                put(f"{section}/{key}", "raw", t, v=t.cpu())
    for key, t in ckpt.get("ema", {}).items():
        if t.is_floating_point():
            base = tensors[f"model/{key}:v"].float()
            codes, scale = quantize_signed(t.float().cpu() - base)
            put(f"ema/{key}", "int8_delta", t, codes=codes, scale=scale)
        else:
            put(f"ema/{key}", "raw", t, v=t.cpu())
    groups = {}
    for section in OPTIMISER_SECTIONS:
        if section not in ckpt:
            continue
        sd = ckpt[section]
        groups[section] = sd["param_groups"]
        for idx, st in sd["state"].items():
            for key, t in st.items():
                name = f"{section}/{idx}/{key}"
                if key == "exp_avg":
                    codes, scale = quantize_signed(t)
                    put(name, "int8", t, codes=codes, scale=scale)
                elif key == "exp_avg_sq":
                    codes, bounds = quantize_log(t)
                    put(name, "log8", t, codes=codes, bounds=bounds)
                else:
                    put(name, "raw", t, v=t.cpu())
    info = {"entries": entries, "param_groups": groups, "step": int(ckpt["step"]),
            "elapsed": float(ckpt.get("elapsed", 0.0)), "config": ckpt.get("config")}
    return tensors, info


def decode_checkpoint(tensors: Dict[str, torch.Tensor], info: dict) -> dict:
    """The checkpoint dict back (float32 where it was), loadable by train_restorer."""
    out: dict = {"step": info["step"], "elapsed": info["elapsed"]}
    if info.get("config") is not None:
        out["config"] = info["config"]
    for name, e in info["entries"].items():
        dtype = getattr(torch, e["dtype"])
        enc = e["encoding"]
        if enc in ("fp16", "raw"):
            value = tensors[f"{name}:v"].to(dtype)
        elif enc == "int8_delta":
            key = name.split("/", 1)[1]
            value = (tensors[f"model/{key}:v"].float()
                     + dequantize_signed(tensors[f"{name}:codes"], tensors[f"{name}:scale"])).to(dtype)
        elif enc == "int8":
            value = dequantize_signed(tensors[f"{name}:codes"], tensors[f"{name}:scale"]).to(dtype)
        elif enc == "log8":
            value = dequantize_log(tensors[f"{name}:codes"], tensors[f"{name}:bounds"]).to(dtype)
        else:
            raise StateError(f"unknown encoding {enc!r} for {name}: this state was written by a newer version")
        value = value.view(e["shape"]) if value.numel() else value.reshape(e["shape"])
        section, rest = name.split("/", 1)
        if section in OPTIMISER_SECTIONS:
            idx, key = rest.split("/", 1)
            opt = out.setdefault(section, {"state": {}, "param_groups": info["param_groups"][section]})
            opt["state"].setdefault(int(idx), {})[key] = value
        else:
            out.setdefault(section, {})[rest] = value
    return out


def _pack(tensors: Dict[str, torch.Tensor], max_bytes: int) -> Iterable[Tuple[int, Dict[str, torch.Tensor]]]:
    """(tier, tensors) grouped into files of at most max_bytes, in TIERS order; a file holds one
    tier and a tensor's parts stay together."""
    by_entry: Dict[str, Dict[str, torch.Tensor]] = {}
    for name, t in tensors.items():
        by_entry.setdefault(name.split(":")[0], {})[name] = t
    group: Dict[str, torch.Tensor] = {}
    size, tier = 0, 0
    for entry in sorted(by_entry, key=entry_tier):  # stable: keeps each tier's own order
        parts = by_entry[entry]
        n = sum(t.numel() * t.element_size() for t in parts.values()) + 1024
        if n > max_bytes:
            raise StateError(f"one tensor needs {n} bytes, more than a state file may hold ({max_bytes}); "
                             "raise --max-file-mib")
        if group and (size + n > max_bytes or entry_tier(entry) != tier):
            yield tier, group
            group, size = {}, 0
        tier = entry_tier(entry)
        group.update(parts)
        size += n
    if group:
        yield tier, group


def export_state(ckpt: dict, out_dir: Path, max_file_bytes: int = 15 << 20, overwrite: bool = False) -> dict:
    """Write ckpt as state files + manifest into out_dir; returns the manifest."""
    out_dir = Path(out_dir)
    if (out_dir / MANIFEST).exists() and not overwrite:
        raise StateError(f"{out_dir} already holds a training state; choose another folder or pass --overwrite")
    out_dir.mkdir(parents=True, exist_ok=True)
    tensors, info = encode_checkpoint(ckpt)
    files = []
    for i, (tier, group) in enumerate(_pack(tensors, max_file_bytes - 64 * 1024)):
        path = out_dir / f"state-{i:02d}.safetensors"
        with atomic_path(path) as tmp:
            save_file(group, tmp, metadata={"format": FORMAT})
        files.append({"name": path.name, "bytes": path.stat().st_size, "sha256": _sha256(path),
                      "tier": tier, "tensors": sorted(group)})
    manifest = {"format": FORMAT, **info, "files": files}
    with atomic_path(out_dir / MANIFEST) as tmp:
        Path(tmp).write_text(json.dumps(manifest, indent=1))
    return manifest


@dataclass
class PartialReport:
    """What an import of a state with missing files had to start afresh."""

    missing_files: List[str] = field(default_factory=list)
    zeroed_first_moments: Dict[str, int] = field(default_factory=dict)  # section -> parameters
    fresh_parameters: Dict[str, int] = field(default_factory=dict)  # section -> parameters

    def lines(self) -> List[str]:
        out = [f"missing: {', '.join(self.missing_files)}"] if self.missing_files else []
        for section, n in self.zeroed_first_moments.items():
            out.append(f"{section}: first moments of {n} parameters start at 0 (second moments and steps kept)")
        for section, n in self.fresh_parameters.items():
            out.append(f"{section}: {n} parameters start with fresh AdamW moments")
        return out


def _fill_optimiser(section: str, opt: dict, info: dict, report: PartialReport) -> dict:
    """An optimiser state dict whose every parameter state AdamW can load: a missing first moment
    becomes 0 (its step and second moment kept: the update ramps in over ~1/(1-beta1) steps); a
    parameter without its second moment or step starts afresh (no state: AdamW's bias correction)."""
    expected = {int(name.split("/")[1]) for name in info["entries"] if name.startswith(section + "/")}
    state, zeroed, fresh = {}, 0, 0
    for idx in sorted(expected):
        st = opt["state"].get(idx, {})
        if "exp_avg_sq" in st and "step" in st:
            if "exp_avg" not in st:
                st = {**st, "exp_avg": torch.zeros_like(st["exp_avg_sq"])}
                zeroed += 1
            state[idx] = st
        else:
            fresh += 1
    if zeroed:
        report.zeroed_first_moments[section] = zeroed
    if fresh:
        report.fresh_parameters[section] = fresh
    return {"state": state, "param_groups": opt["param_groups"]}


def import_state(state_dir: Path, allow_partial: bool = False, report: Optional[PartialReport] = None) -> dict:
    """The checkpoint dict of a state folder, after checking the format and every file's sha256.

    allow_partial: files that did not come back are accepted as long as every weight (restorer,
    EMA, discriminator) is there; the optimisers' missing moments start afresh (_fill_optimiser)
    and `report` says what was missing.
    """
    state_dir = Path(state_dir)
    mpath = state_dir / MANIFEST
    if not mpath.is_file():
        raise StateError(f"{state_dir} holds no {MANIFEST}: give the folder that `export` wrote")
    manifest = json.loads(mpath.read_text())
    if manifest.get("format") != FORMAT:
        raise StateError(f"{mpath} is not a training state of this project (format {manifest.get('format')!r})")
    tensors: Dict[str, torch.Tensor] = {}
    report = report if report is not None else PartialReport()
    for f in manifest["files"]:
        path = state_dir / f["name"]
        if not path.is_file():
            if allow_partial:
                report.missing_files.append(f["name"])
                continue
            raise StateError(f"{path} is missing: bring every file the manifest lists "
                             "(or pass --allow-partial to resume with fresh optimiser moments where they are missing)")
        if _sha256(path) != f["sha256"]:
            raise StateError(f"{path} does not match its sha256 in the manifest (a broken or mixed-up "
                             "transfer): copy it again")
        tensors.update(load_file(str(path)))
    if not report.missing_files:
        return decode_checkpoint(tensors, manifest)
    have = {name.split(":")[0] for name in tensors}
    lost = [n for n in manifest["entries"] if entry_tier(n) == 0 and n not in have]
    if lost:
        raise StateError(f"{len(lost)} weight tensors (e.g. {lost[0]}) are in the missing files "
                         f"{', '.join(report.missing_files)}: a run cannot resume without its weights; "
                         "bring those files")
    info = {**manifest, "entries": {n: e for n, e in manifest["entries"].items() if n in have}}
    ckpt = decode_checkpoint(tensors, info)
    for section in OPTIMISER_SECTIONS:
        if section in manifest["param_groups"]:
            opt = ckpt.get(section, {"state": {}, "param_groups": manifest["param_groups"][section]})
            ckpt[section] = _fill_optimiser(section, opt, manifest, report)
    return ckpt


def state_restorer(ckpt: dict):
    """The EMA restorer of a decoded state, built as train_restorer builds it (its stored config)."""
    from .train_restorer import LossWeights, TrainConfig, build_model

    raw = json.loads(ckpt["config"]) if isinstance(ckpt.get("config"), str) else dict(ckpt.get("config") or {})
    weights = LossWeights(**raw.pop("weights", {}))
    known = {f for f in TrainConfig.__dataclass_fields__}
    cfg = TrainConfig(**{k: v for k, v in raw.items() if k in known}, weights=weights)
    cfg.init = None  # the state holds every weight
    model = build_model(cfg, "cpu")
    missing, unexpected = model.load_state_dict(ckpt["ema"], strict=False)
    if missing or unexpected:
        raise StateError(f"the state's EMA does not fit the restorer its config builds "
                         f"(missing {len(missing)}, unexpected {len(unexpected)} tensors)")
    return model.eval()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser("export", help="checkpoint.pt -> state files + manifest")
    e.add_argument("--checkpoint", required=True)
    e.add_argument("--out", required=True)
    e.add_argument("--max-file-mib", type=float, default=15.0)
    e.add_argument("--overwrite", action="store_true")
    i = sub.add_parser("import", help="state files -> checkpoint.pt to resume from")
    i.add_argument("--state", required=True)
    i.add_argument("--checkpoint", required=True)
    i.add_argument("--overwrite", action="store_true")
    i.add_argument("--allow-partial", action="store_true",
                   help="resume although files are missing, if every weight is there (fresh moments where not)")
    r = sub.add_parser("restorer", help="state files -> the EMA restorer as a project-format file")
    r.add_argument("--state", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--allow-partial", action="store_true",
                   help="build it although optimiser files are missing (it needs the weights only)")
    a = p.parse_args(argv)
    try:
        if a.command == "export":
            ckpt = torch.load(a.checkpoint, map_location="cpu", weights_only=True)
            m = export_state(ckpt, Path(a.out), int(a.max_file_mib * (1 << 20)), a.overwrite)
            total = sum(f["bytes"] for f in m["files"])
            print(f"step {m['step']}: {len(m['files'])} files, {total / 2**20:.1f} MiB in {a.out}")
            for tier, name in enumerate(TIERS):
                files = [f for f in m["files"] if f["tier"] == tier]
                if files:
                    mib = sum(f["bytes"] for f in files) / 2**20
                    print(f"  {name}: {files[0]['name']}..{files[-1]['name']} ({mib:.1f} MiB)")
        elif a.command == "restorer":
            from ..loaders.project_format import save_restorer

            dest = Path(a.out)
            if dest.exists():
                raise StateError(f"{dest} exists; choose another name (it is never overwritten)")
            ckpt = import_state(Path(a.state), a.allow_partial)
            model = state_restorer(ckpt)
            config = ckpt.get("config")
            config = json.loads(config) if isinstance(config, str) else config
            save_restorer(dest, model, info={"training": {"config": config, "step": ckpt["step"],
                                                          "minutes_trained": ckpt.get("elapsed", 0.0) / 60,
                                                          "weights": "EMA of the training state"}})
            print(f"step {ckpt['step']}: wrote the EMA restorer to {dest}")
        else:
            dest = Path(a.checkpoint)
            if dest.exists() and not a.overwrite:
                raise StateError(f"{dest} exists; pass --overwrite to replace it")
            report = PartialReport()
            ckpt = import_state(Path(a.state), a.allow_partial, report)
            for line in report.lines():
                print(f"partial state: {line}")
            dest.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(dest) as tmp:
                torch.save(ckpt, tmp)
            print(f"step {ckpt['step']}: wrote {dest}")
    except (StateError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
