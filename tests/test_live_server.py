"""The live routes through a real websocket client: bad input, limits, two concurrent sessions."""

import asyncio
import math
import struct

import cv2
import numpy as np
import pytest
from aiohttp import ClientSession, WSMsgType, web
from aiohttp.test_utils import TestServer

import av

from personalive_core.live.engine import LiveEngine
from personalive_core.pipelines import WARM_CHUNKS, LiveTarget
from personalive_core.live.recorder import TakeFolder
from personalive_core.live.server import WARMUP_ID, add_live_routes
from personalive_core.pipelines import encode_reference, prepare_reference
from personalive_core.streaming.session import decode

from conftest import SIZE, moving_frames

MAX_MESSAGE = 64 * 1024


@pytest.fixture(scope="module")
def target(tiny_models, reference_image):
    reference = encode_reference(tiny_models, prepare_reference(reference_image, SIZE))
    return LiveTarget(lambda: tiny_models, reference, lambda z: decode(tiny_models.vae, z))


def jpeg(image):
    return cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))[1].tobytes()


def frame_message(frame_id, image):
    return struct.pack(">I", frame_id) + jpeg(image)


def serve(engine, scenario, takes=None):
    """Run `scenario(session, base_url)` against an aiohttp app carrying the live routes."""

    async def main():
        app = web.Application()
        add_live_routes(app.router, engine, max_message=MAX_MESSAGE, takes=takes)
        server = TestServer(app)
        await server.start_server()
        try:
            async with ClientSession() as session:
                return await scenario(session, str(server.make_url("/")))
        finally:
            await server.close()
            engine.shutdown()

    return asyncio.run(main())


async def next_json(ws, kind, timeout=30):
    """The next text message of type `kind` (stats and frames in between are skipped)."""

    async def wait():
        while True:
            msg = await ws.receive()
            if msg.type == WSMsgType.TEXT and msg.json()["type"] == kind:
                return msg.json()
            if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.ERROR):
                raise AssertionError(f"socket closed while waiting for {kind}: {msg}")

    return await asyncio.wait_for(wait(), timeout)


async def stream_frames(ws, frames, want, timeout=120):
    """Send camera frames 4 at a time, pacing on the generated frames; returns the (id, latency,
    image) of the first `want` generated frames."""
    got, sent = [], 0

    async def run():
        nonlocal sent
        while len(got) < want:
            if sent < len(frames) and sent < len(got) + 4:  # one chunk at a time: nothing dropped
                for _ in range(4):
                    await ws.send_bytes(frame_message(sent, frames[sent % len(frames)]))
                    sent += 1
            msg = await ws.receive()
            if msg.type == WSMsgType.BINARY:
                frame_id, latency = struct.unpack(">If", msg.data[:8])
                image = cv2.imdecode(np.frombuffer(msg.data[8:], np.uint8), cv2.IMREAD_COLOR)
                got.append((frame_id, latency, image))
            elif msg.type == WSMsgType.TEXT:
                assert msg.json()["type"] != "error", msg.json()
            else:
                raise AssertionError(f"socket closed: {msg}")

    await asyncio.wait_for(run(), timeout)
    return got


def test_two_concurrent_sessions_and_status(target):
    engine = LiveEngine(max_streams=2)
    engine.set_target("5", target)

    async def scenario(http, base):
        a = await http.ws_connect(base + "personalive/live")
        b = await http.ws_connect(base + "personalive/live")
        for ws in (a, b):
            await ws.send_json({"type": "start", "target": "5"})
            started = await next_json(ws, "started")
            assert started["size"] == SIZE
        results = await asyncio.gather(
            stream_frames(a, moving_frames(32), 16), stream_frames(b, moving_frames(32, seed=5), 16)
        )
        async with http.get(base + "personalive/status") as r:
            status = await r.json()
        stats = await next_json(a, "stats")
        await a.close()
        await b.close()
        return results, status, stats

    results, status, stats = serve(engine, scenario)
    for got in results:
        ids = [i for i, _, _ in got]
        assert ids[:12] == [WARMUP_ID] * 12 and ids[12:] == [0, 1, 2, 3]
        assert all(math.isnan(lat) for _, lat, _ in got[:12]) and all(lat > 0 for _, lat, _ in got[12:])
        assert all(image.shape == (SIZE, SIZE, 3) for _, _, image in got)
    assert status["targets"] == ["5"] and len(status["streams"]) == 2
    assert all(s["emitted"] >= 16 and s["latency_ms"] > 0 for s in status["streams"])
    assert stats["type"] == "stats" and stats["received"] >= 16


