"""Official InstantRestore / OSDFace checkpoints (tiny, official layout) load, fuse and refuse correctly."""

from __future__ import annotations

import argparse
import pickle
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from diffusers import UNet2DConditionModel
from safetensors.torch import save_file
from torch import nn

from official_fixtures import (TINY_UNET, TINY_VRE, build_instantrestore, build_osdface, tiny_config)
from restorer_core.errors import CheckpointError
from restorer_core.loaders.clip_text import caption_token_ids, encode_text
from restorer_core.loaders.instantrestore import load_instantrestore
from restorer_core.loaders.keys import torch_load_safe
from restorer_core.loaders.osdface import load_osdface
from restorer_core.models.vre import VisualPromptEmbedder


@pytest.fixture(scope="module")
def ir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ir")
    fx = build_instantrestore(folder / "final_model_ckpt.pt", ref_lora_rank=4)
    return fx, load_instantrestore(fx.path, config=tiny_config())


# ----------------------------------------------------------------------------- plain PEFT math
def plain_linear(x, layer):
    """x W0^T + b + scale * x A^T B^T, as PEFT computes it unfused."""
    return F.linear(x, layer.base_weight, layer.bias) + layer.scale * F.linear(F.linear(x, layer.down), layer.up)


def plain_conv(x, layer):
    base = F.conv2d(x, layer.base_weight, layer.bias, layer.stride, layer.padding)
    return base + layer.scale * F.conv2d(F.conv2d(x, layer.down, None, layer.stride, layer.padding), layer.up)


class PeftStyle(nn.Module):
    """An unfused LoRA layer, the way PEFT runs it."""

    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def forward(self, x):
        return plain_linear(x, self.layer) if self.layer.down.ndim == 2 else plain_conv(x, self.layer)


def test_every_key_maps_and_lora_is_fused(ir):
    fx, restorer = ir
    rep = restorer.source.load_report
    for part, attr in (("unet", "unet"), ("vae", "vae"), ("original_unet", "ref_unet"), ("original_vae", "ref_vae")):
        assert rep.loaded[part] == len(getattr(restorer, attr).state_dict())
    assert rep.lora_fused == {"unet": len(fx.unet.layers), "vae": len(fx.vae.layers),
                              "original_unet": len(fx.ref_unet.layers), "original_vae": len(fx.ref_vae.layers)}
    assert fx.unet.layers and all(layer.scale == 0.5 for layer in fx.unet.layers.values())
    # a weight that is not LoRA-wrapped comes through untouched
    torch.testing.assert_close(restorer.unet.conv_in.weight, fx.unet.state["conv_in.weight"], rtol=0, atol=0)


def test_fused_linear_and_conv_equal_unfused_peft(ir):
    fx, restorer = ir
    torch.manual_seed(0)
    lin_name = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"
    conv_name = "down_blocks.0.resnets.0.conv1"
    lin, conv = fx.unet.layers[lin_name], fx.unet.layers[conv_name]
    x = torch.randn(3, lin.down.shape[1])
    with torch.no_grad():
        torch.testing.assert_close(restorer.unet.get_submodule(lin_name)(x), plain_linear(x, lin),
                                   rtol=1e-5, atol=1e-5)
        img = torch.randn(2, conv.down.shape[1], 8, 8)
        torch.testing.assert_close(restorer.unet.get_submodule(conv_name)(img), plain_conv(img, conv),
                                   rtol=1e-5, atol=1e-5)
        # a stride-2 conv LoRA (downsampler) and a VAE conv LoRA of the other adapter
        down_name = "down_blocks.0.downsamplers.0.conv"
        layer = fx.unet.layers[down_name]
        img = torch.randn(1, layer.down.shape[1], 8, 8)
        torch.testing.assert_close(restorer.unet.get_submodule(down_name)(img), plain_conv(img, layer),
                                   rtol=1e-5, atol=1e-5)
        layer = fx.vae.layers["encoder.conv_in"]
        img = torch.randn(1, 3, 8, 8)
        torch.testing.assert_close(restorer.vae.get_submodule("encoder.conv_in")(img), plain_conv(img, layer),
                                   rtol=1e-5, atol=1e-5)


