"""Model rewrites for speed: channels-last memory format, linear layers through oneDNN, fp8 linear
layers (Hopper). Each changes modules in place (load a fresh set to go back).

Channels-last only reorders memory, and oneDNN computes the same products: frames agree with the plain
path to float rounding. fp8 linear layers change the maths (3 mantissa bits): opt-in only.
Compilation lives with the chunk step (`streaming/compiled.py`); process-wide settings (cuDNN
autotuning, the attention kernel, memory reuse) in `runtime.py`.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from ..config import SpeedOptions


def to_channels_last(module: torch.nn.Module) -> torch.nn.Module:
    """Put every 4-D parameter and buffer of `module` in channels-last memory format."""
    return module.to(memory_format=torch.channels_last)


# -- fp8 linear layers ---------------------------------------------------------------------------------------
FP8 = getattr(torch, "float8_e4m3fn", None)
FP8_MAX = 448.0  # largest finite float8_e4m3fn


def fp8_supported(device):
    """fp8 matrix products (torch._scaled_mm) need a Hopper-class GPU (sm_90+) and a torch with float8."""
    device = torch.device(device)
    return (
        FP8 is not None
        and hasattr(torch, "_scaled_mm")
        and device.type == "cuda"
        and torch.cuda.get_device_capability(device) >= (9, 0)
    )


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
            out = torch._scaled_mm(
                a,
                self.weight_fp8.t(),
                scale_a=a_scale,
                scale_b=self.weight_scale,
                bias=None if self.bias is None else self.bias.to(self.out_dtype),
                out_dtype=self.out_dtype,
            )
        else:
            out = torch.nn.functional.linear(
                a.float() * a_scale,
                self.weight_fp8.float() * self.weight_scale,
                None if self.bias is None else self.bias.float(),
            ).to(self.out_dtype)
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
            if isinstance(child, torch.nn.Linear) and child.in_features % 16 == 0 and child.out_features % 16 == 0:
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


def apply_rewrites(
    modules: Iterable[torch.nn.Module], speed: SpeedOptions, fp8: Iterable[torch.nn.Module] = ()
) -> None:
    """The rewrites `speed` (resolved: no option left on auto) asks for, on `modules` in place; fp8 goes to
    the modules of `fp8` only (the denoising UNet), where the GPU supports it (sm_90+; elsewhere nothing)."""
    for module in modules:
        if speed.onednn_linear:
            linear_through_onednn(module)  # plain nn.Linear again if ever moved to a GPU
        if speed.channels_last:
            to_channels_last(module)
    if speed.fp8_linear:
        for module in fp8:
            linears_to_fp8(module)
