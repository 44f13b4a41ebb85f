"""Live engine: camera frames → the streaming session → generated frames, newest frames only."""

import threading
import time

import numpy as np
import pytest

from personalive_core.config import MotionControls, StreamConfig
from personalive_core.live.engine import LiveEngine, LiveError, LiveStream
from personalive_core.pipelines import (
    WARM_CHUNKS,
    WARMUP,
    FrameError,
    LiveTarget,
    encode_reference,
    prepare_reference,
    square_frame,
    warm_up,
)
from personalive_core.streaming.render import render_stream
from personalive_core.streaming.session import decode
from personalive_core.streaming.window import CHUNK

from conftest import SIZE, moving_frames


@pytest.fixture(scope="module")
def reference(tiny_models, reference_image):
    return encode_reference(tiny_models, prepare_reference(reference_image, SIZE))


def make_target(models, reference, seed=0, config=None, **kw):
    return LiveTarget(
        prepare=lambda: models,
        reference=reference,
        decode=lambda z: decode(models.vae, z),
        config=(config or StreamConfig()).replace(seed=seed),
        **kw,
    )


class Collector:
    def __init__(self):
        self.frames, self.errors = [], []
        self.event = threading.Event()

    def on_frames(self, stream, frames):
        self.frames.extend(frames)
        self.event.set()

    def on_error(self, stream, error):
        self.errors.append(error)
        self.event.set()

    def wait_for(self, n, timeout=60):
        end = time.monotonic() + timeout
        while len(self.frames) < n and not self.errors and time.monotonic() < end:
            self.event.wait(0.1)
            self.event.clear()
        return self.frames


def test_square_frame_crops_the_centre_and_resizes():
    image = np.zeros((100, 160, 3), np.uint8)
    image[:, 30:130] = 200  # the centred 100×100 square
    out = square_frame(image, 64)
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    assert (out == 200).all()


@pytest.mark.parametrize(
    "shape,code",
    [((10, 10, 3), "bad_size"), ((70, 5000, 3), "bad_size"), ((80, 80), "bad_frame"), ((80, 80, 4), "bad_frame")],
)
def test_square_frame_rejects_bad_frames(shape, code):
    with pytest.raises(FrameError) as e:
        square_frame(np.zeros(shape, np.uint8), 64)
    assert e.value.code == code


def feed_chunks(engine, stream, sink, frames, chunks):
    """Submit the driving frames of each chunk index in `chunks` (frame ids = their index in `frames`) and
    wait for that chunk's output before the next, so no frame is dropped."""
    for c in chunks:
        for i in range(CHUNK):
            engine.submit(stream, frames[c * CHUNK + i], c * CHUNK + i)
        sink.wait_for((c + 1) * CHUNK)


