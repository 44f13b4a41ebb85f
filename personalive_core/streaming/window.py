"""The micro-chunk window: 16 frames in 4 chunks of 4, each chunk one denoising level apart.

Before every denoiser pass the window holds, oldest first, a chunk at t=0 (finishing), then 333,
666 and a fresh chunk at 999. One pass moves every chunk one level down; the oldest leaves as 4
clean frames and the next driving chunk enters at 999. Latents, pose features and motion tokens
travel together, frame for frame.
"""

import torch

from .scheduler import TIMESTEPS

CHUNK = 4
CHUNKS = len(TIMESTEPS)
FRAMES = CHUNK * CHUNKS


def window_timesteps(device):
    """Per-frame timesteps of the window, oldest chunk first: 0×4, 333×4, 666×4, 999×4."""
    return torch.tensor(TIMESTEPS[::-1], device=device).repeat_interleave(CHUNK)


class ChunkRing:
    """A preallocated ring of up to 4 chunks; read in order (oldest first) with one copy."""

    def __init__(self):
        self.buf = None
        self.start = 0
        self.count = 0

    def __len__(self):
        return self.count

    def append(self, chunk):
        if self.count == CHUNKS:
            raise RuntimeError("window is full: pop the finished chunk first")
        if self.buf is None:
            self.buf = chunk.new_empty((FRAMES,) + tuple(chunk.shape[1:]))
        slot = (self.start + self.count) % CHUNKS
        self.buf[slot * CHUNK : (slot + 1) * CHUNK] = chunk
        self.count += 1

    def extend(self, frames):
        for i in range(0, frames.shape[0], CHUNK):
            self.append(frames[i : i + CHUNK])

    def ordered(self):
        if self.count != CHUNKS:
            raise RuntimeError(f"window holds {self.count} chunks, needs {CHUNKS}")
        return torch.roll(self.buf, -self.start * CHUNK, dims=0) if self.start else self.buf.clone()

    def overwrite(self, frames):
        """Replace the whole (full) window with `frames`, given oldest first."""
        self.buf.copy_(frames)
        self.start = 0

    def pop(self):
        """Drop the oldest chunk and return it."""
        out = self.buf[self.start * CHUNK : (self.start + 1) * CHUNK].clone()
        self.start = (self.start + 1) % CHUNKS
        self.count -= 1
        return out

    def clear(self):
        self.start = self.count = 0


class MicroChunkWindow:
    """Latents, pose features and motion tokens of the window, kept aligned."""

    def __init__(self):
        self.latents, self.pose, self.motion = ChunkRing(), ChunkRing(), ChunkRing()

    def ready(self):
        return len(self.latents) == len(self.pose) == len(self.motion) == CHUNKS

    def inputs(self):
        return self.latents.ordered(), self.pose.ordered(), self.motion.ordered()

    def advance(self, latents):
        """Store the denoised window and release the finished (oldest) chunk's latents."""
        self.latents.overwrite(latents)
        self.pose.pop()
        self.motion.pop()
        return self.latents.pop()

    def clear(self):
        for ring in (self.latents, self.pose, self.motion):
            ring.clear()
