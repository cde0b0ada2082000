"""restorer_core.face_id: TF.js reader, graph interpreter, FFHQ -> ArcFace warp, shipped MobileFaceNet."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from restorer_core.faces.align import template_landmarks, transform_points
from restorer_core.errors import CheckpointError, ModelNotFoundError
from restorer_core.face_id import (
    ARCFACE_TEMPLATE_112, MobileFaceNet, ffhq_to_arcface_matrix, load_face_id, similarity, warp_ffhq_to_arcface,
)
from restorer_core.face_id.convert import main as convert_main
from restorer_core.face_id.mobilefacenet import load_mobilefacenet
from restorer_core.face_id.tfjs import TfjsFormatError, read_graph_model

FIXTURE = Path(__file__).parent / "data" / "mobilefacenet_tfjs_reference.npz"


def _b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def _tiny_model(tmp_path: Path, cin: int = 3, cout: int = 4) -> tuple[Path, dict]:
    """A graph model: 1x1 conv (uint8-quantized filter, float16 bias) + BiasAdd + Relu, then a spatial mean."""
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 256, size=(1, 1, cin, cout), dtype=np.uint8)
    scale, minimum = 0.01, -1.2
    bias = rng.normal(size=cout).astype(np.float16)
    axes = np.array([1, 2], dtype=np.int32)
    doc = {
        "format": "graph-model",
        "modelTopology": {"node": [
            {"name": "x", "op": "Placeholder", "attr": {"dtype": {"type": "DT_FLOAT"}}},
            {"name": "w", "op": "Const", "attr": {"dtype": {"type": "DT_FLOAT"}}},
            {"name": "b", "op": "Const", "attr": {"dtype": {"type": "DT_FLOAT"}}},
            {"name": "axes", "op": "Const", "attr": {"dtype": {"type": "DT_INT32"}}},
            {"name": "conv", "op": "_FusedConv2D", "input": ["x", "w", "b"], "attr": {
                "strides": {"list": {"i": ["1", "1", "1", "1"]}}, "padding": {"s": _b64("SAME")},
                "data_format": {"s": _b64("NHWC")},
                "fused_ops": {"list": {"s": [_b64("BiasAdd"), _b64("Relu")]}}}},
            {"name": "out", "op": "Mean", "input": ["conv", "axes"], "attr": {"keep_dims": {"b": False}}},
        ]},
        "weightsManifest": [{"paths": ["tiny.bin"], "weights": [
            {"name": "w", "shape": [1, 1, cin, cout], "dtype": "float32",
             "quantization": {"dtype": "uint8", "scale": scale, "min": minimum}},
            {"name": "b", "shape": [cout], "dtype": "float32", "quantization": {"dtype": "float16"}},
            {"name": "axes", "shape": [2], "dtype": "int32"},
        ]}],
    }
    (tmp_path / "tiny.bin").write_bytes(codes.tobytes() + bias.tobytes() + axes.tobytes())
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(doc))
    expect = {"w": codes.astype(np.float32) * np.float32(scale) + np.float32(minimum), "b": bias.astype(np.float32)}
    return path, expect


def test_reader_decodes_quantized_and_float16_weights(tmp_path):
    path, expect = _tiny_model(tmp_path)
    g = read_graph_model(path)
    np.testing.assert_allclose(g.weights["w"], expect["w"], rtol=0, atol=1e-6)
    np.testing.assert_array_equal(g.weights["b"], expect["b"])
    assert g.weights["axes"].tolist() == [1, 2] and g.weights["axes"].dtype == np.int32
    conv = g.node("conv")
    assert conv.attrs["fused_ops"] == ["BiasAdd", "Relu"] and conv.attrs["padding"] == "SAME"
    assert g.placeholders == ["x"] and g.outputs == ["out"]


def test_interpreter_matches_numpy_reference(tmp_path):
    path, expect = _tiny_model(tmp_path)
    net = MobileFaceNet.from_tfjs(path)
    x = torch.rand(2, 3, 112, 112)
    got = net(x).numpy()
    inp = (x.numpy() * net.input_scale + net.input_offset).transpose(0, 2, 3, 1)  # NHWC, as TF sees it
    ref = np.maximum(inp @ expect["w"][0, 0] + expect["b"], 0).mean(axis=(1, 2))
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def test_reader_reports_missing_and_mismatched_shards(tmp_path):
    path, _ = _tiny_model(tmp_path)
    data = (tmp_path / "tiny.bin").read_bytes()
    (tmp_path / "tiny.bin").write_bytes(data[:-5])
    with pytest.raises(TfjsFormatError, match="too short"):
        read_graph_model(path)
    (tmp_path / "tiny.bin").write_bytes(data + b"\0" * 8)
    with pytest.raises(TfjsFormatError, match="do not belong"):
        read_graph_model(path)
    (tmp_path / "tiny.bin").unlink()
    with pytest.raises(TfjsFormatError, match="missing"):
        read_graph_model(path)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(TfjsFormatError, match="not valid JSON"):
        read_graph_model(tmp_path / "bad.json")


def test_converter_round_trip_and_no_overwrite(tmp_path, capsys):
    path, _ = _tiny_model(tmp_path)
    out = tmp_path / "tiny.safetensors"
    assert convert_main(["--json", str(path), "--out", str(out)]) == 0
    x = torch.rand(1, 3, 112, 112)
    torch.testing.assert_close(load_mobilefacenet(out)(x), MobileFaceNet.from_tfjs(path)(x))
    before = out.read_bytes()
    assert convert_main(["--json", str(path), "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err and out.read_bytes() == before


@pytest.mark.parametrize("size", [128, 512])
def test_warp_carries_ffhq_landmarks_to_the_arcface_template(size):
    matrix = ffhq_to_arcface_matrix(size)
    mapped = transform_points(template_landmarks(size), matrix)
    assert np.abs(mapped - ARCFACE_TEMPLATE_112).max() < 3.0  # least-squares fit of two 5-point templates
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    for k in range(5):
        cx, cy = template_landmarks(size)[k]
        sigma = 2.0 * size / 128
        img = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sigma**2))
        out = warp_ffhq_to_arcface(torch.from_numpy(img).float()[None, None].expand(1, 3, size, size))[0, 0].numpy()
        w = np.clip(out - 0.2 * out.max(), 0, None)
        centroid = np.array([(w * np.arange(112)[None]).sum(), (w * np.arange(112)[:, None]).sum()]) / w.sum()
        assert np.linalg.norm(centroid - mapped[k]) < 0.35, (k, centroid, mapped[k])


def test_shipped_network_matches_tfjs_reference_embeddings():
    ref = np.load(FIXTURE)
    net = load_face_id().net
    with torch.no_grad():
        got = net(torch.from_numpy(ref["crops"]).permute(0, 3, 1, 2).float() / 255.0).numpy()
    assert got.shape == ref["embeddings"].shape
    assert np.abs(got - ref["embeddings"]).max() <= 1e-4


def test_load_face_id_embeds_any_crop_size_differentiably():
    model = load_face_id()
    assert model.embedding_dim == 192
    assert not any(p.requires_grad for p in model.parameters())
    crops = torch.rand(2, 3, 128, 128, requires_grad=True)
    emb = model(crops)
    assert emb.shape == (2, 192) and emb.dtype == torch.float32
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(2))
    (1 - similarity(emb, emb.detach().flip(0)).diagonal()).sum().backward()
    assert crops.grad is not None and crops.grad.abs().sum() > 0
    big = torch.nn.functional.interpolate(crops.detach(), size=(512, 512), mode="bicubic", align_corners=False)
    assert float((model(big) * emb.detach()).sum(1).min()) > 0.99  # same face at 4x the size


def test_loader_errors_are_clear(tmp_path):
    with pytest.raises(ModelNotFoundError, match="not found"):
        load_face_id(tmp_path / "nope.safetensors")
    from safetensors.torch import save_file

    save_file({"a": torch.zeros(1)}, str(tmp_path / "other.safetensors"), metadata={"format": "something-else"})
    with pytest.raises(CheckpointError, match="not a face-ID network"):
        load_face_id(tmp_path / "other.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 16)
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_face_id(tmp_path / "junk.safetensors")


def _two_output_model(tmp_path: Path, size: int = 24) -> tuple[Path, dict]:
    """The tiny graph with a declared input size and a second output beside the embedding."""
    path, expect = _tiny_model(tmp_path)
    doc = json.loads(path.read_text())
    nodes = doc["modelTopology"]["node"]
    nodes[0]["attr"]["shape"] = {"shape": {"dim": [{"size": "-1"}, {"size": str(size)}, {"size": str(size)},
                                                   {"size": "3"}]}}
    nodes[-1]["name"] = "global_pooling/Mean"
    nodes.append({"name": "other", "op": "Relu", "input": ["conv"]})
    path.write_text(json.dumps(doc))
    return path, expect


def test_faceres_preset_picks_the_embedding_output_input_range_and_framing(tmp_path):
    path, expect = _two_output_model(tmp_path)
    with pytest.raises(TfjsFormatError, match="2 outputs"):
        MobileFaceNet.from_tfjs(path)  # without a preset the embedding output is ambiguous
    out = tmp_path / "faceres.safetensors"
    assert convert_main(["--preset", "faceres", "--json", str(path), "--out", str(out)]) == 0
    embedder = load_face_id(out)
    assert embedder.input_size == 24 and embedder.net.framing == "centre:0.8" and embedder.embedding_dim == 4

    crops = torch.rand(2, 3, 30, 30)
    seen = embedder.to_network_input(crops)  # the central 24 px of a 30 px crop: no resampling
    torch.testing.assert_close(seen, crops[..., 3:27, 3:27])
    x = seen.permute(0, 2, 3, 1).double().numpy() * 255.0  # RGB 0..255, as HSE FaceRes was trained
    ref = np.maximum(x @ expect["w"][0, 0].astype(np.float64) + expect["b"], 0.0).mean(axis=(1, 2))
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    np.testing.assert_allclose(embedder(crops).numpy(), ref, rtol=1e-4, atol=1e-5)


def test_unknown_framing_is_refused(tmp_path):
    from restorer_core.face_id.mobilefacenet import check_framing

    assert check_framing("arcface") == 0.0 and check_framing("centre:0.8") == 0.8
    for bad in ("centre:0", "centre:1.5", "centre:x", "box"):
        with pytest.raises(ValueError, match="framing"):
            check_framing(bad)


def test_converted_network_gives_stage_features_for_the_face_perceptual_loss():
    """A converted face-ID graph (the shipped MobileFaceNet) exposes its activations at the end of
    each resolution, so the face-perceptual loss (identity_features) works with it too."""
    from restorer_core.train.losses import IdentityLoss, IdentityLossConfig

    model = load_face_id()
    torch.manual_seed(0)
    x = torch.rand(2, 3, 128, 128)
    stages = model.stage_features(x)
    sizes = [t.shape[-1] for t in stages]
    assert len(stages) >= 3 and all(t.ndim == 4 and t.shape[0] == 2 for t in stages)
    assert sizes == sorted(set(sizes), reverse=True) and sizes[0] == model.input_size // 2
    loss = IdentityLoss(model, IdentityLossConfig(features=True))
    same = float(loss.terms(x, x)["identity_features"])
    pred = (x + 0.3 * torch.randn_like(x)).clamp(0, 1).requires_grad_(True)
    other = loss.terms(pred, x)["identity_features"]
    assert same < 0.25 * float(other)
    other.backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0
