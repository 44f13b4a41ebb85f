"""The model rewrites (models/rewrites.py: channels-last, oneDNN linear layers, fp8 linear layers)
give the frames of the plain path.

The tiny random models are chaotic: their motion modules attend almost one-hot to the motion
tokens and, at 64 px, the deepest GroupNorms see 2 values per group, so a 1e-6 change of the UNet
input moves the output by O(1). Rounding-level differences (another conv kernel for
channels-last) are therefore compared on a damped copy (conftest's `damped`) at 128 px, where that
gain is a few units (asserted below). Tolerance: 1e-4 on frames in [0, 1] (a 40th of one 8-bit level).
"""

import copy

import pytest
import torch

from personalive_core.config import SpeedOptions
from personalive_core.devtools.random_weights import random_taesd
from personalive_core.models import rewrites
from personalive_core.models.taesd import decode as taesd_decode
from streams import SIZE, TOL, stream


def rewritten(models, **options):
    """A copy of `models` with the rewrites `options` turn on."""
    m = copy.deepcopy(models)
    rewrites.apply_rewrites(
        m.modules().values(),
        SpeedOptions(**{"channels_last": False, "onednn_linear": False, **options}),
        fp8=[m.denoising_unet],
    )
    return m


@pytest.fixture(scope="module")
def plain(damped, reference_image):
    return stream(damped, reference_image, 3)


def test_damped_model_is_well_conditioned(damped, reference_image, plain):
    """The comparison model's own sensitivity: a 1e-6 relative input change stays below TOL."""
    m = copy.deepcopy(damped)
    forward = m.denoising_unet.forward
    m.denoising_unet.forward = lambda sample, *a, **k: forward(sample * (1 + 1e-6), *a, **k)
    assert (stream(m, reference_image, 3) - plain).abs().max() < TOL
    assert torch.equal(stream(damped, reference_image, 3), plain)  # and the plain path is deterministic


def test_channels_last_gives_the_same_frames(damped, reference_image, plain):
    m = rewritten(damped, channels_last=True)
    assert m.denoising_unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert m.vae.decoder.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert (stream(m, reference_image, 3) - plain).abs().max() < TOL


@pytest.mark.parametrize("shape", [(7, 40), (2, 9, 40), (3, 1, 5, 40)])
def test_onednn_linear_is_the_linear_product(shape):
    g = torch.Generator().manual_seed(0)
    x, w, b = torch.randn(shape, generator=g), torch.randn(24, 40, generator=g), torch.randn(24, generator=g)
    torch.testing.assert_close(
        rewrites.onednn_linear(x, w, b), torch.nn.functional.linear(x, w, b), atol=1e-5, rtol=1e-5
    )
    torch.testing.assert_close(
        rewrites.onednn_linear(x.transpose(0, -2) if x.dim() > 2 else x, w),
        torch.nn.functional.linear(x.transpose(0, -2) if x.dim() > 2 else x, w),
        atol=1e-5,
        rtol=1e-5,
    )  # non-contiguous input


def test_onednn_linear_gives_the_same_frames(damped, reference_image, plain):
    m = rewritten(damped, onednn_linear=True, channels_last=True)
    linears = [mod for mod in m.denoising_unet.modules() if isinstance(mod, torch.nn.Linear)]
    assert linears and all(type(mod) is rewrites.OneDNNLinear for mod in linears)
    assert set(m.denoising_unet.state_dict()) == set(damped.denoising_unet.state_dict())
    assert (stream(m, reference_image, 3) - plain).abs().max() < TOL


def test_channels_last_taesd_gives_the_same_frames():
    latents = torch.randn(4, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    plain_taesd = random_taesd(seed=0)
    last = rewrites.to_channels_last(random_taesd(seed=0))
    assert last[1].weight.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(taesd_decode(last, latents), taesd_decode(plain_taesd, latents), atol=1e-5, rtol=0)


def test_taesd_stream_is_deterministic(damped, reference_image):
    m = rewritten(damped, channels_last=True)
    a = stream(damped, reference_image, 1, decoder=random_taesd(0))
    assert a.shape == (4, SIZE, SIZE, 3) and a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, stream(damped, reference_image, 1, decoder=random_taesd(0)))
    assert (stream(m, reference_image, 1, decoder=rewrites.to_channels_last(random_taesd(0))) - a).abs().max() < TOL


@pytest.mark.skipif(rewrites.FP8 is None, reason="this torch has no float8 dtypes")
@pytest.mark.parametrize("features", [(320, 640), (1280, 1280), (16, 320)])
def test_fp8_linear_error_on_random_data(features):
    """fp8 linear layers, emulated on the CPU (float8 values and scales, float32 product): the error
    of per-tensor e4m3 (3 mantissa bits) against float32 on random data. Measured 0.036–0.037 for these
    shapes; the CUDA product (torch._scaled_mm, float32 accumulation) rounds the same operands."""
    k, n = features
    g = torch.Generator().manual_seed(0)
    linear = torch.nn.Linear(k, n)
    x = torch.randn(4, 77, k, generator=g)
    with torch.no_grad():
        want, got = linear(x), rewrites.Fp8Linear(linear)(x)
    error = float((got - want).norm() / want.norm())
    assert 0.01 < error < 0.05, error


@pytest.mark.skipif(rewrites.FP8 is None, reason="this torch has no float8 dtypes")
def test_fp8_swap_only_where_supported_and_only_fitting_layers():
    net = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.GELU(), torch.nn.Linear(64, 10))
    assert not rewrites.fp8_supported("cpu")
    assert rewrites.linears_to_fp8(net) == 0 and type(net[0]) is torch.nn.Linear  # the CPU: nothing changes
    x = torch.randn(3, 32)
    net.requires_grad_(False)
    want = net(x)
    assert rewrites.linears_to_fp8(net, force=True) == 1  # 64→10: not a multiple of 16, kept
    assert type(net[0]) is rewrites.Fp8Linear and type(net[2]) is torch.nn.Linear
    assert net[0].weight_fp8.dtype == rewrites.FP8 and net[0].bias is not None
    assert float((net(x) - want).norm() / want.norm()) < 0.06
