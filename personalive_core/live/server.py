"""Live streaming over a websocket (aiohttp routes for any aiohttp app, ComfyUI's PromptServer included).

Routes (under `prefix`, default /personalive):
  GET  {prefix}/protocol JSON: the message types, every option key with its type, default, bounds and help
                         (generated from the config: "controls" = config.MotionControls, "framing" = the live
                         framing fields of config.Framing) and the limits
  GET  {prefix}/status   JSON: every live stream's readouts (received, dropped, emitted, output fps, latency
                         frame in → frame out and its parts, chunk and encode times, controls, framing, output
                         size, recording), the targets that can be streamed, which are prepared, the portrait
                         each animates, the viewers per target.
  GET  {prefix}/portraits/<name>  JSON: the target's portraits: {"target", "portraits": [{"id", "current",
                         "thumbnail": data URL}]}, its own (id 0) first, then the last few swapped in
  GET  {prefix}/live     websocket, one live stream per socket:
    client → text   {"type": "start", "target": "<name>", "controls": {...} (optional)}
                    → {"type": "started", "stream", "size", "can_record", "controls": {every live option}}
    client → binary 4-byte big-endian frame id + one JPEG/PNG/WebP camera frame: the whole camera picture (any
                    size from 64 to 4096 a side; the widget sends up to 1280×720), framed on the server
    server → binary 4-byte frame id (0xFFFFFFFF for warm-up frames) + 4-byte big-endian float32
                    server latency in ms (camera frame in → out of the model; NaN for warm-up) + one JPEG
                    generated frame (the square, or the camera frame / reference picture it was pasted into)
    server → text   {"type": "stats", ...} twice a second (the stream's /status entry); {"type": "error", "code",
                    "message"} on bad input
    client → text   {"type": "controls", "controls": {any live option}} → {"type": "controls", "controls": {every
                    live option}}: from the next chunk on. Live options: expression, head_pose, smoothness
                    (motion_controls.py), crop ("auto" follows the face, "center"; a change restarts the
                    window), paste_into ("none": the square, "driving": pasted into the camera frame,
                    "reference": into the reference picture), crop_scale, feather.
    client → text   {"type": "record", "on": true|false} → {"type": "recording", "file"} when a take starts,
                    {"type": "recorded", "file", "frames", "seconds"} when it is written (also on stop/close)
    client → text   {"type": "prepare", "target": "<name>"} (no stream needed) → {"type": "progress", "done",
                    "total"} per warm-up chunk, then {"type": "prepared", "target", "seconds", "chunk_ms"}
    client → text   {"type": "reference", "target": "<name>" (default: the stream's)}, then ONE binary message
                    holding only the picture's bytes (no frame id) → {"type": "reference_set", "target",
                    "portrait", "seconds", "portraits": [...]} once it is encoded (the streams switch at their
                    next chunk), or an error: bad_image (not a picture), too_large, no_face, no_encoder
    client → text   {"type": "reference", "target": "<name>", "portrait": <id>} (no binary) → the same, for one of
                    the target's kept portraits (0: its own)
    client → text   {"type": "stop"} (or closing the socket) ends the stream.
  GET  {prefix}/view/<name>      the output page: only the generated frames of target <name>, full size
  GET  {prefix}/view/<name>/ws   websocket of that page: one binary JPEG per generated frame, newest only
Bad input (a frame that is not an image, a wrong size, an oversized message, too many sessions, a
target without a reference, options out of range, a portrait without a face) is answered with an
error message; the socket and the server keep serving.
"""

import asyncio
import base64
import json
import math
import struct
import time

import numpy as np
from aiohttp import WSMsgType, web

from ..config import Framing, MotionControls, fields_of, preset
from ..errors import InputError
from ..pipelines import CAMERA_MAX, CHUNKS, LIVE_FRAMING, FrameError, frame_portrait, read_portrait
from .engine import PORTRAITS, LiveError
from .recorder import TakeRecorder
from .viewers import LatestFrame, Viewers, page

