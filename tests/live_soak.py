"""Live soak: many misbehaving websocket clients against one live server, on loopback only.

Clients (more than the session limit) loop until the time is up, each round picking one behaviour:
stream valid camera frames (one chunk in flight, as a paced camera), send garbage (random bytes,
non-JSON text, unknown message types, a 10×10 image, a frame over the size limit), send a message
over twice the limit (aiohttp closes that socket, 1009), disconnect abruptly mid-chunk (TCP reset
after 2 of 4 frames), disconnect in the middle of a websocket message, send bytes that are not
websocket framing at all, flood frames without reading anything back, or connect and stay silent.
Every round ends with a disconnect, so every client also reconnects many times.

What must hold (collected in `Soak.problems`, checked by tests/test_live_soak.py):
- an admitted session keeps getting its frames (4 per chunk sent) whatever the others do;
- a start past the limit gets {"type": "error", "code": "too_many_sessions"}; bad input gets its code;
- after everyone left: no session in the engine, every LiveStream and StreamingSession freed
  (weak references), no asyncio task and no thread beyond the engine's one worker;
- memory stays flat: Python allocations (tracemalloc) and the process RSS measured, quiet, after the
  first third of the run and again at the end.

As a script, for a longer run (the README's figures):
    python tests/live_soak.py --seconds 180 --clients 16 --max-sessions 3
"""

import asyncio
import base64
import gc
import json
import os
import random
import struct
import sys
import threading
import time
import tracemalloc
import weakref
from collections import Counter

import cv2
import numpy as np
from aiohttp import ClientSession, WSMsgType, web

from personalive_core.live.engine import LiveEngine
from personalive_core.live.server import WARMUP_ID, add_live_routes
from personalive_core.streaming import session as session_mod

MAX_MESSAGE = 64 * 1024
CAMERA = (240, 320)  # camera frame (h, w) the clients send
FRAME_TIMEOUT = 120  # s an admitted session may wait for one chunk's frames before it counts as starved
STATUS_WAIT_S = 10  # s a finished chunk may take to show in the status route
BEHAVIOURS = {
    "stream": 5,
    "garbage": 2,
    "oversized": 1,
    "abort_mid_chunk": 2,
    "abort_mid_message": 1,
    "not_websocket": 1,
    "flood_no_read": 1,
    "silent": 1,
    "viewer": 1,
}


