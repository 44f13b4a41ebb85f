"""Speed options: channels-last memory format, linear layers through oneDNN, `torch.compile` of
the chunk step, cuDNN autotuning, the SDPA kernel choice, fp8 linear layers (Hopper), and (a process
setting) reuse of freed memory on the CPU.

`apply_speed_options(models, channels_last=..., compile=..., onednn=...)` changes the models in place (load
a fresh set to go back). Neither option changes the maths: channels-last only reorders memory
(frames agree with the plain path to float rounding), and the compiled step computes the same
graph with fused kernels. fp8 linear layers do change it (3 mantissa bits): opt-in only.

Compilation: `compile=True` marks the denoising UNet; every StreamingSession on it then runs the
*static* chunk step (session.py: keyframe slots preallocated and masked, so the shapes never change)
through `compile_function`: one graph for the denoiser pass with its DDIM step and one for the pose
guider, compiled at a stream's first chunk and reused by every later chunk and stream of the same
size; a new historical keyframe recompiles nothing. On CUDA the graphs are CUDA graphs
(`mode="reduce-overhead"`); on the CPU the weights are frozen into the graph (constants, so
convolution weights are prepacked once for oneDNN) — frozen weights assume nobody changes them, so
a host that moves or patches weights (ComfyUI) compiles with `frozen_weights=False`.
"""
import contextlib
import ctypes
import ctypes.util
import sys

import torch

# CPU: frozen weights; CUDA: CUDA graphs. Autotuning is left out on the CPU: at the published sizes
# it takes longer than the streams it would speed up.
COMPILE_OPTIONS = {"cpu": {"options": {"freezing": True}}, "cuda": {"mode": "reduce-overhead"}}
BACKEND = "inductor"  # tests of the wiring swap in "eager" (same graph, no code generation)


def compile_options(device, frozen_weights=True):
    """torch.compile keyword arguments for `device` with the current BACKEND."""
    if BACKEND != "inductor":
        return {"backend": BACKEND}
    options = dict(COMPILE_OPTIONS.get(torch.device(device).type, COMPILE_OPTIONS["cpu"]))
    if not frozen_weights:
        options.pop("options", None)
    return {"backend": BACKEND, **options}


def compile_label(options):
    """What a compile means (the options of `compile_options`), for logs and the bench JSON."""
    backend = options.get("backend")
    if backend != "inductor":
        return backend if isinstance(backend, str) else getattr(backend, "__name__", type(backend).__name__)
    return options.get("mode") or "+".join(["inductor", *options.get("options", {})])


def mark_compiled(unet, device=None, frozen_weights=True):
    """Make every StreamingSession on `unet` run the compiled static chunk step. Returns the unet."""
    device = device or unet.conv_in.weight.device
    unet._speed_compiled = compile_options(device, frozen_weights)
    return unet


def compile_function(fn, options):
    """`fn` compiled with static shapes and `options` (from `compile_options`). Wrappers of one
    function share its compiled code: a second stream on the same networks compiles nothing."""
    return torch.compile(fn, dynamic=False, **options)


def compile_decoder(decoder):
    """Compile a decoder (the SD VAE's `decoder` network, or a TAESD decoder) in place, without CUDA
    graphs, so that it may run on a second CUDA stream beside the CUDA-graphed chunk step."""
    net = getattr(decoder, "decoder", decoder)
    net.compile(dynamic=False, **({"backend": BACKEND} if BACKEND != "inductor" else {}))
    return decoder


def to_channels_last(module):
    """Put every 4-D parameter and buffer of `module` in channels-last memory format."""
    return module.to(memory_format=torch.channels_last)


SDPA_BACKENDS = ("auto", "flash", "efficient", "cudnn", "math")