def test_live_frames_are_the_render_frames(tiny_models, reference):
    """Fed without drops, the live stream gives what `render --keep-warmup` gives for the same frames
    (an output also depends on the 3 chunks pushed after it, which share its window): 12 warm-up
    frames (no driving frame), then one frame per driving frame, in order."""
    driving = moving_frames(16)
    engine = LiveEngine()
    engine.set_target("5", make_target(tiny_models, reference, seed=3))
    sink = Collector()
    stream = engine.open("5", sink.on_frames, sink.on_error)
    try:
        feed_chunks(engine, stream, sink, driving, range(4))
    finally:
        engine.shutdown()
    assert not sink.errors
    ids = [f[0] for f in sink.frames]
    assert ids == [None] * WARMUP + [0, 1, 2, 3]
    expected = list(render_stream(tiny_models, reference, driving, StreamConfig(seed=3, keep_warmup=True)))[:16]
    for (_, image, _latency), want in zip(sink.frames, expected):
        assert np.abs(image.astype(int) - np.round(want * 255).astype(int)).max() <= 1
    assert sink.frames[-1][2] > 0 and sink.frames[0][2] is None


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_latency_stays_bounded_when_the_camera_outruns_the_model(tiny_models, reference):
    """A 2-minute stream (simulated clock): camera at 30 fps, a chunk takes 2 s (2 fps of output).
    Only the newest 4 frames wait; each frame comes out at most 4 chunk times after the chunk that
    took it started, however long the stream runs; the rest are counted as dropped."""
    clock, camera_fps, chunk_s = FakeClock(), 30.0, 2.0
    target = make_target(tiny_models, reference)
    inner = target.decode

    def slow_decode(latents):
        clock.t += chunk_s
        return inner(latents)

    target.decode = slow_decode
    out = []
    stream = LiveStream(1, "x", lambda s, frames: out.extend(frames), None, clock=clock)
    frame, sent = moving_frames(1)[0], 0
    while clock.t < 120:
        while sent <= clock.t * camera_fps or len(stream.pending) < CHUNK:
            clock.t = max(clock.t, sent / camera_fps)  # idle until the camera's next frame
            stream.submit(frame, sent)
            sent += 1
        assert len(stream.pending) <= CHUNK
        stream.step(target)
    latencies = [lat for _, _, lat in out if lat is not None]
    bound = 1e3 * (4 * chunk_s + CHUNK / camera_fps)
    assert len(latencies) >= 200 and max(latencies) <= bound
    first, last = np.median(latencies[:40]), np.median(latencies[-40:])
    assert abs(last - first) < 1e3 / camera_fps  # no drift: the delay does not grow with time
    assert stream.dropped > 0.5 * stream.received
    ids = [i for i, _, _ in out if i is not None]
    assert ids == sorted(ids)
    stats = stream.stats()
    assert stats["latency_ms_max"] <= bound and stats["dropped"] == stream.dropped
    # the parts of it, on the simulated clock: each frame waits for its chunk, then the window holds it for
    # 4 chunk steps of 2 s; nothing else takes time here
    parts = stats["latency_parts"]
    assert parts["window_ms"] == 4 * chunk_s * 1e3 and parts["window_chunks"] == 4 and parts["encode_ms"] == 0
    assert parts["server_ms"] == stats["latency_ms_p50"] and 0 <= parts["wait_ms"] <= bound - parts["window_ms"]


def test_opening_without_a_reference_or_past_the_limit_is_refused(tiny_models, reference):
    engine = LiveEngine(max_streams=1)
    with pytest.raises(LiveError, match="queue the workflow once") as e:
        engine.open("7", print)
    assert e.value.code == "no_reference"
    engine.set_target("7", make_target(tiny_models, reference))
    stream = engine.open("7", print)
    with pytest.raises(LiveError, match="limit is 1") as e:
        engine.open("7", print)
    assert e.value.code == "too_many_sessions"
    engine.close(stream)
    engine.close(engine.open("7", print))
    engine.shutdown()


def test_a_new_reference_restarts_the_window_without_stopping(tiny_models, reference, reference_image):
    other = encode_reference(tiny_models, prepare_reference(reference_image.transpose(0), SIZE))  # mirrored portrait
    engine = LiveEngine()
    engine.set_target("5", make_target(tiny_models, reference))
    sink = Collector()
    stream = engine.open("5", sink.on_frames, sink.on_error)
    frames = moving_frames(32)
    try:
        feed_chunks(engine, stream, sink, frames, range(4))
        engine.set_target("5", make_target(tiny_models, other))
        feed_chunks(engine, stream, sink, frames, range(4, 8))
    finally:
        engine.shutdown()
    assert not sink.errors and stream.id in engine.streams
    ids = [f[0] for f in sink.frames]
    assert ids == [None] * WARMUP + [0, 1, 2, 3] + [None] * WARMUP + [16, 17, 18, 19]
    expected = list(render_stream(tiny_models, other, frames[16:32], StreamConfig(seed=0, keep_warmup=True)))[:16]
    got = [image for _, image, _ in sink.frames[16:]]
    assert max(np.abs(g.astype(int) - np.round(w * 255).astype(int)).max() for g, w in zip(got, expected)) <= 1


def test_a_failing_stream_stops_alone(tiny_models, reference):
    engine = LiveEngine()
    engine.set_target("good", make_target(tiny_models, reference))
    bad = make_target(tiny_models, reference)
    bad.decode = lambda z: (_ for _ in ()).throw(RuntimeError("decoder exploded"))
    engine.set_target("bad", bad)
    good_sink, bad_sink = Collector(), Collector()
    good = engine.open("good", good_sink.on_frames, good_sink.on_error)
    broken = engine.open("bad", bad_sink.on_frames, bad_sink.on_error)
    frames = moving_frames(8)
    try:
        for i in range(4):
            engine.submit(broken, frames[i], i)
            engine.submit(good, frames[i], i)
        bad_sink.wait_for(1)
        good_sink.wait_for(4)
        for i in range(4, 8):
            engine.submit(good, frames[i], i)
        good_sink.wait_for(8)
    finally:
        engine.shutdown()
    assert "decoder exploded" in str(bad_sink.errors[0]) and broken.id not in engine.streams
    assert len(good_sink.frames) == 8 and not good_sink.errors