def rss_mib():
    """Resident memory of this process (Linux /proc)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def camera_messages(n=8, seed=0):
    """`n` encoded camera frames (JPEG, CAMERA size) of a moving blob; a frame id is prefixed per send."""
    rng = np.random.default_rng(seed)
    h, w = CAMERA
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    out = []
    for i in range(n):
        blob = np.exp(-((xx - 0.5 - 0.2 * np.sin(i)) ** 2 + (yy - 0.4) ** 2) / 0.02)
        img = np.stack([blob, xx, yy], -1) * 200 + rng.integers(0, 30, (h, w, 3))
        out.append(cv2.imencode(".jpg", np.clip(img, 0, 255).astype(np.uint8))[1].tobytes())
    return out


class Soak:
    def __init__(self, engine, port, target="soak", seed=0, chunks=(2, 6)):
        self.engine, self.port, self.target, self.chunks = engine, port, target, chunks
        self.base = f"http://127.0.0.1:{port}/"
        self.rng = random.Random(seed)
        self.frames = camera_messages()
        self.tiny_png = cv2.imencode(".png", np.zeros((10, 10, 3), np.uint8))[1].tobytes()
        self.count = Counter()  # rounds per behaviour, messages, frames, errors per code, refusals
        self.problems = []
        self.streams = weakref.WeakSet()  # every LiveStream and StreamingSession the engine makes
        self.sessions = weakref.WeakSet()

    # -- bookkeeping ------------------------------------------------------------------------------
    def watch(self):
        """Record every LiveStream / StreamingSession made from now on (weakly: for the leak check)."""
        soak, open_, init = self, LiveEngine.open, session_mod.StreamingSession.__init__

        def watched_open(engine, *args, **kwargs):
            stream = open_(engine, *args, **kwargs)
            soak.streams.add(stream)
            return stream

        def watched_init(session, *args, **kwargs):
            init(session, *args, **kwargs)
            soak.sessions.add(session)

        LiveEngine.open = watched_open
        session_mod.StreamingSession.__init__ = watched_init
        return lambda: (setattr(LiveEngine, "open", open_), setattr(session_mod.StreamingSession, "__init__", init))

    def problem(self, client, text):
        self.problems.append(f"client {client}: {text}")

    # -- one websocket round ----------------------------------------------------------------------
    async def _json(self, ws, kind, timeout=30):
        """Next text message of type `kind`, skipping frames and stats; None if the socket closes."""

        async def wait():
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    data = json.loads(msg.data)
                    if data["type"] == kind:
                        return data
                    if data["type"] == "error" and kind != "error":
                        return data

        return await asyncio.wait_for(wait(), timeout)

    async def _start(self, ws, client):
        """Start a stream → True when admitted; a refusal must be the documented error."""
        await ws.send_json({"type": "start", "target": self.target})
        self.count["messages"] += 1
        reply = await self._json(ws, "started")
        if reply is not None and reply["type"] == "started":
            self.count["admitted"] += 1
            return True
        if reply is None or reply.get("code") != "too_many_sessions" or "limit is" not in reply.get("message", ""):
            self.problem(client, f"start answered {reply!r}")
        else:
            self.count["refused"] += 1
        return False

    async def _send_frame(self, ws, frame_id):
        await ws.send_bytes(struct.pack(">I", frame_id) + self.frames[frame_id % len(self.frames)])
        self.count["messages"] += 1

    async def _frames(self, ws, want, client):
        """Receive `want` generated frames (ids checked: warm-up, then increasing)."""
        got = []

        async def run():
            async for msg in ws:
                if msg.type == WSMsgType.BINARY:
                    got.append(struct.unpack(">I", msg.data[:4])[0])
                    if len(got) == want:
                        return
                elif msg.type == WSMsgType.TEXT and json.loads(msg.data)["type"] == "error":
                    self.problem(client, f"error while streaming: {msg.data}")
                    return

        try:
            await asyncio.wait_for(run(), FRAME_TIMEOUT)
        except asyncio.TimeoutError:
            self.problem(client, f"admitted session starved: {len(got)} of {want} frames in {FRAME_TIMEOUT} s")
        self.count["frames_received"] += len(got)
        return got

    async def stream(self, http, client):
        async with http.ws_connect(self.base + "personalive/live") as ws:
            if not await self._start(ws, client):
                return
            sent, ids = 0, []
            for _ in range(self.rng.randint(*self.chunks)):  # one chunk in flight: nothing is dropped
                for _ in range(4):
                    await self._send_frame(ws, sent)
                    sent += 1
                ids += await self._frames(ws, 4, client)
            real = [i for i in ids if i != WARMUP_ID]
            if ids[: min(12, len(ids))] != [WARMUP_ID] * min(12, len(ids)) or real != list(range(len(real))):
                self.problem(client, f"frame ids out of order: {ids}")
            if self.rng.random() < 0.5:
                await ws.send_json({"type": "stop"})
                await self._json(ws, "stopped")

    async def garbage(self, http, client):
        async with http.ws_connect(self.base + "personalive/live") as ws:
            started = self.rng.random() < 0.5 and await self._start(ws, client)
            cases = [
                (
                    ws.send_bytes,
                    struct.pack(">I", 1) + os.urandom(self.rng.randint(1, 3000)),
                    "bad_frame" if started else "not_started",
                ),
                (ws.send_str, "not json {", "bad_message"),
                (ws.send_json, {"type": "dance"}, "bad_message"),
                (ws.send_bytes, b"\x00\x01", "bad_frame" if started else "not_started"),
                (ws.send_bytes, struct.pack(">I", 2) + self.tiny_png, "bad_size" if started else "not_started"),
                (ws.send_bytes, bytes(MAX_MESSAGE + 10), "too_large" if started else "not_started"),
                (ws.send_json, {"type": "controls", "controls": "loud"}, "bad_controls" if started else "not_started"),
                (
                    ws.send_json,
                    {"type": "controls", "controls": {"expression": 1e9}},
                    "bad_controls" if started else "not_started",
                ),
                (ws.send_json, {"type": "record", "on": True}, "no_recording" if started else "not_started"),
            ]
            for send, payload, code in self.rng.sample(cases, len(cases)):
                await send(payload)
                self.count["messages"] += 1
                reply = await self._json(ws, "error")
                if reply is None or reply.get("code") != code:
                    self.problem(client, f"garbage {payload[:20]!r} answered {reply!r}, expected {code}")
                else:
                    self.count[f"error_{code}"] += 1
            if started:  # the session still streams after all that
                for i in range(4):
                    await self._send_frame(ws, i)
                await self._frames(ws, 4, client)

    async def oversized(self, http, client):
        async with http.ws_connect(self.base + "personalive/live") as ws:
            await ws.send_bytes(bytes(2 * MAX_MESSAGE + 10))
            self.count["messages"] += 1
            msg = await asyncio.wait_for(ws.receive(), 30)
            if msg.type not in (WSMsgType.CLOSE, WSMsgType.CLOSED) or msg.data != 1009:
                self.problem(client, f"a message over twice the limit answered {msg}")
            else:
                self.count["closed_1009"] += 1

    async def abort_mid_chunk(self, http, client):
        ws = await http.ws_connect(self.base + "personalive/live")
        if await self._start(ws, client):
            for i in range(self.rng.choice([1, 2, 3, 6])):
                await self._send_frame(ws, i)
            await asyncio.sleep(self.rng.random() * 0.3)
        _abort(ws)
        self.count["aborted"] += 1

    async def flood_no_read(self, http, client):
        """Frames as fast as possible, nothing read back, then a reset: server-side queues must stay bounded."""
        ws = await http.ws_connect(self.base + "personalive/live")
        await ws.send_json({"type": "start", "target": self.target})
        self.count["messages"] += 1
        for i in range(self.rng.randint(8, 40)):
            await self._send_frame(ws, i)
        await asyncio.sleep(self.rng.random())
        _abort(ws)
        self.count["aborted"] += 1

    async def silent(self, http, client):
        async with http.ws_connect(self.base + "personalive/live") as ws:
            if self.rng.random() < 0.5:
                await self._start(ws, client)
            await asyncio.sleep(self.rng.random() * 2)

    async def viewer(self, http, client):
        """An output page: takes what frames come for a while, then leaves (closing or reset)."""
        ws = await http.ws_connect(self.base + f"personalive/view/{self.target}/ws")
        end = time.monotonic() + self.rng.random() * 2
        while (left := end - time.monotonic()) > 0:
            try:
                msg = await ws.receive(timeout=left)
            except asyncio.TimeoutError:
                break
            if msg.type != WSMsgType.BINARY:
                break
            self.count["frames_viewed"] += 1
        if self.rng.random() < 0.5:
            _abort(ws)
            self.count["aborted"] += 1
        else:
            await ws.close()

    async def abort_mid_message(self, http, client):
        """A frame message just under the hard limit, cut off after three quarters: whatever the
        server buffered for it must go with the connection."""
        reader, writer = await _raw_connect(self.port)
        writer.write(_ws_frame(0x1, json.dumps({"type": "start", "target": self.target}).encode()))
        payload = struct.pack(">I", 0) + os.urandom(2 * MAX_MESSAGE - 100)
        writer.write(_ws_frame(0x2, payload)[: 3 * len(payload) // 4])
        await writer.drain()
        self.count["messages"] += 2
        await asyncio.sleep(self.rng.random() * 0.3)
        writer.transport.abort()
        self.count["aborted"] += 1

    async def not_websocket(self, http, client):
        reader, writer = await _raw_connect(self.port)
        writer.write(b"\xff" * 8 + os.urandom(200))  # reserved bits and opcodes: a protocol error
        await writer.drain()
        self.count["messages"] += 1
        try:
            rest = await asyncio.wait_for(reader.read(), 30)  # the server closes (1002) and hangs up
        except (ConnectionError, asyncio.TimeoutError) as e:
            rest = e
        if isinstance(rest, asyncio.TimeoutError):
            self.problem(client, "the server kept a connection that sent no websocket framing")
        else:
            self.count["closed_protocol"] += 1
        writer.close()

    # -- the run ----------------------------------------------------------------------------------
    async def client(self, http, client, deadline):
        names, weights = zip(*BEHAVIOURS.items())
        while time.monotonic() < deadline:
            name = self.rng.choices(names, weights)[0]
            self.count[f"round_{name}"] += 1
            try:
                await getattr(self, name)(http, client)
            except (ConnectionError, asyncio.TimeoutError) as e:
                self.problem(client, f"{name}: {type(e).__name__} {e}")
            self.count["connections"] += 1

    async def run(self, clients, seconds):
        deadline = time.monotonic() + seconds
        async with ClientSession() as http:
            await asyncio.gather(*(self.client(http, i, deadline) for i in range(clients)))

    async def clean_stream(self, name):
        """One well-behaved client on an idle server: warm-up frames, then its own ids in order, and the
        status route lists it. Run before the storm (every code path once: lazy imports are not growth)
        and after it (the server still serves)."""
        async with ClientSession() as http, http.ws_connect(self.base + "personalive/live") as ws:
            if not await self._start(ws, name):
                return
            ids = []
            for i in range(16):
                await self._send_frame(ws, i)
                if i % 4 == 3:
                    ids += await self._frames(ws, 4, name)
            if ids != [WARMUP_ID] * 12 + [0, 1, 2, 3]:
                self.problem(name, f"ids {ids}")
            # a chunk's latency is noted once its frames are sent (sending is its encode part), so the
            # client may see the frames first: poll briefly rather than race that bookkeeping
            end = time.monotonic() + STATUS_WAIT_S
            while True:
                async with http.get(self.base + "personalive/status") as r:
                    streams = (await r.json())["streams"]
                listed = len(streams) == 1 and streams[0]["latency_ms_p50"] is not None
                if listed or time.monotonic() > end:
                    break
                await asyncio.sleep(0.05)
            if not listed:
                self.problem(name, f"status {streams}")


def _abort(ws):
    """Drop a client websocket's TCP connection without a close handshake (a crashed tab, lost Wi-Fi)."""
    ws._conn.transport.abort()


