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

Per stream, while it runs: the motion controls (expression / head-pose strength, smoothing) can be
changed from the next chunk on, and the generated frames can be recorded (recorder.TakeRecorder).
Prepare (`warm_up`, or `LiveEngine.prepare` on the worker) runs a few chunks of the target's own
reference at the live size before any camera frame: the networks are loaded, the kernels chosen
(and compiled, when the loaded networks are compiled: torch.compile compiles on a first call) and
the memory allocated, so the first live chunk is a steady one.
"""
import itertools
import threading
import time
from collections import deque

import numpy as np
import torch

from ..config import MotionControls
from ..pipelines import CHUNK, WARM_CHUNKS, WARMUP_CHUNKS, FrameError, LiveSession, square_frame, warm_up

RECENT = 64  # frames over which output fps and latency are reported


class LiveError(ValueError):
    """A problem with a live request, meant for the client (`code` names the kind)."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code


class LiveStream:
    """One camera feed: its newest driving frames, its streaming session and its readouts.
    `on_frames(stream, frames)` receives the generated frames as a list of
    (frame_id or None for warm-up frames, uint8 (H, W, 3) image, latency_ms or None)."""

    def __init__(self, stream_id, target_name, on_frames, on_error, clock=time.monotonic, controls=None):
        self.id = stream_id
        self.target_name = target_name
        self.on_frames, self.on_error, self.clock = on_frames, on_error, clock
        self.pending = deque(maxlen=CHUNK)  # newest driving frames: (id, t_in, image)
        self.lock = threading.Lock()
        self.session = LiveSession()
        self.in_flight = deque()  # per chunk in the window: its [(id, t_in)] (None for warm-up)
        self.received = self.dropped = self.emitted = 0
        self.latencies = deque(maxlen=RECENT)
        self.out_times = deque(maxlen=RECENT)
        self.chunk_ms = self.first_chunk_ms = None
        self.chunks = 0
        self.warm_start = None  # whether the target was prepared when the first chunk ran
        self.is_prepared = lambda target: False  # set by the engine
        self.controls = controls or MotionControls()
        self.recorder = None
        self.state = "waiting for frames"
        self.closed = False

    def set_controls(self, controls):
        """Motion controls from the next chunk on (any thread)."""
        self.controls = controls

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
        """Queue one camera frame (already `square_frame`d); the oldest waiting one is dropped when
        4 are waiting. Thread-safe."""
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
        images = self.session.step(target, [image for _, _, image in chunk], self.controls)
        if self.session.restarted:
            self._restart()
        self.in_flight.append([(frame_id, t_in) for frame_id, t_in, _ in chunk])
        now = self.clock()
        self.chunk_ms = (now - t0) * 1e3
        if self.first_chunk_ms is None:
            self.first_chunk_ms = self.chunk_ms
        self.chunks += 1
        self._emit(self.in_flight.popleft(), images, now)

    def _restart(self):
        """A fresh window: its first 12 frames ease in from the reference (no driving frame)."""
        self.in_flight = deque([[None] * CHUNK for _ in range(WARMUP_CHUNKS)])

    def _emit(self, meta, images, now):
        out = []
        for item, image in zip(meta, images):
            frame_id, latency = None, None
            if item is not None:
                frame_id, t_in = item
                latency = (now - t_in) * 1e3
                self.latencies.append(latency)
                self._record(image, t_in)
            out.append((frame_id, image, latency))
            self.out_times.append(now)
        self.emitted += len(out)
        self.on_frames(self, out)

    def _record(self, image, t_in):
        """At the pace performed: each frame at its camera frame's arrival time."""
        with self.lock:
            if self.recorder is not None:
                self.recorder.add(image, t_in)

    def stats(self):
        times, lat = list(self.out_times), list(self.latencies)
        fps = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else 0.0
        return {
            "stream": self.id, "target": self.target_name, "state": self.state,
            "received": self.received, "dropped": self.dropped, "emitted": self.emitted,
            "output_fps": round(fps, 2),
            "latency_ms": round(lat[-1], 1) if lat else None,
            "latency_ms_p50": round(float(np.percentile(lat, 50)), 1) if lat else None,
            "latency_ms_max": round(max(lat), 1) if lat else None,
            "chunk_ms": round(self.chunk_ms, 1) if self.chunk_ms is not None else None,
            "chunks": self.chunks,
            "first_chunk_ms": round(self.first_chunk_ms, 1) if self.first_chunk_ms is not None else None,
            "warm_start": self.warm_start,
            "recording": self.recorder is not None,
            "controls": self.controls.to_dict(),
        }


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
        self.streams = {}
        self.prepared = {}  # target name → (warm key, warm-up report)
        self.jobs = deque()  # device work other than chunks (prepare), run in the worker's turn
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self._ids = itertools.count(1)
        self._warm_ups = itertools.count(1)
        self._thread = None
        self._stop = False

    # -- targets -------------------------------------------------------------------------------
    def set_target(self, name, target):
        """Register (or replace: a new reference is picked up at the next chunk) a target. It stays
        prepared if the networks and the size are the same."""
        name = str(name)
        with self.lock:
            self.targets[name] = target
            if name in self.prepared and self.prepared[name][0] != target.warm_key:
                del self.prepared[name]
        self.wake.set()

    # -- prepare ------------------------------------------------------------------------------------
    def is_prepared(self, target):
        with self.lock:
            return any(key == target.warm_key and self.targets.get(name) is target
                       for name, (key, _) in self.prepared.items())

    def mark_prepared(self, name, report):
        """Record a finished warm-up; its report gets `run`, the number of warm-ups so far (engine-wide)."""
        name = str(name)
        with self.lock:
            report["run"] = next(self._warm_ups)
            self.prepared[name] = (self.targets[name].warm_key, report)

    def prepare(self, name, on_progress=None, on_done=lambda report, error: None, chunks=WARM_CHUNKS):
        """Warm the target up on the worker, in the device's turn (a host's queue may be running);
        `on_done(report, None)` or `on_done(None, error)` from the worker thread."""
        name = str(name)
        if self.target(name) is None:
            raise self._unknown(name)

        def job():
            try:
                report = warm_up(self._target_of_name(name), chunks, on_progress)
                self.mark_prepared(name, report)
            except Exception as e:
                on_done(None, e)
            else:
                on_done(report, None)
        with self.lock:
            self.jobs.append(job)
        self._ensure_worker()
        self.wake.set()

    def target(self, name):
        with self.lock:
            return self.targets.get(str(name))

    # -- streams -------------------------------------------------------------------------------
    def _unknown(self, name):
        known = ", ".join(sorted(self.targets)) or "none yet"
        return LiveError("no_reference", f"no reference for live node {name!r} (known: {known}); build "
                                         "the reference in the graph and queue the workflow once, then go live")

    def open(self, target_name, on_frames, on_error=lambda stream, error: None, controls=None):
        """A new stream on target `target_name`; `controls` (MotionControls) default to the target's."""
        name = str(target_name)
        with self.lock:
            if name not in self.targets:
                raise self._unknown(name)
            if len(self.streams) >= self.max_streams:
                raise LiveError("too_many_sessions", f"{len(self.streams)} live sessions are already running (the "
                                                     f"limit is {self.max_streams}); stop one and try again")
            controls = controls or self.targets[name].config.controls
            stream = LiveStream(next(self._ids), name, on_frames, on_error, controls=controls)
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
            raise LiveError("no_reference", f"live node {name!r} has no reference any more; queue the workflow again")
        return target

    def submit(self, stream, image, frame_id):
        try:
            frame = square_frame(image, self._target_of(stream).size)
        except FrameError as e:
            raise LiveError(e.code, str(e)) from None
        stream.submit(frame, frame_id)
        self.wake.set()

    def stats(self):
        with self.lock:
            streams = list(self.streams.values())
            targets = sorted(self.targets)
            prepared = {name: report for name, (_, report) in self.prepared.items()}
        return {"streams": [s.stats() for s in streams], "targets": targets, "max_streams": self.max_streams,
                "prepared": prepared}

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
