"""Numerics of OneStepRestorer against a plainly written reference computation.

The reference re-runs the restorer's own diffusers modules (VAE, UNet, VRE) but does every piece
of the method's math itself, written independently of restorer_core:

* attention: materialised softmax(Q K^T * scale) V per face and head, with the reference keys /
  values concatenated explicitly ([own | refs] or refs only), masked-out references dropped
  from the list rather than masked, AdaIN per head (unbiased std + 1e-5, as the official code);
* reference K/V: recorded from a full (not early-stopped) pass of the reference UNet;
* latents: diffusers' own ``vae.encode`` / ``vae.decode``, the Gaussian sample drawn by hand,
  skip convs added by forward pre-hooks on the decoder's up blocks;
* schedule: diffusers' DDPMScheduler alphas; noise and x0 formulas written out (x0 in float64
  for OSDFace).

Everything runs on tiny configs on the CPU in float32.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch

from restorer_core.models.config import RestorerConfig
from restorer_core.models.reference_kv import ReferenceKV
from restorer_core.models.restorer import OneStepRestorer

RES = 32
FREEU = (0.9, 0.2, 1.4, 1.6)
ATOL = 2e-5  # images in 0..1, float32: the two computations differ only in summation order


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny ops on a shared 2-core machine: one intra-op thread is ~50x faster than two."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ----------------------------------------------------------------------------------- configs
def tiny_config(method: str = "instantrestore", **overrides) -> RestorerConfig:
    """A restorer small enough for the CPU that keeps every structural feature."""
    unet = dict(
        sample_size=RES // 2, in_channels=4, out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(32, 64), layers_per_block=1, attention_head_dim=(2, 4),
        cross_attention_dim=32, use_linear_projection=True, norm_num_groups=8,
    )
    vae = dict(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), layers_per_block=1,
        latent_channels=4, norm_num_groups=4, sample_size=RES, scaling_factor=0.18215,
    )
    vre = dict(resolution=RES, in_channels=3, ch=8, ch_mult=(1, 2), num_res_blocks=1,
               codebook_size=16, codebook_dim=8, out_dim=32, tokens=77)
    base = dict(method=method, resolution=RES, unet=unet, vae=vae, prompt_tokens=77)
    if method == "instantrestore":
        base.update(vre=None, separate_ref_unet=True, timestep=249, add_noise=True,
                    x0_in_float64=False, latent_sample="sample", train_input=False,
                    use_adain=True, freeu=FREEU, vae_skip_convs=True, skip_gamma=0.7)
    elif method == "osdface":
        base.update(vre=vre, separate_ref_unet=False, timestep=399, add_noise=False,
                    x0_in_float64=True, latent_sample="sample", train_input=False,
                    use_adain=False, freeu=None, vae_skip_convs=False)
    else:  # hybrid, like the embedded default
        base.update(vre=vre, separate_ref_unet=False, timestep=399, add_noise=False,
                    x0_in_float64=False, latent_sample="mode", train_input=True,
                    use_adain=True, freeu=None, vae_skip_convs=False)
    base.update(overrides)
    return RestorerConfig(**base)


def build(cfg: RestorerConfig, seed: int = 0) -> OneStepRestorer:
    """Random restorer with every part that is zero at init made non-trivial."""
    torch.manual_seed(seed)
    model = OneStepRestorer(cfg).eval()
    with torch.no_grad():
        model.prompt_embeds.normal_()
        if cfg.vae_skip_convs:
            for i in range(1, len(cfg.vae["block_out_channels"]) + 1):
                getattr(model.vae.decoder, f"skip_conv_{i}").weight.normal_(std=0.2)
    return model


def faces(n: int, seed: int) -> torch.Tensor:
    return torch.rand(n, 3, RES, RES, generator=torch.Generator().manual_seed(seed))


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------------- reference math
def scheduler_alphas() -> torch.Tensor:
    from diffusers import DDPMScheduler

    sched = DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                          beta_schedule="scaled_linear", clip_sample=False)
    return sched.alphas_cumprod


def site_names(unet) -> list:
    """Up-block self-attention layers, in module order (the shared-attention sites)."""
    return [n for n, _ in unet.named_modules() if n.startswith("up_blocks.") and n.endswith(".attn1")]


def adain_head(ref_v: torch.Tensor, own_v: torch.Tensor, heads: int) -> torch.Tensor:
    """Official AdaIN, one head at a time: ref [T, C] to the token statistics of own [N, C]."""
    out = []
    for h in range(heads):
        d = ref_v.shape[1] // heads
        r, o = ref_v[:, h * d:(h + 1) * d], own_v[:, h * d:(h + 1) * d]
        r_mean, r_std = r.mean(0, keepdim=True), r.std(0, unbiased=True, keepdim=True) + 1e-5
        o_mean, o_std = o.mean(0, keepdim=True), o.std(0, unbiased=True, keepdim=True) + 1e-5
        out.append((r - r_mean) / r_std * o_std + o_mean)
    return torch.cat(out, dim=1)


class PlainState:
    """What the test processors share: recording target, or reference K/V to inject."""

    def __init__(self, sites, train_input=True, use_adain=False):
        self.sites = set(sites)
        self.train_input = train_input
        self.use_adain = use_adain
        self.recorded = None  # dict to fill, or None
        self.refs = None  # name -> (keys [Bk,R,T,C], values [Bk,R,T,C]); mask below
        self.mask = None  # [Bk, R] bool or None


class PlainAttention:
    """softmax(Q K^T * scale) V, materialised, one face and one head at a time."""

    def __init__(self, name: str, state: PlainState):
        self.name, self.state = name, state

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None,
                 temb=None, *args, **kwargs):
        assert attention_mask is None and attn.group_norm is None and attn.spatial_norm is None
        assert hidden_states.ndim == 3
        st = self.state
        residual = hidden_states
        source = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        q, k, v = attn.to_q(hidden_states), attn.to_k(source), attn.to_v(source)
        is_site = self.name in st.sites
        if is_site and st.recorded is not None:
            st.recorded[self.name] = (k.clone(), v.clone())
        inject = is_site and st.refs is not None
        heads = attn.heads
        rows = []
        for b in range(q.shape[0]):
            keys, vals = [], []
            if not inject or st.train_input:
                keys.append(k[b])
                vals.append(v[b])
            if inject:
                ref_k, ref_v = st.refs[self.name]
                bi = b if ref_k.shape[0] > 1 else 0
                for r in range(ref_k.shape[1]):
                    if st.mask is not None and not bool(st.mask[bi, r]):
                        continue
                    rv = ref_v[bi, r]
                    if st.use_adain:
                        rv = adain_head(rv, v[b], heads)
                    keys.append(ref_k[bi, r])
                    vals.append(rv)
            kk, vv = torch.cat(keys, 0), torch.cat(vals, 0)
            d = q.shape[2] // heads
            per_head = []
            for h in range(heads):
                qh, kh, vh = q[b, :, h * d:(h + 1) * d], kk[:, h * d:(h + 1) * d], vv[:, h * d:(h + 1) * d]
                weights = torch.softmax(qh @ kh.T * attn.scale, dim=-1)
                per_head.append(weights @ vh)
            rows.append(torch.cat(per_head, dim=1))
        out = attn.to_out[1](attn.to_out[0](torch.stack(rows)))
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


def plain_unet(unet, state_kwargs=None):
    """A copy of `unet` whose every attention layer runs PlainAttention."""
    unet = copy.deepcopy(unet)
    state = PlainState(site_names(unet), **(state_kwargs or {}))
    procs = {name: PlainAttention(name[: -len(".processor")], state) for name in unet.attn_processors}
    unet.set_attn_processor(procs)
    return unet, state


def plain_latent(vae, x: torch.Tensor, how: str, g) -> torch.Tensor:
    params = vae.encode(x).latent_dist.parameters
    mean, logvar = params.chunk(2, dim=1)
    if how == "mode":
        return mean
    std = torch.exp(0.5 * logvar.clamp(-30.0, 20.0))
    return mean + std * torch.randn(mean.shape, generator=g, dtype=mean.dtype)


def plain_noise(z: torch.Tensor, t: int, g) -> torch.Tensor:
    a = scheduler_alphas()[t]
    return a.sqrt() * z + (1 - a).sqrt() * torch.randn(z.shape, generator=g, dtype=z.dtype)


def plain_reference_kv(model: OneStepRestorer, refs: torch.Tensor, g) -> dict:
    """name -> (keys, values) [1, R, T, C] from a full pass of the reference UNet."""
    cfg = model.config
    vae = model.ref_vae if cfg.separate_ref_unet else model.vae
    unet, state = plain_unet(model.ref_unet if cfg.separate_ref_unet else model.unet)
    scale = vae.config.scaling_factor
    z = plain_latent(vae, refs * 2 - 1, cfg.latent_sample, g) * scale
    if cfg.add_noise:
        z = plain_noise(z, cfg.ref_timestep, g)
    state.recorded = {}
    unet(z, cfg.ref_timestep, encoder_hidden_states=model.prompt_embeds.expand(len(refs), -1, -1))
    return {name: (k[None], v[None]) for name, (k, v) in state.recorded.items()}


def plain_restore(model: OneStepRestorer, lq: torch.Tensor, refs=None, mask=None,
                  visual_prompt=False, g=None) -> torch.Tensor:
    """The whole one-step restoration written out; refs: name -> (keys, values) [Bk,R,T,C]."""
    cfg = model.config
    vae = model.vae
    scale = vae.config.scaling_factor
    x = lq * 2 - 1
    enc_inputs = []
    hooks = []
    if cfg.vae_skip_convs:
        for block in vae.encoder.down_blocks:
            hooks.append(block.register_forward_pre_hook(lambda m, a: enc_inputs.append(a[0])))
    try:
        z = plain_latent(vae, x, cfg.latent_sample, g) * scale
    finally:
        for h in hooks:
            h.remove()
    t = cfg.timestep
    z_t = plain_noise(z, t, g) if cfg.add_noise else z
    context = model.vre(x) if visual_prompt else model.prompt_embeds.expand(len(lq), -1, -1)
    unet, state = plain_unet(model.unet, dict(train_input=cfg.train_input, use_adain=cfg.use_adain))
    state.refs, state.mask = refs, mask
    eps = unet(z_t, t, encoder_hidden_states=context).sample
    a = scheduler_alphas()[t]
    if cfg.x0_in_float64:
        a64 = a.double()
        x0 = ((z_t.double() - (1 - a64).sqrt() * eps.double()) / a64.sqrt()).float()
    else:
        x0 = (z_t - (1 - a).sqrt() * eps) / a.sqrt()
    hooks = []
    if cfg.vae_skip_convs:
        deepest_first = enc_inputs[::-1]
        for i, block in enumerate(vae.decoder.up_blocks):
            conv = getattr(vae.decoder, f"skip_conv_{i + 1}")
            skip = deepest_first[i] * cfg.skip_gamma

            def add_skip(module, args, conv=conv, skip=skip):
                return (args[0] + conv(skip),) + tuple(args[1:])
            hooks.append(block.register_forward_pre_hook(add_skip))
    try:
        img = vae.decode(x0 / scale).sample
    finally:
        for h in hooks:
            h.remove()
    return (img.clamp(-1, 1) + 1) / 2


def as_plain_refs(kv: ReferenceKV) -> dict:
    return {name: (k, v) for name, k, v in zip(kv.layers, kv.keys, kv.values)}


def stack_kv(parts: list) -> ReferenceKV:
    """Per-face ReferenceKV (Bk = len(parts)) from per-face Bk = 1 sets."""
    first = parts[0]
    keys = [torch.cat([p.keys[i] for p in parts]) for i in range(len(first.layers))]
    values = [torch.cat([p.values[i] for p in parts]) for i in range(len(first.layers))]
    return ReferenceKV(list(first.layers), keys, values, None)


def close(a: torch.Tensor, b: torch.Tensor, atol: float = ATOL) -> None:
    err = (a - b).abs().max().item()
    assert err <= atol, f"max abs difference {err:.3g} > {atol:.1g}"


# ----------------------------------------------------------------------------------- forward vs reference
@pytest.mark.parametrize("train_input,use_adain", [(False, True), (True, True), (True, False)])
def test_instantrestore_forward_matches_plain_math(train_input, use_adain):
    model = build(tiny_config("instantrestore", train_input=train_input, use_adain=use_adain))
    lq, refs = faces(2, 1), faces(3, 2)
    with torch.no_grad():
        kv = model.encode_references(refs, generator=gen(10))
        out = model(lq, kv, generator=gen(11))
        plain_kv = plain_reference_kv(model, refs, gen(10))
        expected = plain_restore(model, lq, plain_kv, g=gen(11))
        no_refs = plain_restore(model, lq, None, g=gen(11))
    assert out.shape == lq.shape and out.dtype == lq.dtype
    close(out, expected)
    # the references matter: without them the plain computation gives another image
    assert (expected - no_refs).abs().max() > 100 * ATOL


def test_reference_keys_equal_a_full_plain_pass():
    model = build(tiny_config("instantrestore"))
    refs = faces(3, 3)
    with torch.no_grad():
        kv = model.encode_references(refs, generator=gen(4))
        plain = plain_reference_kv(model, refs, gen(4))
    assert list(kv.layers) == site_names(model.unet) == list(plain)
    for name, k, v in zip(kv.layers, kv.keys, kv.values):
        assert k.shape == plain[name][0].shape
        close(k, plain[name][0], 1e-5)
        close(v, plain[name][1], 1e-5)


def test_reference_pass_uses_the_separate_frozen_networks():
    """InstantRestore computes reference K/V with original_unet/original_vae, not the restorer's."""
    model = build(tiny_config("instantrestore"))
    refs = faces(2, 5)
    with torch.no_grad():
        kv = model.encode_references(refs, generator=gen(6))
        swapped = copy.deepcopy(model)
        swapped.ref_unet.load_state_dict(model.unet.state_dict())
        kv_swapped = swapped.encode_references(refs, generator=gen(6))
    assert (kv.keys[0] - kv_swapped.keys[0]).abs().max() > 1e-3