async def _raw_connect(port):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        f"GET /personalive/live HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = await reader.readuntil(b"\r\n\r\n")
    if b" 101 " not in head.split(b"\r\n")[0]:
        raise ConnectionError(f"handshake refused: {head[:60]!r}")
    return reader, writer


def _ws_frame(opcode, payload):
    """One masked client frame (RFC 6455)."""
    n, mask = len(payload), os.urandom(4)
    head = bytes([0x80 | opcode])
    head += (
        bytes([0x80 | n])
        if n < 126
        else (bytes([0x80 | 126]) + struct.pack(">H", n) if n < 65536 else bytes([0x80 | 127]) + struct.pack(">Q", n))
    )
    body = np.frombuffer(payload, np.uint8) ^ np.resize(np.frombuffer(mask, np.uint8), n)
    return head + mask + body.tobytes()


def quiet_measure():
    """Memory once nothing is in flight: (RSS MiB, traced Python MiB)."""
    gc.collect()
    return rss_mib(), tracemalloc.get_traced_memory()[0] / 2**20


async def wait_until(value, done=bool, timeout=60):
    """Poll `value()` until `done(value)` (the server notices closed sockets asynchronously); the last value."""
    end = time.monotonic() + timeout
    while not done(v := value()) and time.monotonic() < end:
        await asyncio.sleep(0.1)
    return v