def test_no_chunk_runs_while_the_device_is_busy(tiny_models, reference):
    busy = threading.Event()
    busy.set()

    class Turn:
        def __call__(self):
            return self

        def __enter__(self):
            return not busy.is_set()

        def __exit__(self, *exc):
            return False

    engine = LiveEngine(turn=Turn(), busy_wait=0.01)
    engine.set_target("5", make_target(tiny_models, reference))
    sink = Collector()
    stream = engine.open("5", sink.on_frames, sink.on_error)
    frames = moving_frames(12)
    try:
        for i, f in enumerate(frames):
            engine.submit(stream, f, i)
        time.sleep(0.3)
        assert sink.frames == [] and stream.state.startswith("paused")
        assert len(stream.pending) == CHUNK and stream.dropped == 8
        busy.clear()
        sink.wait_for(4)
    finally:
        engine.shutdown()
    assert len(sink.frames) == 4 and stream.state == "running"


def test_controls_reach_the_stream_and_change_while_live(tiny_models, reference):
    """A stream opened with controls gives the frames `render` gives with the same controls; new
    controls take effect from the next chunk."""
    driving = moving_frames(16)
    controls = MotionControls(expression=0.0, head_pose=0.5)
    engine = LiveEngine()
    engine.set_target("5", make_target(tiny_models, reference, seed=3))
    sink = Collector()
    stream = engine.open("5", sink.on_frames, sink.on_error, controls=controls)
    try:
        feed_chunks(engine, stream, sink, driving, range(4))
        assert stream.session.session.motion.filter.controls is controls
        smooth = MotionControls(smoothness=0.5)
        stream.set_controls(smooth)
        for i in range(CHUNK):
            engine.submit(stream, driving[i], 16 + i)
        sink.wait_for(20)
    finally:
        engine.shutdown()
    assert not sink.errors
    expected = list(
        render_stream(tiny_models, reference, driving, StreamConfig(seed=3, keep_warmup=True, controls=controls))
    )[:16]
    plain = list(render_stream(tiny_models, reference, driving, StreamConfig(seed=3, keep_warmup=True)))[:16]
    assert (
        max(np.abs(f[1].astype(int) - np.round(w * 255).astype(int)).max() for f, w in zip(sink.frames, expected)) <= 1
    )
    assert (
        max(np.abs(f[1].astype(int) - np.round(w * 255).astype(int)).max() for f, w in zip(sink.frames, plain)) > 1
    )  # the controls did change the frames
    assert stream.session.session.motion.filter.controls is smooth
    assert stream.stats()["controls"] == {
        "expression": 1.0,
        "head_pose": 1.0,
        "smoothness": 0.5,
        "crop": "center",
        "paste_into": "none",
        "crop_scale": 1.75,
        "feather": 0.2,
    }


class ListRecorder:
    def __init__(self):
        self.frames = []

    def add(self, image, t):
        self.frames.append((image, t))


def test_a_take_records_camera_frames_at_their_arrival_times(tiny_models, reference):
    """Only frames with a camera frame behind them (no warm-up), each stamped with the time its camera
    frame arrived; frames after the take stopped are not recorded."""
    clock = FakeClock()
    out = []
    stream = LiveStream(1, "x", lambda s, frames: out.extend(frames), None, clock=clock)
    target = make_target(tiny_models, reference)
    recorder = ListRecorder()
    stream.start_recording(recorder)
    with pytest.raises(LiveError, match="already recording"):
        stream.start_recording(ListRecorder())
    frame, arrivals = moving_frames(1)[0], []
    for c in range(5):
        for i in range(CHUNK):
            clock.t = c + 0.1 * i + (0.03 if c == 4 else 0)
            arrivals.append(clock.t)
            stream.submit(frame, c * CHUNK + i)
        stream.step(target)
    assert stream.stop_recording() is recorder and stream.stop_recording() is None
    for i in range(CHUNK):  # not recorded any more
        stream.submit(frame, 99 + i)
    stream.step(target)
    assert [t for _, t in recorder.frames] == arrivals[:8]  # chunks 0 and 1 have come out after 5 steps
    assert all(image is got[1] for (image, _), got in zip(recorder.frames, out[WARMUP:]))


