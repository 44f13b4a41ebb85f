"""Driving frames from any source, read lazily: a video file, an image folder or one image (the
command line), a ComfyUI VIDEO or an IMAGE batch (the nodes).

Frames come out as uint8 RGB (H, W, 3), one decoded at a time, so an hour-long video never sits in
memory. A VIDEO is used through its public interface only (duck-typed, no host import): its own
`get_stream_source()` (a path or a file-like object) is decoded frame by frame; a VIDEO without
one (frames already in memory) gives its `get_components()` (`.images`, `.audio`, `.frame_rate`).

Video as phones and downloads deliver it: frames come out upright (the display matrix applied, as
players show them, `rotation.py`), with their presentation times (`times`: variable frame rates
and 30000/1001 kept exactly by the writer); a damaged packet is skipped, a file cut off mid-stream
gives the frames before the cut, and either is logged with where it happened.
"""

import os
import shutil
from collections import deque
from fractions import Fraction

import numpy as np
import torch

from ..errors import InputError
from .images import IMAGE_SUFFIXES, load_image
from .rotation import apply as turn, rotate_tag, upright_steps
from .video_io import write_wav

DEFAULT_FPS = Fraction(25)  # image folders, single images, IMAGE batches and videos without a rate


class DrivingSource:
    """Iterate for uint8 (H, W, 3) frames, at most `limit` of them (0 or None: all).

    `fps` (Fraction), `estimate` (frame count known beforehand, within the limit, else None),
    `read` (frames the last iteration yielded); `audio()` as an AUDIO dict, `audio_file()` as a
    file to mux. `name` prefixes error messages (the node input's name); `log(message)` hears of
    damaged or cut-off video.

    Video files also give `times` (with `keep_times` set, while iterating: a deque of the
    presentation times, in seconds from `start`, of the frames yielded and not yet taken by the
    writer), `time_base` (the stream's, for the writer) and `start` (seconds: the stream's start,
    where the audio is cut from); other sources have `times` None (frames at `fps`)."""

    def __init__(self, source, limit=0, name="", log=None):
        self.source, self.limit, self.name, self.where = source, limit or 0, name, f"{name}: " if name else ""
        self.log = log or (lambda message: None)
        self.images = self.files = self.stream = self.audio_dict = None
        self.fps, self.count, self.read = DEFAULT_FPS, None, 0
        self.times = self.time_base = None
        self.start = Fraction(0)
        self.end = None  # seconds from `start` to the end of the last frame read
        if isinstance(source, (str, os.PathLike)):
            self._open_path(os.fspath(source))
        elif isinstance(source, torch.Tensor):
            self._take_images(source)
        elif hasattr(source, "get_components"):
            self._open_video(source)
        else:
            raise InputError(
                f"{self.where}expected a video file, an image folder, a VIDEO or an IMAGE batch, "
                f"got {type(source).__name__}"
            )

    # -- opening -------------------------------------------------------------------------------
    def _open_path(self, path):
        if os.path.isdir(path):
            self.files = [os.path.join(path, f) for f in sorted(os.listdir(path)) if f.lower().endswith(IMAGE_SUFFIXES)]
            if not self.files:
                raise InputError(f"{self.where}no images ({', '.join(IMAGE_SUFFIXES)}) in driving folder {path}")
            self.count = len(self.files)
        elif not os.path.isfile(path):
            raise InputError(f"{self.where}driving video not found: {path}")
        elif os.path.getsize(path) == 0:
            raise InputError(f"{self.where}driving video {path} is empty (0 bytes): copy or export it again")
        elif path.lower().endswith(IMAGE_SUFFIXES):
            self.files, self.count = [path], 1
        else:
            self._open_stream(path)

    def _take_images(self, images):
        if images.dim() != 4 or images.shape[-1] < 3:
            raise InputError(
                f"{self.where}expected an IMAGE batch (frames, height, width, channels), got a tensor "
                f"of shape {tuple(images.shape)}"
            )
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
                self.time_base = v.time_base
                self.start = v.start_time * v.time_base if v.start_time is not None else Fraction(0)
        except InputError:
            raise
        except Exception as e:
            raise InputError(f"{self.where}cannot open driving video {self._label()}: {e}{self._hint()}") from e

    def _hint(self):
        """Why an mp4/mov that starts well cannot be opened: its index was never written."""
        try:
            if hasattr(self.stream, "read"):
                head = self._rewound().read(12)
            else:
                with open(self.stream, "rb") as f:
                    head = f.read(12)
        except OSError:
            return ""
        if head[4:8] == b"ftyp":
            return (
                ". The file has no index (moov): a recording cut off before it finished, or a download "
                "that stopped; it cannot be read as it is (a repair tool such as untrunc may recover it)"
            )
        return ". Is it a video file? Use an mp4, mov, mkv or webm video"

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

    def again(self):
        """The same frames once more, read independently (a second decoder), or None where the input
        cannot be read twice at once (a file-like object): paste-back re-reads the originals in step
        with the output instead of holding the ~20 frames in flight (2 GB at 8K)."""
        if self.stream is not None and not isinstance(self.stream, str):
            return None
        return DrivingSource(self.source, self.limit, self.name)

    keep_times = False  # set by the consumer of `times` (render_footage): unread times would pile up

    def __iter__(self):
        self.read = 0
        self.times = deque() if self.stream is not None and self.keep_times else None
        frames = self._decode()
        try:
            for frame in frames:
                self.read += 1
                yield frame
                if self.limit and self.read >= self.limit:  # before decoding one more: `end`, `times` stay exact
                    return
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
                yield from self._video_frames(c)

    def _video_frames(self, container):
        """Upright uint8 frames of the first video stream (display matrix applied); their times, from
        the stream's start, go to `self.times`. A damaged packet is skipped and reading goes on; where
        the data ends early, reading stops there; either is logged once, with where it happened."""
        import av

        stream = container.streams.video[0]
        steps, index, t, failure, skipped, recovered = None, -1, None, None, 0, False
        try:
            for packet in container.demux(stream):
                try:
                    decoded = packet.decode()
                except av.error.FFmpegError as e:
                    skipped += 1
                    failure = failure or (index, t, e)
                    continue
                recovered = recovered or (failure is not None and packet.size > 0)  # not just the flush
                for frame in decoded:
                    if steps is None:
                        steps = upright_steps(frame, rotate_tag(stream.metadata))
                    index += 1
                    previous, t = (
                        t,
                        (
                            frame.pts * frame.time_base - self.start
                            if frame.pts is not None
                            else (t + 1 / self.fps if t is not None else Fraction(0))
                        ),
                    )
                    self.end = t + (t - previous if previous is not None and t > previous else 1 / self.fps)
                    if self.times is not None:
                        self.times.append(t)
                    yield turn(frame.to_ndarray(format="rgb24"), steps)
        except av.error.FFmpegError as e:  # the container cannot be read further
            skipped += 1
            failure = failure or (index, t, e)
        self._report(
            container, stream, index, t, failure if not recovered else None, failure if recovered else None, skipped
        )

    def _report(self, container, stream, index, t, stop, damage, skipped):
        label = f"{self.where}driving video {self._label()}"
        if index < 0:
            reason = f": {(stop or damage)[2]}" if stop or damage else ""
            raise InputError(f"{label}: no frame could be decoded{reason}. The file is damaged or holds no picture")
        if stop is not None:
            self.log(
                f"{label}: reading stopped {_at(index, t)}: {stop[2]}. The file seems cut short or damaged; "
                f"the {index + 1} frames before are used"
            )
        elif damage is not None:
            self.log(
                f"{label}: skipped {skipped} damaged packet(s) {_at(*damage[:2])}: {damage[2]}; the frames "
                "that follow may show blocks or smears"
            )
        else:
            stated = (
                stream.duration * stream.time_base
                if stream.duration
                else Fraction(container.duration, 10**6)
                if container.duration
                else None
            )
            step = 1 / self.fps
            if stated is not None and t + step < stated - max(2 * step, Fraction(1, 2)):
                self.log(
                    f"{label}: the video ends {_at(index, t)} but says it lasts {float(stated):.2f} s. The "
                    f"file seems cut short; the {index + 1} frames it has are used"
                )

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
            end = self.end if self.end is not None else self.read / self.fps
            keep = round(end * audio["sample_rate"])
            audio = {**audio, "waveform": audio["waveform"][..., :keep]}
        return audio

    def _decode_audio(self):
        import av

        with av.open(self._rewound(), mode="r") as c:
            if not c.streams.audio:
                return None
            stream = c.streams.audio[0]
            chunks = []
            try:
                for packet in c.demux(stream):
                    chunks += [frame.to_ndarray() for frame in packet.decode()]
            except av.error.FFmpegError as e:  # damaged or cut off: the audio up to there
                self.log(f"{self.where}the audio of {self._label()} stops early ({e})")
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


def _at(index, t):
    """Where in the video: after frame `index` (its time `t`, seconds), or before the first frame."""
    return f"after frame {index} ({float(t):.2f} s)" if index >= 0 else "before the first frame"


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
