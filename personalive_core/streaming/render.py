"""Whole-video rendering on top of the streaming session: driving frames in, frames out, in order.

Output frame i belongs to driving frame i; the 12 motion-interpolated warm-up frames come first
only if asked. The stream's last frames are still in the window when the driving input ends, so
the window is flushed with mirrored driving frames (the official offline pipeline's padding:
the frames before the last, in reverse), whose own outputs are dropped.
"""
import numpy as np
import torch

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
        self.recent = (self.recent + [frame])[-self.keep:]

    def next(self):
        frame = self.recent[mirror_index(self.used, len(self.recent))]
        self.used += 1
        return frame


def to_model_frames(frames_u8, device):
    """uint8 (4, H, W, 3) → float32 (4, 3, H, W) in [-1, 1], as the official webcam path feeds."""
    x = torch.from_numpy(np.stack(frames_u8)).to(device)
    return (x.float() / 255.0 * 2.0 - 1.0).permute(0, 3, 1, 2)


def render_stream(models, reference, frames, seed=0, keep_warmup=False, settings=None, on_chunk=None,
                  decoder=None):
    """Yield float32 numpy frames (H, W, 3) in [0, 1], one per driving frame (after the 12
    warm-up frames if `keep_warmup`). `frames` iterates uint8 (H, W, 3) arrays at the reference
    size. `on_chunk(n_pushed, frames_tensor)` is called after every chunk (progress, previews).
    `decoder(latents)`: scaled latents (4, 4, h, w) → frames (4, H, W, 3) in [0, 1] (default: the
    core VAE of `models`; a host application may bring its own)."""
    session = StreamingSession(models, reference, seed, settings)
    padding, chunk, total, produced = Padding(), [], 0, 0
    first = 0 if keep_warmup else WARMUP

    def push(chunk):
        nonlocal produced
        latents = session.push(to_model_frames(chunk, models.device))
        out = decoder(latents) if decoder else decode(models.vae, latents)
        if on_chunk:
            on_chunk(produced // CHUNK + 1, out)
        out = out.cpu().numpy()
        for i, frame in enumerate(out):
            j = produced + i  # position in the stream: warm-up frames, then driving frames
            if first <= j < WARMUP + total:
                yield frame
        produced += CHUNK

    for frame in frames:
        padding.add(frame)
        chunk.append(frame)
        total += 1
        if len(chunk) == CHUNK:
            yield from push(chunk)
            chunk = []
    if total == 0:
        raise ValueError("the driving input has no frames")
    while produced < WARMUP + total:
        while len(chunk) < CHUNK:
            chunk.append(padding.next())
        yield from push(chunk)
        chunk = []


def chunks_needed(frames):
    """Denoiser passes to render `frames` driving frames (warm-up and flush included)."""
    return -(-frames // CHUNK) + CHUNKS - 1
