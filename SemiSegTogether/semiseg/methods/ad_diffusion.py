"""The label diffusion of A&D: forward noising q(x_t | x0) and DDIM sampling with an x0-predicting network.

As the released code (GenericSSL at 4158615: `code/DiffVNet/diff_vnet.py:512-526` builds OpenAI guided-diffusion's
`GaussianDiffusion`/`SpacedDiffusion` of `code/DiffVNet/guided_diffusion/`): linear β from 1e-4 to 0.02 over T = 1000 steps (float64), the network predicts x0 (`START_X`),
training timesteps t ~ Uniform{0..T−1}, sampling on the "spaced" timesteps of `space_timesteps(T, [n])`
(n = 10 → {0, 111, 222, …, 999}), DDIM update with η = 0, each predicted x0 clamped to [−1, 1] and the noise
direction re-derived from the *clamped* x0; the result is the last predicted x0 (at t = 0).

Why not MONAI's `DDIMScheduler`: with 10 inference steps it visits the same timesteps (999, 888, …, 0), but
its `step` takes the previous ᾱ at `t − T // n` (999 → 899, not 888) and derives ε from the *unclamped* x0,
so its trajectory differs from the reference's. The schedule itself matches MONAI's `linear_beta` (the tests
compare ᾱ with MONAI's `DDPMScheduler`).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn


def space_timesteps(num_timesteps: int, count: int) -> list[int]:
    """Evenly spaced original timesteps, guided-diffusion's rule for one section: round(i·(T−1)/(n−1))."""
    if not 1 <= count <= num_timesteps:
        raise ValueError(f"cannot take {count} sampling steps out of {num_timesteps}")
    stride = (num_timesteps - 1) / (count - 1) if count > 1 else 1
    return sorted({round(i * stride) for i in range(count)})


def linear_betas(num_timesteps: int = 1000) -> torch.Tensor:
    """β_t linear from 1e-4 to 0.02, scaled by 1000/T (guided-diffusion's "linear" with use_scale)."""
    scale = 1000.0 / num_timesteps
    return torch.linspace(scale * 1e-4, scale * 0.02, num_timesteps, dtype=torch.float64)


class LabelDiffusion(nn.Module):
    """Holds ᾱ_t (a non-persistent buffer: derived from T, so not part of checkpoints)."""

    def __init__(self, num_timesteps: int = 1000, sample_steps: int = 10, eta: float = 0.0):
        super().__init__()
        self.num_timesteps = num_timesteps
        self.eta = float(eta)
        self.sample_timesteps = space_timesteps(num_timesteps, sample_steps)
        betas = linear_betas(num_timesteps)
        self.register_buffer("alphas_cumprod", torch.cumprod(1.0 - betas, 0), persistent=False)

    def _abar(self, t: torch.Tensor, ndim: int) -> torch.Tensor:
        return self.alphas_cumprod.to(t.device)[t].float().view(-1, *([1] * (ndim - 1)))

    def sample_t(self, batch: int, device: torch.device) -> torch.Tensor:
        """t ~ Uniform{0, …, T−1} (guided-diffusion's UniformSampler)."""
        return torch.randint(0, self.num_timesteps, (batch,), device=device)

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """x_t = sqrt(ᾱ_t)·x0 + sqrt(1 − ᾱ_t)·ε."""
        if noise is None:
            noise = torch.randn_like(x0)
        abar = self._abar(t, x0.ndim)
        return abar.sqrt() * x0 + (1.0 - abar).sqrt() * noise

    @torch.no_grad()
    def ddim_sample(self, predict_x0: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], shape: tuple[int, ...],
                    device: torch.device, noise: torch.Tensor | None = None,
                    visited: list[int] | None = None) -> torch.Tensor:
        """Run DDIM from x_T ~ N(0, I) over the spaced timesteps (largest first) and return the final
        predicted x0. `predict_x0(x_t, t)` is the network (logits read as x0, as the released code does);
        `visited`, when given, receives the timesteps the network was called at."""
        x = torch.randn(shape, device=device) if noise is None else noise.float()
        steps = self.sample_timesteps[::-1]
        abars = self.alphas_cumprod.to(device)
        x0 = x
        for i, step in enumerate(steps):
            t = torch.full((shape[0],), step, device=device, dtype=torch.long)
            if visited is not None:
                visited.append(step)
            x0 = predict_x0(x, t).float().clamp(-1.0, 1.0)
            abar = abars[step].float()
            abar_prev = abars[steps[i + 1]].float() if i + 1 < len(steps) else torch.ones((), device=device)
            eps = (x / abar.sqrt() - x0) / (1.0 / abar - 1.0).sqrt()
            sigma = self.eta * ((1 - abar_prev) / (1 - abar)).sqrt() * (1 - abar / abar_prev).sqrt()
            x = x0 * abar_prev.sqrt() + (1 - abar_prev - sigma ** 2).clamp_min(0).sqrt() * eps
            if self.eta > 0 and i + 1 < len(steps):
                x = x + sigma * torch.randn_like(x)
        return x0