def test_whole_unet_equals_peft_style_unet(ir):
    fx, restorer = ir
    plain = UNet2DConditionModel(**TINY_UNET)
    base = {k.replace(".base_layer.", "."): v for k, v in fx.unet.state.items() if ".lora_" not in k}
    plain.load_state_dict(base)
    for name, layer in fx.unet.layers.items():
        parent, _, child = name.rpartition(".")
        setattr(plain.get_submodule(parent), child, PeftStyle(layer))
    plain.enable_freeu(0.9, 0.2, 1.4, 1.6)
    torch.manual_seed(1)
    z, ctx = torch.randn(2, 4, 16, 16), torch.randn(2, 77, 64)
    with torch.no_grad():
        want = plain(z, 249, encoder_hidden_states=ctx).sample
        got = restorer.unet(z, 249, encoder_hidden_states=ctx).sample
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_caption_embedding_from_the_checkpoint_text_encoder(ir):
    fx, restorer = ir
    ids = caption_token_ids()
    assert ids.shape == (1, 77) and ids[0, 0] == 49406 and (ids[0] == 49407).sum() == 1
    want = encode_text(fx.text, ids)
    torch.testing.assert_close(restorer.prompt_embeds.detach(), want)
    assert restorer.prompt_embeds.abs().sum() > 0


def test_text_encoder_matches_transformers_when_installed():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.CLIPTextConfig(vocab_size=49408, hidden_size=128, intermediate_size=256,
                                      num_hidden_layers=2, num_attention_heads=2, hidden_act="gelu")
    model = transformers.CLIPTextModel(cfg).eval()
    ids = caption_token_ids()
    with torch.no_grad():
        want = model(ids)[0]
    torch.testing.assert_close(encode_text(model.state_dict(), ids), want, rtol=1e-5, atol=1e-5)


def test_loaded_restorer_runs_with_references(ir):
    _, restorer = ir
    torch.manual_seed(2)
    refs = restorer.encode_references(torch.rand(2, 3, 32, 32), generator=torch.Generator().manual_seed(0))
    out = restorer(torch.rand(1, 3, 32, 32), refs, generator=torch.Generator().manual_seed(0))
    assert out.shape == (1, 3, 32, 32) and torch.isfinite(out).all()


def test_cfg_flags_reach_the_full_size_config(tmp_path):
    from restorer_core.loaders.instantrestore import read_checkpoint, restorer_config_for

    fx = build_instantrestore(tmp_path / "adain_ablation_ckpt.pt", train_input=True, use_adain=False)
    cfg, _ = read_checkpoint(fx.path)
    full = restorer_config_for(cfg, str(fx.path))
    assert full.train_input is True and full.use_adain is False
    assert full.unet["cross_attention_dim"] == 1024 and full.timestep == 249


