"""Live streaming: camera frames in, generated frames out, with bounded latency.

One `LiveEngine` worker thread serves every live stream in turn, one micro-chunk (4 driving frames
→ one denoiser pass → 4 finished frames) at a time, so several viewers share one device without
racing for it. Each stream keeps only its newest 4 driving frames: when the device is slower than
the camera, older frames are dropped (and counted) instead of queueing, so the delay from a frame
in to its generated frame out stays near the pipeline depth (the window holds 4 chunks) times the
chunk time, however long the stream runs.

A `LiveTarget` is what a stream animates: a function giving the networks ready on their device
(called before every chunk, so a host may have offloaded them in between), an encoded reference,
and a decoder. Swapping the target's reference restarts the stream's window on the new portrait
without closing the stream.

Per stream, while it runs: the motion controls (expression / head-pose strength, smoothing) and the
framing (crop, paste_into) can be changed from the next chunk on, and the generated frames can be
recorded (recorder.TakeRecorder). Camera frames are kept whole until their chunk runs: the face is
found on the worker (off the event loop) and only in the frames that are kept.

Portraits swapped in while live (`swap`): the engine encodes the new portrait on the worker between two
chunks, in the device's turn, and the stream switches to it at the next chunk (a fresh window: warm-up
frames, then the new portrait); the socket, the viewers and a take carry on. The last few portraits of
each target stay in memory (`portraits`, `pick`); a new target from the host (a queue run) replaces a
swapped portrait.

Latency, per camera frame, on the server's clock: *wait* (arrival → its chunk starts: the rest of the
chunk's frames, a busy worker), *window* (its chunk starts → the model emits it: the window holds each
frame for 4 chunk steps), *encode* (paste-back and JPEG of the chunk it leaves in); the stats give the
median of each over the last frames, and their sum, the server's part of the end-to-end latency.
Prepare (`warm_up`, or `LiveEngine.prepare` on the worker) runs a few chunks of the target's own
reference at the live size before any camera frame: the networks are loaded, the kernels chosen
(and compiled, when the loaded networks are compiled: torch.compile compiles on a first call) and
the memory allocated, so the first live chunk is a steady one.
"""

import itertools
import threading
import time
from collections import deque
from dataclasses import dataclass

import numpy as np
import torch

from ..config import Framing, MotionControls
from ..pipelines import (
    CHUNK,
    CHUNKS,
    LIVE_FRAMING,
    WARM_CHUNKS,
    WARMUP_CHUNKS,
    FrameError,
    LiveSession,
    check_frame,
    warm_up,
)

RECENT = 64  # frames over which output fps and latency are reported
PORTRAITS = 4  # portraits swapped in per target that stay in memory to pick again (the queued one besides)
THUMBNAIL = 96  # side of a portrait's thumbnail (pixels)
LATENCY_PARTS = ("wait_ms", "window_ms", "encode_ms", "server_ms")


