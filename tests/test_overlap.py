"""The stream runner: with the overlap options on the CPU (where they are the plain loop) and with
a stage timer, the frames are those of the plain push/decode loop."""

import torch

from conftest import moving_frames
from personalive_core.streaming.overlap import StreamRunner
from personalive_core.pipelines import encode_reference, prepare_reference
from personalive_core.streaming.render import to_model_frames
from personalive_core.streaming.session import StreamingSession, decode
from personalive_core.streaming.timing import StageTimer
from personalive_core.config import StreamConfig

SIZE = 64


def chunks(n):
    frames = moving_frames(4 * n, SIZE)
    return [to_model_frames(frames[i : i + 4], "cpu") for i in range(0, 4 * n, 4)]


def test_runner_options_give_the_plain_frames(tiny_models, reference_image):
    reference = encode_reference(tiny_models, prepare_reference(reference_image, SIZE))
    plain = StreamingSession(tiny_models, reference, StreamConfig(seed=2))
    want = [decode(tiny_models.vae, plain.push(c)) for c in chunks(4)]
    for ahead, behind in ((False, False), (True, True)):
        session = StreamingSession(tiny_models, reference, StreamConfig(seed=2))
        timer = StageTimer("cpu")
        session.timer = timer
        runner = StreamRunner(
            session,
            lambda latents: decode(tiny_models.vae, latents),
            motion_ahead=ahead,
            decode_behind=behind,
            timer=timer,
        )
        got = list(runner.run(chunks(4)))
        assert len(got) == 4 and all(torch.equal(a, b) for a, b in zip(got, want))
        assert {"motion", "denoiser", "decode", "to_host"} <= set(timer.totals())


def test_runner_of_no_chunks_yields_nothing(tiny_models, reference_image):
    session = StreamingSession(tiny_models, encode_reference(tiny_models, prepare_reference(reference_image, SIZE)))
    assert list(StreamRunner(session, lambda x: x).run([])) == []