def test_prepare_warms_the_target_and_the_first_chunk_knows(tiny_models, reference):
    """Prepare runs the live path at the live size before any camera frame; the stream then reports
    a warm start, and its frames are unchanged (the warm-up session leaves nothing behind)."""
    driving = moving_frames(16)
    engine = LiveEngine()
    engine.set_target("5", make_target(tiny_models, reference, seed=3))
    done, progress = [], []
    finished = threading.Event()
    engine.prepare("5", lambda d, t: progress.append((d, t)), lambda r, e: (done.append((r, e)), finished.set()))
    sink = Collector()
    try:
        assert finished.wait(120)
        report, error = done[0]
        assert error is None and report["chunks"] == WARM_CHUNKS and len(report["chunk_ms"]) == WARM_CHUNKS
        assert report["compiled"] is False  # the test models are not compiled
        assert progress == [(i + 1, WARM_CHUNKS) for i in range(WARM_CHUNKS)]
        assert engine.stats()["prepared"]["5"] == report and report["run"] == 1
        stream = engine.open("5", sink.on_frames, sink.on_error)
        feed_chunks(engine, stream, sink, driving, range(4))
    finally:
        engine.shutdown()
    assert stream.stats()["warm_start"] is True and stream.stats()["first_chunk_ms"] > 0
    expected = list(render_stream(tiny_models, reference, driving, StreamConfig(seed=3, keep_warmup=True)))[:16]
    assert (
        max(np.abs(f[1].astype(int) - np.round(w * 255).astype(int)).max() for f, w in zip(sink.frames, expected)) <= 1
    )
    # another size (or other networks) is not prepared; an unprepared stream says so
    engine.set_target("5", make_target(tiny_models, reference, model_key="other"))
    assert "5" not in engine.stats()["prepared"]
    with pytest.raises(LiveError) as e:
        engine.prepare("nope")
    assert e.value.code == "no_reference"


def test_prepare_compiles_so_the_first_live_chunk_compiles_nothing(tiny_models, reference):
    """With a compiled chunk step (graph capture only: backend "eager"), the warm-up is where it compiles:
    the first live chunk afterwards captures no new graph (counted by dynamo, not timed)."""
    from torch._dynamo.utils import counters

    target = make_target(tiny_models, reference, config=StreamConfig().replace(compile=True, compile_backend="eager"))
    before = counters["stats"]["unique_graphs"]
    report = warm_up(target)
    compiled = counters["stats"]["unique_graphs"]
    assert report["compiled"] is True and compiled > before
    stream = LiveStream(1, "x", lambda s, frames: None, None)
    for i, frame in enumerate(moving_frames(CHUNK)):
        stream.submit(frame, i)
    stream.step(target)
    assert stream.chunks == 1 and counters["stats"]["unique_graphs"] == compiled


# -- real cameras: the face tracked through whole camera frames, pasted back, portraits swapped in ----------
CAMERA_H, CAMERA_W, CAMERA_FPS = 180, 320, 15  # a 16:9 webcam picture, a test-sized one
STILL_JITTER = 0.01  # a still face: the crop moves at most 1 % of its side per frame, on average
MOVING_JITTER = (0.02, 0.05)  # a moving face: the crop's second difference, mean and max, per crop side
FOLLOW = 0.08  # the crop's centre stays within 8 % of the face size of the face's centre


def face_path(i, n):
    """(cx, cy, face side) at frame i of n: the face crosses the picture and comes closer, with a bob."""
    t = i / (n - 1)
    return CAMERA_W * (0.3 + 0.4 * t), CAMERA_H * (0.5 + 0.04 * np.sin(i / 3)), CAMERA_H * (0.28 + 0.2 * t)


def camera_frame(face=None, noise=3.0, seed=0):
    """A camera picture of the same room, with a drawn face (cx, cy, side) or without, and sensor noise."""
    import cv2
    from test_face_crop import background, draw_face

    image = background(CAMERA_H, CAMERA_W, seed=1)
    if face is not None:
        image = draw_face(image, *face)
    noisy = image + np.random.default_rng(seed).normal(0, noise, image.shape)
    return cv2.GaussianBlur(np.clip(noisy, 0, 255).astype(np.uint8), (0, 0), 1.0)


