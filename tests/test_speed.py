"""The speed options give the frames of the plain path.

The tiny random models are chaotic: their motion modules attend almost one-hot to the motion
tokens and, at 64 px, the deepest GroupNorms see 2 values per group, so a 1e-6 change of the UNet
input moves the output by O(1). Rounding-level differences (another conv kernel for
channels-last, fused kernels when compiled) are therefore compared on a damped copy (conftest's
`damped`) at 128 px, where that gain is a few units (asserted below).
Tolerance: 1e-4 on frames in [0, 1] (a 40th of one 8-bit level).
"""
import copy
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import moving_frames
from personalive_core.models import speed
from personalive_core.streaming.reference import encode_reference
from personalive_core.streaming.render import to_model_frames
from personalive_core.streaming.history import KeyframeSettings
from personalive_core.streaming.session import Settings, StreamingSession, decode
from personalive_core.models.taesd import decode as taesd_decode, random_taesd

SIZE = 128
TOL = 1e-4
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def chunks(n):
    frames = moving_frames(4 * n, SIZE)
    return [to_model_frames(frames[i:i + 4], "cpu") for i in range(0, 4 * n, 4)]


def stream(models, image, n, settings=None, keyframe_at=(), decoder=None):
    """Decoded frames of the first `n` chunks; a historical keyframe (the reference latents) is
    forced before each chunk index in `keyframe_at`."""
    reference = encode_reference(models, image, SIZE)
    session = StreamingSession(models, reference, seed=1, settings=settings)
    out = []
    for i, c in enumerate(chunks(n)):
        if i in keyframe_at:
            session.attention.add_keyframe(reference.latents, reference.context)
        out.append(decode(decoder or models.vae, session.push(c)))
    return torch.cat(out)


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
    m = speed.apply_speed_options(copy.deepcopy(damped), channels_last=True)
    assert m.denoising_unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert m.vae.decoder.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert (stream(m, reference_image, 3) - plain).abs().max() < TOL