def test_osdface_forward_matches_plain_math():
    model = build(tiny_config("osdface"))
    lq = faces(2, 7)
    with torch.no_grad():
        out = model(lq, generator=gen(8))
        expected = plain_restore(model, lq, visual_prompt=True, g=gen(8))
    close(out, expected)


def test_hybrid_forward_with_both_conditionings_matches_plain_math():
    model = build(tiny_config("hybrid"))
    lq, refs = faces(2, 9), faces(2, 10)
    with torch.no_grad():
        kv = model.encode_references(refs)
        out = model(lq, kv, mode="both")
        auto = model(lq, kv)  # auto with a VRE and references = both
        expected = plain_restore(model, lq, plain_reference_kv(model, refs, None), visual_prompt=True)
    close(out, expected)
    assert torch.equal(out, auto)


def _captured_unet_io(model, lq, g):
    """(z_t into the UNet, eps out of it, latent into the VAE decoder) of one forward."""
    seen = {}
    h1 = model.unet.register_forward_pre_hook(lambda m, a, kw: seen.__setitem__("z_t", a[0].clone()),
                                              with_kwargs=True)
    h2 = model.unet.register_forward_hook(lambda m, a, o: seen.__setitem__("eps", o.sample.clone()))
    h3 = model.vae.post_quant_conv.register_forward_pre_hook(
        lambda m, a: seen.__setitem__("dec_in", a[0].clone()))
    try:
        with torch.no_grad():
            model(lq, generator=g)
    finally:
        for h in (h1, h2, h3):
            h.remove()
    return seen["z_t"], seen["eps"], seen["dec_in"]