def crops(framer, frames, fps=CAMERA_FPS):
    """The crop of each frame as (cx, cy, side), and whether a face was found, framed at camera time i / fps."""
    from personalive_core.media.face_crop import box_center_side

    out = []
    for i, frame in enumerate(frames):
        framer.frame(frame, i / fps)
        out.append((*box_center_side(framer.info.box), framer.found))
    return np.array(out)


def test_auto_framing_follows_a_face_across_and_toward_the_camera():
    """Whole camera frames at 15 fps: the crop is the training framing (1.75 × the face) around the face as it
    crosses the picture and comes closer, and its frame-to-frame wobble (second difference) stays small."""
    from personalive_core.config import Framing
    from personalive_core.pipelines import CameraFramer

    n = 40
    truth = np.array([face_path(i, n) for i in range(n)])
    got = crops(CameraFramer(Framing(crop="auto"), SIZE), [camera_frame(tuple(f), seed=i) for i, f in enumerate(truth)])
    assert got[:, 3].all()  # a face in every frame
    error = np.hypot(*(got[:, :2] - truth[:, :2]).T) / truth[:, 2]
    assert error[5:].max() <= FOLLOW, error
    ratio = got[5:, 2] / truth[5:, 2]
    assert (abs(ratio / 1.75 - 1) <= 0.15).all(), ratio
    wobble = np.abs(got[2:, :2] - 2 * got[1:-1, :2] + got[:-2, :2]).max(1) / got[1:-1, 2]
    assert wobble.mean() <= MOVING_JITTER[0] and wobble.max() <= MOVING_JITTER[1], wobble


def test_a_still_face_gets_a_still_crop():
    """Sensor noise moves the raw detections; the smoothed crop moves less, under 1 % of its side a frame."""
    from personalive_core.config import Framing
    from personalive_core.media.face_crop import box_center_side, find_crop_box
    from personalive_core.pipelines import CameraFramer

    frames = [camera_frame((150, 95, 60), noise=6, seed=i) for i in range(30)]
    got = crops(CameraFramer(Framing(crop="auto"), SIZE), frames)[:, :3]
    raw = np.array([box_center_side(find_crop_box(f)) for f in frames])
    moved = lambda a: np.abs(np.diff(a, axis=0)).max(1) / a[1:, 2]
    assert moved(got)[3:].mean() <= STILL_JITTER and moved(got)[3:].mean() < moved(raw).mean()


def test_a_frame_without_a_face_keeps_the_last_crop():
    from personalive_core.config import Framing
    from personalive_core.pipelines import CameraFramer

    framer = CameraFramer(Framing(crop="auto"), SIZE)
    frames = [camera_frame((120, 90, 55), seed=i) for i in range(6)] + [camera_frame(seed=9 + i) for i in range(4)]
    got = crops(framer, frames)
    assert got[:6, 3].all() and not got[6:, 3].any()
    assert (got[6:, :3] == got[5, :3]).all()
    framer.frame(camera_frame((120, 90, 55), seed=20), 11 / CAMERA_FPS)  # the face is back
    assert framer.found


def test_center_framing_cuts_the_centred_square():
    from personalive_core.config import Framing
    from personalive_core.pipelines import CameraFramer

    framer = CameraFramer(Framing(crop="center"), SIZE)
    frame = camera_frame((60, 90, 50))
    patch, info = framer.frame(frame, 0.0)
    assert np.array_equal(patch, square_frame(frame, SIZE)) and info.box == (70, 0, 250, 180)


def auto_target(models, reference, seed=0, paste_into="none", **kw):
    return make_target(models, reference, seed, StreamConfig().replace(crop="auto", paste_into=paste_into), **kw)