def test_bad_input_gets_an_error_and_the_socket_keeps_serving(target):
    engine = LiveEngine(max_streams=2)
    engine.set_target("5", target)
    tiny_png = cv2.imencode(".png", np.zeros((10, 10, 3), np.uint8))[1].tobytes()

    async def scenario(http, base):
        errors = []
        ws = await http.ws_connect(base + "personalive/live")

        async def expect(send, *args):
            await send(*args)
            errors.append(await next_json(ws, "error"))

        await expect(ws.send_bytes, frame_message(0, moving_frames(1)[0]))  # before start
        await expect(ws.send_json, {"type": "start", "target": "42"})  # a node never queued
        await expect(ws.send_str, "not json")
        await expect(ws.send_json, {"type": "dance"})
        await ws.send_json({"type": "start", "target": "5"})
        await next_json(ws, "started")
        await expect(ws.send_json, {"type": "start", "target": "5"})  # twice
        await expect(ws.send_bytes, struct.pack(">I", 1) + b"this is not an image")
        await expect(ws.send_bytes, struct.pack(">I", 2) + tiny_png)  # 10×10 pixels
        await expect(ws.send_bytes, b"\x00\x01")
        await expect(ws.send_bytes, struct.pack(">I", 3) + bytes(MAX_MESSAGE + 10))  # over our limit
        # a third session while two run
        other = await http.ws_connect(base + "personalive/live")
        await other.send_json({"type": "start", "target": "5"})
        await next_json(other, "started")
        third = await http.ws_connect(base + "personalive/live")
        await third.send_json({"type": "start", "target": "5"})
        errors.append(await next_json(third, "error"))
        # the first socket still streams after all that
        got = await stream_frames(ws, moving_frames(16), 16)
        # past twice the limit aiohttp closes that socket (1009); the server goes on
        await third.send_bytes(bytes(2 * MAX_MESSAGE + 10))
        closed = await third.receive()
        await other.close()
        fresh = await http.ws_connect(base + "personalive/live")
        await fresh.send_json({"type": "start", "target": "5"})
        await next_json(fresh, "started")
        for s in (ws, fresh):
            await s.close()
        return errors, got, closed

    errors, got, closed = serve(engine, scenario)
    codes = [e["code"] for e in errors]
    assert codes == [
        "not_started",
        "no_reference",
        "bad_message",
        "bad_message",
        "already_started",
        "bad_frame",
        "bad_size",
        "bad_frame",
        "too_large",
        "too_many_sessions",
    ]
    assert "'42'" in errors[1]["message"] and "10×10" in errors[6]["message"]
    assert all(e["message"] for e in errors)
    assert [i for i, _, _ in got][12:] == [0, 1, 2, 3]
    assert closed.type in (WSMsgType.CLOSE, WSMsgType.CLOSED) and closed.data == 1009


async def view_frames(http, base, target, want, timeout=120):
    """Connect an output page's socket and collect `want` frames (decoded JPEGs)."""
    got = []
    async with http.ws_connect(base + f"personalive/view/{target}/ws") as ws:

        async def run():
            while len(got) < want:
                msg = await ws.receive()
                assert msg.type == WSMsgType.BINARY, msg
                got.append(cv2.imdecode(np.frombuffer(msg.data, np.uint8), cv2.IMREAD_COLOR))

        await asyncio.wait_for(run(), timeout)
    return got


