"""Driving frames for the motion extractor, from an IMAGE batch or straight from a VIDEO.

A VIDEO loaded from a file is decoded one frame at a time (PyAV), so a long driving video never sits in
memory at full resolution the way 'Get Video Components' would hold it. Every frame becomes uint8
(size, size, 3): centred square crop, bicubic resize — as the CLI's `Reframer.driving`.
"""
from fractions import Fraction

import numpy as np
import torch
from PIL import Image

from personalive_core.media.video_io import square

DEFAULT_FPS = 25.0


def _fit(frame_u8, size):
    if frame_u8.shape[:2] == (size, size):
        return frame_u8
    return np.asarray(square(Image.fromarray(frame_u8), size))


def _to_u8(frame):
    """IMAGE frame (H,W,C) in [0,1] → uint8 (H,W,3), rounding (8-bit sources round-trip exactly)."""
    return frame[..., :3].float().clamp(0, 1).mul(255).round().to(torch.uint8).cpu().numpy()


class DrivingSource:
    """`frames(size, limit)` yields uint8 frames; `fps`, `audio` (AUDIO dict or None), `estimate`
    (frame count if known beforehand, else None)."""

    def __init__(self, images=None, video=None):
        if (images is None) == (video is None):
            raise ValueError("connect exactly one driving input: 'driving_images' (an IMAGE batch, e.g. from "
                             "'Get Video Components') or 'driving_video' (a VIDEO from 'Load Video')")
        self.images, self.video, self.stream = images, video, None
        self.fps, self.audio = DEFAULT_FPS, None
        if images is not None:
            if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[-1] < 3:
                raise ValueError("driving_images: expected an IMAGE batch (frames, height, width, channels), got "
                                 f"{getattr(images, 'shape', type(images).__name__)}")
            return
        source = None
        if type(video).__name__ == "VideoFromFile":  # the only kind that streams from a file
            source = video.get_stream_source()
        if source is None:
            parts = video.get_components()
            self.images, self.audio = parts.images, parts.audio
            self.fps = float(parts.frame_rate) if parts.frame_rate else DEFAULT_FPS
        else:
            self.stream = source
            self.fps, self.count = _probe(source)

    @property
    def estimate(self):
        return self.images.shape[0] if self.images is not None else self.count

    def frames(self, size, limit=0):
        if self.images is not None:
            n = self.images.shape[0] if not limit else min(limit, self.images.shape[0])
            for i in range(n):
                yield _fit(_to_u8(self.images[i]), size)
            return
        import av
        _rewind(self.stream)
        with av.open(self.stream, mode="r") as container:
            for i, frame in enumerate(container.decode(video=0)):
                if limit and i >= limit:
                    break
                yield _fit(frame.to_ndarray(format="rgb24"), size)

    def read_audio(self):
        """The audio track as ComfyUI's AUDIO ({"waveform": (1, C, S), "sample_rate"}), decoded the
        way 'Get Video Components' decodes it; None without audio."""
        if self.stream is None:
            return self.audio
        import av
        _rewind(self.stream)
        with av.open(self.stream, mode="r") as container:
            if not container.streams.audio:
                return None
            stream = container.streams.audio[0]
            chunks = [frame.to_ndarray() for packet in container.demux(stream) for frame in packet.decode()]
            if not chunks:
                return None
            waveform = torch.from_numpy(np.concatenate(chunks, axis=1)).unsqueeze(0)
            return {"waveform": waveform, "sample_rate": int(stream.sample_rate) if stream.sample_rate else 1}


def _rewind(source):
    if hasattr(source, "seek"):
        source.seek(0)


def _probe(source):
    import av
    _rewind(source)
    try:
        with av.open(source, mode="r") as container:
            if not container.streams.video:
                raise ValueError(f"driving_video: {source if isinstance(source, str) else 'the video'} has no "
                                 "video stream")
            stream = container.streams.video[0]
            rate = stream.average_rate
            return (float(Fraction(rate)) if rate else DEFAULT_FPS), (stream.frames or None)
    except ValueError:
        raise
    except Exception as e:
        raise ValueError(f"driving_video: cannot open {source if isinstance(source, str) else 'the video'}: {e}") from e