def test_osdface_x0_is_evaluated_in_float64():
    model = build(tiny_config("osdface"))
    z_t, eps, dec_in = _captured_unet_io(model, faces(2, 12), gen(0))
    a = scheduler_alphas()[399]
    a64 = a.double()
    x0_64 = ((z_t.double() - (1 - a64).sqrt() * eps.double()) / a64.sqrt()).float()
    x0_32 = (z_t - (1 - a).sqrt() * eps) / a.sqrt()
    scale = model.vae.config.scaling_factor
    assert not torch.equal(x0_64, x0_32)  # the check below can tell the two apart
    assert torch.equal(dec_in, x0_64 / scale)


def test_instantrestore_noise_and_x0_follow_ddpm_with_the_generator():
    from diffusers import DDPMScheduler

    model = build(tiny_config("instantrestore", vae_skip_convs=False))
    lq = faces(1, 13)
    z_t, eps, dec_in = _captured_unet_io(model, lq, gen(21))
    g = gen(21)
    with torch.no_grad():
        z = plain_latent(model.vae, lq * 2 - 1, "sample", g) * model.vae.config.scaling_factor
    noise = torch.randn(z.shape, generator=g)
    sched = DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                          beta_schedule="scaled_linear", clip_sample=False)
    sched.set_timesteps(timesteps=[249])  # one step from 249 (newer diffusers look t up)
    close(z_t, sched.add_noise(z, noise, torch.tensor([249])), 1e-5)
    x0 = sched.step(eps, 249, z_t).pred_original_sample
    close(dec_in * model.vae.config.scaling_factor, x0, 1e-5)


