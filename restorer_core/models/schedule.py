"""One-step DDPM math shared by both methods (scaled-linear betas, epsilon prediction)."""

from __future__ import annotations

import math

import torch


def alphas_cumprod(num_train_timesteps: int = 1000, beta_start: float = 0.00085,
                   beta_end: float = 0.012) -> torch.Tensor:
    """Cumulative alphas exactly as diffusers' DDPM/DDIM schedulers compute them (float32, CPU:
    also under a ``torch.device("cuda")`` context, so reading one never syncs the GPU)."""
    betas = torch.linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps, dtype=torch.float32,
                           device="cpu") ** 2
    return torch.cumprod(1.0 - betas, dim=0)


def add_noise(z: torch.Tensor, noise: torch.Tensor, alpha_bar) -> torch.Tensor:
    """Forward-diffuse clean latents z to the timestep whose cumulative alpha is alpha_bar.

    The schedule value stays a float32/64 scalar and the sum is formed in float32 whatever the
    latents' dtype: in bf16, alpha_bar[1] would round to exactly 1.0 (no noise at all).
    """
    a = float(alpha_bar)
    return (math.sqrt(a) * z.float() + math.sqrt(1.0 - a) * noise.float()).to(z.dtype)


def predict_x0(z_t: torch.Tensor, eps: torch.Tensor, alpha_bar: torch.Tensor,
               in_float64: bool = False) -> torch.Tensor:
    """x0 = (z_t - sqrt(1 - a) * eps) / sqrt(a); OSDFace evaluates it in float64.

    This is what diffusers' DDPMScheduler.step returns as pred_original_sample for a one-step
    schedule with clip_sample off (SD-Turbo's and SD 2.1's scheduler configs).
    """
    out_dtype = z_t.dtype
    work = torch.float64 if in_float64 else torch.float32
    a = float(alpha_bar)
    x0 = (z_t.to(work) - math.sqrt(1.0 - a) * eps.to(work)) / math.sqrt(a)
    return x0.to(out_dtype)
