"""Motion controls: expression strength α, head-pose strength β, one-euro smoothing."""

import dataclasses
import math
import os

import numpy as np
import pytest
import torch

from personalive_core.errors import InputError
from personalive_core.models.keypoints import MotionExtractor
from personalive_core.streaming.hybrid_motion import WARMUP, HybridMotion
from personalive_core.config import MotionControls
from personalive_core.streaming.motion_controls import MotionFilter
from personalive_core.pipelines import encode_reference, prepare_reference
from personalive_core.streaming.render import render_stream, to_model_frames
from personalive_core.config import StreamConfig

from conftest import SIZE, moving_frames

torch.set_grad_enabled(False)


@pytest.fixture(scope="module")
def reference(tiny_models, reference_image):
    return encode_reference(tiny_models, prepare_reference(reference_image, SIZE))


class LivelyExtractor(MotionExtractor):
    """The tiny extractor, but its head turns with the bright blob of `moving_frames` (the random one
    hardly reacts to its input): yaw/pitch up to ±30° and translation ±0.04 from the blob's centroid,
    as head-pose bin logits peaked at that angle, so the real decoding runs; canonical keypoints spread
    over a ball of radius 0.5 (the random ones bunch up), so a turn shows in the drawings."""

    CANONICAL = torch.rand(1, 63, generator=torch.Generator().manual_seed(7)) - 0.5

    def forward(self, x):
        out = super().forward(x)
        blob = x[:, 0].float() ** 8
        side = torch.linspace(0, 1, x.shape[-1])
        cx = (blob.sum(1) * side).sum(1) / blob.sum((1, 2)) - 0.5
        cy = (blob.sum(2) * side).sum(1) / blob.sum((1, 2)) - 0.5
        bins = self.idx_tensor * 3 - 96  # bin centres (degrees) as the decoding weighs them
        logits = lambda deg: -(((bins - deg[:, None]) / 3) ** 2) / 2
        kp = self.CANONICAL.expand(x.shape[0], -1).to(out["kp"].dtype)
        return dict(
            out,
            yaw=logits(150 * cx),
            pitch=logits(150 * cy),
            roll=logits(50 * cx),
            kp=kp,
            t=torch.stack([0.2 * cx, 0.2 * cy, torch.zeros_like(cx)], dim=1).to(out["t"].dtype),
        )


@pytest.fixture(scope="module")
def lively(tiny_models):
    """The tiny models with a LivelyExtractor (same weights)."""
    extractor = LivelyExtractor.tiny()
    extractor.load_state_dict(tiny_models.motion_extractor.state_dict())
    return dataclasses.replace(tiny_models, motion_extractor=extractor.eval())


def motion_chunks(models, reference, controls=None, n=12, frames=None):
    motion = HybridMotion(models.motion_extractor, models.motion_encoder, reference, controls)
    frames = frames or moving_frames(n)
    return motion, [motion(to_model_frames(frames[i : i + 4], models.device)) for i in range(0, len(frames), 4)]


# -- defaults: nothing changes --------------------------------------------------------------------
def test_defaults_compute_nothing():
    f = MotionFilter(MotionControls())
    tokens, ref = torch.randn(4, 32, 16), torch.randn(1, 32, 16)
    info = {"pitch": torch.randn(4), "yaw": torch.randn(4), "roll": torch.randn(4), "t": torch.randn(4, 3)}
    assert f.tokens(tokens, ref) is tokens and f.smooth_tokens(tokens) is tokens
    assert all(f.pose(info, None)[k] is info[k] for k in info)


def test_defaults_keep_the_official_keypoints_bit_for_bit(tiny_models, reference):
    """Posed keypoints at the defaults are exactly the official composition: the driving head pose (raw
    head logits) on the reference canonical keypoints and scale, translation ref + 0.5·(t − t_first)."""
    ex = tiny_models.motion_extractor
    frames = moving_frames(8)
    motion, chunks = motion_chunks(tiny_models, reference, MotionControls(1.0, 1.0, 0.0), frames=frames)
    small = [
        torch.nn.functional.interpolate(
            to_model_frames(frames[i : i + 4], "cpu"), (256, 256), mode="bilinear", align_corners=False
        )
        / 2
        + 0.5
        for i in (0, 4)
    ]
    ref, anchor = ex(reference.cond), ex(small[0][:1])
    for chunk, x in zip(chunks, small):
        m = ex(x)
        official = ex.keypoints(
            dict(
                m,
                kp=ref["kp"].repeat(4, 1),
                scale=m["scale"] * 0 + ref["scale"],
                t=(m["t"] - (m["t"][0] if x is small[0] else anchor["t"])) * 0.5 + ref["t"],
            )
        )
        assert torch.equal(chunk.keypoints[-4:], official)


