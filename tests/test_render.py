import numpy as np
import pytest

from conftest import SIZE, moving_frames
from personalive_core.pipelines import encode_reference, prepare_reference
from personalive_core.config import StreamConfig
from personalive_core.streaming.render import (
    Padding,
    chunks_needed,
    driving_chunks,
    kept_slice,
    mirror_index,
    render_stream,
)


def test_mirror_padding_matches_official_offline_padding():
    # official offline: frames.extend(frames[-13:-1][::-1])
    n = 20
    frames = list(range(n))
    p = Padding()
    for f in frames:
        p.add(f)
    assert [p.next() for _ in range(12)] == frames[-13:-1][::-1]
    assert [mirror_index(i, 3) for i in range(6)] == [1, 0, 1, 2, 1, 0]


def test_chunks_needed():
    assert chunks_needed(8) == 5 and chunks_needed(9) == 6


@pytest.mark.parametrize("n", [1, 3, 4, 5, 8, 13])
def test_driving_chunks_pad_and_keep_one_output_per_driving_frame(n):
    chunks = list(driving_chunks(iter(range(n))))  # frames pass through untouched: ints stand in for them
    assert len(chunks) == chunks_needed(n) and [c.index for c in chunks] == list(range(len(chunks)))
    flat = [f for c in chunks for f in c.frames]
    padding = Padding()
    for f in range(n):
        padding.add(f)
    assert flat == list(range(n)) + [padding.next() for _ in range(len(flat) - n)]
    assert [c.real for c in chunks] == [min(4, max(n - 4 * c.index, 0)) for c in chunks]

    def positions(keep_warmup, total=None):  # stream positions of the kept outputs: 0-11 warm-up, then 12 + i
        return [
            4 * c.index + i
            for c in chunks
            for i in range(4)[c.kept(keep_warmup) if total is None else kept_slice(c.index, total, keep_warmup)]
        ]

    assert positions(False) == positions(False, n) == [12 + i for i in range(n)]
    assert positions(True) == positions(True, n) == list(range(12 + n))


@pytest.fixture(scope="module")
def reference(tiny_models, reference_image):
    return encode_reference(tiny_models, prepare_reference(reference_image, SIZE))


@pytest.mark.parametrize("n", [5, 8])
def test_one_frame_out_per_driving_frame(tiny_models, reference, n):
    frames = moving_frames(n)
    out = list(render_stream(tiny_models, reference, iter(frames), StreamConfig(seed=0)))
    assert len(out) == n and out[0].shape == (SIZE, SIZE, 3) and out[0].dtype == np.float32
    assert all(f.min() >= 0.0 and f.max() <= 1.0 for f in out)
    warm = list(render_stream(tiny_models, reference, iter(frames), StreamConfig(keep_warmup=True)))
    assert len(warm) == n + 12
    # same stream, warm-up first: driving-aligned frames are identical
    for a, b in zip(out, warm[12:]):
        assert np.array_equal(a, b)


def test_empty_driving_input_is_an_error(tiny_models, reference):
    with pytest.raises(ValueError, match="no frames"):
        list(render_stream(tiny_models, reference, iter([]), StreamConfig(seed=0)))
