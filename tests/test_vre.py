"""VisualPromptEmbedder: official key layout, official token semantics for any batch."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from restorer_core.models.sd_configs import OSDFACE_VRE
from restorer_core.models.vre import VisualPromptEmbedder, _AttnBlock

TINY = dict(resolution=128, ch=16, ch_mult=(1, 2, 2, 4), num_res_blocks=1,
            codebook_size=256, codebook_dim=64, out_dim=256, tokens=77)


def tiny(seed: int = 0, **over) -> VisualPromptEmbedder:
    torch.manual_seed(seed)
    vre = VisualPromptEmbedder(**{**TINY, **over}).eval()
    with torch.no_grad():  # spread the codebook so that many codes are used
        vre.quantize.embedding.weight.normal_()
    return vre


def faces(n: int, size: int = 128, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g) * 2 - 1


def plain_tokens(z: torch.Tensor, codebook: torch.Tensor, tokens: int) -> torch.Tensor:
    """The official per-sample walk, written plainly: one sample z [N, C] -> [tokens, C]."""
    d = (z**2).sum(1, keepdim=True) + (codebook**2).sum(1) - 2 * z @ codebook.t()
    dmin, nearest = d.min(dim=1)
    order = sorted(range(z.shape[0]), key=lambda p: (dmin[p].item(), p))
    seen, picked = set(), []
    for p in order:
        code = int(nearest[p])
        if code not in seen:
            seen.add(code)
            picked.append(code)
        if len(picked) == tokens:
            break
    out = torch.zeros(tokens, codebook.shape[1])
    for slot, code in enumerate(picked):
        out[slot] = codebook[code]
    return out


def spread_codebook(vre: VisualPromptEmbedder, lq: torch.Tensor) -> None:
    """Codebook = jittered latents of these faces, so that positions pick many distinct codes."""
    with torch.no_grad():
        z = vre.latents(lq).reshape(-1, vre.cfg.codebook_dim)
        pick = torch.randperm(z.shape[0], generator=torch.Generator().manual_seed(2))[: vre.cfg.codebook_size]
        vre.quantize.embedding.weight.copy_(z[pick] + 0.01 * torch.randn_like(z[pick]))


def test_batched_tokens_equal_per_sample_loop():
    vre = tiny()
    lq = faces(3)
    spread_codebook(vre, lq)
    with torch.no_grad():
        codes, toks = vre.tokenize(lq)
        z = vre.latents(lq)
    # more than 77 distinct nearest codes per face: the cut at 77 is exercised
    nearest = vre.quantize.distances(z).argmin(2)
    assert all(nearest[i].unique().numel() > 77 for i in range(3))
    assert torch.all(codes >= 0)
    assert toks.shape == (3, 77, 64)
    for i in range(3):
        expected = plain_tokens(z[i], vre.quantize.embedding.weight.detach(), 77)
        torch.testing.assert_close(toks[i], expected, rtol=0, atol=0)
    # different faces give different token sets, and within a face codes never repeat
    assert not torch.equal(codes[0], codes[1])
    for row in codes:
        used = row[row >= 0]
        assert used.numel() == used.unique().numel()


def test_fewer_distinct_codes_than_tokens_leaves_zero_rows():
    vre = tiny(codebook_size=20)  # at most 20 distinct codes < 77 tokens
    lq = faces(2, seed=5)
    spread_codebook(vre, lq)
    with torch.no_grad():
        codes, toks = vre.tokenize(lq)
        z = vre.latents(lq)
    for i in range(2):
        n_used = int((codes[i] >= 0).sum())
        assert 0 < n_used <= 20
        assert torch.all(codes[i, n_used:] == -1)
        assert torch.all(toks[i, n_used:] == 0)
        torch.testing.assert_close(toks[i], plain_tokens(z[i], vre.quantize.embedding.weight.detach(), 77),
                                   rtol=0, atol=0)


def test_batch_result_independent_of_batch_mates():
    vre = tiny()
    lq = faces(3)
    with torch.no_grad():
        together = vre(lq)
        alone = torch.cat([vre(lq[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-5)
    assert together.shape == (3, 77, 256)


def test_input_quirk_resize_then_renormalise():
    vre = tiny()
    plain = tiny(renormalize_input=False)
    plain.load_state_dict(vre.state_dict())
    small = faces(2, size=64)
    resized = F.interpolate(small, size=(128, 128), mode="bilinear", align_corners=False)
    with torch.no_grad():
        out = vre(small)
        # the embedder resizes to its resolution itself...
        torch.testing.assert_close(out, vre(resized))
        # ...and then applies (x - 0.5) / 0.5 to the already [-1, 1] input
        torch.testing.assert_close(out, plain((resized - 0.5) / 0.5))
        assert not torch.allclose(out, plain(resized), atol=1e-4)


def test_attention_matches_official_formula():
    torch.manual_seed(3)
    block = _AttnBlock(32, heads=2, groups=8).eval()
    x = torch.randn(2, 32, 4, 4)
    with torch.no_grad():
        h = block.norm1(x)
        q, k, v = block.q(h), block.k(h), block.v(h)
        b, c, hh, ww = q.shape
        q = q.reshape(b, 2, 16, hh * ww).permute(0, 1, 3, 2) * 16**-0.5  # b, head, hw, att
        k = k.reshape(b, 2, 16, hh * ww)  # b, head, att, hw
        v = v.reshape(b, 2, 16, hh * ww).permute(0, 1, 3, 2)
        w = torch.softmax(q @ k, dim=-1) @ v  # b, head, hw, att
        w = w.permute(0, 2, 1, 3).reshape(b, hh, ww, c).permute(0, 3, 1, 2)
        expected = x + block.proj_out(w)
        torch.testing.assert_close(block(x), expected, rtol=1e-5, atol=1e-5)


def _official_key_names(ch_mult, num_res_blocks, resolution, attn_res) -> set[str]:
    """Parameter names of the official VQVAEencoder (+ proj), from its construction rule."""
    names = {"encoder.conv_in", "encoder.norm_out", "encoder.conv_out", "quant_conv", "proj.conv1", "proj.conv2"}
    in_mult = (1,) + tuple(ch_mult)
    res = resolution
    for i, mult in enumerate(ch_mult):
        block_in = in_mult[i]
        for j in range(num_res_blocks):
            base = f"encoder.down.{i}.block.{j}"
            names |= {f"{base}.norm1", f"{base}.conv1", f"{base}.norm2", f"{base}.conv2"}
            if block_in != mult:
                names.add(f"{base}.nin_shortcut")
            block_in = mult
            if res in attn_res:
                names |= {f"encoder.down.{i}.attn.{j}.{n}" for n in ("norm1", "norm2", "q", "k", "v", "proj_out")}
        if i != len(ch_mult) - 1:
            names.add(f"encoder.down.{i}.downsample.conv")
            res //= 2
    for blk in ("block_1", "block_2"):
        names |= {f"encoder.mid.{blk}.{n}" for n in ("norm1", "conv1", "norm2", "conv2")}
    names |= {f"encoder.mid.attn_1.{n}" for n in ("norm1", "norm2", "q", "k", "v", "proj_out")}
    full = {f"{n}.{p}" for n in names for p in ("weight", "bias")}
    return full | {"quantize.embedding.weight"}


def test_official_full_size_key_layout_and_shapes():
    with torch.device("meta"):
        vre = VisualPromptEmbedder(**OSDFACE_VRE)
    sd = vre.state_dict()
    assert set(sd) == _official_key_names((1, 2, 2, 2, 4, 8), 2, 512, (16,))
    assert sd["quantize.embedding.weight"].shape == (1024, 512)
    assert sd["encoder.conv_out.weight"].shape == (512, 512, 3, 3)
    assert sd["encoder.down.5.attn.1.q.weight"].shape == (512, 512, 1, 1)
    assert sd["proj.conv1.weight"].shape == (256, 512, 1)
    assert sd["proj.conv2.weight"].shape == (1024, 256, 1)
    assert vre.cfg.latent_size == 16 and vre.cfg.norm_groups == 32


def test_tiny_key_layout_matches_official_rule():
    vre = tiny()
    assert set(vre.state_dict()) == _official_key_names((1, 2, 2, 4), 1, 128, (16,))
    assert vre.cfg.latent_size == 16


def test_training_path_same_values_and_gradients_reach_encoder():
    vre = tiny().train()
    lq = faces(2)
    prompt, loss = vre.forward_train(lq)
    with torch.no_grad():
        expected = vre(lq)
    torch.testing.assert_close(prompt, expected, rtol=1e-5, atol=1e-5)
    assert loss.item() > 0
    (prompt.square().mean() + loss).backward()
    assert vre.encoder.conv_in.weight.grad is not None
    assert vre.encoder.conv_in.weight.grad.abs().sum() > 0
    assert vre.quantize.embedding.weight.grad.abs().sum() > 0
    assert vre.proj.conv1.weight.grad.abs().sum() > 0