def test_defaults_give_todays_frames(tiny_models, reference):
    frames = moving_frames(8)
    today = np.stack(list(render_stream(tiny_models, reference, frames, StreamConfig(seed=1))))
    explicit = np.stack(
        list(render_stream(tiny_models, reference, frames, StreamConfig(seed=1, controls=MotionControls(1, 1, 0))))
    )
    assert np.array_equal(today, explicit)


# -- expression strength α ------------------------------------------------------------------------
def test_expression_zero_keeps_the_reference_tokens(tiny_models, reference):
    """Every driving row is exactly the reference's tokens; the 12 warm-up rows ease from the reference
    to the reference ((1 − a)·m + a·m: equal up to float rounding)."""
    motion, chunks = motion_chunks(tiny_models, reference, MotionControls(expression=0.0))
    ref = motion.reference_tokens
    for chunk in chunks:
        assert torch.equal(chunk.tokens[-4:], ref.expand(4, -1, -1))
    torch.testing.assert_close(chunks[0].tokens[:WARMUP], ref.expand(WARMUP, -1, -1), rtol=1e-6, atol=0)
    _, free = motion_chunks(tiny_models, reference)
    assert (free[1].tokens - ref).abs().max() > 1e-3  # the driving frames do move the tokens


def test_expression_scales_the_tokens_about_the_reference(tiny_models, reference):
    _, plain = motion_chunks(tiny_models, reference)
    motion, half = motion_chunks(tiny_models, reference, MotionControls(expression=0.5))
    ref = motion.reference_tokens
    for a, b in zip(plain, half):
        torch.testing.assert_close(b.tokens, ref + 0.5 * (a.tokens - ref), rtol=1e-6, atol=1e-4)  # tokens ~100
        assert torch.equal(a.keypoints, b.keypoints)  # the head pose is left alone


# -- head-pose strength β -------------------------------------------------------------------------
def test_head_pose_zero_locks_the_head_and_the_expression_follows(lively, reference):
    ex = lively.motion_extractor
    motion, locked = motion_chunks(lively, reference, MotionControls(head_pose=0.0))
    _, free = motion_chunks(lively, reference)
    ref_kps = ex.keypoints(ex(reference.cond))
    for a, b in zip(free, locked):
        torch.testing.assert_close(b.keypoints, ref_kps.expand_as(b.keypoints), rtol=0, atol=1e-6)
        assert torch.equal(a.tokens, b.tokens)  # the expression: the driving frames' tokens, unchanged
    assert (free[1].keypoints - ref_kps).abs().max() > 1e-3  # unlocked, the head does move
    driving = torch.cat([c.tokens[-4:] for c in locked])
    assert (driving[1:] - driving[:-1]).abs().amax(dim=(1, 2)).min() > 0  # tokens change every frame


def test_head_pose_scales_angles_and_translation_about_the_reference(lively, reference):
    """β = 0.5 halves every pose parameter's distance from the reference's."""
    ex = lively.motion_extractor
    motion = HybridMotion(ex, lively.motion_encoder, reference)
    frames = to_model_frames(moving_frames(4), "cpu")
    small = torch.nn.functional.interpolate(frames, (256, 256), mode="bilinear", align_corners=False) / 2 + 0.5
    pose, _ = motion.tracker.pose(small, reference.cond)
    ref = motion.tracker.reference_pose()
    half = MotionFilter(MotionControls(head_pose=0.5)).pose(pose, ref)
    for key in ("pitch", "yaw", "roll", "t"):
        torch.testing.assert_close(half[key], (pose[key] + ref[key]) / 2, rtol=0, atol=1e-5)
    assert torch.equal(half["scale"], pose["scale"]) and torch.equal(half["kp"], pose["kp"])