def test_framed_live_frames_are_the_footage_path_frames(tiny_models, reference):
    """At 30 fps camera time the live framing is the footage tracker's (`render --crop auto`) frame for frame,
    and the stream's frames are render's on those crops: the model, the keypoints and the motion tokens all see
    the crop."""
    from personalive_core.pipelines import Reframer

    n = 16
    frames = [camera_frame(face_path(i, n), seed=i) for i in range(n)]
    footage = list(Reframer(StreamConfig().replace(size=SIZE, crop="auto")).driving(frames))
    clock = FakeClock()
    out = []
    stream = LiveStream(
        1, "x", lambda s, got: out.extend(got), None, clock=clock, framing=StreamConfig().framing.replace(crop="auto")
    )
    target = auto_target(tiny_models, reference, seed=3)
    for c in range(4):
        for i in range(CHUNK):
            clock.t = (c * CHUNK + i) / 30
            stream.submit(frames[c * CHUNK + i], c * CHUNK + i)
        stream.step(target)
    expected = list(render_stream(tiny_models, reference, footage, StreamConfig(seed=3, keep_warmup=True)))[:16]
    assert max(np.abs(f[1].astype(int) - np.round(w * 255).astype(int)).max() for f, w in zip(out, expected)) <= 1
    assert stream.stats()["framing"]["face"] is True and stream.stats()["framing"]["camera"] == [CAMERA_W, CAMERA_H]


