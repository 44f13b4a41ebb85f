"""The live pipeline: what a camera stream animates (`LiveTarget`), the session of one camera feed
(`LiveSession`: 4 camera frames in, 4 generated frames out), the camera frame's way into the model's
square, and Prepare (`warm_up`). The serving around it (newest frames only, several viewers, the
websocket, takes) is the front end `personalive_core.live`.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..config import MotionControls, StreamConfig, preset
from ..media.video_io import square
from ..models.loader import PersonaLiveModels
from ..streaming.hybrid_motion import WARMUP
from ..streaming.reference import Reference
from ..streaming.render import to_model_frames
from ..streaming.session import StreamingSession
from ..streaming.window import CHUNK, CHUNKS

MIN_SIDE, MAX_SIDE = 64, 4096  # accepted camera frame sides (pixels)
WARM_CHUNKS = CHUNKS + 1  # prepare: the first chunk's path, then steady chunks through a full window
WARMUP_CHUNKS = WARMUP // CHUNK  # chunks a fresh window emits before the first camera frame comes out


class FrameError(ValueError):
    """A camera frame that cannot be used; `code` names the kind (for a client)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class LiveTarget:
    """What a stream animates. `prepare()` → PersonaLiveModels on their device (called before every
    chunk: a host may have offloaded them in between); `decode(latents)`: scaled latents (4, 4, h, w) →
    frames (4, H, W, 3) float in [0, 1]; `config`: seed, keyframes, controls, speed (the live preset by
    default)."""

    prepare: Callable[[], PersonaLiveModels]
    reference: Reference
    decode: Callable[[torch.Tensor], torch.Tensor]
    config: StreamConfig = field(default_factory=lambda: preset("live"))
    model_key: str = ""  # the networks' identity: a prepared target stays prepared for the same key and size

    @property
    def size(self) -> int:
        return int(self.reference.size[0])

    @property
    def warm_key(self) -> tuple[str, int]:
        return self.model_key, self.size


def warm_up(target: LiveTarget, chunks: int = WARM_CHUNKS,
            on_progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Prepare: `chunks` chunks of the target's reference as a still driving picture through a
    throwaway session and the decoder, at the live size. `on_progress(done, total)` after each.
    A compiled chunk step (`config.speed.compile`) compiles in the first of these chunks: that is the
    compile step of Prepare. Returns {"chunks", "seconds", "chunk_ms": [per chunk], "compiled"}."""
    t0 = time.perf_counter()
    times = []
    session = None
    for i in range(chunks):
        t = time.perf_counter()
        models = target.prepare()
        if session is None:
            session = StreamingSession(models, target.reference, target.config)
        session.models = models
        still = target.reference.image.to(models.device, torch.float32)[None].expand(CHUNK, -1, -1, -1)
        target.decode(session.push(still))
        times.append(round((time.perf_counter() - t) * 1e3, 1))
        if on_progress:
            on_progress(i + 1, chunks)
    return {"chunks": chunks, "seconds": round(time.perf_counter() - t0, 3), "chunk_ms": times,
            "compiled": target.config.speed.compile}


def square_frame(image: np.ndarray, size: int) -> np.ndarray:
    """uint8 (H, W, 3) camera frame → the centred square at size × size, prepared as `render` prepares
    driving frames (`video_io.square`); FrameError for a frame that is not RGB or of a wrong size."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise FrameError("bad_frame", f"expected an RGB image, got an array of shape {image.shape} ({image.dtype})")
    h, w = image.shape[:2]
    if not (MIN_SIDE <= h <= MAX_SIDE and MIN_SIDE <= w <= MAX_SIDE):
        raise FrameError("bad_size", f"frame of {w}×{h} pixels: each side must be between {MIN_SIDE} and "
                                     f"{MAX_SIDE}; send camera frames such as 640×480")
    return np.asarray(square(Image.fromarray(image), size))


class LiveSession:
    """The streaming session of one camera feed: 4 square camera frames in, 4 generated uint8 frames out.
    A new reference (or networks) on the target restarts the window (`restarted` tells after `step`)."""

    def __init__(self) -> None:
        self.session: StreamingSession | None = None
        self.target: LiveTarget | None = None
        self.restarted = False

    def step(self, target: LiveTarget, frames: list[np.ndarray], controls: MotionControls) -> np.ndarray:
        """One chunk: `frames` (4 uint8 (S, S, 3)) through the target's networks and decoder → uint8
        (4, S, S, 3), the oldest chunk of the window (the first `WARMUP_CHUNKS` after a restart: warm-up)."""
        models = target.prepare()
        self.restarted = False
        if self.session is None or self.session.models.denoising_unet is not models.denoising_unet:
            self.session = StreamingSession(models, target.reference, target.config)
            self.restarted = True
        elif self.target is None or target.reference is not self.target.reference:
            self.session.set_reference(target.reference)
            self.restarted = True
        self.target = target
        self.session.models = models
        if self.session.motion.filter.controls is not controls:
            self.session.motion.set_controls(controls)
        latents = self.session.push(to_model_frames(frames, models.device))
        return target.decode(latents).clamp(0, 1).mul(255).round().to(torch.uint8).cpu().numpy()