# -- smoothing ------------------------------------------------------------------------------------
def jittered_pose(n=600, seed=0):
    """A head swaying ±10° (period 120 frames) and drifting ±0.05, with 1° / 0.005 of frame jitter."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(n, dtype=torch.float32)
    sway = torch.sin(2 * math.pi * t / 120)
    clean = {
        "pitch": 3 * sway,
        "yaw": 10 * sway,
        "roll": 2 * sway,
        "t": torch.stack([0.05 * sway, -0.03 * sway, torch.zeros(n)], dim=1),
    }
    noisy = {k: v + torch.randn(v.shape, generator=g) * (0.005 if k == "t" else 1.0) for k, v in clean.items()}
    return clean, noisy


def posed_keypoints(extractor, info):
    n = info["yaw"].shape[0]
    kp = torch.linspace(-0.5, 0.5, 63).reshape(1, 63)
    return extractor.keypoints(dict(info, kp=kp.repeat(n, 1), scale=torch.ones(n, 1)))


def variation(kps):
    """Mean frame-to-frame keypoint movement."""
    return (kps[1:] - kps[:-1]).norm(dim=-1).mean().item()


def lag_frames(signal, clean, most=20):
    """The delay (frames) that best aligns `signal` with `clean` (least squares)."""
    n = clean.shape[0]
    return min(range(most), key=lambda k: ((signal[k:] - clean[: n - k]) ** 2).mean().item())


# smoothness: (least variation ratio, most lag in frames); measured (seed 0): keypoint variation ÷ 2.35
# and ÷ 5.02, lag 1 and 3 (yaw) / 1 and 4 (translation) frames at smoothness 0.5 and 1
SMOOTHING_BOUNDS = {0.5: (2.1, 2), 1.0: (4.5, 5)}


@pytest.mark.parametrize("smoothness", sorted(SMOOTHING_BOUNDS))
def test_smoothing_calms_jitter_with_a_bounded_lag(smoothness):
    extractor = MotionExtractor.tiny()
    clean, noisy = jittered_pose()
    f = MotionFilter(MotionControls(smoothness=smoothness))
    smooth = {k: [] for k in noisy}
    for i in range(0, 600, 4):  # chunk by chunk, as a stream
        out = f.pose({k: v[i : i + 4] for k, v in noisy.items()}, None)
        for k in smooth:
            smooth[k].append(out[k])
    smooth = {k: torch.cat(v) for k, v in smooth.items()}
    ratio = variation(posed_keypoints(extractor, noisy)) / variation(posed_keypoints(extractor, smooth))
    factor, lag = SMOOTHING_BOUNDS[smoothness]
    assert ratio >= factor
    assert lag_frames(smooth["yaw"], clean["yaw"]) <= lag and lag_frames(noisy["yaw"], clean["yaw"]) == 0
    assert lag_frames(smooth["t"][:, 0], clean["t"][:, 0]) <= lag


def test_smoothing_calms_the_tokens():
    g = torch.Generator().manual_seed(1)
    t = torch.arange(400, dtype=torch.float32)[:, None, None]
    clean = torch.sin(2 * math.pi * t / 120 + torch.rand(1, 32, 16, generator=g) * 6)
    noisy = clean + 0.1 * torch.randn(400, 32, 16, generator=g)
    f = MotionFilter(MotionControls(smoothness=0.5))
    smooth = torch.cat([f.smooth_tokens(noisy[i : i + 4]) for i in range(0, 400, 4)])
    ratio = (noisy[1:] - noisy[:-1]).abs().mean() / (smooth[1:] - smooth[:-1]).abs().mean()
    assert ratio >= 1.9  # measured 2.14
    assert lag_frames(smooth.flatten(1), clean.flatten(1)) <= 2  # measured 1


def test_smoothing_starts_at_the_reference(tiny_models, reference):
    """The filter starts on the first warm-up row, which is exactly the reference's motion."""
    motion, chunks = motion_chunks(tiny_models, reference, MotionControls(smoothness=1.0))
    _, plain = motion_chunks(tiny_models, reference)
    assert torch.equal(chunks[0].tokens[0], plain[0].tokens[0])
    assert torch.equal(chunks[0].keypoints[0], plain[0].keypoints[0])
    assert chunks[0].tokens.shape[0] == WARMUP + 4
    assert not torch.equal(chunks[1].tokens, plain[1].tokens)


# -- live changes, ranges -------------------------------------------------------------------------
def test_controls_change_between_chunks(tiny_models, reference):
    frames = moving_frames(12)
    motion = HybridMotion(tiny_models.motion_extractor, tiny_models.motion_encoder, reference)
    first = motion(to_model_frames(frames[:4], "cpu"))
    motion.set_controls(MotionControls(expression=0.0))
    second = motion(to_model_frames(frames[4:8], "cpu"))
    assert not torch.equal(first.tokens[-1], motion.reference_tokens[0])
    assert torch.equal(second.tokens, motion.reference_tokens.expand_as(second.tokens))