def test_schedule_equals_diffusers_ddpm_scheduler():
    model = build(tiny_config("hybrid"))
    assert torch.equal(model.alphas_cumprod.float(), scheduler_alphas())


def test_half_precision_restorer_keeps_the_exact_schedule():
    """Casting the restorer to bf16 must not round the DDPM alphas (x0 then uses wrong alphas)."""
    model = build(tiny_config("osdface")).to(torch.bfloat16)
    z_t, eps, dec_in = _captured_unet_io(model, faces(1, 14), gen(0))
    a64 = scheduler_alphas()[399].double()
    x0 = ((z_t.double() - (1 - a64).sqrt() * eps.double()) / a64.sqrt())
    expected = (x0.to(torch.bfloat16) / model.vae.config.scaling_factor)
    assert torch.equal(dec_in, expected)


def test_half_precision_reference_latents_get_their_noise():
    """bf16: the references' t=1 noise must keep its sqrt(1 - alpha_bar[1]) = 0.041 scale.

    Only the noise is random here (latent mode), so the difference of two seeds' UNet inputs is
    that scale times the difference of the two noise draws.
    """
    model = build(tiny_config("instantrestore", latent_sample="mode")).to(torch.bfloat16)
    seen = []
    hook = model.ref_unet.register_forward_pre_hook(lambda m, a, kw: seen.append(a[0].float()),
                                                   with_kwargs=True)
    refs = faces(2, 44)
    try:
        with torch.no_grad():
            model.encode_references(refs, generator=gen(1))
            model.encode_references(refs, generator=gen(2))
    finally:
        hook.remove()
    shape = seen[0].shape
    dn = (torch.randn(shape, generator=gen(1), dtype=torch.bfloat16).float()
          - torch.randn(shape, generator=gen(2), dtype=torch.bfloat16).float())
    scale = float(((seen[0] - seen[1]) * dn).sum() / (dn * dn).sum())
    expected = float((1 - scheduler_alphas()[1]).sqrt())
    assert abs(scale / expected - 1) < 0.03, f"noise scale {scale:.4f}, expected {expected:.4f}"


# ----------------------------------------------------------------------------------- references
def test_cached_reference_kv_gives_the_same_output_as_recomputing():
    model = build(tiny_config("instantrestore"))
    lq, refs = faces(2, 15), faces(3, 16)
    with torch.no_grad():
        kv = model.encode_references(refs, generator=gen(1))
        snapshot = [k.clone() for k in kv.keys] + [v.clone() for v in kv.values]
        first = model(lq, kv, generator=gen(2))
        again = model(lq, kv, generator=gen(2))
        fresh = model(lq, model.encode_references(refs, generator=gen(1)), generator=gen(2))
        restored = ReferenceKV.from_state_dict(kv.layers, {k: v.clone() for k, v in kv.state_dict().items()})
        from_cache = model(lq, restored, generator=gen(2))
    assert torch.equal(first, again) and torch.equal(first, fresh) and torch.equal(first, from_cache)
    assert all(torch.equal(a, b) for a, b in zip(snapshot, kv.keys + kv.values))  # not mutated


def test_broadcast_references_equal_per_face_copies():
    model = build(tiny_config("instantrestore", train_input=True))
    lq, refs = faces(3, 17), faces(2, 18)
    with torch.no_grad():
        kv = model.encode_references(refs, generator=gen(3))
        per_face = ReferenceKV(list(kv.layers), [k.expand(3, -1, -1, -1).clone() for k in kv.keys],
                               [v.expand(3, -1, -1, -1).clone() for v in kv.values])
        close(model(lq, kv, generator=gen(4)), model(lq, per_face, generator=gen(4)), 1e-6)


