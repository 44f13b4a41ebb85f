"""The 4-step distilled DDIM schedule of PersonaLive (timesteps 999, 666, 333, 0).

Every frame of the window carries its own timestep, so both `add_noise` and `step` take one
timestep per frame (frames folded into the batch).
"""

import torch

TIMESTEPS = (999, 666, 333, 0)
STEP = 333


class DistilledDDIM:
    def __init__(self, beta_start=0.00085, beta_end=0.02, train_steps=1000):
        betas = torch.linspace(beta_start**0.5, beta_end**0.5, train_steps, dtype=torch.float32) ** 2
        self.alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)

    def _alphas(self, device):
        if self.alphas_cumprod.device != device:
            self.alphas_cumprod = self.alphas_cumprod.to(device)
        return self.alphas_cumprod

    def add_noise(self, x, noise, t, coef_dtype=None):
        """x, noise (N, C, h, w); t (N,) or (1,). The official code casts ᾱ to the latent dtype
        before the square roots (`coef_dtype=x.dtype`); pass float32 to skip that rounding."""
        a = self._alphas(x.device).to(coef_dtype or x.dtype)[t.to(x.device)]
        a = a.view(-1, 1, 1, 1)
        return a**0.5 * x + (1 - a) ** 0.5 * noise

    def step(self, eps, t, x):
        """One DDIM (eta=0) step of `STEP` for every frame. Returns (prev, x0) in float32."""
        return ddim_step(self._alphas(x.device), eps, t, x)


def ddim_step(alphas, eps, t, x):
    """`DistilledDDIM.step` with ᾱ given (`alphas` on x's device): a pure function, so a compiled
    chunk step can hold it."""
    t = t.to(x.device)
    a_t = alphas[t].view(-1, 1, 1, 1)
    prev_t = t - STEP
    a_prev = torch.where(prev_t >= 0, alphas[prev_t.clamp(min=0)], torch.ones_like(alphas[t])).view(-1, 1, 1, 1)
    x0 = (x - (1 - a_t) ** 0.5 * eps) / a_t**0.5
    prev = a_prev**0.5 * x0 + (1 - a_prev) ** 0.5 * eps
    return prev, x0
