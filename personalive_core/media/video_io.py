"""Reading driving footage and writing results: video files, image folders, .npy arrays.

Frames travel as uint8 RGB arrays (H, W, 3). Reading is lazy (one decoded frame at a time), so
hour-long videos never sit in memory.
"""
import os
from fractions import Fraction

import numpy as np
from PIL import Image

from ..errors import InputError
from .images import IMAGE_SUFFIXES, load_image

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".gif", ".m4v")
DEFAULT_FPS = Fraction(25)


def square(image, size):
    """Centre-crop a PIL image to a square, then resize to size×size (bicubic)."""
    w, h = image.size
    if (w, h) == (size, size):
        return image
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    image = image.crop((left, top, left + side, top + side))
    return image.resize((size, size), Image.BICUBIC)


class DrivingSource:
    """A driving video, an image folder or a single image; iterate for uint8 frames."""

    def __init__(self, path):
        self.path = path
        if os.path.isdir(path):
            self.files = sorted(f for f in os.listdir(path) if f.lower().endswith(IMAGE_SUFFIXES))
            if not self.files:
                raise InputError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in driving folder {path}")
            self.kind, self.fps = "images", DEFAULT_FPS
        elif not os.path.isfile(path):
            raise InputError(f"driving video not found: {path}")
        elif path.lower().endswith(IMAGE_SUFFIXES):
            self.kind, self.fps, self.files = "image", DEFAULT_FPS, [path]
        else:
            self.kind = "video"
            self.fps = self._probe()

    def _probe(self):
        import av
        try:
            with av.open(self.path) as c:
                if not c.streams.video:
                    raise InputError(f"{self.path} has no video stream")
                rate = c.streams.video[0].average_rate
                return Fraction(rate) if rate else DEFAULT_FPS
        except InputError:
            raise
        except Exception as e:
            raise InputError(f"cannot open driving video {self.path}: {e}") from e

    def __iter__(self):
        if self.kind == "video":
            import av
            with av.open(self.path) as c:
                for frame in c.decode(video=0):
                    yield frame.to_ndarray(format="rgb24")
        else:
            folder = self.path if self.kind == "images" else ""
            for f in self.files:
                yield np.asarray(load_image(os.path.join(folder, f), "driving image"))

    def has_audio(self):
        if self.kind != "video":
            return False
        import av
        with av.open(self.path) as c:
            return bool(c.streams.audio)


def limited(frames, limit):
    """The first `limit` frames (all of them for None or 0)."""
    for i, frame in enumerate(frames):
        if limit and i >= limit:
            return
        yield frame


FRAGMENT_SECONDS = 1  # a fragment (moof + mdat) reaches the disk at least this often


class VideoWriter:
    """H.264 MP4 written frame by frame; fragmented so a file cut short still plays.

    Fragments are cut at keyframes and at least every FRAGMENT_SECONDS, so a process killed
    outright (SIGKILL, power loss) leaves every frame up to about a second (plus the encoder's
    lookahead) before the end. Audio of `audio_from` (if any) is added at `close()`, trimmed to
    the video's length; until then the video is written to `path + ".partial.mp4"`."""

    def __init__(self, path, fps, size, audio_from=None, crf=18):
        import av
        self.path, self.fps, self.audio_from = path, Fraction(fps), audio_from
        self.tmp = path + ".partial.mp4" if audio_from else path
        self.container = av.open(self.tmp, "w", options={"movflags": "frag_keyframe+empty_moov+default_base_moof",
                                                         "frag_duration": str(int(FRAGMENT_SECONDS * 1e6)), "flush_packets": "1"})
        self.stream = self.container.add_stream("libx264", rate=self.fps)
        self.stream.width, self.stream.height = size[1], size[0]
        self.stream.pix_fmt = "yuv420p"
        self.stream.options = {"crf": str(crf)}
        self.frames = 0

    def write(self, frame_u8):
        import av
        for packet in self.stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame_u8), format="rgb24")):
            self.container.mux(packet)
        self.frames += 1

    def close(self, log=None):
        """Flush and close; then add the audio. If adding the audio fails or is interrupted (a
        second Ctrl-C), the video-only file takes its place, so `path` is always playable."""
        try:
            for packet in self.stream.encode():
                self.container.mux(packet)
        finally:
            self.container.close()
        if self.audio_from:
            try:
                mux_audio(self.tmp, self.audio_from, self.path, self.frames / self.fps)
            except BaseException as e:
                os.replace(self.tmp, self.path)
                if not isinstance(e, Exception):
                    raise
                if log:
                    log(f"warning: could not add the audio of {self.audio_from} ({e}); {self.path} has video only")
            else:
                if os.path.exists(self.tmp):
                    os.remove(self.tmp)


def mux_audio(video_path, audio_source, out_path, duration):
    """Copy video packets of `video_path` and the audio of `audio_source` (cut at `duration`
    seconds) into `out_path`; without audio in the source, the video is just renamed."""
    import av
    with av.open(audio_source) as src:
        if not src.streams.audio:
            os.replace(video_path, out_path)
            return
    tmp = out_path + ".audio" + os.path.splitext(out_path)[1]  # whole, then renamed: never half a file
    try:
        _mux(video_path, audio_source, tmp, duration)
        os.replace(tmp, out_path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _mux(video_path, audio_source, out_path, duration):
    import av
    with av.open(video_path) as vin, av.open(audio_source) as ain, av.open(out_path, "w") as out:
        vs = out.add_stream_from_template(vin.streams.video[0])
        a_in = ain.streams.audio[0]
        as_ = out.add_stream("aac", rate=a_in.rate or 44100)
        for packet in vin.demux(vin.streams.video[0]):
            if packet.dts is None:
                continue
            packet.stream = vs
            out.mux(packet)
        for frame in ain.decode(a_in):
            if frame.time is not None and frame.time >= float(duration):
                break
            frame.pts = None
            for packet in as_.encode(frame):
                out.mux(packet)
        for packet in as_.encode():
            out.mux(packet)


def to_uint8(frames):
    """float frames in [0, 1] → uint8 with rounding."""
    return (np.clip(frames, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
