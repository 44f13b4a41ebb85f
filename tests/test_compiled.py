"""The static chunk step and its compiled form (streaming/compiled.py, session.py) give the frames of
the plain path, and the compiled step compiles once per stream shape. Compared on the damped tiny
models at 128 px (see test_rewrites.py); tolerance 1e-4 on frames in [0, 1]."""

import pytest
import torch
from torch._dynamo.utils import counters

from personalive_core.config import SpeedOptions, StreamConfig
from personalive_core.pipelines import encode_reference, prepare_reference
from personalive_core.streaming.compiled import compile_label, compile_options
from personalive_core.streaming.session import StreamingSession, decode
from streams import SIZE, TOL, chunks, stream

STATIC = StreamConfig().replace(static_step=True)


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    counters.clear()
    yield
    torch._dynamo.reset()


@pytest.fixture(scope="module")
def plain(damped, reference_image):
    return stream(damped, reference_image, 3)


@pytest.mark.parametrize("keyframes", [0, 1, 2, 3])
def test_static_step_gives_the_same_frames(damped, reference_image, keyframes):
    """Masked keyframe slots (the static step) against the growing concatenation, with 0..3 of the 3
    slots filled: an empty slot changes nothing beyond rounding."""
    at = tuple(range(1, 1 + keyframes))
    want = stream(damped, reference_image, 4, keyframe_at=at)
    got = stream(damped, reference_image, 4, STATIC, keyframe_at=at)
    assert (got - want).abs().max() < TOL


def test_static_step_with_keyframes_off(damped, reference_image, plain):
    assert (stream(damped, reference_image, 3, STATIC.replace(max_keyframes=0)) - plain).abs().max() < TOL


def graphs():
    return counters["stats"]["unique_graphs"]


def test_compiled_step_compiles_once_for_a_whole_stream(damped, reference_image):
    """The compiled static step (graph capture without code generation: backend eager) gives the very
    same frames as the eager static step while 3 keyframes are added, and compiles a fixed set of graphs
    at the first chunk: nothing when a keyframe is added, nothing for a second stream on the same
    networks."""
    at = (2, 3, 4)
    want = stream(damped, reference_image, 6, STATIC, keyframe_at=at)
    compiled = StreamConfig().replace(compile=True, compile_backend="eager")
    first = stream(damped, reference_image, 2, compiled)
    captured = graphs()
    assert captured >= 2  # the denoiser step and the pose guider
    assert torch.equal(stream(damped, reference_image, 6, compiled, keyframe_at=at), want)
    assert graphs() == captured
    assert torch.equal(stream(damped, reference_image, 2, compiled), first)
    assert graphs() == captured


def test_keyframes_found_by_the_stream_fill_static_slots(damped, reference_image):
    """Threshold 0 accepts every tested chunk: the static step fills its slots in stream order and
    stops at max_keyframes, as the growing layout does."""
    config = StreamConfig().replace(seed=1, keyframe_threshold=0.0, first_keyframe_chunk=1)
    reference = encode_reference(damped, prepare_reference(reference_image, SIZE))
    plain_session, static_session = (
        StreamingSession(damped, reference, config.replace(static_step=static)) for static in (False, True)
    )
    for c in chunks(6):
        a, b = (decode(damped.vae, s.push(c)) for s in (plain_session, static_session))
        assert (a - b).abs().max() < TOL
    assert plain_session.attention.keyframes == static_session.attention.keyframes == 3


def test_compile_options_follow_the_config():
    speed = SpeedOptions()
    assert compile_options("cpu", speed) == {"backend": "inductor", "options": {"freezing": True}}
    assert compile_options("cpu", speed.replace(freeze_weights=False)) == {"backend": "inductor"}
    assert compile_options("cuda", speed) == {"backend": "inductor", "mode": "reduce-overhead"}
    assert compile_options("cpu", speed.replace(compile_backend="eager")) == {"backend": "eager"}
    assert compile_label(compile_options("cuda", speed)) == "reduce-overhead"
    assert compile_label(compile_options("cpu", speed)) == "inductor+freezing"


@pytest.mark.slow  # inductor code generation: 90-140 s cold on 2 busy CPU cores, ~15 s warm
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
def test_compile_gives_the_same_frames(damped, reference_image, plain):
    """Real compilation (inductor, the CPU mode with frozen weights), kept to one chunk."""
    assert (stream(damped, reference_image, 1, StreamConfig().replace(compile=True)) - plain[:4]).abs().max() < TOL