def test_per_face_reference_sets_follow_their_own_face():
    model = build(tiny_config("hybrid"))
    lq = faces(2, 19)
    sets = [faces(2, 20), faces(2, 21)]
    with torch.no_grad():
        parts = [model.encode_references(s) for s in sets]
        batched = model(lq, stack_kv(parts))
        alone = [model(lq[i:i + 1], parts[i]) for i in range(2)]
        per_face_encoded = model.encode_references(torch.stack(sets))  # [B, R, 3, S, S]
    close(batched[0:1], alone[0], 1e-5)
    close(batched[1:2], alone[1], 1e-5)
    assert (alone[0] - model(lq[0:1], parts[1])).abs().max() > 100 * ATOL
    for k_stacked, k_encoded in zip(stack_kv(parts).keys, per_face_encoded.keys):
        close(k_stacked, k_encoded)  # summation order only (1.03e-5 measured on the 2-core CPU box)


@pytest.mark.parametrize("train_input", [True, False])
def test_masked_reference_has_no_effect(train_input):
    model = build(tiny_config("instantrestore", train_input=train_input))
    lq, refs = faces(2, 22), faces(3, 23)
    with torch.no_grad():
        kv = model.encode_references(refs, generator=gen(5))
        masked = ReferenceKV(list(kv.layers), kv.keys, kv.values, torch.tensor([[True, False, True]]))
        dropped = ReferenceKV(list(kv.layers), [k[:, [0, 2]] for k in kv.keys],
                              [v[:, [0, 2]] for v in kv.values])
        out_masked = model(lq, masked, generator=gen(6))
        out_dropped = model(lq, dropped, generator=gen(6))
        expected = plain_restore(model, lq, as_plain_refs(kv), mask=masked.mask, g=gen(6))
    close(out_masked, out_dropped, 1e-5)
    close(out_masked, expected)


def test_per_face_masks_and_fully_masked_set_with_own_tokens():
    model = build(tiny_config("instantrestore", train_input=True))
    lq, refs = faces(2, 24), faces(2, 25)
    with torch.no_grad():
        kv = model.encode_references(refs, generator=gen(7))
        per_face = ReferenceKV(list(kv.layers), [k.expand(2, -1, -1, -1) for k in kv.keys],
                               [v.expand(2, -1, -1, -1) for v in kv.values],
                               torch.tensor([[True, False], [False, False]]))
        out = model(lq, per_face, generator=gen(8))
        expected = plain_restore(model, lq, as_plain_refs(per_face), mask=per_face.mask, g=gen(8))
        no_refs = model(lq, None, generator=gen(8))
    close(out, expected)
    close(out[1:2], no_refs[1:2], 1e-5)  # a face whose references are all masked: plain self-attention