def test_output_pages_show_the_stream_to_several_viewers(target):
    engine = LiveEngine(max_streams=2)
    engine.set_target("5", target)

    async def scenario(http, base):
        async with http.get(base + "personalive/view/5") as r:
            html, kind = await r.text(), r.content_type
        ws = await http.ws_connect(base + "personalive/live")
        await ws.send_json({"type": "start", "target": "5"})
        await next_json(ws, "started")
        viewers = [asyncio.create_task(view_frames(http, base, "5", 8)) for _ in range(2)]
        while (await (await http.get(base + "personalive/status")).json())["viewers"].get("5", 0) < 2:
            await asyncio.sleep(0.05)
        sent = asyncio.create_task(stream_frames(ws, moving_frames(64), 64))
        seen = await asyncio.gather(*viewers)
        await sent
        async with http.get(base + "personalive/status") as r:
            status = await r.json()
        await ws.close()
        return html, kind, seen, status

    html, kind, seen, status = serve(engine, scenario)
    assert kind == "text/html" and "<canvas" in html and "/ws" in html
    for frames in seen:
        assert len(frames) == 8 and all(f.shape == (SIZE, SIZE, 3) for f in frames)
    assert status["viewers"] == {}  # both pages left


def test_controls_prepare_and_a_recorded_take_over_the_socket(target, tmp_path):
    engine = LiveEngine(max_streams=2)
    engine.set_target("5", target)

    async def scenario(http, base):
        ws = await http.ws_connect(base + "personalive/live")
        await ws.send_json({"type": "prepare", "target": "5"})
        progress = [await next_json(ws, "progress") for _ in range(WARM_CHUNKS)]
        prepared = await next_json(ws, "prepared")
        await ws.send_json({"type": "start", "target": "5", "controls": {"expression": 3}})
        refused = await next_json(ws, "error")
        await ws.send_json({"type": "start", "target": "5", "controls": {"expression": 0.5}})
        await next_json(ws, "started")
        await ws.send_json({"type": "controls", "controls": {"head_pose": 0, "smoothness": 0.25}})
        echoed = await next_json(ws, "controls")
        await ws.send_json({"type": "controls", "controls": {"smoothness": -1}})
        bad = await next_json(ws, "error")
        await ws.send_json({"type": "record", "on": True})
        recording = await next_json(ws, "recording")
        got = await stream_frames(ws, moving_frames(40), 40)
        await ws.send_json({"type": "record", "on": False})
        recorded = await next_json(ws, "recorded")
        stats = await next_json(ws, "stats")
        await ws.close()
        return progress, prepared, refused, echoed, bad, recording, got, recorded, stats

    progress, prepared, refused, echoed, bad, recording, got, recorded, stats = serve(
        engine, scenario, takes=TakeFolder(str(tmp_path))
    )
    assert [p["done"] for p in progress] == list(range(1, WARM_CHUNKS + 1))
    assert prepared["target"] == "5" and prepared["chunks"] == WARM_CHUNKS
    assert refused["code"] == "bad_controls" and "expression 3" in refused["message"]
    assert echoed["controls"] == {
        "expression": 0.5,
        "head_pose": 0.0,
        "smoothness": 0.25,
        "crop": "auto",
        "paste_into": "none",
        "crop_scale": 1.75,
        "feather": 0.2,
    }  # the live preset's
    assert bad["code"] == "bad_controls" and "smoothness -1" in bad["message"]
    assert recording["file"] == "PersonaLive/live_00001_.mp4"
    assert stats["warm_start"] is True and stats["controls"]["head_pose"] == 0.0
    # the take: every generated frame with a camera frame (28 of the 40 received), nothing more
    real = [i for i, _, _ in got if i != WARMUP_ID]
    assert recorded["file"] == recording["file"] and recorded["frames"] >= len(real) == 28
    with av.open(str(tmp_path / recorded["file"])) as c:
        times = [f.time for f in c.decode(video=0)]
    assert len(times) == recorded["frames"] and times[0] == 0
    # frames are placed at whole milliseconds, frames that arrived within one 1 ms apart (this client sends bursts)
    assert abs(times[-1] - recorded["seconds"]) <= 1e-3 * recorded["frames"]