class LiveError(ValueError):
    """A problem with a live request, meant for the client (`code` names the kind)."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code


class LiveStream:
    """One camera feed: its newest camera frames, its streaming session and its readouts.
    `on_frames(stream, frames)` receives the generated frames as a list of
    (frame_id or None for warm-up frames, uint8 (H, W, 3) image, latency_ms or None: arrival → out of
    the model)."""

    def __init__(self, stream_id, target_name, on_frames, on_error, clock=time.monotonic, controls=None, framing=None):
        self.id = stream_id
        self.target_name = target_name
        self.on_frames, self.on_error, self.clock = on_frames, on_error, clock
        self.pending = deque(maxlen=CHUNK)  # newest camera frames: (id, t_in, image)
        self.lock = threading.Lock()
        self.session = LiveSession()
        self.in_flight = deque()  # per chunk in the window: its [(id, t_in, t_start)] (None for warm-up)
        self.received = self.dropped = self.emitted = 0
        self.latencies = deque(maxlen=RECENT)
        self.parts = {name: deque(maxlen=RECENT) for name in LATENCY_PARTS}
        self.out_times = deque(maxlen=RECENT)
        self.chunk_ms = self.first_chunk_ms = self.encode_ms = None
        self.chunks = 0
        self.warm_start = None  # whether the target was prepared when the first chunk ran
        self.is_prepared = lambda target: False  # set by the engine
        self.controls = controls or MotionControls()
        self.framing = framing or Framing()
        self.recorder = None
        self.camera = self.output_size = None  # (w, h) of the last camera frame and generated frame
        self.state = "waiting for frames"
        self.closed = False

    def set_controls(self, controls, framing=None):
        """Motion controls (and framing) from the next chunk on (any thread)."""
        self.controls = controls
        self.framing = framing or self.framing

    def options(self):
        """The stream's live options, flat: motion controls and framing."""
        framing = self.framing.to_dict()
        return {**self.controls.to_dict(), **{name: framing[name] for name in LIVE_FRAMING}}

    def start_recording(self, recorder):
        """Record the generated frames (those with a camera frame) from now on (any thread)."""
        with self.lock:
            if self.recorder is not None:
                raise LiveError("already_recording", "this stream is already recording; stop that take first")
            self.recorder = recorder

    def stop_recording(self):
        """Stop recording; returns the recorder (to close: no frame is added to it any more) or None."""
        with self.lock:
            recorder, self.recorder = self.recorder, None
        return recorder

    def submit(self, image, frame_id):
        """Queue one camera frame (checked, any size); the oldest waiting one is dropped when 4 are
        waiting. Thread-safe."""
        with self.lock:
            if len(self.pending) == self.pending.maxlen:
                self.dropped += 1
            self.pending.append((frame_id, self.clock(), image))
            self.received += 1

    def ready(self):
        with self.lock:
            return not self.closed and len(self.pending) == CHUNK

    def take_chunk(self):
        with self.lock:
            chunk = list(self.pending)
            self.pending.clear()
        return chunk

    def step(self, target):
        """One chunk through the session (worker thread only)."""
        chunk = self.take_chunk()
        t0 = self.clock()
        if self.warm_start is None:
            self.warm_start = self.is_prepared(target)
        framing = self.framing
        images = self.session.step(
            target, [image for _, _, image in chunk], [t for _, t, _ in chunk], self.controls, framing
        )
        if self.session.restarted:
            self._restart()
        self.in_flight.append([(frame_id, t_in, t0) for frame_id, t_in, _ in chunk])
        now = self.clock()
        self.chunk_ms = (now - t0) * 1e3
        if self.first_chunk_ms is None:
            self.first_chunk_ms = self.chunk_ms
        self.chunks += 1
        self.camera = chunk[-1][2].shape[1::-1]
        self._emit(self.in_flight.popleft(), self.session.output(images, framing), now)

    def _restart(self):
        """A fresh window: its first 12 frames ease in from the reference (no camera frame)."""
        self.in_flight = deque([[None] * CHUNK for _ in range(WARMUP_CHUNKS)])

    def _emit(self, meta, images, out_of_model):
        """Hand the generated frames over (the paste-back before this and the JPEGs of `on_frames` are
        the encode part), then note each frame's latency parts."""
        out = []
        for item, image in zip(meta, images):
            frame_id, latency = None, None
            if item is not None:
                frame_id, t_in, _ = item
                latency = (out_of_model - t_in) * 1e3
                self._record(image, t_in)
            out.append((frame_id, image, latency))
        self.output_size = images[-1].shape[1::-1]
        self.on_frames(self, out)
        done = self.clock()
        self.encode_ms = (done - out_of_model) * 1e3
        for item in meta:
            if item is not None:
                _, t_in, t_start = item
                self._note_latency(t_start - t_in, out_of_model - t_start, done - out_of_model, done - t_in)
        self.out_times.extend([done] * len(out))
        self.emitted += len(out)

    def _note_latency(self, wait, window, encode, server):
        self.latencies.append(server * 1e3)
        for name, seconds in zip(LATENCY_PARTS, (wait, window, encode, server)):
            self.parts[name].append(seconds * 1e3)

    def _record(self, image, t_in):
        """At the pace performed: each frame at its camera frame's arrival time."""
        with self.lock:
            if self.recorder is not None:
                self.recorder.add(image, t_in)

    def framing_stats(self):
        """Where the model's square was cut from the last camera frame: {"camera": [w, h], "crop": [x0, y0,
        x1, y1], "face": found (auto framing)}, or None before the first chunk."""
        framer = self.session.framer
        if framer is None or framer.info is None or self.camera is None:
            return None
        return {"camera": list(self.camera), "crop": list(framer.info.box), "face": framer.found, "mode": framer.crop}

    def stats(self):
        times, lat = list(self.out_times), list(self.latencies)
        fps = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else 0.0
        return {
            "stream": self.id,
            "target": self.target_name,
            "state": self.state,
            "received": self.received,
            "dropped": self.dropped,
            "emitted": self.emitted,
            "output_fps": round(fps, 2),
            "latency_ms": _round(lat[-1] if lat else None),
            "latency_ms_p50": _round(_median(lat)),
            "latency_ms_max": _round(max(lat) if lat else None),
            "latency_parts": {
                **{name: _round(_median(self.parts[name])) for name in LATENCY_PARTS},
                "chunk_ms": _round(self.chunk_ms),
                "window_chunks": CHUNKS,
            },
            "chunk_ms": _round(self.chunk_ms),
            "encode_ms": _round(self.encode_ms),
            "chunks": self.chunks,
            "first_chunk_ms": _round(self.first_chunk_ms),
            "warm_start": self.warm_start,
            "recording": self.recorder is not None,
            "controls": self.options(),
            "framing": self.framing_stats(),
            "output_size": list(self.output_size) if self.output_size is not None else None,
        }


