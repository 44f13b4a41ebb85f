"""The compiled chunk step: `torch.compile` with static shapes, CUDA graphs on a GPU.

With `SpeedOptions.compile` a StreamingSession runs the *static* chunk step (keyframe slots
preallocated and masked, the pose guider 4 frames a call: every shape fixed from the first chunk on)
through `compile_function`: one graph for the denoiser pass with its DDIM step and one for the pose
guider, compiled at a stream's first chunk and reused by every later chunk and stream of the same
size; a new historical keyframe recompiles nothing. On CUDA the graphs are CUDA graphs
(`mode="reduce-overhead"`); on the CPU the weights may be frozen into the graph (constants, so
convolution weights are prepacked once for oneDNN) — frozen weights assume nobody changes them, so
a host that moves or patches weights (ComfyUI) compiles with `freeze_weights` off.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ..config import SpeedOptions

# CPU: frozen weights; CUDA: CUDA graphs. Autotuning is left out on the CPU: at the published sizes
# it takes longer than the streams it would speed up.
_MODES: dict[str, dict[str, Any]] = {"cpu": {"options": {"freezing": True}}, "cuda": {"mode": "reduce-overhead"}}


def compile_options(device: torch.device | str, speed: SpeedOptions) -> dict[str, Any]:
    """torch.compile keyword arguments for `device` under `speed` (its backend and weight freezing)."""
    if speed.compile_backend != "inductor":
        return {"backend": speed.compile_backend}
    options = dict(_MODES.get(torch.device(device).type, _MODES["cpu"]))
    if not speed.freeze_weights:
        options.pop("options", None)
    return {"backend": "inductor", **options}


def compile_label(options: dict[str, Any]) -> str:
    """What a compile means (the options of `compile_options`), for logs and the bench JSON."""
    backend = options.get("backend")
    if backend != "inductor":
        return str(backend)
    return str(options.get("mode") or "+".join(["inductor", *options.get("options", {})]))


def compile_function(fn: Callable[..., Any], options: dict[str, Any]) -> Callable[..., Any]:
    """`fn` compiled with static shapes and `options`. Wrappers of one function share its compiled
    code: a second stream on the same networks compiles nothing."""
    return torch.compile(fn, dynamic=False, **options)  # type: ignore[no-any-return]


def compile_decoder(decoder: torch.nn.Module, speed: SpeedOptions) -> torch.nn.Module:
    """Compile a decoder (the SD VAE's `decoder` network, or a TAESD decoder) in place, without CUDA
    graphs, so that it may run on a second CUDA stream beside the CUDA-graphed chunk step."""
    net = getattr(decoder, "decoder", decoder)
    net.compile(dynamic=False, **({} if speed.compile_backend == "inductor" else {"backend": speed.compile_backend}))
    return decoder