# -- real cameras: framing and full-frame output over the socket, portraits swapped in ----------------------
def png(image):
    return cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))[1].tobytes()


@pytest.fixture(scope="module")
def swappable(tiny_models, reference_image):
    """A target that can encode new portraits (the core's encoders)."""
    encode = lambda picture: encode_reference(tiny_models, picture)
    return LiveTarget(
        lambda: tiny_models,
        encode(prepare_reference(reference_image, SIZE)),
        lambda z: decode(tiny_models.vae, z),
        encode=encode,
    )


def test_full_frame_output_over_the_socket_and_options_checked(target):
    """start with crop "auto" and paste_into "driving": generated frames come back at the camera's size; the
    options are echoed; a bad combination or an unknown option is refused by name."""
    from test_live import CAMERA_H, CAMERA_W, camera_frame, face_path

    engine = LiveEngine(max_streams=2)
    engine.set_target("5", target)
    frames = [camera_frame(face_path(i, 16), seed=i) for i in range(16)]

    async def scenario(http, base):
        ws = await http.ws_connect(base + "personalive/live")
        await ws.send_json({"type": "start", "target": "5", "controls": {"crop": "center", "paste_into": "driving"}})
        refused = await next_json(ws, "error")
        await ws.send_json({"type": "start", "target": "5", "controls": {"zoom": 2}})
        unknown = await next_json(ws, "error")
        await ws.send_json({"type": "start", "target": "5", "controls": {"crop": "auto", "paste_into": "driving"}})
        started = await next_json(ws, "started")
        got = await stream_frames(ws, frames, 16)
        stats = await next_json(ws, "stats")
        await ws.send_json({"type": "controls", "controls": {"paste_into": "none"}})
        echoed = await next_json(ws, "controls")
        await ws.close()
        return refused, unknown, started, got, stats, echoed

    refused, unknown, started, got, stats, echoed = serve(engine, scenario)
    assert refused["code"] == "bad_controls" and "needs crop 'auto'" in refused["message"]
    assert unknown["code"] == "bad_controls" and "'zoom'" in unknown["message"] and "paste_into" in unknown["message"]
    assert started["controls"]["crop"] == "auto" and started["can_record"] is False
    assert all(image.shape == (CAMERA_H, CAMERA_W, 3) for _, _, image in got)
    assert stats["output_size"] == [CAMERA_W, CAMERA_H] and stats["framing"]["face"] is True
    assert set(stats["latency_parts"]) >= {"wait_ms", "window_ms", "encode_ms", "server_ms", "chunk_ms"}
    assert echoed["controls"]["paste_into"] == "none"


async def next_binary(ws, timeout=60):
    async def wait():
        while True:
            msg = await ws.receive()
            if msg.type == WSMsgType.BINARY:
                return msg.data
            assert msg.type == WSMsgType.TEXT, msg

    return await asyncio.wait_for(wait(), timeout)


