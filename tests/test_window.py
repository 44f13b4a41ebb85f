import pytest
import torch

from personalive_core.streaming.window import CHUNK, ChunkRing, MicroChunkWindow, window_timesteps


def chunk(v):
    return torch.full((CHUNK, 2), float(v))


def test_timesteps_oldest_first():
    assert window_timesteps("cpu").tolist() == [0] * 4 + [333] * 4 + [666] * 4 + [999] * 4


def test_ring_order_pop_and_reuse_of_buffer():
    r = ChunkRing()
    for v in range(4):
        r.append(chunk(v))
    buf = r.buf
    assert r.ordered()[:, 0].tolist() == [0] * 4 + [1] * 4 + [2] * 4 + [3] * 4
    assert r.pop()[0, 0] == 0
    r.append(chunk(4))
    assert r.ordered()[::4, 0].tolist() == [1, 2, 3, 4]
    assert r.buf is buf  # preallocated once, never reallocated
    with pytest.raises(RuntimeError, match="full"):
        r.append(chunk(5))


def test_ring_needs_full_window():
    r = ChunkRing()
    r.append(chunk(0))
    with pytest.raises(RuntimeError, match="needs 4"):
        r.ordered()


def test_window_advance_releases_oldest():
    w = MicroChunkWindow()
    for v in range(4):
        w.latents.append(chunk(v))
        w.pose.append(chunk(10 + v))
        w.motion.append(chunk(20 + v))
    assert w.ready()
    latents, pose, motion = w.inputs()
    out = w.advance(latents + 100)
    assert out[:, 0].tolist() == [100] * 4
    assert not w.ready() and len(w.latents) == len(w.pose) == len(w.motion) == 3
    w.clear()
    assert len(w.latents) == 0