def sdpa_backend(name):
    """A context in which scaled_dot_product_attention prefers the `name` kernel (auto: torch's
    own choice). The others stay allowed after it, since the flash kernel takes no mask (the static
    step's keyframe slots need one)."""
    if name == "auto":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel
    table = {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
             "cudnn": SDPBackend.CUDNN_ATTENTION, "math": SDPBackend.MATH}
    if name not in table:
        raise ValueError(f"SDPA backend {name!r}: use one of {', '.join(SDPA_BACKENDS)}")
    order = [table[name]] + [b for b in table.values() if b != table[name]]
    try:
        return sdpa_kernel(order, set_priority=True)
    except TypeError:  # torch < 2.6: no priorities, only the one kernel
        return sdpa_kernel([table[name]])


@contextlib.contextmanager
def cudnn_benchmark(on):
    """cuDNN picks the fastest convolution algorithm per shape (the shapes are static); restored after."""
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = bool(on)
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = before


# -- fp8 linear layers ---------------------------------------------------------------------------------------
FP8 = getattr(torch, "float8_e4m3fn", None)
FP8_MAX = 448.0  # largest finite float8_e4m3fn


def fp8_supported(device):
    """fp8 matrix products (torch._scaled_mm) need a Hopper-class GPU (sm_90+) and a torch with float8."""
    device = torch.device(device)
    return (FP8 is not None and hasattr(torch, "_scaled_mm") and device.type == "cuda"
            and torch.cuda.get_device_capability(device) >= (9, 0))


def to_fp8(x):
    """Per-tensor scaled float8_e4m3fn: (values, float32 scale) with x ≈ values · scale."""
    scale = (x.detach().abs().amax().float() / FP8_MAX).clamp(min=1e-12)
    return (x.float() / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8), scale