def test_vae_skip_convs_load_with_their_lora(tmp_path):
    fx = build_instantrestore(tmp_path / "shortcuts.pt", use_shortcuts=True)
    assert "decoder.skip_conv_1" in fx.vae.layers
    with pytest.raises(CheckpointError, match="skip_conv"):  # config without skip convs does not fit
        load_instantrestore(fx.path, config=tiny_config())
    restorer = load_instantrestore(fx.path, config=tiny_config(vae_skip_convs=True))
    layer = fx.vae.layers["decoder.skip_conv_2"]
    x = torch.randn(1, layer.down.shape[1], 4, 4)
    with torch.no_grad():
        torch.testing.assert_close(restorer.vae.decoder.skip_conv_2(x), plain_conv(x, layer), rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- refusals
def test_malicious_pickle_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned.txt"

    class Payload:
        def __reduce__(self):
            return (exec, (f"open({str(marker)!r}, 'w').write('x')",))

    evil = tmp_path / "final_model_ckpt.pt"
    torch.save({"cfg": {}, "state_dict": {}, "extra": Payload()}, evil)
    with pytest.raises(CheckpointError, match="refused"):
        load_instantrestore(evil, config=tiny_config())
    assert not marker.exists()
    # the payload is real: an unrestricted unpickler would have run it
    import zipfile

    with zipfile.ZipFile(evil) as zf:
        data = zf.read(next(n for n in zf.namelist() if n.endswith("data.pkl")))
    pickle.loads(data)
    assert marker.exists()


def test_corrupt_checkpoint_is_refused(tmp_path, ir):
    fx, _ = ir
    broken = tmp_path / "truncated.pt"
    broken.write_bytes(fx.path.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="truncated.pt"):
        load_instantrestore(broken, config=tiny_config())


def test_wrong_architecture_is_refused_with_the_file_and_key(tmp_path):
    fx = build_instantrestore(tmp_path / "other.pt", unet_config=dict(TINY_UNET, cross_attention_dim=32))
    with pytest.raises(CheckpointError, match=r"other\.pt.*unet.*shape mismatch"):
        load_instantrestore(fx.path, config=tiny_config())


def test_lora_rank_disagreeing_with_cfg_is_refused(tmp_path):
    fx = build_instantrestore(tmp_path / "odd.pt", rank_unet=8)
    obj = torch.load(fx.path, weights_only=True)
    obj["cfg"]["model"]["lora_rank_unet"] = 16
    torch.save(obj, fx.path)
    with pytest.raises(CheckpointError, match="rank 8"):
        load_instantrestore(fx.path, config=tiny_config())


def test_inert_reading_neutralises_python_objects(tmp_path):
    marker = tmp_path / "ran.txt"

    class Payload:
        def __reduce__(self):
            return (exec, (f"open({str(marker)!r}, 'w').write('x')",))

    path = tmp_path / "associate_2.ckpt"
    torch.save({"state_dict": {"vqvae_LQ.w": torch.ones(2)}, "hp": argparse.Namespace(a=1),
                "bad": Payload()}, path)
    with pytest.raises(CheckpointError, match="refused"):
        torch_load_safe(path)
    obj = torch_load_safe(path, inert_objects=True)
    assert torch.equal(obj["state_dict"]["vqvae_LQ.w"], torch.ones(2))
    assert not marker.exists()


# ----------------------------------------------------------------------------- OSDFace
@pytest.mark.parametrize("old_names", [False, True])
def test_osdface_folder_loads_fused(tmp_path, old_names):
    fx = build_osdface(tmp_path / "pretrained", tmp_path / "sd21_base.safetensors", old_lora_names=old_names)
    restorer = load_osdface(fx.folder, tmp_path / "sd21_base.safetensors", config=tiny_config("osdface"))
    rep = restorer.source.load_report
    assert rep.lora_fused["unet"] == len(fx.lora) > 0
    assert rep.loaded["visual prompt embedder"] == len(restorer.vre.state_dict())
    # LoRA (scale 16/16 = 1) folded into the attention projections, plain math
    name = "up_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k"
    down, up = fx.lora[name]
    x = torch.randn(2, down.shape[1])
    want = F.linear(x, fx.base_unet[f"{name}.weight"]) + F.linear(F.linear(x, down), up)
    with torch.no_grad():
        torch.testing.assert_close(restorer.unet.get_submodule(name)(x), want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(restorer.vae.encoder.conv_in.weight, fx.base_vae["encoder.conv_in.weight"])
    # the embedder is exactly the one the two official files describe
    vre = VisualPromptEmbedder(**TINY_VRE)
    vre.load_state_dict(fx.vre)
    lq = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(restorer.vre(lq), vre.eval()(lq))
        out = restorer(torch.rand(2, 3, 32, 32))
    assert out.shape == (2, 3, 32, 32) and torch.isfinite(out).all()
    assert rep.ignored  # decoder / other-network tensors were skipped, and said so


def test_osdface_lora_for_another_base_is_refused(tmp_path):
    fx = build_osdface(tmp_path / "pretrained", tmp_path / "base.safetensors")
    save_file({"unet.mid_block.attentions.0.nonexistent.lora_A.weight": torch.zeros(16, 8),
               "unet.mid_block.attentions.0.nonexistent.lora_B.weight": torch.zeros(8, 16)},
              str(fx.folder / "pytorch_lora_weights.safetensors"))
    with pytest.raises(CheckpointError, match="nonexistent"):
        load_osdface(fx.folder, tmp_path / "base.safetensors", config=tiny_config("osdface"))


def test_osdface_missing_file_names_it(tmp_path):
    fx = build_osdface(tmp_path / "pretrained", tmp_path / "base.safetensors")
    (fx.folder / "embedding_change_weights.pth").unlink()
    with pytest.raises(CheckpointError, match="embedding_change_weights.pth"):
        load_osdface(fx.folder, tmp_path / "base.safetensors", config=tiny_config("osdface"))


# ----------------------------------------------------------------------------- download
def _no_hub(monkeypatch):
    import huggingface_hub

    def refuse(*args, **kwargs):
        raise AssertionError("the Hub must not be contacted")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", refuse)


def test_resolve_weights_offline_says_what_to_put_where(tmp_path, monkeypatch):
    from restorer_core.errors import ModelNotFoundError
    from restorer_core.loaders.download import resolve_weights

    _no_hub(monkeypatch)
    with pytest.raises(ModelNotFoundError) as err:
        resolve_weights("osdface", tmp_path)
    msg = str(err.value)
    for part in ("pytorch_lora_weights.safetensors", "embedding_change_weights.pth", "associate_2.ckpt",
                 str(tmp_path / "osdface"), "jkwang28/OSDFace"):
        assert part in msg
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError, match="HF_HUB_OFFLINE"):
        resolve_weights("sd21-base", tmp_path, allow_download=True)


def test_resolve_weights_finds_files_on_disk(tmp_path, monkeypatch):
    from restorer_core.loaders.download import resolve_weights

    _no_hub(monkeypatch)
    (tmp_path / "instantrestore").mkdir()
    (tmp_path / "instantrestore" / "final_model_ckpt.pt").write_bytes(b"x")
    assert resolve_weights("instantrestore", tmp_path) == tmp_path / "instantrestore" / "final_model_ckpt.pt"
    (tmp_path / "v2-1_512-ema-pruned.safetensors").write_bytes(b"x")  # ComfyUI-style single file
    assert resolve_weights("sd21-base", tmp_path) == tmp_path / "v2-1_512-ema-pruned.safetensors"


def test_resolve_weights_downloads_only_when_allowed(tmp_path, monkeypatch):
    import huggingface_hub

    from restorer_core.loaders.download import resolve_weights

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    calls = []

    def fake_download(repo_id, filename, local_dir):
        calls.append((repo_id, filename))
        target = Path(local_dir) / filename
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text("{}")
        return str(target)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    got = resolve_weights("sd-vae-ft-mse", tmp_path, allow_download=True)
    assert got == tmp_path / "sd-vae-ft-mse"
    assert calls == [("stabilityai/sd-vae-ft-mse", "config.json"),
                     ("stabilityai/sd-vae-ft-mse", "diffusion_pytorch_model.safetensors")]


# ----------------------------------------------------------------------------- convert
def test_convert_instantrestore_round_trips_through_project_format(tmp_path, ir):
    from restorer_core.loaders.convert import convert_instantrestore
    from restorer_core.loaders.project_format import load_restorer

    fx, restorer = ir
    out = convert_instantrestore(fx.path, tmp_path / "ir.safetensors", dtype=torch.float32, config=tiny_config())
    again = load_restorer(out)
    assert again.source.info["converted_from"] == "instantrestore-official"
    for k, v in restorer.state_dict().items():
        assert torch.equal(again.state_dict()[k], v), k
    lq = torch.rand(1, 3, 32, 32)
    gen = lambda: torch.Generator().manual_seed(4)  # noqa: E731
    with torch.no_grad():
        torch.testing.assert_close(again(lq, generator=gen()), restorer(lq, generator=gen()))


def test_convert_never_overwrites_and_writes_nothing_on_failure(tmp_path, ir):
    from restorer_core.loaders.convert import convert_instantrestore, main

    fx, _ = ir
    existing = tmp_path / "mine.safetensors"
    existing.write_bytes(b"user data")
    with pytest.raises(CheckpointError, match="already exists"):
        convert_instantrestore(fx.path, existing, config=tiny_config())
    assert existing.read_bytes() == b"user data"
    broken = tmp_path / "broken.pt"
    broken.write_bytes(fx.path.read_bytes()[:4000])
    before = set(tmp_path.iterdir())
    assert main(["instantrestore", str(broken), str(tmp_path / "out.safetensors")]) == 2
    assert set(tmp_path.iterdir()) == before
