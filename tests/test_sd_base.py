"""SD base weights from a diffusers folder or an ldm single file, never fetched."""

from __future__ import annotations

import json

import pytest
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from safetensors.torch import save_file

from official_fixtures import TINY_UNET, TINY_VAE, random_like_module, seeded, to_ldm_unet, to_ldm_vae
from restorer_core.errors import CheckpointError
from restorer_core.loaders.sd_base import build_base_models, load_base_state
from restorer_core.models.sd_configs import SD21_BASE_UNET, SD_TURBO_UNET


@pytest.fixture(scope="module")
def base_weights():
    gen = seeded(3)
    unet, vae = UNet2DConditionModel(**TINY_UNET), AutoencoderKL(**TINY_VAE)
    return random_like_module(unet, gen), random_like_module(vae, gen)


def assert_same(got: dict, want: dict) -> None:
    assert set(got) == set(want)
    for k in want:
        assert torch.equal(got[k], want[k]), k


def test_diffusers_folder(tmp_path, base_weights):
    unet_sd, vae_sd = base_weights
    for name, sd, cfg in (("unet", unet_sd, TINY_UNET), ("vae", vae_sd, TINY_VAE)):
        (tmp_path / name).mkdir()
        save_file(sd, str(tmp_path / name / "diffusion_pytorch_model.safetensors"))
        (tmp_path / name / "config.json").write_text(json.dumps({"_class_name": "X", **cfg}))
    got_unet, got_vae = load_base_state(tmp_path, TINY_UNET, TINY_VAE)
    assert_same(got_unet, unet_sd)
    assert_same(got_vae, vae_sd)


def test_ldm_single_file_converted_with_diffusers_functions(tmp_path, base_weights):
    unet_sd, vae_sd = base_weights
    ldm = {**{f"model.diffusion_model.{k}": v for k, v in to_ldm_unet(unet_sd, TINY_UNET).items()},
           **{f"first_stage_model.{k}": v for k, v in to_ldm_vae(vae_sd, TINY_VAE).items()},
           "cond_stage_model.model.positional_embedding": torch.zeros(77, 8)}
    assert not set(ldm) & {f"model.diffusion_model.{k}" for k in unet_sd}  # names really differ
    path = tmp_path / "v2-1_512-ema-pruned.safetensors"
    save_file(ldm, str(path))
    got_unet, got_vae = load_base_state(path, TINY_UNET, TINY_VAE)
    assert_same(got_unet, unet_sd)
    assert_same(got_vae, vae_sd)
    unet, vae = build_base_models(path, TINY_UNET, TINY_VAE)
    assert torch.equal(unet.conv_in.weight, unet_sd["conv_in.weight"])


def test_standalone_ldm_vae_file(tmp_path, base_weights):
    unet_sd, vae_sd = base_weights
    (tmp_path / "unet").mkdir()
    save_file(unet_sd, str(tmp_path / "unet" / "diffusion_pytorch_model.safetensors"))
    vae_file = tmp_path / "vae-ft-mse-840000-ema-pruned.safetensors"
    save_file({**to_ldm_vae(vae_sd, TINY_VAE), "loss.logvar": torch.zeros(())}, str(vae_file))
    got_unet, got_vae = load_base_state(tmp_path, TINY_UNET, TINY_VAE, vae_source=vae_file)
    assert_same(got_unet, unet_sd)
    assert_same(got_vae, vae_sd)


def test_config_json_of_another_model_is_refused(tmp_path, base_weights):
    unet_sd, _ = base_weights
    (tmp_path / "unet").mkdir()
    save_file(unet_sd, str(tmp_path / "unet" / "diffusion_pytorch_model.safetensors"))
    (tmp_path / "unet" / "config.json").write_text(json.dumps({**TINY_UNET, "cross_attention_dim": 768}))
    with pytest.raises(CheckpointError, match="cross_attention_dim"):
        load_base_state(tmp_path, TINY_UNET, None)


def test_wrong_architecture_single_file_is_refused(tmp_path, base_weights):
    unet_sd, vae_sd = base_weights
    other = dict(TINY_UNET, block_out_channels=(32, 32))
    other_sd = random_like_module(UNet2DConditionModel(**other), seeded(5))
    path = tmp_path / "other.safetensors"
    save_file({**{f"model.diffusion_model.{k}": v for k, v in to_ldm_unet(other_sd, other).items()},
               **{f"first_stage_model.{k}": v for k, v in to_ldm_vae(vae_sd, TINY_VAE).items()}}, str(path))
    with pytest.raises(CheckpointError, match=r"other\.safetensors.*shape"):
        build_base_models(path, TINY_UNET, TINY_VAE)


def test_corrupt_file_and_missing_parts(tmp_path):
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    with pytest.raises(CheckpointError, match="broken.safetensors"):
        load_base_state(bad, TINY_UNET, TINY_VAE)
    with pytest.raises(CheckpointError, match="unet"):
        load_base_state(tmp_path, TINY_UNET, None)
    with pytest.raises(CheckpointError, match="not found"):
        load_base_state(tmp_path / "nope.safetensors", TINY_UNET, None)


def test_embedded_full_size_configs_build_the_official_parameter_count():
    with torch.device("meta"):
        unet = UNet2DConditionModel(**SD_TURBO_UNET)
    assert sum(p.numel() for p in unet.parameters()) == 865_910_724  # SD 2.1 UNet: 865.9 M
    assert SD_TURBO_UNET == SD21_BASE_UNET