@pytest.mark.parametrize(
    "values,name",
    [
        ({"expression": -0.1}, "expression -0.1"),
        ({"head_pose": 2.5}, "head_pose 2.5"),
        ({"smoothness": 1.5}, "smoothness 1.5"),
        ({"smoothness": float("nan")}, "smoothness nan"),
        ({"expression": "strong"}, "expression 'strong'"),
    ],
)
def test_out_of_range_values_are_refused(values, name):
    with pytest.raises(InputError, match=name) as e:
        MotionControls(**values)
    assert "must be" in str(e.value)


def test_unknown_controls_are_refused():
    with pytest.raises(InputError, match="unknown option 'exprssion'; did you mean 'expression'"):
        MotionControls.from_dict({"exprssion": 1.0})
    assert MotionControls.from_dict({"head_pose": 0}) == MotionControls(1.0, 0.0, 0.0)


# -- stills for the docs --------------------------------------------------------------------------
ARTIFACTS = os.environ.get("PERSONALIVE_TEST_ARTIFACTS", os.path.join(os.path.dirname(__file__), "artifacts"))


def strip(images, scale=2):
    """uint8 (H, W, 3) images → one row, each enlarged `scale`× (nearest), 2-pixel grey gaps."""
    gap = np.full((images[0].shape[0] * scale, 2, 3), 96, np.uint8)
    cells = [np.kron(i, np.ones((scale, scale, 1), np.uint8)) for i in images]
    return np.concatenate([c for cell in cells for c in (cell, gap)][:-1], axis=1)


def blob_frame(cx, cy, size=SIZE):
    """A `moving_frames` picture with its blob at (cx, cy)."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 0.02)
    return np.clip(np.stack([blob, xx, yy], -1) * 200, 0, 255).astype(np.uint8)


def keypoint_images(chunks, size=SIZE * 2):
    from personalive_core.models.keypoints import draw_keypoints

    kps = torch.cat([c.keypoints[-4:] for c in chunks])
    return [(k.permute(1, 2, 0).numpy() * 255).astype(np.uint8) for k in draw_keypoints(kps, size)]


def test_stills_for_the_docs(lively, tiny_models, reference):
    """Before/after stills (tests/artifacts/controls_*.png; the docs/ copies come from here): rendered
    frames at α = 1 and 0 (tiny random weights animate little), and the keypoints the pose guider sees
    at β = 1 and 0 and with smoothing (where the effect shows even with random weights)."""
    from PIL import Image

    os.makedirs(ARTIFACTS, exist_ok=True)
    frames = moving_frames(16)
    picks = [0, 5, 10, 15]
    rows = {}
    for alpha in (1.0, 0.0):
        out = list(
            render_stream(
                tiny_models, reference, frames, StreamConfig(seed=1, controls=MotionControls(expression=alpha))
            )
        )
        rows[alpha] = strip([frames[i] for i in picks] + [(out[i] * 255).round().astype(np.uint8) for i in picks])
    assert not np.array_equal(rows[1.0], rows[0.0])
    still = np.concatenate([rows[1.0], np.full((4, rows[1.0].shape[1], 3), 96, np.uint8), rows[0.0]])
    Image.fromarray(still).quantize(64).save(os.path.join(ARTIFACTS, "controls_expression.png"))  # small file
    kp = {}
    for beta in (1.0, 0.0):
        _, chunks = motion_chunks(lively, reference, MotionControls(head_pose=beta), frames=frames)
        kp[beta] = keypoint_images(chunks)
    assert all(np.array_equal(k, kp[0.0][0]) for k in kp[0.0]) and not np.array_equal(kp[1.0][0], kp[1.0][-1])
    Image.fromarray(
        np.concatenate(
            [
                strip([kp[1.0][i] for i in picks], 1),
                np.full((4, 4 * SIZE * 2 + 6, 3), 96, np.uint8),
                strip([kp[0.0][i] for i in picks], 1),
            ]
        )
    ).save(os.path.join(ARTIFACTS, "controls_head_pose.png"))
    # smoothing: a driver holding still but jittering, the keypoints of 16 frames (after the first 16) overlaid
    rng = np.random.default_rng(0)
    jitter = [blob_frame(0.6 + dx, 0.45 + dy) for dx, dy in rng.normal(0, 0.05, (32, 2))]
    trails = []
    for s in (0.0, 1.0):
        _, chunks = motion_chunks(lively, reference, MotionControls(smoothness=s), frames=jitter)
        trails.append(np.max(keypoint_images(chunks[4:]), axis=0))
    assert (trails[1] > 0).sum() < (trails[0] > 0).sum()  # the smoothed points cover less ground
    Image.fromarray(strip(trails, 1)).save(os.path.join(ARTIFACTS, "controls_smoothness.png"))
