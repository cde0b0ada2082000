"""Test helpers around the stand-in: load the pack as ComfyUI does, make a tiny restorer.

ComfyUI imports a custom node folder as a package named after its path
(nodes.load_custom_node: spec_from_file_location(path.replace(".", "_x_"), <folder>/__init__.py)),
so the pack's modules only work through relative imports; loading it the same way here checks that.
"""

from __future__ import annotations

import asyncio
import importlib.util
import inspect
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
TINY_RES = 32


def load_pack(root: Path = REPO_ROOT, comfy_api: bool = True):
    """Import the node pack the way ComfyUI's load_custom_node does (once per process per API).

    comfy_api=True: a ComfyUI with the V3 node API (this stand-in's comfy_api package);
    False: an older ComfyUI without comfy_api (imported under a second module name, with
    comfy_api hidden while the pack loads).
    """
    module_path = str(root)
    name = module_path.replace(".", "_x_") + ("" if comfy_api else "_x_classic")
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, str(root / "__init__.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    hidden = {} if comfy_api else {k: sys.modules.pop(k) for k in list(sys.modules)
                                   if k == "comfy_api" or k.startswith("comfy_api.")}
    if not comfy_api:
        sys.modules["comfy_api"] = None  # import comfy_api raises ModuleNotFoundError, as when it is absent
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    finally:
        if not comfy_api:
            del sys.modules["comfy_api"]
            sys.modules.update(hidden)
    return module


def registered_nodes(pack) -> tuple[dict, dict]:
    """(NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS) that ComfyUI's load_custom_node takes from
    the pack: its NODE_CLASS_MAPPINGS when defined and not None, else the nodes of the extension its
    comfy_entrypoint returns (awaited; on_load, then get_node_list; each class's GET_SCHEMA gives its
    id and display name). Raises AssertionError where ComfyUI would skip the pack."""
    if getattr(pack, "NODE_CLASS_MAPPINGS", None) is not None:
        return dict(pack.NODE_CLASS_MAPPINGS), dict(getattr(pack, "NODE_DISPLAY_NAME_MAPPINGS", None) or {})
    assert hasattr(pack, "comfy_entrypoint"), "ComfyUI skips a pack with neither NODE_CLASS_MAPPINGS nor comfy_entrypoint"
    from comfy_api.latest import ComfyExtension

    async def load():
        entry = pack.comfy_entrypoint
        extension = await entry() if inspect.iscoroutinefunction(entry) else entry()
        assert isinstance(extension, ComfyExtension), "comfy_entrypoint did not return a ComfyExtension"
        await extension.on_load()
        node_list = await extension.get_node_list()
        assert isinstance(node_list, list), "get_node_list did not return a list"
        return node_list

    classes, names = {}, {}
    for cls in asyncio.run(load()):
        schema = cls.GET_SCHEMA()
        classes[schema.node_id] = cls
        if schema.display_name is not None:
            names[schema.node_id] = schema.display_name
    return classes, names


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
