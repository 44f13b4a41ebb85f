import torch

from personalive_core.streaming.scheduler import TIMESTEPS, DistilledDDIM


def test_schedule_constants():
    s = DistilledDDIM()
    betas = torch.linspace(0.00085**0.5, 0.02**0.5, 1000) ** 2
    assert torch.allclose(s.alphas_cumprod[0], 1 - betas[0])
    assert abs(s.alphas_cumprod[999].item() - torch.prod(1 - betas.double()).item()) < 1e-6
    assert TIMESTEPS == (999, 666, 333, 0)


def test_add_noise_per_frame_timesteps():
    s = DistilledDDIM()
    x, n = torch.ones(3, 4, 2, 2), torch.zeros(3, 4, 2, 2)
    out = s.add_noise(x, n, torch.tensor([0, 333, 999]))
    a = s.alphas_cumprod[[0, 333, 999]].sqrt()
    assert torch.allclose(out[:, 0, 0, 0], a)
    # one timestep broadcasts to every frame
    assert torch.allclose(s.add_noise(x, n, torch.tensor([333]))[:, 0, 0, 0], a[1].expand(3))


def test_add_noise_coefficients_in_latent_dtype():
    s = DistilledDDIM()
    x = torch.ones(1, 1, 1, 1, dtype=torch.float16)
    official = s.add_noise(x, x * 0, torch.tensor([333]))
    exact = s.add_noise(x, x * 0, torch.tensor([333]), torch.float32)
    assert official.dtype == torch.float16
    assert official.item() == s.alphas_cumprod[333].half().float().sqrt().half().item()
    assert exact.dtype == torch.float32


def test_step_inverts_add_noise_and_finishes_at_zero():
    """With the true noise as ε, x0 is the clean sample and prev is x noised one step lower."""
    s = DistilledDDIM()
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(4, 4, 3, 3, generator=g), torch.randn(4, 4, 3, 3, generator=g)
    t = torch.tensor([0, 333, 666, 999])
    xt = s.add_noise(x0, eps, t)
    prev, pred = s.step(eps, t, xt)
    assert torch.allclose(pred, x0, atol=1e-4)
    expected = s.add_noise(x0, eps, (t - 333).clamp(min=0))
    assert torch.allclose(prev[1:], expected[1:], atol=1e-4)
    assert torch.allclose(prev[0], pred[0])  # t=0: the previous sample is x0 itself
    assert prev.dtype == torch.float32 and s.step(eps.half(), t, xt.half())[0].dtype == torch.float32
