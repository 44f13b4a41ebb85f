"""Hybrid motion as a stage of its own, for a graph that extracts motion once and samples it later (the
ComfyUI nodes): driving frames → one MotionChunk per denoiser pass (the mirrored padding chunks that
flush the window included), a preview of what the pose guider sees, and sampling over those chunks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from ..config import StreamConfig
from ..errors import InputError
from ..models.keypoints import draw_keypoints
from ..models.loader import PersonaLiveModels
from ..streaming.hybrid_motion import HybridMotion, MotionChunk
from ..streaming.reference import Reference
from ..streaming.render import Chunk, chunks_needed, driving_chunks, kept_slice, to_model_frames
from ..streaming.session import StreamingSession
from ..streaming.window import CHUNK
from .footage import Reframer
from .reference import ReferencePicture, motion_reference

PREVIEWS = ("keypoints", "side by side", "none")


@dataclass
class MotionTrack:
    """Extracted motion of a driving input: `chunks` (on the CPU), the number of driving `frames`, the
    generation `size` and the `fingerprint` of the reference picture it is relative to."""

    chunks: list[MotionChunk]
    frames: int
    size: int
    fingerprint: str


@torch.no_grad()
def extract_motion(
    models: PersonaLiveModels,
    picture: ReferencePicture,
    driving: Iterable[np.ndarray],
    config: StreamConfig | None = None,
) -> Iterator[tuple[Chunk, MotionChunk]]:
    """Yield (Chunk of driving frames, its MotionChunk on the CPU) per denoiser pass, the padding chunks
    included. Driving frames (uint8 (H, W, 3)) become squares as `config.framing` says (the centred
    square by default), at the picture's size; `config.controls` act on the motion."""
    config = (config or StreamConfig()).replace(size=picture.size)
    motion = HybridMotion(
        models.motion_extractor, models.motion_encoder, motion_reference(models, picture), config.controls
    )
    for chunk in driving_chunks(Reframer(config).driving(driving)):
        yield chunk, motion(to_model_frames(chunk.frames, models.device)).to("cpu")


def _draw_boxes(images: torch.Tensor, boxes: torch.Tensor, width: int = 2) -> torch.Tensor:
    """White box outlines on (N, 3, H, W) images in place; boxes (N, 4) [x1, y1, x2, y2] in pixels."""
    for img, (x1, y1, x2, y2) in zip(images, boxes.tolist()):
        img[:, y1 : y1 + width, x1 : x2 + 1] = 1
        img[:, max(y2 - width + 1, 0) : y2 + 1, x1 : x2 + 1] = 1
        img[:, y1 : y2 + 1, x1 : x1 + width] = 1
        img[:, y1 : y2 + 1, max(x2 - width + 1, 0) : x2 + 1] = 1
    return images


def motion_preview(motion: MotionChunk, chunk: Chunk, size: int, mode: str = "keypoints") -> torch.Tensor | None:
    """Preview frames (n, 3, S, S), or (n, 3, S, 2S) side by side with the driving frame, of the real
    driving frames of one chunk: the rendered keypoints the pose guider sees, with the face box.
    None for mode "none" or a chunk of padding only."""
    if mode not in PREVIEWS:
        raise InputError(f"preview {mode!r}: use one of {', '.join(PREVIEWS)}")
    n = chunk.real
    if mode == "none" or n == 0:
        return None
    kps = motion.keypoints[-CHUNK:][:n].float().cpu()  # the first chunk also carries the warm-up frames
    boxes = motion.boxes[:n].cpu()
    canvas = _draw_boxes(draw_keypoints(kps, size), boxes)
    if mode == "side by side":
        frames = torch.from_numpy(np.stack(chunk.frames[:n])).permute(0, 3, 1, 2).float() / 255
        canvas = torch.cat([_draw_boxes(frames, boxes), canvas], dim=-1)
    return canvas


@torch.no_grad()
def sample_motion(
    models: PersonaLiveModels,
    reference: Reference,
    track: MotionTrack,
    config: StreamConfig | None = None,
    before_chunk: Callable[[int], PersonaLiveModels] | None = None,
) -> Iterator[torch.Tensor]:
    """Stream an extracted MotionTrack: per denoiser pass, the finished latents (scaled) that belong in
    the result (empty for the chunks of warm-up or padding only). `before_chunk(k)` may hand over the
    models again before chunk k (a host that offloads between chunks)."""
    if len(track.chunks) != chunks_needed(track.frames):
        raise InputError(
            f"motion: {len(track.chunks)} chunks for {track.frames} frames, expected "
            f"{chunks_needed(track.frames)}; extract the motion again"
        )
    config = config or StreamConfig()
    session = StreamingSession(models, reference, config)
    for k, chunk in enumerate(track.chunks):
        if before_chunk is not None:
            session.models = before_chunk(k)
        yield session.push_motion(chunk)[kept_slice(k, track.frames, config.keep_warmup)]