def test_full_frame_output_has_the_camera_size_and_is_the_camera_outside_the_mask(tiny_models, reference):
    """paste_into "driving": every output frame is its camera frame (warm-up frames: the newest one) with the
    generated face pasted in through the feathered disc; outside the disc it is the camera frame, exactly."""
    from personalive_core.config import Framing
    from personalive_core.pipelines import CameraFramer

    n = 16
    frames = [camera_frame(face_path(i, n), seed=i) for i in range(n)]
    framing = Framing(crop="auto", paste_into="driving")
    framer = CameraFramer(framing, SIZE)  # the same crops, computed apart
    infos = [framer.frame(f, i / CAMERA_FPS)[1] for i, f in enumerate(frames)]
    out = []
    clock = FakeClock()
    stream = LiveStream(1, "x", lambda s, got: out.extend(got), None, clock=clock, framing=framing)
    target = auto_target(tiny_models, reference, paste_into="driving")
    for c in range(4):
        for i in range(CHUNK):
            clock.t = (c * CHUNK + i) / CAMERA_FPS
            stream.submit(frames[c * CHUNK + i], c * CHUNK + i)
        stream.step(target)
    assert [f[0] for f in out] == [None] * WARMUP + [0, 1, 2, 3]
    for k, (frame_id, image, _) in enumerate(out):
        index = frame_id if frame_id is not None else (k // CHUNK) * CHUNK + CHUNK - 1  # warm-up: the newest
        camera, info = frames[index], infos[index]
        assert image.shape == camera.shape and image.dtype == np.uint8
        x0, y0, x1, y1 = info.box
        yy, xx = np.mgrid[0:CAMERA_H, 0:CAMERA_W]
        outside = np.hypot(xx + 0.5 - (x0 + x1) / 2, yy + 0.5 - (y0 + y1) / 2) > (x1 - x0) / 2 + 1
        assert np.array_equal(image[outside], camera[outside]) and not np.array_equal(image, camera)
    assert stream.stats()["output_size"] == [CAMERA_W, CAMERA_H]


def face_portrait(h=150, w=120, seed=7):
    from test_face_crop import frame_with_face

    return frame_with_face(h, w, w * 0.5, h * 0.45, w * 0.45, seed=seed)


def test_reference_output_has_the_portrait_size(tiny_models):
    """paste_into "reference": the generated face goes back into the portrait picture, at its size."""
    from personalive_core.config import Framing
    from personalive_core.pipelines import core_target, frame_portrait

    config = StreamConfig(size=SIZE, seed=1)
    portrait = face_portrait()
    target = core_target(tiny_models, portrait, config)
    assert target.portrait.original is portrait and frame_portrait(portrait, config)[1].info == target.portrait.info
    framing = Framing(paste_into="reference")
    out = []
    stream = LiveStream(1, "x", lambda s, got: out.extend(got), None, framing=framing)
    for i, frame in enumerate(moving_frames(CHUNK)):
        stream.submit(frame, i)
    stream.step(target)
    x0, y0, x1, y1 = target.portrait.info.box
    for _, image, _ in out:
        assert image.shape == portrait.shape
        outside = np.ones(portrait.shape[:2], bool)
        outside[max(y0, 0) : y1, max(x0, 0) : x1] = False
        assert np.array_equal(image[outside], portrait[outside])


def test_a_portrait_without_a_face_or_not_a_picture_is_refused():
    from personalive_core.pipelines import frame_portrait, read_portrait

    with pytest.raises(FrameError) as e:
        read_portrait(b"GIF89a but not really")
    assert e.value.code == "bad_image" and "not a picture" in str(e.value)
    with pytest.raises(FrameError) as e:
        frame_portrait(camera_frame(), StreamConfig(size=SIZE))
    assert e.value.code == "no_face" and "320×180" in str(e.value)


class Done:
    """on_done for engine jobs: waits for and keeps (report, error)."""

    def __init__(self):
        self.event, self.result = threading.Event(), None

    def __call__(self, report, error):
        self.result = (report, error)
        self.event.set()

    def wait(self, timeout=120):
        assert self.event.wait(timeout), "the engine job never finished"
        self.event.clear()
        return self.result


def test_a_portrait_swapped_mid_stream_takes_over_at_the_next_chunk(tiny_models, reference):
    """swap: the new portrait is encoded while the stream runs on the old one; the next chunk starts a fresh
    window on it (warm-up frames, then frames equal to render's with that portrait); the stream and its take
    carry on."""
    from personalive_core.pipelines import frame_portrait

    encode = lambda picture: encode_reference(tiny_models, picture)
    engine = LiveEngine()
    engine.set_target("5", make_target(tiny_models, reference, encode=encode))
    sink, recorder, done = Collector(), ListRecorder(), Done()
    stream = engine.open("5", sink.on_frames, sink.on_error)
    stream.start_recording(recorder)
    frames = moving_frames(32)
    picture, portrait = frame_portrait(face_portrait(), StreamConfig(size=SIZE))
    try:
        feed_chunks(engine, stream, sink, frames, range(4))
        engine.swap("5", picture, portrait, done)
        report, error = done.wait()
        assert error is None and report["portrait"] == 1 and report["encode_s"] > 0
        assert engine.target("5").portrait is portrait and engine.stats()["portraits"]["5"] == 1
        feed_chunks(engine, stream, sink, frames, range(4, 8))
    finally:
        engine.shutdown()
    assert not sink.errors and stream.id in engine.streams and stream.recorder is recorder
    ids = [f[0] for f in sink.frames]
    assert ids == [None] * WARMUP + [0, 1, 2, 3] + [None] * WARMUP + [16, 17, 18, 19]
    expected = list(render_stream(tiny_models, encode(picture), frames[16:32], StreamConfig(keep_warmup=True)))[:16]
    got = [image for _, image, _ in sink.frames[16:]]
    assert max(np.abs(g.astype(int) - np.round(w * 255).astype(int)).max() for g, w in zip(got, expected)) <= 1
    assert len(recorder.frames) == 8  # 4 camera frames before the swap, 4 after


def test_a_queue_run_replaces_a_swapped_portrait_and_the_kept_ones_can_be_picked(tiny_models, reference):
    from personalive_core.pipelines import frame_portrait

    encode = lambda picture: encode_reference(tiny_models, picture)
    own = make_target(tiny_models, reference, encode=encode)
    engine = LiveEngine()
    engine.set_target("5", own)
    done = Done()
    try:
        for seed in (7, 8):
            engine.swap("5", *frame_portrait(face_portrait(seed=seed), StreamConfig(size=SIZE)), done)
            assert done.wait()[1] is None
        listed = engine.portrait_list("5")
        assert [(p["id"], p["current"]) for p in listed] == [(0, False), (1, False), (2, True)]
        assert all(p["thumbnail"].shape == (96, 96, 3) for p in listed)
        engine.set_target("5", own)  # the graph queued again
        assert engine.target("5") is own and engine.portrait_list("5")[0]["current"]
        engine.pick("5", 1, done)
        assert done.wait()[0]["portrait"] == 1 and engine.target("5").reference is not reference
        engine.pick("5", 0, done)
        assert done.wait()[0]["portrait"] == 0 and engine.target("5") is own
        with pytest.raises(LiveError) as e:
            engine.pick("5", 9, done)
        assert e.value.code == "no_portrait" and "0, 1, 2" in str(e.value)
    finally:
        engine.shutdown()
    plain = LiveEngine()
    plain.set_target("6", make_target(tiny_models, reference))  # no encoder: no swaps
    with pytest.raises(LiveError) as e:
        plain.swap("6", None, None)
    assert e.value.code == "no_encoder" and "clip_vision" in str(e.value)
