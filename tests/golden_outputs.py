"""Pixels recorded before the one-restore-path redesign (issue 9), and how to recompute them.

`tests/data/golden_tiny.npz` holds the outputs of seeded tiny restorers (three method kinds,
every conditioning mode) and `tests/data/golden_family.npz` what `restore` made of
examples/family_10045.png with the embedded default model. test_golden.py recomputes both with
the current code. Re-record only for an intended change of output:

    PYTHONPATH=. python tests/golden_outputs.py
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
TINY_FILE = HERE / "data" / "golden_tiny.npz"
FAMILY_FILE = HERE / "data" / "golden_family.npz"
FAMILY_INPUT = REPO / "examples" / "family_10045.png"
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))


def _gen(seed: int) -> torch.Generator:
    return torch.Generator("cpu").manual_seed(seed)


def _faces(n: int, size: int, seed: int) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=_gen(seed))


def tensors_digest(model: torch.nn.Module) -> str:
    """sha256 of the initial weights (names sorted), so a changed initialisation is told apart
    from a changed computation."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().float().contiguous().numpy().tobytes())
    return h.hexdigest()


def tiny_models() -> dict:
    """name -> (config builder); every model is built with torch.manual_seed(0)."""
    from official_fixtures import tiny_config as official_tiny
    from tiny_models import tiny_config

    return {
        "hybrid": lambda: tiny_config(),
        "hybrid_noisy": lambda: tiny_config(noisy=True),
        "instantrestore": lambda: official_tiny("instantrestore"),
        "osdface": lambda: official_tiny("osdface"),
    }


# (model, mode, with references): the cases whose meaning the redesign keeps. OSDFace-type
# models with a bank in "auto" are not here: that case was wrong before (references injected).
TINY_CASES = (
    ("hybrid", "auto", False), ("hybrid", "auto", True), ("hybrid", "references", True),
    ("hybrid", "visual_prompt", False), ("hybrid", "both", True), ("hybrid", "none", False),
    ("hybrid_noisy", "auto", True), ("hybrid_noisy", "none", False),
    ("instantrestore", "auto", True), ("instantrestore", "references", True),
    ("instantrestore", "none", False),
    ("osdface", "auto", False), ("osdface", "visual_prompt", False), ("osdface", "none", False),
)


def build_tiny(name: str):
    from restorer_core.models.restorer import OneStepRestorer

    torch.manual_seed(0)
    return OneStepRestorer(tiny_models()[name]()).eval()


def tiny_inputs(model) -> tuple:
    """(faces [2, 3, S, S], references [2, 3, S, S]) for a model's resolution."""
    res = model.config.resolution
    return _faces(2, res, 10), _faces(2, res, 11)


def run_tiny_case(model, mode: str, with_refs: bool, restore=None) -> np.ndarray:
    """One case's output; `restore(model, lq, refs, mode, generators)` defaults to calling it."""
    lq, ref_faces = tiny_inputs(model)
    with torch.no_grad():
        kv = model.encode_references(ref_faces, generator=_gen(1)) if with_refs else None
        gens = [_gen(2), _gen(3)]
        out = model(lq, kv, mode, generator=gens) if restore is None else restore(model, lq, kv, mode, gens)
    return out.numpy()


def record_tiny() -> dict:
    out, models = {}, {}
    for name, mode, with_refs in TINY_CASES:
        if name not in models:
            models[name] = build_tiny(name)
            out[f"{name}/weights"] = np.array(tensors_digest(models[name]))
        out[f"{name}/{mode}/{'refs' if with_refs else 'norefs'}"] = run_tiny_case(models[name], mode, with_refs)
    return out


def restore_family_with_cli(out_dir: Path) -> np.ndarray:
    """`restore examples/family_10045.png` with the embedded default model (the README's first
    command, on the CPU, speed auto) -> the written image's pixels."""
    from restorer_core.cli import main
    from restorer_core.io.imageio import load_image

    # the settings of the recording spelled out, so that a later change of a default does not
    # read as a change of the restore path
    code = main(["restore", str(FAMILY_INPUT), "--out", str(out_dir), "--quiet", "--device", "cpu",
                 "--strength", "1", "--speed", "auto", "--mode", "auto", "--seed", "0", "--dtype", "fp32"])
    if code != 0:
        raise RuntimeError(f"restore exited with {code}")
    return load_image(out_dir / "family_10045_restored.png").pixels


def family_delta(restored: np.ndarray) -> np.ndarray:
    """restored - input as int16 (zero outside the faces: it compresses to almost nothing)."""
    from restorer_core.io.imageio import load_image

    original = load_image(FAMILY_INPUT).pixels
    return restored.astype(np.int16) - original.astype(np.int16)


def main() -> None:
    import tempfile

    from restorer_core.model_zoo import DEFAULT_MODEL_PATH
    from safetensors import safe_open

    torch.set_num_threads(1)
    TINY_FILE.parent.mkdir(exist_ok=True)
    np.savez_compressed(TINY_FILE, **record_tiny())
    with safe_open(str(DEFAULT_MODEL_PATH), framework="pt") as f:
        weights = (f.metadata() or {}).get("weights_sha256", "")
    with tempfile.TemporaryDirectory() as tmp:
        delta = family_delta(restore_family_with_cli(Path(tmp)))
    np.savez_compressed(FAMILY_FILE, delta=delta, weights_sha256=np.array(weights))
    print(f"wrote {TINY_FILE} and {FAMILY_FILE} (default model weights {weights[:16]})")


if __name__ == "__main__":
    main()
