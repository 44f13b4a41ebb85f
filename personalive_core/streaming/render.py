"""The driving pipeline on top of the streaming session: driving frames in, frames out, in order.

Output frame i belongs to driving frame i; the 12 motion-interpolated warm-up frames come first
only if asked. The stream's last frames are still in the window when the driving input ends, so
the window is flushed with mirrored driving frames (the official offline pipeline's padding:
the frames before the last, in reverse), whose own outputs are dropped.

The pieces compose: `driving_chunks` (4-frame chunks + padding) and `Chunk.kept` (which of a
chunk's 4 outputs are driving frames) serve `render_stream` (one process does it all) as well as
a split pipeline that extracts the motion first and denoises later (the ComfyUI nodes).
"""

from dataclasses import dataclass

import numpy as np
import torch

from ..errors import InputError
from .session import WARMUP, StreamingSession, decode
from .window import CHUNK, CHUNKS


def mirror_index(i, n):
    """i-th padding index after a sequence of n frames: n-2, n-3, …, 0, 1, … (reflected)."""
    if n == 1:
        return 0
    period = 2 * (n - 1)
    k = (n - 2 - i) % period
    return k if k < n else period - k


class Padding:
    """Remembers the last driving frames and hands out the mirrored continuation."""

    def __init__(self, keep=WARMUP + 1):
        self.recent, self.keep, self.used = [], keep, 0

    def add(self, frame):
        self.recent = (self.recent + [frame])[-self.keep :]

    def next(self):
        frame = self.recent[mirror_index(self.used, len(self.recent))]
        self.used += 1
        return frame


def kept_slice(index, frames, keep_warmup=False):
    """Which outputs of the `index`-th pushed chunk (0-based) belong in the result, as a slice of
    its 4 frames, when the stream has `frames` driving frames: the chunk's outputs are stream
    positions 4·index … 4·index+3, the first 12 positions are warm-up, then one per driving frame,
    then padding. The slice may be empty."""
    first = 0 if keep_warmup else WARMUP
    lo, hi = max(index * CHUNK, first), min((index + 1) * CHUNK, WARMUP + frames)
    return slice(lo - index * CHUNK, max(hi, lo) - index * CHUNK)


@dataclass
class Chunk:
    """4 uint8 driving frames for one denoiser pass: `real` of them are driving frames (the rest
    mirrored padding); `seen` driving frames have been read up to and including this chunk."""

    frames: list
    index: int
    real: int
    seen: int

    def kept(self, keep_warmup=False):
        """Slice of this chunk's 4 outputs that belong in the result (see `kept_slice`)."""
        return kept_slice(self.index, self.seen, keep_warmup)


def driving_chunks(frames):
    """Group driving frames (uint8 (H, W, 3)) into Chunks of 4, then pad with mirrored frames until
    the window has released every driving frame: `chunks_needed(n)` chunks in all."""
    padding, pending, seen, index = Padding(), [], 0, 0
    for frame in frames:
        padding.add(frame)
        pending.append(frame)
        seen += 1
        if len(pending) == CHUNK:
            yield Chunk(pending, index, CHUNK, seen)
            pending, index = [], index + 1
    if seen == 0:
        raise InputError("the driving input has no frames")
    while index * CHUNK < WARMUP + seen:
        real = len(pending)
        while len(pending) < CHUNK:
            pending.append(padding.next())
        yield Chunk(pending, index, real, seen)
        pending, index = [], index + 1


def chunks_needed(frames):
    """Denoiser passes to render `frames` driving frames (warm-up and flush included)."""
    return -(-frames // CHUNK) + CHUNKS - 1


def to_model_frames(frames_u8, device):
    """uint8 (4, H, W, 3) → float32 (4, 3, H, W) in [-1, 1], as the official webcam path feeds."""
    x = torch.from_numpy(np.stack(frames_u8)).to(device)
    return (x.float() / 255.0 * 2.0 - 1.0).permute(0, 3, 1, 2)


def render_stream(models, reference, frames, config=None, on_chunk=None, decoder=None):
    """Yield float32 numpy frames (H, W, 3) in [0, 1], one per driving frame (after the 12
    warm-up frames if `config.keep_warmup`). `frames` iterates uint8 (H, W, 3) arrays at the reference
    size. `on_chunk(n_pushed, frames_tensor)` is called after every chunk (progress, previews).
    `decoder(latents)`: scaled latents (4, 4, h, w) → frames (4, H, W, 3) in [0, 1] (default: the
    core VAE of `models`; a host application may bring its own)."""
    session = StreamingSession(models, reference, config)
    keep_warmup = session.config.keep_warmup
    for chunk in driving_chunks(frames):
        latents = session.push(to_model_frames(chunk.frames, models.device))
        out = decoder(latents) if decoder else decode(models.vae, latents)
        if on_chunk:
            on_chunk(chunk.index + 1, out)
        yield from out.cpu().numpy()[chunk.kept(keep_warmup)]