@pytest.mark.parametrize("shape", [(7, 40), (2, 9, 40), (3, 1, 5, 40)])
def test_onednn_linear_is_the_linear_product(shape):
    g = torch.Generator().manual_seed(0)
    x, w, b = torch.randn(shape, generator=g), torch.randn(24, 40, generator=g), torch.randn(24, generator=g)
    torch.testing.assert_close(speed.onednn_linear(x, w, b), torch.nn.functional.linear(x, w, b), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(speed.onednn_linear(x.transpose(0, -2) if x.dim() > 2 else x, w),
                               torch.nn.functional.linear(x.transpose(0, -2) if x.dim() > 2 else x, w),
                               atol=1e-5, rtol=1e-5)  # non-contiguous input


def test_onednn_linear_gives_the_same_frames(damped, reference_image, plain):
    m = speed.apply_speed_options(copy.deepcopy(damped), onednn=True, channels_last=True)
    linears = [mod for mod in m.denoising_unet.modules() if isinstance(mod, torch.nn.Linear)]
    assert linears and all(type(mod) is speed.OneDNNLinear for mod in linears)
    assert set(m.denoising_unet.state_dict()) == set(damped.denoising_unet.state_dict())
    assert (stream(m, reference_image, 3) - plain).abs().max() < TOL


def test_channels_last_taesd_gives_the_same_frames():
    latents = torch.randn(4, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    plain_taesd = random_taesd(seed=0)
    last = speed.to_channels_last(random_taesd(seed=0))
    assert last[1].weight.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(taesd_decode(last, latents), taesd_decode(plain_taesd, latents), atol=1e-5, rtol=0)


def test_taesd_stream_is_deterministic(damped, reference_image):
    m = speed.apply_speed_options(copy.deepcopy(damped), channels_last=True)
    a = stream(damped, reference_image, 1, decoder=random_taesd(0))
    assert a.shape == (4, SIZE, SIZE, 3) and 0 <= a.min() and a.max() <= 1
    assert torch.equal(a, stream(damped, reference_image, 1, decoder=random_taesd(0)))
    assert (stream(m, reference_image, 1, decoder=speed.to_channels_last(random_taesd(0))) - a).abs().max() < TOL


@pytest.mark.parametrize("keyframes", [0, 1, 2, 3])
def test_static_step_gives_the_same_frames(damped, reference_image, keyframes):
    """Masked keyframe slots (the static step) against the growing concatenation, with 0..3 of the 3
    slots filled: an empty slot changes nothing beyond rounding."""
    at = tuple(range(1, 1 + keyframes))
    want = stream(damped, reference_image, 4, keyframe_at=at)
    got = stream(damped, reference_image, 4, Settings(static_step=True), keyframe_at=at)
    assert (got - want).abs().max() < TOL


def test_static_step_with_keyframes_off(damped, reference_image, plain):
    settings = Settings(static_step=True, keyframes=KeyframeSettings(max_keyframes=0))
    assert (stream(damped, reference_image, 3, settings) - plain).abs().max() < TOL


class CountingBackend:
    """A torch.compile backend that runs the captured graph as it is and counts the compilations."""

    def __init__(self):
        self.graphs = []

    def __call__(self, gm, example_inputs):
        self.graphs.append(gm)
        return gm.forward


def test_compiled_step_compiles_once_for_a_whole_stream(damped, reference_image, monkeypatch):
    """The compiled static step (graph capture without code generation) gives the very same frames as
    the eager static step while 3 keyframes are added, and compiles a fixed set of graphs at the first
    chunk: nothing when a keyframe is added, nothing for a second stream on the same networks."""
    backend = CountingBackend()
    monkeypatch.setattr(speed, "BACKEND", backend)
    at = (2, 3, 4)
    want = stream(damped, reference_image, 6, Settings(static_step=True), keyframe_at=at)
    m = speed.apply_speed_options(copy.deepcopy(damped), compile=True)
    assert m.denoising_unet._speed_compiled == {"backend": backend}
    first = stream(m, reference_image, 2)
    graphs = len(backend.graphs)
    assert graphs >= 2  # the denoiser step and the pose guider
    assert torch.equal(stream(m, reference_image, 6, keyframe_at=at), want)
    assert len(backend.graphs) == graphs
    assert torch.equal(stream(m, reference_image, 2), first)
    assert len(backend.graphs) == graphs


def test_keyframes_found_by_the_stream_fill_static_slots(damped, reference_image):
    """Threshold 0 accepts every tested chunk: the static step fills its slots in stream order and
    stops at max_keyframes, as the growing layout does."""
    kf = KeyframeSettings(threshold=0.0, first_chunk=1)
    plain_session, static_session = (
        StreamingSession(damped, encode_reference(damped, reference_image, SIZE), seed=1,
                         settings=Settings(keyframes=kf, static_step=static)) for static in (False, True))
    for c in chunks(6):
        a, b = (decode(damped.vae, s.push(c)) for s in (plain_session, static_session))
        assert (a - b).abs().max() < TOL
    assert plain_session.attention.keyframes == static_session.attention.keyframes == 3


@pytest.mark.slow  # inductor code generation: 90-140 s cold on 2 busy CPU cores, ~15 s warm
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
def test_compile_gives_the_same_frames(damped, reference_image, plain):
    """Real compilation (inductor, the CPU mode), kept to one chunk."""
    m = speed.apply_speed_options(copy.deepcopy(damped), compile=True)
    assert (stream(m, reference_image, 1) - plain[:4]).abs().max() < TOL


def test_default_speed_options():
    assert speed.default_speed_options("cpu", torch.float32) == {
        "channels_last": True, "onednn_linear": True, "reuse_memory": True, "cudnn_benchmark": False}
    assert speed.default_speed_options("cpu", torch.bfloat16)["onednn_linear"] is False
    cuda = speed.default_speed_options("cuda", torch.float16)
    assert cuda.pop("cudnn_benchmark") and not any(cuda.values())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_apply_default_options_to_one_module(dtype):
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.Linear(8, 8)).to(dtype)
    assert speed.apply_default_options(net, "cpu", dtype) is net
    assert net[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert (type(net[1]) is speed.OneDNNLinear) == (dtype == torch.float32)
    gpu = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.Linear(8, 8))
    speed.apply_default_options(gpu, "cuda", torch.float16)  # nothing on by default there
    assert type(gpu[1]) is torch.nn.Linear and not gpu[0].weight.is_contiguous(memory_format=torch.channels_last)


FAULTS = """
import resource, sys, torch
from personalive_core.models import speed
if sys.argv[1] == "reuse":
    assert speed.reuse_freed_memory()
def faults_of_a_fresh_block():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.empty(25_000_000).fill_(1.0)  # 100 MB, freed at once
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
faults = [faults_of_a_fresh_block() for _ in range(30)]
print(sum(faults[20:]))  # the heap takes a few blocks to settle (alignment splits), then reuses
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_reuse_freed_memory_stops_refaulting_large_blocks():
    """Each process its own allocator: by default a freed 100 MB block is unmapped, so the next one
    is page-faulted again (~25 000 faults of 4 kB, every time); with reuse it comes back from the heap
    (measured: from the 3rd to 7th block on, none)."""
    def faults(mode):
        run = subprocess.run([sys.executable, "-c", FAULTS, mode], capture_output=True, text=True,
                             cwd=ROOT, check=True)
        return int(run.stdout.split()[-1])
    plain, reused = faults("plain"), faults("reuse")
    assert plain > 10 * 20_000 and reused < plain / 20, (plain, reused)


@pytest.mark.skipif(speed.FP8 is None, reason="this torch has no float8 dtypes")
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
        want, got = linear(x), speed.Fp8Linear(linear)(x)
    error = float((got - want).norm() / want.norm())
    assert 0.01 < error < 0.05, error


@pytest.mark.skipif(speed.FP8 is None, reason="this torch has no float8 dtypes")
def test_fp8_swap_only_where_supported_and_only_fitting_layers():
    net = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.GELU(), torch.nn.Linear(64, 10))
    assert not speed.fp8_supported("cpu")
    assert speed.linears_to_fp8(net) == 0 and type(net[0]) is torch.nn.Linear  # the CPU: nothing changes
    x = torch.randn(3, 32)
    net.requires_grad_(False)
    want = net(x)
    assert speed.linears_to_fp8(net, force=True) == 1  # 64→10: not a multiple of 16, kept
    assert type(net[0]) is speed.Fp8Linear and type(net[2]) is torch.nn.Linear
    assert net[0].weight_fp8.dtype == speed.FP8 and net[0].bias is not None
    assert float((net(x) - want).norm() / want.norm()) < 0.06


def test_sdpa_backend_context_keeps_the_result():
    q, k, v = (torch.randn(1, 2, 8, 4, generator=torch.Generator().manual_seed(i)) for i in range(3))
    want = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    for name in ("auto", "math"):
        with speed.sdpa_backend(name):
            torch.testing.assert_close(torch.nn.functional.scaled_dot_product_attention(q, k, v), want)
    with pytest.raises(ValueError, match="SDPA backend"):
        speed.sdpa_backend("fastest")


def test_cudnn_benchmark_is_restored():
    before = torch.backends.cudnn.benchmark
    with speed.cudnn_benchmark(not before):
        assert torch.backends.cudnn.benchmark is (not before)
    assert torch.backends.cudnn.benchmark is before
