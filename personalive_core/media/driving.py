"""Driving frames from any source, read lazily: a video file, an image folder or one image (the
command line), a ComfyUI VIDEO or an IMAGE batch (the nodes).

Frames come out as uint8 RGB (H, W, 3), one decoded at a time, so an hour-long video never sits in
memory. A VIDEO is used through its public interface only (duck-typed, no host import): its own
`get_stream_source()` (a path or a file-like object) is decoded frame by frame; a VIDEO without
one (frames already in memory) gives its `get_components()` (`.images`, `.audio`, `.frame_rate`).
"""
import os
import shutil
from fractions import Fraction

import numpy as np
import torch

from ..errors import InputError
from .images import IMAGE_SUFFIXES, load_image
from .video_io import write_wav

DEFAULT_FPS = Fraction(25)  # image folders, single images, IMAGE batches and videos without a rate


class DrivingSource:
    """Iterate for uint8 (H, W, 3) frames, at most `limit` of them (0 or None: all).

    `fps` (Fraction), `estimate` (frame count known beforehand, within the limit, else None),
    `read` (frames the last iteration yielded); `audio()` as an AUDIO dict, `audio_file()` as a
    file to mux. `name` prefixes error messages (the node input's name)."""

    def __init__(self, source, limit=0, name=""):
        self.limit, self.where = limit or 0, f"{name}: " if name else ""
        self.images = self.files = self.stream = self.audio_dict = None
        self.fps, self.count, self.read = DEFAULT_FPS, None, 0
        if isinstance(source, (str, os.PathLike)):
            self._open_path(os.fspath(source))
        elif isinstance(source, torch.Tensor):
            self._take_images(source)
        elif hasattr(source, "get_components"):
            self._open_video(source)
        else:
            raise InputError(f"{self.where}expected a video file, an image folder, a VIDEO or an IMAGE batch, "
                             f"got {type(source).__name__}")

    # -- opening -------------------------------------------------------------------------------
    def _open_path(self, path):
        if os.path.isdir(path):
            self.files = [os.path.join(path, f) for f in sorted(os.listdir(path)) if f.lower().endswith(IMAGE_SUFFIXES)]
            if not self.files:
                raise InputError(f"{self.where}no images ({', '.join(IMAGE_SUFFIXES)}) in driving folder {path}")
            self.count = len(self.files)
        elif not os.path.isfile(path):
            raise InputError(f"{self.where}driving video not found: {path}")
        elif path.lower().endswith(IMAGE_SUFFIXES):
            self.files, self.count = [path], 1
        else:
            self._open_stream(path)

    def _take_images(self, images):
        if images.dim() != 4 or images.shape[-1] < 3:
            raise InputError(f"{self.where}expected an IMAGE batch (frames, height, width, channels), got a tensor "
                             f"of shape {tuple(images.shape)}")
        self.images, self.count = images, int(images.shape[0])

    def _open_video(self, video):
        if _streams_itself(video):
            self._open_stream(video.get_stream_source())
            return
        parts = video.get_components()
        self._take_images(parts.images)
        self.audio_dict = parts.audio
        self.fps = Fraction(parts.frame_rate) if parts.frame_rate else DEFAULT_FPS

    def _open_stream(self, source):
        import av
        self.stream = source
        try:
            with av.open(self._rewound(), mode="r") as c:
                if not c.streams.video:
                    raise InputError(f"{self.where}{self._label()} has no video stream")
                v = c.streams.video[0]
                self.fps = Fraction(v.average_rate) if v.average_rate else DEFAULT_FPS
                self.count = v.frames or (round(c.duration / 1e6 * self.fps) if c.duration else None)
        except InputError:
            raise
        except Exception as e:
            raise InputError(f"{self.where}cannot open driving video {self._label()}: {e}") from e

    def _rewound(self):
        if hasattr(self.stream, "seek"):
            self.stream.seek(0)
        return self.stream

    def _label(self):
        return self.stream if isinstance(self.stream, str) else "the video"

    # -- frames --------------------------------------------------------------------------------
    @property
    def estimate(self):
        if self.count and self.limit:
            return min(self.count, self.limit)
        return self.count or self.limit or None

    def __iter__(self):
        self.read = 0
        frames = self._decode()
        try:
            for frame in frames:
                if self.limit and self.read >= self.limit:
                    return
                self.read += 1
                yield frame
        finally:
            frames.close()

    def _decode(self):
        if self.images is not None:
            for i in range(self.images.shape[0]):
                yield image_to_uint8(self.images[i])
        elif self.files is not None:
            for path in self.files:
                yield np.asarray(load_image(path, "driving image"))
        else:
            import av
            with av.open(self._rewound(), mode="r") as c:
                for frame in c.decode(video=0):
                    yield frame.to_ndarray(format="rgb24")

    # -- audio ---------------------------------------------------------------------------------
    def has_audio(self):
        if self.stream is None:
            return self.audio_dict is not None and self.audio_dict["waveform"].numel() > 0
        import av
        with av.open(self._rewound(), mode="r") as c:
            return bool(c.streams.audio)

    def audio(self):
        """The audio as ComfyUI's AUDIO ({"waveform": (1, C, S), "sample_rate"}), decoded as 'Get Video
        Components' decodes it, or None; cut to the frames read when the limit ended the reading."""
        audio = self.audio_dict if self.stream is None else self._decode_audio()
        if audio is not None and self.limit and self.read == self.limit:
            keep = int(round(self.read / self.fps * audio["sample_rate"]))
            audio = {**audio, "waveform": audio["waveform"][..., :keep]}
        return audio

    def _decode_audio(self):
        import av
        with av.open(self._rewound(), mode="r") as c:
            if not c.streams.audio:
                return None
            stream = c.streams.audio[0]
            chunks = [frame.to_ndarray() for packet in c.demux(stream) for frame in packet.decode()]
            if not chunks:
                return None
            waveform = torch.from_numpy(np.concatenate(chunks, axis=1)).unsqueeze(0)
            return {"waveform": waveform, "sample_rate": int(stream.sample_rate) if stream.sample_rate else 1}

    def audio_file(self, scratch=None):
        """A file holding the driving audio, for muxing into the result (None without audio): the
        video file itself, else a copy in the folder `scratch` (an in-memory video; AUDIO as WAV).
        The muxer cuts it to the video's length."""
        if not self.has_audio():
            return None
        if isinstance(self.stream, str):
            return self.stream
        if scratch is None:
            raise ValueError("audio_file: this driving input keeps its audio in memory; pass a scratch folder")
        if self.stream is None:
            return write_wav(self.audio_dict, os.path.join(scratch, "audio.wav"))
        path = os.path.join(scratch, "driving-audio.mp4")
        with open(path, "wb") as f:
            shutil.copyfileobj(self._rewound(), f)
        return path


def image_to_uint8(image):
    """IMAGE frame (H, W, C) float in [0, 1] → uint8 (H, W, 3), rounded (8-bit sources round-trip
    exactly)."""
    return image[..., :3].float().clamp(0, 1).mul(255).round().to(torch.uint8).cpu().numpy()


def _streams_itself(video):
    """Whether the VIDEO's class implements `get_stream_source` itself. The host interface's default
    implementation re-encodes in-memory frames (lossy, slow); such a VIDEO is read through
    `get_components()` instead. Told apart by the interface's abstract `get_components`."""
    for cls in type(video).__mro__:
        if "get_stream_source" in vars(cls):
            return not getattr(vars(cls).get("get_components"), "__isabstractmethod__", False)
    return False