class Fp8Linear(torch.nn.Module):
    """A linear layer with its weight stored in float8 (per-tensor scale) and its input cast to float8
    (per-tensor scale, computed on the device at every call: no host synchronisation); the product
    runs in fp8 with float32 accumulation (torch._scaled_mm) on CUDA, and is emulated on the CPU
    (dequantised values, float32 product) so the numerics can be tested anywhere."""

    def __init__(self, linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        weight, scale = to_fp8(linear.weight.detach())
        self.register_buffer("weight_fp8", weight)
        self.register_buffer("weight_scale", scale)
        self.bias = linear.bias
        self.out_dtype = linear.weight.dtype

    def forward(self, x):
        rows = x.reshape(-1, self.in_features)
        a, a_scale = to_fp8(rows)
        if x.device.type == "cuda":
            out = torch._scaled_mm(a, self.weight_fp8.t(), scale_a=a_scale, scale_b=self.weight_scale,
                                   bias=None if self.bias is None else self.bias.to(self.out_dtype),
                                   out_dtype=self.out_dtype)
        else:
            out = torch.nn.functional.linear(a.float() * a_scale, self.weight_fp8.float() * self.weight_scale,
                                             None if self.bias is None else self.bias.float()).to(self.out_dtype)
        return out.reshape(*x.shape[:-1], self.out_features)


def linears_to_fp8(module, force=False):
    """Replace the nn.Linear layers of `module` whose sizes fp8 products take (multiples of 16) by
    Fp8Linear, in place, where the module's device supports fp8 (`force`: anywhere, for tests).
    Returns how many were replaced."""
    device = next(module.parameters()).device
    if not (force or fp8_supported(device)):
        return 0
    count = 0
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if (isinstance(child, torch.nn.Linear) and child.in_features % 16 == 0
                    and child.out_features % 16 == 0):
                setattr(parent, name, Fp8Linear(child))
                count += 1
    return count


def onednn_linear(x, weight, bias=None):
    """`F.linear` as a 1×1 convolution over a channels-last view: the same product, computed by
    oneDNN instead of the BLAS. On CPUs where MKL's sgemm takes a slow path (AMD EPYC: 140–200
    GFLOPS against oneDNN's 330–480 on the UNet's shapes, 2 cores) the linear layers, half of a
    chunk's time, run ~2× faster; results differ by float rounding only."""
    k, n = weight.shape[1], weight.shape[0]
    rows = x.reshape(-1, k)
    view = rows.reshape(1, -1, 1, k).permute(0, 3, 1, 2)  # (1, K, M, 1), channels-last: no copy
    out = torch.nn.functional.conv2d(view, weight.reshape(n, k, 1, 1), bias)
    return out.permute(0, 2, 3, 1).reshape(*x.shape[:-1], n)


class OneDNNLinear(torch.nn.Linear):
    """nn.Linear computed by `onednn_linear` on CPU float32 (same parameters and state-dict keys);
    elsewhere (the module moved to a GPU, another dtype) a plain nn.Linear."""

    def forward(self, x):
        if x.device.type == "cpu" and x.dtype == torch.float32:
            return onednn_linear(x, self.weight, self.bias)
        return super().forward(x)


def linear_through_onednn(module):
    """Route every nn.Linear of `module` (CPU, float32) through oneDNN, in place."""
    for m in module.modules():
        if type(m) is torch.nn.Linear and m.weight.device.type == "cpu" and m.weight.dtype == torch.float32:
            m.__class__ = OneDNNLinear
    return module


def apply_speed_options(models, channels_last=False, compile=False, extra=(), onednn=False, fp8=False,
                        frozen_weights=True):
    """Apply the speed options to a PersonaLiveModels in place; `extra`: more modules (e.g. a
    TAESD decoder) to put in channels-last too. `fp8`: the denoising UNet's linear layers in fp8
    where the GPU supports it (sm_90+; elsewhere nothing changes). Returns `models`."""
    if onednn:
        for module in models.modules().values():
            linear_through_onednn(module)
    if channels_last:
        for module in list(models.modules().values()) + list(extra):
            to_channels_last(module)
    if fp8:
        linears_to_fp8(models.denoising_unet)
    if compile:
        mark_compiled(models.denoising_unet, frozen_weights=frozen_weights)
    return models


# glibc mallopt parameters
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8
_REUSING = False


def reuse_freed_memory():
    """Make this process keep freed memory for its next allocations (glibc only; returns whether
    it is in effect).

    By default glibc serves every block over 32 MB by a fresh mmap and unmaps it when freed, so
    each large activation (a UNet layer's output is 20–170 MB at 256²) is page-faulted and zeroed
    by the kernel again: an elementwise op on 84 MB takes ~23 ms instead of ~5 ms, and a full-size
    chunk on 2 cores spends a quarter of its time there. Here large blocks come from the heap, the
    heap is not trimmed, and all threads share one arena, so memory freed by one layer serves the
    next. Peak memory is unchanged (measured); the process keeps its peak until it exits. The
    same without code: GLIBC_TUNABLES=glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:
    glibc.malloc.trim_threshold=2147483647 (e.g. for a CPU ComfyUI)."""
    global _REUSING
    if _REUSING:
        return True
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallopt"):
        return False  # musl and others: no mallopt tunables
    _REUSING = all(libc.mallopt(p, v) == 1 for p, v in
                   ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 2 ** 31 - 1)))
    return _REUSING


def default_speed_options(device, dtype):
    """The options that are on unless switched off: on the CPU channels-last, reuse of freed
    memory and, in float32, oneDNN linear layers (each measured faster there and within float
    rounding of the plain path). On CUDA only cuDNN autotuning (the same maths, and the shapes of a
    stream never change); the rest (compile, channels-last, SDPA kernel, fp8) stays off until
    `bench --suite` has measured it on a GPU."""
    cpu = torch.device(device).type == "cpu"
    return {"channels_last": cpu, "onednn_linear": cpu and dtype == torch.float32, "reuse_memory": cpu,
            "cudnn_benchmark": torch.device(device).type == "cuda"}


def apply_default_options(module, device, dtype):
    """The per-module defaults for `device`/`dtype` (channels-last, oneDNN linear layers) on one
    module, in place; memory reuse, a process setting, is left to the caller."""
    fast = default_speed_options(device, dtype)
    if fast["onednn_linear"]:
        linear_through_onednn(module)  # plain nn.Linear again if ever moved to a GPU
    if fast["channels_last"]:
        to_channels_last(module)
    return module
