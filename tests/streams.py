"""Short streams for the tests that compare arithmetic (rewrites, compiled step): the first chunks of
a moving driving video through one session, decoded."""

import torch

from conftest import moving_frames
from personalive_core.config import StreamConfig
from personalive_core.pipelines import encode_reference, prepare_reference
from personalive_core.streaming.render import to_model_frames
from personalive_core.streaming.session import StreamingSession, decode

SIZE = 128
TOL = 1e-4  # on frames in [0, 1]: a 40th of one 8-bit level


def chunks(n, size=SIZE):
    frames = moving_frames(4 * n, size)
    return [to_model_frames(frames[i : i + 4], "cpu") for i in range(0, 4 * n, 4)]


def stream(models, image, n, config=None, keyframe_at=(), decoder=None, size=SIZE):
    """Decoded frames of the first `n` chunks (seed 1); a historical keyframe (the reference latents)
    is forced before each chunk index in `keyframe_at`."""
    reference = encode_reference(models, prepare_reference(image, size))
    session = StreamingSession(models, reference, (config or StreamConfig()).replace(seed=1))
    out = []
    for i, c in enumerate(chunks(n, size)):
        if i in keyframe_at:
            session.attention.add_keyframe(reference.latents, reference.context)
        out.append(decode(decoder or models.vae, session.push(c)))
    return torch.cat(out)
