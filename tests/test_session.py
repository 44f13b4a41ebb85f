import pytest
import torch

from conftest import SIZE, moving_frames
from personalive_core.pipelines import encode_reference, prepare_reference
from personalive_core.streaming.render import to_model_frames
from personalive_core.config import StreamConfig
from personalive_core.streaming.session import StreamingSession


@pytest.fixture(scope="module")
def reference(tiny_models, reference_image):
    return encode_reference(tiny_models, prepare_reference(reference_image, SIZE))


def chunks(n, seed=0):
    frames = moving_frames(4 * n, seed=seed)
    return [to_model_frames(frames[i : i + 4], "cpu") for i in range(0, 4 * n, 4)]


def test_reference_shapes(reference, tiny_models):
    assert reference.image.shape == (3, SIZE, SIZE)
    assert reference.cond.shape == (1, 3, 256, 256)
    assert reference.latents.shape == (1, 4, SIZE // 8, SIZE // 8)
    assert reference.context.shape == (1, 1, tiny_models.denoising_unet.config.cross_attention_dim)
    layers = tiny_models.denoising_unet.config.layers_per_block
    assert len(reference.tokens) == 3 * layers + 1 + 3 * (layers + 1)  # one per spatial transformer block


def test_four_frames_out_per_chunk(tiny_models, reference):
    s = StreamingSession(tiny_models, reference, StreamConfig(seed=1))
    for c in chunks(3):
        out = s.push(c)
        assert out.shape == (4, 4, SIZE // 8, SIZE // 8)
        assert torch.isfinite(out).all()


def test_noise_contract(tiny_models, reference, monkeypatch):
    """One CPU generator: (1,4,12,h,w) at the reference, then (1,4,4,h,w) per chunk, nothing else."""
    draws = []
    real = torch.randn

    def spy(*shape, generator=None, dtype=None, **kw):
        draws.append((tuple(shape[0]) if len(shape) == 1 else shape, generator is not None, dtype))
        return real(*shape, generator=generator, dtype=dtype, **kw)

    monkeypatch.setattr(torch, "randn", spy)
    s = StreamingSession(tiny_models, reference, StreamConfig(seed=5))
    for c in chunks(2):
        s.push(c)
    h = SIZE // 8
    assert draws == [((1, 4, 12, h, h), True, torch.float32)] + [((1, 4, 4, h, h), True, torch.float32)] * 2


def test_warmup_latents_are_the_reference_noised_with_the_first_draw(tiny_models, reference):
    """Layout of draw #0: (b, c, f, h, w), frames 0-3 at t=0, 4-7 at 333, 8-11 at 666."""
    from personalive_core.streaming.scheduler import DistilledDDIM

    s = StreamingSession(tiny_models, reference, StreamConfig(seed=11))
    h = SIZE // 8
    noise = torch.randn((1, 4, 12, h, h), generator=torch.Generator("cpu").manual_seed(11))
    t = torch.tensor([0] * 4 + [333] * 4 + [666] * 4)
    expected = DistilledDDIM().add_noise(reference.latents.expand(12, -1, -1, -1), noise[0].transpose(0, 1), t)
    got = torch.cat([s.window.latents.buf[i * 4 : (i + 1) * 4] for i in range(3)])
    assert torch.equal(got, expected)


def test_same_seed_same_frames_and_reset(tiny_models, reference):
    a = StreamingSession(tiny_models, reference, StreamConfig(seed=2))
    cs = chunks(3)
    first = [a.push(c) for c in cs]
    a.reset()
    again = [a.push(c) for c in cs]
    for x, y in zip(first, again):
        assert torch.equal(x, y)
    b = StreamingSession(tiny_models, reference, StreamConfig(seed=3))
    assert not torch.equal(b.push(cs[0]), first[0])


def test_window_alignment_warmup_is_reference_at_t0(tiny_models, reference):
    """The first chunk out is the warm-up window that started as the reference latent at t=0."""
    s = StreamingSession(tiny_models, reference, StreamConfig(seed=0))
    out = s.push(chunks(1)[0])
    # x0 of frames that started at t=0 stays close to the clean reference latent
    assert (out - reference.latents).abs().mean() < (reference.latents.abs().mean() + 1)


def test_bad_chunk_shape(tiny_models, reference):
    s = StreamingSession(tiny_models, reference)
    with pytest.raises(ValueError, match="chunk of 4 frames"):
        s.push(torch.zeros(3, 3, SIZE, SIZE))
    with pytest.raises(ValueError, match="size"):
        s.push(torch.zeros(4, 3, SIZE * 2, SIZE * 2))


def test_keyframes_capped_and_memory_flat(tiny_models, reference):
    """200 chunks: at most 3 keyframes, bounded bank, no growth of the session's tensors.
    Motion is extracted for three chunks and replayed, so the loop costs only denoiser passes."""
    settings = StreamConfig().replace(keyframe_threshold=0.0)  # every tested frame with new motion qualifies
    s = StreamingSession(tiny_models, reference, settings)
    first, *later = chunks(4)
    s.push(first)
    replay = [s.motion(c) for c in later]
    sizes = []
    for i in range(200):
        s.push_motion(replay[i % 3])
        if i in (20, 199):
            sizes.append(
                sum(t.numel() for slot in s.attention.slots.values() for t in slot.features)
                + sum(r.buf.numel() for r in (s.window.latents, s.window.pose, s.window.motion))
            )
    assert s.attention.keyframes == 3 and len(s.history.bank) == 4
    assert s.chunks_done == 201 and sizes[0] == sizes[1]


def test_quirks_switch_controls_bank_rounding(tiny_models, reference):
    a = StreamingSession(tiny_models, reference, StreamConfig(seed=0))
    b = StreamingSession(tiny_models, reference, StreamConfig(official_quirks=False))
    name = next(iter(a.attention.slots))
    assert a.attention.slots[name].features[0].dtype == torch.float16  # the official fp16 bank
    assert b.attention.slots[name].features[0].dtype == torch.float32
    c = chunks(1)[0]
    oa, ob = a.push(c), b.push(c)
    assert torch.isfinite(ob).all() and not torch.equal(oa, ob)


def test_sessions_sharing_models_do_not_interfere(tiny_models, reference, reference_image):
    """Each pass binds its own reference bank: a second stream on the same UNets changes nothing."""
    c = chunks(2)
    solo = StreamingSession(tiny_models, reference, StreamConfig(seed=0))
    expected = [solo.push(x) for x in c]
    a = StreamingSession(tiny_models, reference, StreamConfig(seed=0))
    other_ref = encode_reference(tiny_models, prepare_reference(reference_image.transpose(0), SIZE))
    b = StreamingSession(tiny_models, other_ref, StreamConfig(seed=9))
    for x, e in zip(c, expected):
        b.push(x)
        assert torch.equal(a.push(x), e)


def test_cached_reference_kv_same_frames(tiny_models, reference):
    c = chunks(2)
    a = StreamingSession(tiny_models, reference, StreamConfig(seed=0))
    b = StreamingSession(tiny_models, reference, StreamConfig().replace(cache_reference_kv=False))
    for x in c:
        oa, ob = a.push(x), b.push(x)
    assert torch.allclose(oa, ob, atol=1e-5)
