"""Test helpers around the stand-in: load the pack as ComfyUI does, make a tiny restorer.

ComfyUI imports a custom node folder as a package named after its path
(nodes.load_custom_node: spec_from_file_location(path.replace(".", "_x_"), <folder>/__init__.py)),
so the pack's modules only work through relative imports; loading it the same way here checks that.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
TINY_RES = 32


def load_pack(root: Path = REPO_ROOT):
    """Import the node pack the way ComfyUI's load_custom_node does (once per process)."""
    module_path = str(root)
    name = module_path.replace(".", "_x_")
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, str(root / "__init__.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def core(pack, dotted: str):
    """A restorer_core module as the pack sees it (the pack imports its own copy, relatively)."""
    return importlib.import_module(f"{pack.__name__}.restorer_core.{dotted}")


def tiny_config(pack, **overrides):
    """A hybrid restorer (visual prompt + reference attention) small enough for 2 CPU cores."""
    config_mod = core(pack, "models.config")
    unet = dict(
        sample_size=TINY_RES // 4, in_channels=4, out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(16, 32), layers_per_block=1, attention_head_dim=(1, 2),
        cross_attention_dim=16, use_linear_projection=True, norm_num_groups=8,
    )
    vae = dict(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3, block_out_channels=(8, 8, 16), layers_per_block=1,
        latent_channels=4, norm_num_groups=4, sample_size=TINY_RES, scaling_factor=1.0,
    )
    vre = dict(resolution=TINY_RES, in_channels=3, ch=8, ch_mult=(1, 2), num_res_blocks=1,
               codebook_size=16, codebook_dim=8, out_dim=16, tokens=77)
    fields = dict(method="hybrid", resolution=TINY_RES, unet=unet, vae=vae, vre=vre, timestep=399,
                  add_noise=False, latent_sample="mode", train_input=True, use_adain=True)
    fields.update(overrides)
    return config_mod.RestorerConfig(**fields)


def write_tiny_restorer(pack, path: Path, seed: int = 0, **overrides) -> Path:
    """Save a random-weight tiny restorer in the project format (fp32, so results are exact)."""
    import torch

    restorer_mod = core(pack, "models.restorer")
    fmt = core(pack, "loaders.project_format")
    torch.manual_seed(seed)
    model = restorer_mod.OneStepRestorer(tiny_config(pack, **overrides)).eval()
    with torch.no_grad():
        model.prompt_embeds.normal_()
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt.save_restorer(path, model, info={"note": "random weights for tests"}, dtype=torch.float32)
    return path


def write_random_identity(pack, path: Path, seed: int = 0) -> Path:
    """A random-weight identity embedder file (stands in for the shipped one in tests)."""
    import torch
    from safetensors.torch import save_file

    identity = core(pack, "faces.identity")
    torch.manual_seed(seed)
    model = identity.IdentityEmbedder(identity.IdentityConfig()).eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, str(path), metadata=identity.embedder_metadata(model))
    return path


def image_tensor(path: Path):
    """An image file as a ComfyUI IMAGE [1, H, W, 3] float32 (like LoadImage)."""
    import numpy as np
    import torch
    from PIL import Image

    rgb = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(rgb)[None]