def test_reference_pass_stops_after_the_last_site():
    model = build(tiny_config("instantrestore"))
    calls = []
    hook = model.ref_unet.conv_out.register_forward_hook(lambda *a: calls.append(1))
    try:
        with torch.no_grad():
            kv = model.encode_references(faces(2, 26), generator=gen(9))
            assert calls == []  # the UNet's tail never ran
            model.ref_unet(torch.zeros(1, 4, RES // 2, RES // 2), 1,
                           encoder_hidden_states=model.prompt_embeds)
    finally:
        hook.remove()
    assert calls == [1]  # the hook itself works
    assert len(kv.keys) == len(site_names(model.unet)) >= 2
    # the context is back to "off": a later plain UNet call is not recording or injecting
    assert model._ctx.mode == "off" and model._ref_ctx.mode == "off"


def test_architecture_mismatch_is_refused():
    model = build(tiny_config("instantrestore"))
    with torch.no_grad():
        kv = model.encode_references(faces(1, 27), generator=gen(0))
    wrong = ReferenceKV([n + ".x" for n in kv.layers], kv.keys, kv.values)
    with pytest.raises(ValueError, match="reference bank"):
        model(faces(1, 28), wrong, generator=gen(0))


# ----------------------------------------------------------------------------------- config effects
def test_freeu_is_applied_to_both_unets():
    model = build(tiny_config("instantrestore"))
    for unet in (model.unet, model.ref_unet):
        for block in unet.up_blocks:
            assert (block.s1, block.s2, block.b1, block.b2) == FREEU
    lq = faces(1, 29)
    with torch.no_grad():
        on = model(lq, generator=gen(1))
        model.unet.disable_freeu()
        off = model(lq, generator=gen(1))
    assert (on - off).abs().max() > 100 * ATOL
    plain = build(tiny_config("osdface"))
    assert all(getattr(b, "b1", None) is None for b in plain.unet.up_blocks)


def test_skip_convs_change_the_output_with_gamma():
    model = build(tiny_config("instantrestore", train_input=True))
    lq = faces(1, 30)
    with torch.no_grad():
        base = model(lq, generator=gen(2))
        model.config.skip_gamma = 0.0
        no_skip = model(lq, generator=gen(2))
        plain_no_skip = plain_restore(model, lq, g=gen(2))
    close(no_skip, plain_no_skip)
    assert (base - no_skip).abs().max() > 100 * ATOL


def test_seeded_runs_are_deterministic_and_seeds_matter():
    model = build(tiny_config("instantrestore"))
    lq, refs = faces(2, 31), faces(2, 32)
    with torch.no_grad():
        a = model(lq, model.encode_references(refs, generator=gen(1)), generator=gen(2))
        b = model(lq, model.encode_references(refs, generator=gen(1)), generator=gen(2))
        c = model(lq, model.encode_references(refs, generator=gen(1)), generator=gen(3))
        kv_a = model.encode_references(refs, generator=gen(1))
        kv_b = model.encode_references(refs, generator=gen(5))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert not torch.equal(kv_a.keys[0], kv_b.keys[0])


def test_batching_does_not_mix_faces():
    model = build(tiny_config("hybrid"))
    lq, refs = faces(3, 33), faces(2, 34)
    with torch.no_grad():
        kv = model.encode_references(refs)
        batched = model(lq, kv)
        single = torch.cat([model(lq[i:i + 1], kv) for i in range(3)])
    close(batched, single, 1e-5)


# ----------------------------------------------------------------------------------- modes
def test_modes_resolve():
    hybrid = build(tiny_config("hybrid"))
    ir = build(tiny_config("instantrestore"))
    with torch.no_grad():
        kv = hybrid.encode_references(faces(1, 35))
    def used(model, mode, refs):
        cond = model.conditioning(mode, refs)
        return cond.use_references, cond.use_visual_prompt

    assert used(hybrid, "auto", kv) == (True, True)
    assert used(hybrid, "auto", None) == (False, True)
    assert used(hybrid, "references", kv) == (True, False)
    assert used(hybrid, "visual_prompt", kv) == (False, True)
    assert used(hybrid, "none", kv) == (False, False)
    assert used(ir, "auto", None) == (False, False)
    lq = faces(1, 36)
    with torch.no_grad():
        vp_only = hybrid(lq, kv, mode="visual_prompt")
        assert torch.equal(vp_only, hybrid(lq, None, mode="visual_prompt"))
        expected = plain_restore(hybrid, lq, None, visual_prompt=False)
        close(hybrid(lq, kv, mode="none"), expected)


@pytest.mark.parametrize("method,mode,refs,message", [
    ("instantrestore", "visual_prompt", False, "visual-prompt"),
    ("instantrestore", "both", True, "visual-prompt"),
    ("hybrid", "references", False, "reference"),
    ("hybrid", "both", False, "reference"),
    ("hybrid", "fastest", False, "mode must be one of"),
])
def test_modes_fail_with_clear_errors(method, mode, refs, message):
    model = build(tiny_config(method))
    kv = None
    if refs:
        with torch.no_grad():
            kv = model.encode_references(faces(1, 37), generator=gen(0))
    with pytest.raises(ValueError, match=message):
        model(faces(1, 38), kv, mode=mode, generator=gen(0))


def test_reference_mask_shape_is_checked():
    model = build(tiny_config("hybrid"))
    with pytest.raises(ValueError, match="mask"):
        model.encode_references(faces(2, 39), mask=torch.ones(1, 3, dtype=torch.bool))


def test_plain_attention_is_a_fair_reference():
    """Sanity of the test's own reference: with no references it equals diffusers' AttnProcessor."""
    from diffusers.models.attention_processor import AttnProcessor

    model = build(tiny_config("osdface"))
    unet_plain, _ = plain_unet(model.unet)
    unet_diffusers = copy.deepcopy(model.unet)
    unet_diffusers.set_attn_processor(AttnProcessor())
    z = torch.randn(2, 4, RES // 2, RES // 2, generator=gen(0))
    ctx = torch.randn(2, 77, 32, generator=gen(1))
    with torch.no_grad():
        a = unet_plain(z, 399, encoder_hidden_states=ctx).sample
        b = unet_diffusers(z, 399, encoder_hidden_states=ctx).sample
    close(a, b, 1e-4 * max(1.0, float(b.abs().max())))
    assert math.isfinite(float(a.abs().sum()))


# ----------------------------------------------------------------------------------- fast.py
@pytest.mark.parametrize("method", ["instantrestore", "osdface", "hybrid"])
def test_fast_restorer_equals_forward_exactly(method):
    from restorer_core.models.fast import FastRestorer

    model = build(tiny_config(method))
    fast = FastRestorer(model)
    lq = faces(2, 40)
    with torch.no_grad():
        kv = None if method == "osdface" else model.encode_references(faces(2, 41), generator=gen(1))
        expected = model(lq, kv, generator=gen(2))
        per_face = model(lq, kv, generator=[gen(3), gen(4)])
    assert torch.equal(fast(lq, kv, generator=gen(2)), expected)
    assert torch.equal(fast(lq, kv, generator=[gen(3), gen(4)]), per_face)  # pipeline style
    if kv is not None:
        masked = ReferenceKV(list(kv.layers), kv.keys, kv.values, torch.tensor([[True, False]]))
        with torch.no_grad():
            assert torch.equal(fast(lq, masked, generator=gen(2)), model(lq, masked, generator=gen(2)))


def test_fast_restorer_channels_last_keeps_the_output():
    from restorer_core.models.fast import FastRestorer, SpeedConfig

    model = build(tiny_config("instantrestore"))
    lq = faces(2, 42)
    with torch.no_grad():
        kv = model.encode_references(faces(2, 43), generator=gen(1))
        expected = model(lq, kv, generator=gen(2))
    speed = SpeedConfig(channels_last=True)
    with pytest.raises(ValueError, match="apply_to"):  # the wrapper never changes the model itself
        FastRestorer(model, speed)
    speed.apply_to(model)
    fast = FastRestorer(model, speed)
    assert model.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    close(fast(lq, kv, generator=gen(2)), expected, 1e-5)
    with pytest.raises(ValueError, match="mode must be one of"):
        fast(lq, kv, mode="turbo")


def test_speed_config_rejects_conflicts():
    from restorer_core.models.fast import FastRestorer, SpeedConfig

    with pytest.raises(ValueError, match="already uses CUDA graphs"):
        SpeedConfig(cuda_graph=True, compile_mode="reduce-overhead")
    with pytest.raises(ValueError, match="compile_mode"):
        SpeedConfig(compile_mode="fastest")
    with pytest.raises(ValueError, match="need a compile_mode"):
        SpeedConfig(inductor=(("freezing", True),))
    # a CUDA graph needs a CUDA device: on the CPU the option is ignored, the output is the same
    model = build(tiny_config("hybrid"))
    lq = faces(1, 44)
    with torch.no_grad():
        expected = model(lq, None, generator=gen(2))
    assert torch.equal(FastRestorer(model, SpeedConfig(cuda_graph=True))(lq, None, generator=gen(2)), expected)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("out_channels", [None, 6])
def test_phase_upsample_is_upsample_then_conv(channels_last, out_channels):
    """Four 2x2 convs at the low resolution compute nearest-2x + 3x3 conv (float64: to rounding)."""
    from diffusers.models.upsampling import Upsample2D

    from restorer_core.models.upsample_fusion import PhaseUpsample2D

    torch.manual_seed(5)
    up = Upsample2D(8, use_conv=True, out_channels=out_channels).double()
    with torch.no_grad():
        up.conv.bias.normal_()
    x = torch.randn(2, 8, 5, 7, dtype=torch.float64)
    if channels_last:
        up, x = up.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    fused = PhaseUpsample2D(up)
    with torch.no_grad():
        expected, out = up(x), fused(x)
        # an explicit odd output size (UNet inputs not divisible by 8) takes the plain path
        odd, odd_fused = up(x, output_size=(11, 13)), fused(x, output_size=(11, 13))
    assert out.shape == expected.shape == (2, out_channels or 8, 10, 14)
    close(out, expected, 1e-12)
    assert out.is_contiguous(memory_format=torch.channels_last) == channels_last
    assert torch.equal(odd, odd_fused)
    assert set(fused.state_dict()) == set(up.state_dict())  # same weights, no new persistent keys


def test_fused_upsample_restorer_keeps_output_hash_and_state_dict():
    from restorer_core.models.fast import SpeedConfig, speed_up
    from restorer_core.models.upsample_fusion import PhaseUpsample2D, fuse_upsample_convs

    model = build(tiny_config("instantrestore"))
    lq = faces(2, 45)
    keys, digest = set(model.state_dict()), model.weight_hash()
    with torch.no_grad():
        kv = model.encode_references(faces(2, 46), generator=gen(1))
        expected = model(lq, kv, generator=gen(2))
    fast = speed_up(model, SpeedConfig(fuse_upsample=True))
    fused = [m for m in model.modules() if isinstance(m, PhaseUpsample2D)]
    # every up block of both UNets and of the VAE decoder(s)
    assert len(fused) >= len(model.config.unet["block_out_channels"]) - 1 + len(model.config.vae["block_out_channels"]) - 1
    assert set(model.state_dict()) == keys and model.weight_hash() == digest
    close(fast(lq, kv, generator=gen(2)), expected, 1e-5)
    with torch.no_grad():  # the bank's K/V too (reference UNet up blocks)
        kv2 = model.encode_references(faces(2, 46), generator=gen(1))
    for a, b in zip(kv.keys + kv.values, kv2.keys + kv2.values):
        close(a, b, 1e-5)
    # changed weights: fusing again refreshes the kernels
    with torch.no_grad():
        fused[0].conv.weight.mul_(2)
    stale = fused[0].phase_weight.clone()
    assert fuse_upsample_convs(model) == len(fused)
    close(fused[0].phase_weight, 2 * stale, 1e-6)


def test_weights_key_follows_where_the_weights_live():
    from restorer_core.models.fast import weights_key

    model = build(tiny_config("osdface"))
    before = weights_key(model)
    assert weights_key(model) == before
    model.to(torch.float64).to(torch.float32)  # new storage, as after an offload and reload
    assert weights_key(model) != before
    assert model.offload_reference_networks("cpu") is False  # OSDFace has no reference networks


def test_weights_key_ignores_the_reference_networks():
    """Bank builds move InstantRestore's reference UNet/VAE in and out (offload_references): the
    captured restore graphs do not read them, so that must not force a new capture."""
    from restorer_core.models.fast import weights_key

    model = build(tiny_config("instantrestore"))
    before = weights_key(model)
    assert model.offload_reference_networks("cpu") is True
    model.ref_unet.to(torch.float64).to(torch.float32)
    model.ref_vae.to(torch.float64).to(torch.float32)
    assert weights_key(model) == before
    model.vae.to(torch.float64).to(torch.float32)
    assert weights_key(model) != before


def test_restore_step_traces_as_one_graph():
    """torch.compile sees the whole restore step (encode, noise, UNet with reference attention, x0,
    decode) as one graph: no host reads (a graph break, and a sync that breaks CUDA graph
    capture when the schedule lives on the GPU)."""
    from restorer_core.models.fast import FastRestorer, SpeedConfig, run_step

    from restorer_core.models.schedule import alphas_cumprod

    with torch.device("meta"):  # a default-device context (as when building on the GPU)
        assert alphas_cumprod().device.type == "cpu"
    model = build(tiny_config("instantrestore"))
    model.fuse_upsample()
    fast = FastRestorer(model, SpeedConfig(fuse_upsample=True))
    with torch.no_grad():
        kv = model.encode_references(faces(2, 41), generator=gen(1))
        inputs = fast.prepare(faces(2, 40), False, gen(2))
        with model.references_installed(kv):
            explained = torch._dynamo.explain(run_step)(model, **inputs)
    assert explained.graph_break_count == 0, [str(r.reason) for r in explained.break_reasons]
    assert explained.graph_count == 1


def test_wide_head_attention_equals_sdpa():
    """The VAE's one wide head as matmuls + softmax computes what SDPA computes (the CUDA-only
    path is forced on the CPU here); masked calls and narrow heads keep SDPA."""
    from diffusers.models.attention_processor import Attention

    from restorer_core.models.attention import SDPAProcessor, WideHeadAttnProcessor, use_wide_head_attention

    torch.manual_seed(3)
    attn = Attention(320, heads=1, dim_head=320, rescale_output_factor=1.0, eps=1e-6, norm_num_groups=8,
                     residual_connection=True, bias=True, upcast_softmax=True, _from_deprecated_attn_block=True)
    attn.set_processor(SDPAProcessor())
    narrow = Attention(64, heads=2, dim_head=32)
    holder = torch.nn.ModuleDict(dict(wide=attn, narrow=narrow))
    x = torch.randn(2, 320, 6, 5)
    with torch.no_grad():
        expected = attn(x)
        assert use_wide_head_attention(holder) == 1
        assert isinstance(attn.processor, WideHeadAttnProcessor)
        assert not isinstance(narrow.processor, WideHeadAttnProcessor)
        assert torch.equal(attn(x), expected)  # on the CPU: SDPA as before
        attn.processor.devices = ("cpu", "cuda")
        close(attn(x), expected, 1e-5)


def _model_state(model) -> tuple:
    """Everything a speed wrapper could change: module types, attention processors, weight
    storage and layout, the speed settings."""
    types = tuple((n, type(m).__name__) for n, m in model.named_modules())
    procs = tuple((n, type(m.processor).__name__) for n, m in model.named_modules() if hasattr(m, "processor"))
    weights = tuple((n, t.data_ptr(), t.stride(), t.dtype) for n, t in model.state_dict().items())
    return types, procs, weights, tuple(sorted(model.speed_settings().items()))


@pytest.mark.parametrize("speed_kwargs", [dict(), dict(cuda_graph=True), dict(compile_mode="default")])
def test_wrapping_for_speed_leaves_the_callers_model_alone(speed_kwargs):
    """FastRestorer only changes how restore_step runs: the model a caller holds is the same
    object in the same state after wrapping and restoring (compile: only wrapped, not run here)."""
    from restorer_core.models.fast import FastRestorer, SpeedConfig
    from restorer_core.pipeline import make_runner

    model = build(tiny_config("instantrestore"))
    before = _model_state(model)
    fast = FastRestorer(model, SpeedConfig(**speed_kwargs))
    assert fast.restorer is model and _model_state(model) == before
    if not speed_kwargs.get("compile_mode"):
        with torch.no_grad():
            kv = model.encode_references(faces(2, 47), generator=gen(1))
            fast(faces(2, 48), kv, generator=gen(2))
        assert _model_state(model) == before
    assert make_runner(model, "eager") is model and _model_state(model) == before


def test_speed_up_methods_are_reversible():
    """fuse_upsample / set_attention_backend / set_channels_last change how the model computes
    (same function) and undo exactly: the original modules, processors and layout come back."""
    model = build(tiny_config("instantrestore"))
    before = _model_state(model)
    lq = faces(2, 49)
    with torch.no_grad():
        kv = model.encode_references(faces(2, 50), generator=gen(1))
        expected = model(lq, kv, generator=gen(2))
    assert model.fuse_upsample() > 0
    model.set_attention_backend("wide_head")
    model.set_channels_last(True)
    changed = _model_state(model)
    assert changed[0] != before[0] and changed[3] != before[3]
    with torch.no_grad():
        close(model(lq, kv, generator=gen(2)), expected, 1e-5)
    model.unfuse_upsample()
    model.set_attention_backend("sdpa")
    model.set_channels_last(False)
    after = _model_state(model)
    assert after[:2] == before[:2] and after[3] == before[3]
    assert [w[2] for w in after[2]] == [w[2] for w in before[2]]  # layout back (storage may be new)
    with torch.no_grad():
        assert torch.equal(model(lq, kv, generator=gen(2)), expected)
    with pytest.raises(ValueError, match="attention backend"):
        model.set_attention_backend("flash")