def test_a_portrait_swapped_over_the_socket_keeps_the_stream_its_viewers_and_its_take(swappable, tmp_path):
    """{"type": "reference"} + the picture's bytes while streaming and recording, an output page watching:
    reference_set, then the stream restarts its window on the new portrait (warm-up ids, then its own ids
    again), on the same socket; the page keeps getting frames; the take holds frames from before and after."""
    from test_live import face_portrait

    engine = LiveEngine(max_streams=2)
    engine.set_target("5", swappable)

    async def scenario(http, base):
        ws = await http.ws_connect(base + "personalive/live")
        await ws.send_json({"type": "start", "target": "5"})
        started = await next_json(ws, "started")
        viewer = await http.ws_connect(base + "personalive/view/5/ws")
        await ws.send_json({"type": "record", "on": True})
        await next_json(ws, "recording")
        before = await stream_frames(ws, moving_frames(16), 16)
        await ws.send_json({"type": "reference"})
        await ws.send_bytes(png(face_portrait()))
        swapped = await next_json(ws, "reference_set")
        after = await stream_frames(ws, moving_frames(16, seed=4), 16)
        seen = [await next_binary(viewer) for _ in range(4)]  # the page still gets frames after the swap
        async with http.get(base + "personalive/portraits/5") as r:
            listed = await r.json()
        async with http.get(base + "personalive/status") as r:
            status = await r.json()
        await ws.send_json({"type": "record", "on": False})
        recorded = await next_json(ws, "recorded")
        await viewer.close()
        await ws.close()
        return started, before, swapped, after, seen, listed, status, recorded

    started, before, swapped, after, seen, listed, status, recorded = serve(
        engine, scenario, takes=TakeFolder(str(tmp_path))
    )
    assert [i for i, _, _ in before] == [WARMUP_ID] * 12 + [0, 1, 2, 3]
    assert swapped["portrait"] == 1 and swapped["seconds"] >= swapped["encode_seconds"] > 0
    assert [p["id"] for p in swapped["portraits"]] == [0, 1] and swapped["portraits"][1]["current"]
    assert all(p["thumbnail"].startswith("data:image/jpeg;base64,") for p in listed["portraits"])
    assert [i for i, _, _ in after] == [WARMUP_ID] * 12 + [0, 1, 2, 3]  # the same socket, a fresh window
    assert len(seen) == 4 and status["portraits"] == {"5": 1}
    (stream,) = status["streams"]
    assert stream["stream"] == started["stream"] and stream["recording"] is True
    assert recorded["frames"] == 8  # the camera frames from before and after the swap
    with av.open(str(tmp_path / recorded["file"])) as c:
        assert len(list(c.decode(video=0))) == 8


def test_a_bad_portrait_gets_its_error_and_the_stream_goes_on(swappable, target):
    from test_live import camera_frame, face_portrait

    engine = LiveEngine(max_streams=2)
    engine.set_target("5", swappable)
    engine.set_target("plain", target)  # no encoder

    async def scenario(http, base):
        ws = await http.ws_connect(base + "personalive/live")
        await ws.send_json({"type": "start", "target": "5"})
        await next_json(ws, "started")
        errors = []
        for picture in (b"these bytes are not a picture", bytes(MAX_MESSAGE + 10), png(camera_frame())):
            await ws.send_json({"type": "reference"})
            await ws.send_bytes(picture)
            errors.append(await next_json(ws, "error"))
        await ws.send_json({"type": "reference", "portrait": 3})
        errors.append(await next_json(ws, "error"))
        await ws.send_json({"type": "reference", "target": "plain"})
        errors.append(await next_json(ws, "error"))
        await ws.send_bytes(png(face_portrait()))  # sent anyway, as the widget does: taken, not read as a frame
        got = await stream_frames(ws, moving_frames(16), 16)  # the stream, on its first portrait, goes on
        await ws.close()
        return errors, got

    errors, got = serve(engine, scenario)
    assert [e["code"] for e in errors] == ["bad_image", "too_large", "no_face", "no_portrait", "no_encoder"]
    assert "not a picture" in errors[0]["message"] and "no face" in errors[2]["message"]
    assert [i for i, _, _ in got] == [WARMUP_ID] * 12 + [0, 1, 2, 3]


def test_the_protocol_describes_the_live_options_from_the_config():
    from personalive_core.config import Framing, fields_of, preset
    from personalive_core.live.server import protocol

    described = protocol()
    assert "reference" in described["messages"] and described["limits"]["camera"] == [1280, 720]
    assert list(described["framing"]) == ["crop", "paste_into", "crop_scale", "feather"]
    live = preset("live").to_dict()
    for name, info in fields_of(Framing, tuple(described["framing"])).items():
        assert described["framing"][name] == {**info.describe(), "default": live[name]}
    assert described["framing"]["crop"]["default"] == "auto"  # the live preset's, not the render's "center"
