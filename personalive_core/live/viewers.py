"""Output pages: the generated frames of one live target for any number of viewers (a Browser
Source in OBS, a second screen), with no UI.

A target's viewers see the newest stream started on it. Every viewer has a slot that holds only
the newest frame: a viewer slower than the stream skips frames (counted) and the stream never
waits for a viewer (publishing is a hand-over to the event loop, nothing more).
"""

import asyncio
import threading


class LatestFrame:
    """One viewer's slot on the event loop `loop`; `put_threadsafe` from any thread."""

    def __init__(self, loop):
        self.loop = loop
        self.frame = None
        self.ready = asyncio.Event()
        self.dropped = 0

    def put_threadsafe(self, frame):
        self.loop.call_soon_threadsafe(self._put, frame)

    def _put(self, frame):
        if self.frame is not None:
            self.dropped += 1  # the viewer has not taken the previous frame yet
        self.frame = frame
        self.ready.set()

    async def get(self):
        await self.ready.wait()
        self.ready.clear()
        frame, self.frame = self.frame, None
        return frame


class Viewers:
    """Which slots watch which target, and which stream feeds each target (the newest started)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.slots = {}  # target name → set of LatestFrame
        self.feeds = {}  # target name → stream id

    def watch(self, target, slot):
        with self.lock:
            self.slots.setdefault(str(target), set()).add(slot)

    def unwatch(self, target, slot):
        with self.lock:
            slots = self.slots.get(str(target), set())
            slots.discard(slot)
            if not slots:
                self.slots.pop(str(target), None)

    def feed(self, target, stream_id):
        with self.lock:
            self.feeds[str(target)] = stream_id

    def unfeed(self, target, stream_id):
        with self.lock:
            if self.feeds.get(str(target)) == stream_id:
                del self.feeds[str(target)]

    def publish(self, target, stream_id, frame):
        with self.lock:
            if self.feeds.get(str(target)) != stream_id:
                return
            slots = list(self.slots.get(str(target), ()))
        for slot in slots:
            slot.put_threadsafe(frame)

    def counts(self):
        with self.lock:
            return {name: len(slots) for name, slots in self.slots.items()}


PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>PersonaLive output {target}</title>
<style>html,body{{margin:0;height:100%;background:#000;overflow:hidden}}
canvas{{display:block;width:100vw;height:100vh;object-fit:contain}}</style></head>
<body data-frames="0"><canvas width="{size}" height="{size}"></canvas>
<script>
// The generated frames of live node {target}, full size (the square, or the camera frame or reference picture
// it is pasted into), nothing else (add this page as a Browser Source).
// ?background=transparent (or any CSS colour) sets what shows around a frame of another aspect.
const canvas = document.querySelector("canvas");
const context = canvas.getContext("2d");
const background = new URLSearchParams(location.search).get("background");
if (background) document.documentElement.style.background = document.body.style.background = background;
const url = new URL(location.href);
url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
url.pathname = url.pathname.replace(/\\/+$/, "") + "/ws";
const token = new URLSearchParams(location.search).get("token"); // a server started with --token wants it
url.search = token ? "?token=" + encodeURIComponent(token) : "";
let drawing = false;
function connect() {{
  const ws = new WebSocket(url);
  ws.binaryType = "blob";
  ws.onmessage = async (m) => {{
    if (typeof m.data === "string" || drawing) return; // still drawing the previous frame: skip this one
    drawing = true;
    try {{
      const image = await createImageBitmap(m.data);
      if (canvas.width !== image.width || canvas.height !== image.height) {{
        canvas.width = image.width;
        canvas.height = image.height;
      }}
      context.drawImage(image, 0, 0);
      image.close();
      document.body.dataset.frames = String(Number(document.body.dataset.frames) + 1);
    }} finally {{
      drawing = false;
    }}
  }};
  ws.onclose = () => setTimeout(connect, 1000); // the server restarted or the stream ended: keep trying
}}
connect();
</script></body></html>
"""


def page(target, size=512):
    """The output page of live node `target` (HTML)."""
    from html import escape

    return PAGE.format(target=escape(str(target)), size=int(size))