def sockets_alive():
    """Server-side websocket objects still in memory."""
    gc.collect()
    return sum(isinstance(o, web.WebSocketResponse) for o in gc.get_objects())


def run_soak(
    make_target, clients=12, max_sessions=3, seconds=20.0, seed=0, chunks=(2, 6), handler_cancellation=False, log=None
):
    """The whole soak → report dict (figures, `problems`). `make_target()` → the LiveTarget to animate.
    handler_cancellation: whether the server cancels a handler when its client disconnects (aiohttp's
    test server does; AppRunner's default, which ComfyUI uses, does not)."""
    log = log or (lambda msg: None)
    baseline_threads = set(threading.enumerate())
    tracemalloc.start()
    engine = LiveEngine(max_streams=max_sessions)
    engine.set_target("soak", make_target())
    report = {
        "clients": clients,
        "max_sessions": max_sessions,
        "seconds": seconds,
        "handler_cancellation": handler_cancellation,
    }

    async def main():
        app = web.Application()
        viewers = add_live_routes(app.router, engine, max_message=MAX_MESSAGE)
        runner = web.AppRunner(app, handler_cancellation=handler_cancellation)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)  # loopback only
        await site.start()
        soak = Soak(engine, runner.addresses[0][1], seed=seed, chunks=chunks)
        unwatch = soak.watch()
        peak = [rss_mib()]

        async def sample():
            while True:
                peak[0] = max(peak[0], rss_mib())
                await asyncio.sleep(0.5)

        sampler = asyncio.create_task(sample())
        try:
            await soak.clean_stream("first")
            report["rss_mib_begin"], report["traced_mib_begin"] = quiet_measure()
            t0 = time.monotonic()
            # phase 1: a third of the time, then the first quiet measurement; phase 2: the rest
            for phase, share in (("start", 1 / 3), ("end", 2 / 3)):
                await soak.run(clients, seconds * share)
                if await wait_until(lambda: len(engine.streams), lambda n: n == 0):
                    soak.problems.append(f"sessions left after everyone disconnected: {list(engine.streams)}")
                await asyncio.sleep(0.5)  # the worker finishes a chunk in flight for a stream just closed
                report[f"rss_mib_{phase}"], report[f"traced_mib_{phase}"] = quiet_measure()
                log(
                    f"{phase}: {time.monotonic() - t0:.0f} s, rss {report[f'rss_mib_{phase}']:.0f} MiB, "
                    f"traced {report[f'traced_mib_{phase}']:.2f} MiB, {dict(soak.count)}"
                )
            report["wall_s"] = round(time.monotonic() - t0, 1)
            await soak.clean_stream("last")
            await wait_until(lambda: len(engine.streams), lambda n: n == 0)
            await asyncio.sleep(0.5)
            gc.collect()
            report["streams_alive"] = len(soak.streams)
            report["sessions_alive"] = len(soak.sessions)
            report["streams_made"] = soak.count["admitted"]
            report["peak_rss_mib"] = peak[0]
            # well before aiohttp's heartbeat (30 s) would release a socket left open
            report["sockets_alive"] = await wait_until(sockets_alive, lambda n: n == 0, timeout=10)
            report["viewers_left"] = sum(viewers.counts().values())
        finally:
            sampler.cancel()
            unwatch()
            await runner.cleanup()
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task() and not t.done()]
        report["tasks_left"] = len(others)
        report.update(soak.count, problems=soak.problems)

    try:
        asyncio.run(main())
        workers = [t for t in set(threading.enumerate()) - baseline_threads if t.is_alive()]
        report["threads_during"] = sorted(t.name for t in workers)
    finally:
        engine.shutdown()
        tracemalloc.stop()
    report["threads_after_shutdown"] = sorted(
        t.name for t in set(threading.enumerate()) - baseline_threads if t.is_alive()
    )
    return report


