"""Speed options: channels-last memory format, linear layers through oneDNN, `torch.compile` of
the denoising UNet, and (a process setting) reuse of freed memory on the CPU.

`apply_speed_options(models, channels_last=..., compile=..., onednn=...)` changes the models in place (load
a fresh set to go back). Neither option changes the maths: channels-last only reorders memory
(frames agree with the plain path to float rounding), and the compiled UNet computes the same
graph with fused kernels.

Compilation uses static shapes. The UNet's inputs keep their shapes for the whole stream, except
the reference keys/values, which grow by one block of tokens per historical keyframe (at most
`KeyframeSettings.max_keyframes`): each new keyframe count compiles once more. The reference
keys/values are projected eagerly before every compiled call (they are cached per reference and
keyframe anyway), so the compiled graph only reads them and never writes Python state.
"""
import ctypes
import ctypes.util
import sys

import torch

from .unet import transformer_blocks

# CPU: frozen weights (constants of the graph, so convolution weights are prepacked once for oneDNN
# instead of reordered at every call); CUDA: CUDA graphs. Autotuning is left out on the CPU: at the
# published sizes it takes longer than the streams it would speed up.
COMPILE_OPTIONS = {"cpu": {"options": {"freezing": True}}, "cuda": {"mode": "reduce-overhead"}}
BACKEND = "inductor"  # tests of the wiring swap in "eager" (same graph, no code generation)


def compile_options(device):
    return COMPILE_OPTIONS.get(torch.device(device).type, COMPILE_OPTIONS["cpu"])


def compile_label(device):
    """What `compile` means on `device`, for logs and the bench JSON."""
    options = compile_options(device)
    return options.get("mode") or "+".join(["inductor", *options.get("options", {})])


def to_channels_last(module):
    """Put every 4-D parameter and buffer of `module` in channels-last memory format."""
    return module.to(memory_format=torch.channels_last)


def _prepare_reference_kv(blocks, dtype):
    """Project (and cache) every bound reference bank's keys/values outside the compiled graph."""
    for block in blocks:
        ref = block.reference
        if ref is not None and getattr(ref, "cache_kv", False) and hasattr(ref, "kv"):
            ref.kv(block.attn1, dtype)


def compile_unet(unet, device=None):
    """Replace `unet.forward` (this instance only) by a compiled one with static shapes.

    Returns the unet. The first call (and the first call after each new historical keyframe)
    compiles; later calls run the compiled code."""
    if getattr(unet, "_speed_compiled", None):
        return unet
    options = compile_options(device or unet.conv_in.weight.device) if BACKEND == "inductor" else {}
    compiled = torch.compile(type(unet).forward.__get__(unet), backend=BACKEND, dynamic=False, **options)
    blocks = [b for _, b in transformer_blocks(unet)]

    def forward(*args, **kwargs):
        _prepare_reference_kv(blocks, unet.dtype)
        return compiled(*args, **kwargs)

    unet.forward = forward  # instance attribute: nn.Module.__call__ dispatches to it
    unet._speed_compiled = compile_label(device or unet.conv_in.weight.device) if options else BACKEND
    return unet


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


def apply_speed_options(models, channels_last=False, compile=False, extra=(), onednn=False):
    """Apply the speed options to a PersonaLiveModels in place; `extra`: more modules (e.g. a
    TAESD decoder) to put in channels-last too. Returns `models`."""
    if onednn:
        for module in models.modules().values():
            linear_through_onednn(module)
    if channels_last:
        for module in list(models.modules().values()) + list(extra):
            to_channels_last(module)
    if compile:
        compile_unet(models.denoising_unet)
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
    rounding of the plain path). On a GPU none is on by default: none is measured there yet."""
    cpu = torch.device(device).type == "cpu"
    return {"channels_last": cpu, "onednn_linear": cpu and dtype == torch.float32, "reuse_memory": cpu}


def apply_default_options(module, device, dtype):
    """The per-module defaults for `device`/`dtype` (channels-last, oneDNN linear layers) on one
    module, in place; memory reuse, a process setting, is left to the caller."""
    fast = default_speed_options(device, dtype)
    if fast["onednn_linear"]:
        linear_through_onednn(module)  # plain nn.Linear again if ever moved to a GPU
    if fast["channels_last"]:
        to_channels_last(module)
    return module
