"""Live streaming over a websocket (aiohttp routes for any aiohttp app, ComfyUI's PromptServer included).

Routes (under `prefix`, default /personalive):
  GET  {prefix}/status   JSON: every live stream's readouts (received, dropped, emitted, output fps,
                         latency frame in → frame out) and the targets that can be streamed.
  GET  {prefix}/live     websocket, one live stream per socket:
    client → text   {"type": "start", "target": "<name>"}        → {"type": "started", "stream", "size"}
    client → binary 4-byte big-endian frame id + one JPEG/PNG/WebP camera frame (any size, centre-cropped)
    server → binary 4-byte frame id (0xFFFFFFFF for warm-up frames) + 4-byte big-endian float32
                    server latency in ms (NaN for warm-up) + one JPEG generated frame
    server → text   {"type": "stats", ...} twice a second; {"type": "error", "code", "message"} on bad input
    client → text   {"type": "stop"} (or closing the socket) ends the stream.
Bad input (a frame that is not an image, a wrong size, an oversized message, too many sessions, a
target without a reference) is answered with an error message; the socket and the server keep serving.
"""
import asyncio
import json
import math
import struct

import numpy as np
from aiohttp import WSMsgType, web

from .engine import LiveError

WARMUP_ID = 0xFFFFFFFF
MAX_MESSAGE = 8 * 2 ** 20  # bytes per camera frame; aiohttp itself closes the socket past twice this
OUT_QUEUE = 8  # generated frames waiting for a slow client; older ones are dropped
STATS_EVERY = 0.5  # seconds


def decode_image(payload):
    """Encoded image bytes → uint8 RGB (H, W, 3)."""
    import cv2
    image = cv2.imdecode(np.frombuffer(payload, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise LiveError("bad_frame", f"a frame of {len(payload)} bytes is not a JPEG, PNG or WebP image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def encode_frame(frame_id, latency_ms, image, quality=90):
    import cv2
    ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    header = struct.pack(">If", WARMUP_ID if frame_id is None else frame_id,
                         math.nan if latency_ms is None else latency_ms)
    return header + jpeg.tobytes()


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


class LiveSocket:
    """One websocket connection: at most one live stream."""

    def __init__(self, engine, ws, max_message=MAX_MESSAGE):
        self.engine, self.ws, self.max_message = engine, ws, max_message
        self.outbox = _Outbox(asyncio.get_running_loop())
        self.stream = None

    def _on_frames(self, stream, frames):
        for frame_id, image, latency in frames:
            self.outbox.put_threadsafe(encode_frame(frame_id, latency, image))

    def _on_error(self, stream, error):
        code = getattr(error, "code", "stream_failed")
        self.outbox.put_threadsafe({"type": "error", "code": code, "message": f"live stream stopped: {error}"})
        self.stream = None

    async def on_text(self, text):
        try:
            message = json.loads(text)
        except ValueError:
            raise LiveError("bad_message", "text messages must be JSON, e.g. {\"type\": \"start\", \"target\": \"5\"}")
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == "start":
            if self.stream is not None:
                raise LiveError("already_started", "this socket already streams; send {\"type\": \"stop\"} first")
            self.stream = self.engine.open(message.get("target"), self._on_frames, self._on_error)
            target = self.engine.target(self.stream.target_name)
            await self.ws.send_json({"type": "started", "stream": self.stream.id, "size": target.size})
        elif kind == "stop":
            self.stop()
            await self.ws.send_json({"type": "stopped"})
        else:
            raise LiveError("bad_message", f"unknown message type {kind!r}; use 'start' or 'stop'")

    def on_frame(self, payload):
        if self.stream is None:
            raise LiveError("not_started", "send {\"type\": \"start\", \"target\": ...} before frames")
        if len(payload) > self.max_message:
            raise LiveError("too_large", f"a frame of {len(payload)} bytes exceeds the limit of "
                                         f"{self.max_message}; send JPEG camera frames")
        if len(payload) < 5:
            raise LiveError("bad_frame", "a frame message is a 4-byte frame id followed by an image")
        frame_id = struct.unpack(">I", payload[:4])[0]
        self.engine.submit(self.stream, decode_image(payload[4:]), frame_id)

    def stop(self):
        if self.stream is not None:
            self.engine.close(self.stream)
            self.stream = None

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


async def live_socket(engine, request, max_message=MAX_MESSAGE):
    ws = web.WebSocketResponse(max_msg_size=2 * max_message, heartbeat=30)
    await ws.prepare(request)
    conn = LiveSocket(engine, ws, max_message)
    pump = asyncio.create_task(conn.pump())
    try:
        async for msg in ws:
            try:
                if msg.type == WSMsgType.TEXT:
                    await conn.on_text(msg.data)
                elif msg.type == WSMsgType.BINARY:
                    conn.on_frame(msg.data)
            except LiveError as e:
                await _send_error(ws, e.code, str(e))
    except ConnectionResetError:
        pass
    finally:
        conn.stop()
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


def add_live_routes(routes, engine, prefix="/personalive", max_message=MAX_MESSAGE):
    """Register the status endpoint and the live websocket on an aiohttp RouteTableDef (or app.router)."""
    async def status(request):
        return web.json_response(engine.stats())

    async def live(request):
        return await live_socket(engine, request, max_message)

    if isinstance(routes, web.RouteTableDef):
        routes.get(f"{prefix}/status")(status)
        routes.get(f"{prefix}/live")(live)
    else:
        routes.add_get(f"{prefix}/status", status)
        routes.add_get(f"{prefix}/live", live)