def _tiny_target(size=64):
    """Tiny random weights written to a temporary folder (nothing downloaded) → a LiveTarget."""
    import tempfile

    import torch
    from PIL import Image
    from personalive_core.pipelines import LiveTarget
    from personalive_core.pipelines import load_models
    from personalive_core.pipelines import encode_reference, prepare_reference
    from personalive_core.devtools.random_weights import write_random_weights

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as d:
        models = load_models(str(write_random_weights(d, "tiny", seed=0)))
    image = Image.fromarray(cv2.imdecode(np.frombuffer(camera_messages(1, seed=3)[0], np.uint8), cv2.IMREAD_COLOR))
    reference = encode_reference(models, prepare_reference(image, size))
    return LiveTarget(lambda: models, reference, lambda z: session_mod.decode(models.vae, z))


if __name__ == "__main__":
    import argparse

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=180)
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--max-sessions", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--handler-cancellation",
        action="store_true",
        help="cancel a handler when its client disconnects (aiohttp's test server does this)",
    )
    a = p.parse_args()
    result = run_soak(
        _tiny_target,
        a.clients,
        a.max_sessions,
        a.seconds,
        a.seed,
        handler_cancellation=a.handler_cancellation,
        log=lambda m: print(m, file=sys.stderr, flush=True),
    )
    print(json.dumps(result))
    sys.exit(1 if result["problems"] else 0)
