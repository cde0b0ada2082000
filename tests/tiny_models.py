"""The tiny random-weight restorer that the CLI, bank, pipeline and distributed tests share."""

from restorer_core.models.config import RestorerConfig, small_default_config


def tiny_config(noisy: bool = False) -> RestorerConfig:
    """small_default_config at 64 px with a fraction of the widths (fast on 2 CPU cores).

    noisy: InstantRestore-style randomness (sampled latent, noised to t = 249).
    """
    cfg = small_default_config(64)
    cfg.unet.update(block_out_channels=(32, 32, 64), attention_head_dim=(1, 1, 2), cross_attention_dim=64)
    cfg.vae.update(block_out_channels=(16, 16, 32), norm_num_groups=8)
    cfg.vre.update(ch=8, codebook_size=32, codebook_dim=16, out_dim=64)
    if noisy:
        cfg.add_noise, cfg.latent_sample, cfg.timestep = True, "sample", 249
    return cfg