WARMUP_ID = 0xFFFFFFFF
MAX_MESSAGE = 8 * 2**20  # bytes per camera frame or portrait; aiohttp itself closes the socket past twice this
OUT_QUEUE = 8  # generated frames waiting for a slow client; older ones are dropped
STATS_EVERY = 0.5  # seconds

MESSAGES = ("start", "stop", "controls", "record", "prepare", "reference")


def protocol(max_message=MAX_MESSAGE):
    """The protocol's option keys and their bounds, generated from the config (`GET {prefix}/protocol`), with
    the live preset's defaults: the widget builds its controls from it, so the server and the page never
    disagree on a range (a stream starts from its target's own options; `started` says which)."""
    live = preset("live").to_dict()

    def describe(infos):
        return {name: {**info.describe(), "default": live[name]} for name, info in infos.items()}

    return {
        "messages": list(MESSAGES),
        "controls": describe(fields_of(MotionControls)),
        "framing": describe(fields_of(Framing, LIVE_FRAMING)),
        "limits": {
            "max_message": max_message,
            "camera": list(CAMERA_MAX),
            "portraits": PORTRAITS,
            "window_chunks": CHUNKS,
        },
    }


def decode_image(payload):
    """Encoded image bytes → uint8 RGB (H, W, 3)."""
    import cv2

    image = cv2.imdecode(np.frombuffer(payload, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise LiveError("bad_frame", f"a frame of {len(payload)} bytes is not a JPEG, PNG or WebP image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def encode_jpeg(image, quality=90):
    import cv2

    ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    return jpeg.tobytes()


def encode_frame(frame_id, latency_ms, jpeg):
    header = struct.pack(
        ">If", WARMUP_ID if frame_id is None else frame_id, math.nan if latency_ms is None else latency_ms
    )
    return header + jpeg


def error_code(error, default):
    """The code a client gets for `error`: a LiveError's own, else `default`."""
    return error.code if isinstance(error, LiveError) else default


def portrait_list(engine, name):
    """The target's portraits for a client: thumbnails as JPEG data URLs."""
    return [
        {
            "id": p["id"],
            "current": p["current"],
            "thumbnail": "data:image/jpeg;base64," + base64.b64encode(encode_jpeg(p["thumbnail"], 85)).decode(),
        }
        for p in engine.portrait_list(name)
    ]


class _Outbox:
    """Messages from the worker thread to one socket: bounded, newest frames win."""

    def __init__(self, loop):
        self.loop = loop
        self.items = asyncio.Queue()
        self.frames = 0

    def put_threadsafe(self, item):
        self.loop.call_soon_threadsafe(self._put, item)

    def _put(self, item):
        if isinstance(item, bytes):
            if self.frames >= OUT_QUEUE:
                return  # the client is slower than the model: drop rather than queue
            self.frames += 1
        self.items.put_nowait(item)


async def _send_error(ws, code, message):
    if not ws.closed:
        await ws.send_json({"type": "error", "code": code, "message": message})


def parse_options(values, controls, framing):
    """A message's "controls" object → (MotionControls, Framing): the given values over `controls` and
    `framing` (LiveError naming a bad value or an unknown key)."""
    if not isinstance(values, dict):
        raise LiveError(
            "bad_controls", 'controls must be an object such as {"expression": 1, "head_pose": 1, "crop": "auto"}'
        )
    known = (*fields_of(MotionControls), *LIVE_FRAMING)
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise LiveError(
            "bad_controls", f"unknown live option(s) {', '.join(map(repr, unknown))}; use {', '.join(known)}"
        )
    try:
        motion = MotionControls.from_dict(
            {**controls.to_dict(), **{k: v for k, v in values.items() if k in fields_of(MotionControls)}}
        )
        framed = framing.replace(**{k: v for k, v in values.items() if k in LIVE_FRAMING})
    except InputError as e:
        raise LiveError("bad_controls", str(e)) from None
    return motion, framed


class LiveSocket:
    """One websocket connection: at most one live stream."""

    def __init__(self, engine, ws, max_message=MAX_MESSAGE, viewers=None, takes=None):
        self.engine, self.ws, self.max_message = engine, ws, max_message
        self.viewers, self.takes = viewers or Viewers(), takes
        self.outbox = _Outbox(asyncio.get_running_loop())
        self.stream = None
        self.take = None  # path of the take being recorded, relative to the takes folder
        self.portrait_for = None  # (target, accepted) whose portrait the next binary message is

    def _on_frames(self, stream, frames):
        for frame_id, image, latency in frames:
            jpeg = encode_jpeg(image)
            self.viewers.publish(stream.target_name, stream.id, jpeg)
            self.outbox.put_threadsafe(encode_frame(frame_id, latency, jpeg))

    def _on_error(self, stream, error):
        code = error_code(error, "stream_failed")
        self.outbox.put_threadsafe({"type": "error", "code": code, "message": f"live stream stopped: {error}"})
        self.viewers.unfeed(stream.target_name, stream.id)
        reply = self._finish_take(stream)
        if reply is not None:
            self.outbox.put_threadsafe(reply)
        self.stream = None

    def _finish_take(self, stream):
        """Close the stream's take, if any: the message for the client (None without a take)."""
        recorder, file = stream.stop_recording(), self.take
        self.take = None
        if recorder is None:
            return None
        try:
            result = recorder.close()
        except RuntimeError as e:
            return {"type": "error", "code": "recording_failed", "message": str(e)}
        return {
            "type": "recorded",
            "file": file if result["path"] else None,
            "frames": result["frames"],
            "seconds": result["seconds"],
        }

    async def _record(self, on):
        if self.stream is None:
            raise LiveError("not_started", "start the stream before recording")
        if not on:
            stream = self.stream
            reply = await asyncio.get_running_loop().run_in_executor(None, self._finish_take, stream)
            await self.ws.send_json(reply or {"type": "recorded", "file": None, "frames": 0, "seconds": 0.0})
            return
        if self.takes is None:
            raise LiveError(
                "no_recording",
                "this server has no folder for recorded takes (the standalone server records with --takes DIR)",
            )
        try:
            path, file = self.takes.next()
        except OSError as e:
            raise LiveError("no_recording", f"cannot create a take file: {e}") from None
        self.stream.start_recording(TakeRecorder(path))  # its size: the first frame's
        self.take = file
        await self.ws.send_json({"type": "recording", "file": file})

    def _prepare(self, target):
        def progress(done, total):
            self.outbox.put_threadsafe({"type": "progress", "target": target, "done": done, "total": total})

        def done(report, error):
            if error is not None:
                self.outbox.put_threadsafe(
                    {
                        "type": "error",
                        "code": error_code(error, "prepare_failed"),
                        "message": f"prepare failed: {error}",
                    }
                )
            else:
                self.outbox.put_threadsafe({"type": "prepared", "target": target, **report})

        self.engine.prepare(target, progress, done)

    # -- portraits ------------------------------------------------------------------------------------
    def _reference(self, message):
        """{"type": "reference"}: a portrait id to pick now, or the next binary message is the picture (taken
        off the stream's frames even when it is refused now: the client sends it anyway)."""
        name = str(message.get("target", self.stream.target_name if self.stream else None))
        if "portrait" in message:
            self.engine.pick(name, message["portrait"], self._portrait_done(name, time.monotonic()))
            return
        self.portrait_for = (name, False)
        self.engine.check_swappable(name)
        self.portrait_for = (name, True)

    def _portrait_done(self, name, t0):
        def done(report, error):
            if error is not None:
                self.outbox.put_threadsafe(
                    {
                        "type": "error",
                        "code": error_code(error, "reference_failed"),
                        "message": f"portrait not set: {error}",
                    }
                )
                return
            self.outbox.put_threadsafe(
                {
                    "type": "reference_set",
                    "target": name,
                    "portrait": report["portrait"],
                    "seconds": round(time.monotonic() - t0, 3),
                    "encode_seconds": report["encode_s"],
                    "portraits": portrait_list(self.engine, name),
                }
            )

        return done

    async def _swap(self, name, payload):
        """The picture of a {"type": "reference"}: read and face-cropped off the event loop, then encoded on
        the engine's worker (the streams go on meanwhile)."""
        t0 = time.monotonic()
        if len(payload) > self.max_message:
            raise LiveError(
                "too_large",
                f"a portrait of {len(payload)} bytes exceeds the limit of "
                f"{self.max_message}; send a JPEG of at most {self.max_message // 2**20} MiB",
            )
        target = self.engine.target(name)
        config = target.config.replace(size=target.size)

        def frame():
            return frame_portrait(read_portrait(payload), config)

        try:
            picture, portrait = await asyncio.get_running_loop().run_in_executor(None, frame)
        except FrameError as e:
            raise LiveError(e.code, str(e)) from None
        self.engine.swap(name, picture, portrait, self._portrait_done(name, t0))

    # -- messages ---------------------------------------------------------------------------------------
    async def on_text(self, text):
        try:
            message = json.loads(text)
        except ValueError:
            raise LiveError(
                "bad_message", 'text messages must be JSON, e.g. {"type": "start", "target": "5"}'
            ) from None
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == "start":
            await self._start(message)
        elif kind == "controls":
            if self.stream is None:
                raise LiveError("not_started", "start the stream before changing its controls")
            self.stream.set_controls(*parse_options(message.get("controls"), self.stream.controls, self.stream.framing))
            await self.ws.send_json({"type": "controls", "controls": self.stream.options()})
        elif kind == "record":
            await self._record(bool(message.get("on")))
        elif kind == "prepare":
            self._prepare(str(message.get("target")))
        elif kind == "reference":
            self._reference(message)
        elif kind == "stop":
            await self.stop()
            await self.ws.send_json({"type": "stopped"})
        else:
            raise LiveError("bad_message", f"unknown message type {kind!r}; use {', '.join(map(repr, MESSAGES))}")

    async def _start(self, message):
        if self.stream is not None:
            raise LiveError("already_started", 'this socket already streams; send {"type": "stop"} first')
        controls = framing = None
        if "controls" in message:
            target = self.engine.target(message.get("target"))
            config = target.config if target else None
            controls, framing = parse_options(
                message["controls"],
                config.controls if config else MotionControls(),
                config.framing if config else Framing(),
            )
        self.stream = self.engine.open(message.get("target"), self._on_frames, self._on_error, controls, framing)
        self.viewers.feed(self.stream.target_name, self.stream.id)
        target = self.engine.target(self.stream.target_name)
        await self.ws.send_json(
            {
                "type": "started",
                "stream": self.stream.id,
                "size": target.size,
                "can_record": self.takes is not None,
                "controls": self.stream.options(),
            }
        )

    async def on_binary(self, payload):
        """A camera frame, or the picture announced by {"type": "reference"}."""
        if self.portrait_for is not None:
            (name, accepted), self.portrait_for = self.portrait_for, None
            if accepted:
                await self._swap(name, payload)
            return
        if self.stream is None:
            raise LiveError("not_started", 'send {"type": "start", "target": ...} before frames')
        if len(payload) > self.max_message:
            raise LiveError(
                "too_large",
                f"a frame of {len(payload)} bytes exceeds the limit of {self.max_message}; send JPEG camera frames",
            )
        if len(payload) < 5:
            raise LiveError("bad_frame", "a frame message is a 4-byte frame id followed by an image")
        frame_id = struct.unpack(">I", payload[:4])[0]
        self.engine.submit(self.stream, decode_image(payload[4:]), frame_id)

    async def stop(self):
        """End the stream at once; then its take, if any, is finished (off the event loop) and announced."""
        stream, self.stream = self.stream, None
        if stream is None:
            return
        self.engine.close(stream)
        self.viewers.unfeed(stream.target_name, stream.id)
        if stream.recorder is not None:
            reply = await asyncio.get_running_loop().run_in_executor(None, self._finish_take, stream)
            if reply is not None and not self.ws.closed:
                await self.ws.send_json(reply)

    async def pump(self):
        """Send generated frames, errors and periodic readouts until the socket closes."""
        loop = asyncio.get_running_loop()
        next_stats = loop.time() + STATS_EVERY
        while not self.ws.closed:
            try:
                item = await asyncio.wait_for(self.outbox.items.get(), max(0.0, next_stats - loop.time()))
            except asyncio.TimeoutError:
                item = None
            if isinstance(item, bytes):
                self.outbox.frames -= 1
                await self.ws.send_bytes(item)
            elif isinstance(item, dict):
                await self.ws.send_json(item)
            if loop.time() >= next_stats:
                next_stats = loop.time() + STATS_EVERY
                if self.stream is not None:
                    await self.ws.send_json({"type": "stats", **self.stream.stats()})


async def live_socket(engine, request, max_message=MAX_MESSAGE, viewers=None, takes=None):
    ws = web.WebSocketResponse(max_msg_size=2 * max_message, heartbeat=30)
    await ws.prepare(request)
    conn = LiveSocket(engine, ws, max_message, viewers, takes)
    pump = asyncio.create_task(conn.pump())
    try:
        async for msg in ws:
            try:
                if msg.type == WSMsgType.TEXT:
                    await conn.on_text(msg.data)
                elif msg.type == WSMsgType.BINARY:
                    await conn.on_binary(msg.data)
            except LiveError as e:
                await _send_error(ws, e.code, str(e))
    except ConnectionResetError:
        pass
    finally:
        await conn.stop()
        pump.cancel()
        # a client gone without a close handshake (or a host cancelling the handler on disconnect)
        # leaves the socket open: its heartbeat timer would hold it, and any half-received
        # message, until the next ping fails
        await _close_quietly(ws, pump)
    return ws


async def _close_quietly(ws, pump):
    try:
        await ws.close()
    except Exception:
        pass
    await asyncio.gather(pump, return_exceptions=True)


async def view_socket(viewers, request):
    """One output page: the newest generated frame of its target whenever the page can take one."""
    ws = web.WebSocketResponse(heartbeat=30)
    await ws.prepare(request)
    target = request.match_info["target"]
    slot = LatestFrame(asyncio.get_running_loop())
    viewers.watch(target, slot)
    closed = asyncio.create_task(_until_closed(ws))
    frame = None
    try:
        while not ws.closed:
            frame = asyncio.create_task(slot.get())
            await asyncio.wait({frame, closed}, return_when=asyncio.FIRST_COMPLETED)
            if not frame.done():
                break
            await ws.send_bytes(frame.result())
    except ConnectionResetError:
        pass
    finally:
        viewers.unwatch(target, slot)
        for task in (frame, closed):
            if task is not None:
                task.cancel()
        await _close_quietly(ws, closed)
    return ws


async def _until_closed(ws):
    async for _ in ws:  # a page sends nothing; this notices the close
        pass


def add_live_routes(routes, engine, prefix="/personalive", max_message=MAX_MESSAGE, takes=None):
    """Register the status endpoint, the live websocket and the output pages on an aiohttp
    RouteTableDef (or app.router). `takes`: a recorder.TakeFolder for recorded takes (None: no
    recording). Returns the Viewers hub."""
    viewers = Viewers()

    async def status(request):
        return web.json_response({**engine.stats(), "viewers": viewers.counts()})

    async def describe(request):
        return web.json_response(protocol(max_message))

    async def portraits(request):
        name = request.match_info["target"]
        return web.json_response({"target": name, "portraits": portrait_list(engine, name)})

    async def live(request):
        return await live_socket(engine, request, max_message, viewers, takes)

    async def view(request):
        target = engine.target(request.match_info["target"])
        return web.Response(
            text=page(request.match_info["target"], target.size if target else 512),
            content_type="text/html",
            headers={"Cache-Control": "no-store"},
        )

    async def view_ws(request):
        return await view_socket(viewers, request)

    handlers = [
        (f"{prefix}/status", status),
        (f"{prefix}/protocol", describe),
        (f"{prefix}/portraits/{{target}}", portraits),
        (f"{prefix}/live", live),
        (f"{prefix}/view/{{target}}", view),
        (f"{prefix}/view/{{target}}/ws", view_ws),
    ]
    for path, handler in handlers:
        if isinstance(routes, web.RouteTableDef):
            routes.get(path)(handler)
        else:
            routes.add_get(path, handler)
    return viewers
