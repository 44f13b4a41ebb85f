"""Process-wide runtime settings: memory reuse (glibc), cuDNN autotuning, the preferred attention kernel.

These change the whole process, so only a program that owns its process applies them: the command
line, the standalone live server and batch workers (`process_settings`). Inside ComfyUI the host's
own process settings stand and the nodes never call this.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import sys
from collections.abc import Iterator
from typing import Any

import torch

from .config import SpeedOptions

SDPA_KERNELS = ("auto", "flash", "efficient", "cudnn", "math")

# glibc mallopt parameters
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8
_reusing = False


def reuse_freed_memory() -> bool:
    """Make this process keep freed memory for its next allocations (glibc only; returns whether
    it is in effect; it stays in effect until the process exits).

    By default glibc serves every block over 32 MB by a fresh mmap and unmaps it when freed, so
    each large activation (a UNet layer's output is 20–170 MB at 256²) is page-faulted and zeroed
    by the kernel again: an elementwise op on 84 MB takes ~23 ms instead of ~5 ms, and a full-size
    chunk on 2 cores spends a quarter of its time there. Here large blocks come from the heap, the
    heap is not trimmed, and all threads share one arena, so memory freed by one layer serves the
    next. Peak memory is unchanged (measured); the process keeps its peak until it exits. The
    same without code: GLIBC_TUNABLES=glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:
    glibc.malloc.trim_threshold=2147483647 (e.g. for a CPU ComfyUI)."""
    global _reusing
    if _reusing:
        return True
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallopt"):
        return False  # musl and others: no mallopt tunables
    _reusing = all(
        libc.mallopt(p, v) == 1 for p, v in ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 2**31 - 1))
    )
    return _reusing


def sdpa_preference(name: str) -> contextlib.AbstractContextManager[Any]:
    """A context in which scaled_dot_product_attention prefers the `name` kernel (auto: torch's
    own choice). The others stay allowed after it, since the flash kernel takes no mask (the static
    step's keyframe slots need one)."""
    if name == "auto":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    table = {
        "flash": SDPBackend.FLASH_ATTENTION,
        "efficient": SDPBackend.EFFICIENT_ATTENTION,
        "cudnn": SDPBackend.CUDNN_ATTENTION,
        "math": SDPBackend.MATH,
    }
    if name not in table:
        raise ValueError(f"SDPA kernel {name!r}: use one of {', '.join(SDPA_KERNELS)}")
    order = [table[name]] + [b for b in table.values() if b != table[name]]
    try:
        return sdpa_kernel(order, set_priority=True)
    except TypeError:  # torch < 2.6: no priorities, only the one kernel
        return sdpa_kernel([table[name]])


@contextlib.contextmanager
def cudnn_benchmark(on: bool) -> Iterator[None]:
    """cuDNN picks the fastest convolution algorithm per shape (the shapes are static); restored after."""
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = bool(on)
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = before


@contextlib.contextmanager
def process_settings(speed: SpeedOptions, log: Any = None) -> Iterator[SpeedOptions]:
    """Apply the process-wide settings of a *resolved* `speed` (no option on auto) for the duration;
    yields `speed` as it took effect (memory reuse off where glibc lacks it, with a note to `log`)."""
    if speed.reuse_memory and not reuse_freed_memory():
        if log:
            log("note: reuse_memory needs glibc (Linux); left off")
        speed = speed.replace(reuse_memory=False)
    with cudnn_benchmark(bool(speed.cudnn_benchmark)), sdpa_preference(speed.sdpa):
        yield speed
