"""Options shared by the commands: device, dtype, size, weights source, speed switches."""
import argparse
import sys

import torch

from ..errors import InputError

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def pick_device(name):
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda: no CUDA device is available; use --device cpu")
    return name


def pick_dtype(name, device):
    if name == "auto":
        return torch.float16 if device == "cuda" else torch.float32
    if device == "cpu" and name == "fp16":
        raise InputError("--dtype fp16 is not supported on the CPU; use fp32 or bf16")
    return DTYPES[name]


def check_size(size):
    if size <= 0 or size % 64:
        raise InputError(f"--size {size}: must be a positive multiple of 64 (e.g. 256 or 512)")


def add_weights_source(p):
    src = p.add_mutually_exclusive_group()
    src.add_argument("--weights", help="folder in the official layout")
    src.add_argument("--random-weights", choices=["tiny", "full"], default="full",
                     help="random weights built in memory (default: full, the published sizes)")


def load_weights_source(args, device, dtype):
    """PersonaLiveModels from `--weights` or `--random-weights` (add_weights_source), on device/dtype."""
    if args.weights:
        from ..models.loader import load_models
        return load_models(args.weights, device, dtype)
    from .random_weights import random_models
    return random_models(args.random_weights).to(device, dtype)


def add_speed_arguments(p):
    on = "default: on for the CPU, off for a GPU"
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help=f"models in channels-last memory format ({on})")
    p.add_argument("--onednn-linear", action=argparse.BooleanOptionalAction, default=None,
                   help="CPU float32: compute the linear layers with oneDNN instead of the BLAS (about 2x "
                        "faster on AMD CPUs, where MKL's sgemm takes a slow path; default: on for CPU float32)")
    p.add_argument("--reuse-memory", action=argparse.BooleanOptionalAction, default=None,
                   help=f"CPU, Linux: keep freed memory for the next layers instead of returning it to the "
                        f"system, which re-zeroes it at every allocation ({on})")
    p.add_argument("--cudnn-benchmark", action=argparse.BooleanOptionalAction, default=None,
                   help="CUDA: let cuDNN time its convolution algorithms once per shape and keep the fastest "
                        "(default: on for CUDA)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=False,
                   help="torch.compile the chunk step (the denoiser pass with its DDIM step, and the pose guider) "
                        "with static shapes, CUDA graphs on a GPU; compiled once at the first chunk (minutes cold, "
                        "less from the compiler's cache), never again for keyframes (implies --static-step)")
    p.add_argument("--static-step", action=argparse.BooleanOptionalAction, default=False,
                   help="fixed shapes from the first chunk on: keyframe slots preallocated and masked")
    p.add_argument("--sdpa", default="auto", choices=["auto", "flash", "efficient", "cudnn", "math"],
                   help="attention kernel to prefer (default: torch's choice)")
    p.add_argument("--fp8-linear", action=argparse.BooleanOptionalAction, default=False,
                   help="Hopper-class GPUs (sm_90+): the denoising UNet's linear layers in fp8 with per-tensor "
                        "scales (changes the frames; see README); ignored elsewhere")


def resolve_speed_arguments(a, device, dtype):
    """Fill the switches left unset with their defaults for `device`/`dtype`; reuse freed memory
    now (a process setting, best before the weights load)."""
    from ..models.speed import default_speed_options, reuse_freed_memory
    for name, value in default_speed_options(device, dtype).items():
        if getattr(a, name) is None:
            setattr(a, name, value)
    if a.reuse_memory:
        a.reuse_memory = reuse_freed_memory()
        if not a.reuse_memory:
            log("note: --reuse-memory needs glibc (Linux); left off")
    if a.cudnn_benchmark:
        torch.backends.cudnn.benchmark = True
