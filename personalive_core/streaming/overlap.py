"""A stream's chunks, optionally overlapped on CUDA streams.

`StreamRunner.run(chunks)` pushes chunks of 4 driving frames through a StreamingSession, decodes
each chunk's latents and copies the frames to the host, in order. Two options overlap the stages
of neighbouring chunks on a CUDA device:

- `motion_ahead`: the hybrid motion of chunk k+1 (keypoints, crops, MotEncoder) runs on a second
  CUDA stream while chunk k's denoiser runs. Needs chunk k+1's frames when chunk k starts (video
  files, benchmarks; in live, when the next 4 frames have arrived). Latency unchanged.
- `decode_behind`: chunk k is decoded (and copied to the host) on a third CUDA stream while chunk
  k+1's denoiser runs. The frames of chunk k come out only after chunk k+1 has been queued: one
  chunk more of latency (4 frames), for throughput where one stage alone leaves the GPU idle.

The work and its order per stream are those of the plain loop, so the frames are the same; on the
CPU (or with both options off) the runner is the plain loop.
"""

import torch

from .timing import NO_TIMER


def _record(tensors, stream):
    """Tell the allocator that `tensors` (made on another stream) are used on `stream` too."""
    for t in tensors:
        t.record_stream(stream)


class StreamRunner:
    def __init__(self, session, decoder, motion_ahead=False, decode_behind=False, timer=None):
        """`decoder(latents)`: scaled latents (4, 4, h, w) → frames (4, H, W, 3) on the device."""
        self.session, self.decoder = session, decoder
        self.timer = timer or NO_TIMER
        cuda = session.models.device.type == "cuda"
        self.motion_stream = torch.cuda.Stream() if cuda and motion_ahead else None
        self.decode_stream = torch.cuda.Stream() if cuda and decode_behind else None

    def _motion(self, frames):
        """Start the motion of a chunk; returns a function giving its MotionChunk."""
        if self.motion_stream is None:
            motion = self.session.extract_motion(frames)
            return lambda: motion
        main = torch.cuda.current_stream()
        self.motion_stream.wait_stream(main)  # the tracker's state comes from earlier chunks
        with torch.cuda.stream(self.motion_stream):
            motion = self.session.extract_motion(frames)
            done = torch.cuda.Event()
            done.record()

        def ready():
            main.wait_event(done)
            _record((motion.keypoints, motion.tokens, motion.boxes), main)
            return motion

        return ready

    def _decode(self, latents):
        """Queue the decode and host copy of a chunk; returns a function giving the host frames."""
        if self.decode_stream is None:
            with self.timer("decode"):
                frames = self.decoder(latents)
            with self.timer("to_host"):
                host = frames.cpu()
            return lambda: host
        self.decode_stream.wait_stream(torch.cuda.current_stream())
        _record((latents,), self.decode_stream)
        with torch.cuda.stream(self.decode_stream):
            with self.timer("decode"):
                frames = self.decoder(latents)
            with self.timer("to_host"):
                host = frames.to("cpu", non_blocking=True)
                done = torch.cuda.Event()
                done.record()

        def ready():
            done.synchronize()
            return host

        return ready

    @torch.no_grad()
    def run(self, chunks):
        """Yield host frames (4, H, W, 3) per chunk of `chunks` (an iterable of (4, 3, H, W) in
        [-1, 1]), in order."""
        chunks = iter(chunks)
        frames = next(chunks, None)
        motion = None if frames is None else self._motion(frames)
        behind = None
        while motion is not None:
            frames = next(chunks, None)
            ahead = frames is not None and self.motion_stream is not None
            following = self._motion(frames) if ahead else None  # overlaps this chunk's denoiser
            latents = self.session.push_motion(motion())
            if frames is not None and not ahead:
                following = self._motion(frames)
            out = self._decode(latents)
            if self.decode_stream is None:
                yield out()
            else:
                if behind is not None:
                    yield behind()  # the previous chunk, decoded while this one was queued
                behind = out
            motion = following
        if behind is not None:
            yield behind()