def _median(values):
    return float(np.percentile(list(values), 50)) if values else None


def _round(value):
    return None if value is None else round(value, 1)


@dataclass
class PortraitEntry:
    """A portrait of a target: `id` (0: the target's own, from the host or the command line), the picture
    to encode again when picked (None for the target's own), where it was cut, and its thumbnail."""

    id: int
    picture: object  # pipelines.ReferencePicture, or None
    portrait: object  # pipelines.Portrait, or None
    thumbnail: np.ndarray  # uint8 (THUMBNAIL, THUMBNAIL, 3)


def thumbnail(picture):
    """uint8 (S, S, 3) → uint8 (THUMBNAIL, THUMBNAIL, 3)."""
    import cv2

    return cv2.resize(picture, (THUMBNAIL, THUMBNAIL), interpolation=cv2.INTER_AREA)


class NullTurn:
    """Device sharing policy of a stand-alone engine: always our turn."""

    def __call__(self):
        return self

    def __enter__(self):
        return True

    def __exit__(self, *exc):
        return False


class LiveEngine:
    """The streams, the targets they animate, and the worker thread that serves them.
    `turn()` is entered around every chunk and says whether the device may be used now (a host
    running other work on the device answers False while it is busy)."""

    def __init__(self, max_streams=2, turn=None, busy_wait=0.05):
        self.max_streams = max_streams
        self.turn = turn or NullTurn()
        self.busy_wait = busy_wait
        self.targets = {}
        self.own = {}  # target name → the target as the host set it (before any swap)
        self.portraits = {}  # target name → deque of PortraitEntry swapped in (newest last)
        self.current = {}  # target name → id of the portrait it animates (0: its own)
        self.streams = {}
        self.prepared = {}  # target name → (warm key, warm-up report)
        self.jobs = deque()  # device work other than chunks (prepare, swaps), run in the worker's turn
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self._ids = itertools.count(1)
        self._warm_ups = itertools.count(1)
        self._portrait_ids = itertools.count(1)
        self._thread = None
        self._stop = False

    # -- targets -------------------------------------------------------------------------------
    def set_target(self, name, target):
        """Register (or replace: a new reference is picked up at the next chunk) a target; it replaces a
        portrait swapped in meanwhile. It stays prepared if the networks and the size are the same."""
        name = str(name)
        with self.lock:
            self.targets[name] = self.own[name] = target
            self.current[name] = 0
            self.portraits.setdefault(name, deque(maxlen=PORTRAITS))
            if name in self.prepared and self.prepared[name][0] != target.warm_key:
                del self.prepared[name]
        self.wake.set()

    def target(self, name):
        with self.lock:
            return self.targets.get(str(name))

    def _queue(self, job):
        """Run `job()` on the worker, in the device's turn (a host's queue may be running)."""
        with self.lock:
            self.jobs.append(job)
        self._ensure_worker()
        self.wake.set()

    # -- prepare ------------------------------------------------------------------------------------
    def is_prepared(self, target):
        with self.lock:
            return any(
                key == target.warm_key and self.targets.get(name) is target for name, (key, _) in self.prepared.items()
            )

    def mark_prepared(self, name, report):
        """Record a finished warm-up; its report gets `run`, the number of warm-ups so far (engine-wide)."""
        name = str(name)
        with self.lock:
            report["run"] = next(self._warm_ups)
            self.prepared[name] = (self.targets[name].warm_key, report)

    def prepare(self, name, on_progress=None, on_done=lambda report, error: None, chunks=WARM_CHUNKS):
        """Warm the target up on the worker, in the device's turn; `on_done(report, None)` or
        `on_done(None, error)` from the worker thread."""
        name = str(name)
        self._target_of_name(name)

        def job():
            try:
                report = warm_up(self._target_of_name(name), chunks, on_progress)
                self.mark_prepared(name, report)
            except Exception as e:
                on_done(None, e)
            else:
                on_done(report, None)

        self._queue(job)

    # -- portraits ------------------------------------------------------------------------------------
    def swap(self, name, picture, portrait, on_done=lambda report, error: None):
        """Animate another portrait (`picture`: a pipelines.ReferencePicture, `portrait`: its Portrait) on
        target `name`: encoded on the worker in the device's turn while the streams go on with the old
        one, switched to at the next chunk. `on_done({"portrait": id, "encode_s"}, None)` or
        `on_done(None, error)` from the worker."""
        name = str(name)
        self._encoder(self._target_of_name(name), name)
        self._queue(lambda: self._encode_job(name, None, picture, portrait, on_done))

    def pick(self, name, portrait_id, on_done=lambda report, error: None):
        """Animate one of the target's portraits again (id 0: its own); as `swap`."""
        name = str(name)
        self._target_of_name(name)
        if portrait_id == 0:
            self._queue(lambda: self._restore(name, on_done))
            return
        entry = self._entry(name, portrait_id)
        self._encoder(self._target_of_name(name), name)
        self._queue(lambda: self._encode_job(name, entry, entry.picture, entry.portrait, on_done))

    def _entry(self, name, portrait_id):
        with self.lock:
            found = [e for e in self.portraits.get(name, ()) if e.id == portrait_id]
            kept = [0] + [e.id for e in self.portraits.get(name, ())]
        if not found:
            raise LiveError(
                "no_portrait",
                f"live node {name!r} keeps no portrait {portrait_id!r} (it keeps "
                f"{', '.join(map(str, kept))}); drop the picture again",
            )
        return found[0]

    def check_swappable(self, name):
        """LiveError unless target `name` exists and can encode a new portrait."""
        self._encoder(self._target_of_name(str(name)), str(name))

    @staticmethod
    def _encoder(target, name):
        if target.encode is None:
            raise LiveError(
                "no_encoder",
                f"live node {name!r} cannot encode a new portrait: connect a CLIP vision "
                "model to the PersonaLive Live node's clip_vision input and queue again",
            )
        return target.encode

    def _encode_job(self, name, entry, picture, portrait, on_done):
        try:
            target = self._target_of_name(name)
            t0 = time.perf_counter()
            reference = self._encoder(target, name)(picture)
            seconds = time.perf_counter() - t0
            with self.lock:
                if self.targets.get(name) is not target:  # a queue run replaced it meanwhile: that one stays
                    raise LiveError(
                        "superseded",
                        f"live node {name!r} got a new reference from the queue while "
                        "this portrait was encoded; drop it again to use it",
                    )
                if entry is None:
                    entry = PortraitEntry(
                        next(self._portrait_ids), picture, portrait, thumbnail(np.asarray(picture.picture))
                    )
                    self.portraits[name].append(entry)
                self.targets[name] = target.with_reference(reference, portrait)
                self.current[name] = entry.id
        except Exception as e:
            on_done(None, e)
        else:
            self.wake.set()
            on_done({"portrait": entry.id, "encode_s": round(seconds, 3)}, None)

    def _restore(self, name, on_done):
        with self.lock:
            self.targets[name] = self.own[name]
            self.current[name] = 0
        self.wake.set()
        on_done({"portrait": 0, "encode_s": 0.0}, None)

    def portrait_list(self, name):
        """The portraits of target `name`: [{"id", "current", "thumbnail": uint8 (96, 96, 3)}], its own first."""
        name = str(name)
        with self.lock:
            own = self.own.get(name)
            if own is None:
                return []
            entries = list(self.portraits.get(name, ()))
            current = self.current.get(name, 0)
        listed = [(0, thumbnail(own.picture()))] + [(e.id, e.thumbnail) for e in entries]
        return [{"id": i, "current": i == current, "thumbnail": image} for i, image in listed]

    # -- streams -------------------------------------------------------------------------------
    def unknown(self, name):
        """The error for a target name that has no reference (yet)."""
        known = ", ".join(sorted(self.targets)) or "none yet"
        return LiveError(
            "no_reference",
            f"no reference for live node {name!r} (known: {known}); build "
            "the reference in the graph and queue the workflow once, then go live",
        )

    def open(self, target_name, on_frames, on_error=lambda stream, error: None, controls=None, framing=None):
        """A new stream on target `target_name`; `controls` (MotionControls) and `framing` (Framing)
        default to the target's."""
        name = str(target_name)
        with self.lock:
            if name not in self.targets:
                raise self.unknown(name)
            if len(self.streams) >= self.max_streams:
                raise LiveError(
                    "too_many_sessions",
                    f"{len(self.streams)} live sessions are already running (the "
                    f"limit is {self.max_streams}); stop one and try again",
                )
            config = self.targets[name].config
            stream = LiveStream(
                next(self._ids),
                name,
                on_frames,
                on_error,
                controls=controls or config.controls,
                framing=framing or config.framing,
            )
            stream.is_prepared = self.is_prepared
            self.streams[stream.id] = stream
        self._ensure_worker()
        return stream

    def close(self, stream):
        with self.lock:
            stream.closed = True
            self.streams.pop(stream.id, None)

    def _target_of(self, stream):
        return self._target_of_name(stream.target_name)

    def _target_of_name(self, name):
        target = self.target(name)
        if target is None:
            raise self.unknown(str(name))
        return target

    def submit(self, stream, image, frame_id):
        """A camera frame (uint8 RGB, any size 64–4096 a side) for `stream`; framed on the worker."""
        try:
            frame = check_frame(image)
        except FrameError as e:
            raise LiveError(e.code, str(e)) from None
        stream.submit(frame, frame_id)
        self.wake.set()

    def stats(self):
        with self.lock:
            streams = list(self.streams.values())
            targets = sorted(self.targets)
            prepared = {name: report for name, (_, report) in self.prepared.items()}
            portraits = {name: self.current.get(name, 0) for name in targets}
        return {
            "streams": [s.stats() for s in streams],
            "targets": targets,
            "max_streams": self.max_streams,
            "prepared": prepared,
            "portraits": portraits,
        }

    def shutdown(self):
        self._stop = True
        self.wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    # -- worker --------------------------------------------------------------------------------
    def _ensure_worker(self):
        with self.lock:
            if self._thread is None or not self._thread.is_alive():
                self._stop = False
                self._thread = threading.Thread(target=self._run, name="personalive-live", daemon=True)
                self._thread.start()

    def _next_ready(self, after):
        """Round robin over ready streams, starting after the stream served last."""
        with self.lock:
            ids = sorted(self.streams)
            order = [i for i in ids if i > after] + [i for i in ids if i <= after]
            for i in order:
                if self.streams[i].ready():
                    return self.streams[i]
        return None

    def _next_job(self):
        with self.lock:
            return self.jobs.popleft() if self.jobs else None

    def _run_job(self, job):
        """A job runs when the device is ours; until then it waits at the head of the line."""
        with self.turn() as ours:
            if ours:
                with torch.inference_mode():
                    job()
                return
        with self.lock:
            self.jobs.appendleft(job)
        time.sleep(self.busy_wait)

    def _run(self):
        last = 0
        while not self._stop:
            job = self._next_job()
            if job is not None:
                self._run_job(job)
                continue
            stream = self._next_ready(last)
            if stream is None:
                self.wake.wait(0.5)
                self.wake.clear()
                continue
            last = stream.id
            with self.turn() as ours:
                if not ours:  # frames keep arriving meanwhile; only the newest 4 are kept
                    stream.state = "paused: the device is busy with the prompt queue"
                    time.sleep(self.busy_wait)
                    continue
                stream.state = "running"
                try:
                    target = self._target_of(stream)
                    with torch.inference_mode():  # as a host runs its prompts: their tensors mix with ours
                        stream.step(target)
                except Exception as e:  # one stream's failure must not stop the others
                    stream.state = f"error: {e}"
                    self.close(stream)
                    stream.on_error(stream, e)
