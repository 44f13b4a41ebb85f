"""Video files and frames: the centred square, H.264 mp4 written frame by frame with the driving audio.

Frames travel as uint8 RGB arrays (H, W, 3). Pictures are read by `images.load_image`, driving input
by `driving.DrivingSource`.
"""

import os
from fractions import Fraction

import numpy as np
from PIL import Image


def square(image, size):
    """Centre-crop a PIL image to a square, then resize to size×size (bicubic)."""
    w, h = image.size
    if (w, h) == (size, size):
        return image
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    image = image.crop((left, top, left + side, top + side))
    return image.resize((size, size), Image.BICUBIC)


FRAGMENT_SECONDS = 1  # a fragment (moof + mdat) reaches the disk at least this often


class VideoWriter:
    """H.264 MP4 written frame by frame; fragmented so a file cut short still plays.

    Fragments are cut at keyframes and at least every FRAGMENT_SECONDS, so a process killed
    outright (SIGKILL, power loss) leaves every frame up to about a second (plus the encoder's
    lookahead) before the end. Audio of `audio_from` (if any) is added at `close()`, cut to the
    video's span (to the sample); until then the video is written to `path + ".partial.mp4"`.

    Timing: `write(frame, time)` puts the frame at `time` (seconds, a Fraction: the driving frame's
    presentation time), so a variable-frame-rate input keeps its timing and its audio stays in
    sync; in the driving stream's `time_base` an exact rate (30000/1001) stays exact. Frames
    without a time follow the previous one at 1/fps (warm-up frames first, image input).
    `low_latency` (live takes): the encoder holds no frames back (x264 zerolatency: no lookahead),
    so a crash loses only the last fragment, about a second."""

    def __init__(self, path, fps, size, audio_from=None, crf=18, time_base=None, audio_start=0, low_latency=False):
        import av

        self.path, self.fps, self.audio_from = path, Fraction(fps), audio_from
        self.time_base = Fraction(time_base) if time_base else 1 / self.fps
        self.audio_start = audio_start  # seconds of the audio source where the first timed frame starts
        self.tmp = path + ".partial.mp4" if audio_from else path
        self.container = av.open(
            self.tmp,
            "w",
            options={
                "movflags": "frag_keyframe+empty_moov+default_base_moof",
                "frag_duration": str(int(FRAGMENT_SECONDS * 1e6)),
                "flush_packets": "1",
            },
        )
        self.stream = self.container.add_stream("libx264", rate=self.fps)
        self.stream.width, self.stream.height = size[1], size[0]
        self.stream.pix_fmt = "yuv420p"
        self.stream.codec_context.time_base = self.time_base
        # no B-frames: with them the fragmented mp4 (no edit list) starts 2 frames late, off the audio
        self.stream.options = {"crf": str(crf), "bf": "0", **({"tune": "zerolatency"} if low_latency else {})}
        self.frames = 0
        self.lead = None  # output time before the first timed frame (warm-up frames)
        self.last_pts, self.end = None, Fraction(0)

    def write(self, frame_u8, time=None):
        import av

        step = 1 / self.fps
        if time is None:
            start = self.end
        else:
            if self.lead is None:
                self.lead = self.end
            start = Fraction(time) + self.lead
        pts = round(start / self.time_base)
        if self.last_pts is not None and pts <= self.last_pts:  # a repeated or backward time (damaged input)
            pts = self.last_pts + 1
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame_u8), format="rgb24")
        frame.pts, frame.time_base = pts, self.time_base
        for packet in self.stream.encode(frame):
            self.container.mux(packet)
        previous = self.last_pts
        self.last_pts = pts
        # a frame lasts until the next one; the last one as long as the one before (or 1/fps)
        self.end = pts * self.time_base + ((pts - previous) * self.time_base if previous is not None else step)
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
                start = self.audio_start - (self.lead or 0)  # warm-up frames play over silence
                mux_audio(self.tmp, self.audio_from, self.path, start, self.end, log)
            except BaseException as e:
                os.replace(self.tmp, self.path)
                if not isinstance(e, Exception):
                    raise
                if log:
                    log(f"warning: could not add the audio of {self.audio_from} ({e}); {self.path} has video only")
            else:
                if os.path.exists(self.tmp):
                    os.remove(self.tmp)


def mux_audio(video_path, audio_source, out_path, start, duration, log=None):
    """Copy video packets of `video_path` and `duration` seconds of the audio of `audio_source`
    from its second `start` into `out_path`; without audio in the source, the video is just renamed."""
    import av

    with av.open(audio_source) as src:
        if not src.streams.audio:
            os.replace(video_path, out_path)
            return
    tmp = out_path + ".audio" + os.path.splitext(out_path)[1]  # whole, then renamed: never half a file
    try:
        _mux(video_path, audio_source, tmp, start, duration, log)
        os.replace(tmp, out_path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _mux(video_path, audio_source, out_path, start, duration, log=None):
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
        silence = max(Fraction(0), -Fraction(start))  # audio begins this late in the output (warm-up frames)
        samples = 0  # explicit times from 0: the muxer then hides the encoder's priming samples
        for frame in _audio_span(ain, a_in, max(Fraction(start), Fraction(0)), duration - silence, log):
            for f in ([_silent_like(frame, round(silence * frame.sample_rate))] if silence else []) + [frame]:
                f.pts, f.time_base = samples, Fraction(1, f.sample_rate)
                samples += f.samples
                for packet in as_.encode(f):
                    out.mux(packet)
            silence = 0
        for packet in as_.encode():
            out.mux(packet)


def _audio_span(container, stream, start, duration, log=None):
    """Decoded audio frames covering [start, start + duration) seconds of `stream`, the first and
    last cut to the sample; reading stops at damaged audio (logged; what came before is kept)."""
    import av

    end, t = start + duration, None
    try:
        for frame in container.decode(stream):
            rate = frame.sample_rate
            t = Fraction(frame.pts * frame.time_base) if frame.pts is not None else (t or Fraction(0))
            n = frame.samples
            a = max(0, round((start - t) * rate))
            b = min(n, round((end - t) * rate))
            t += Fraction(n, rate)
            if b <= 0:
                break
            if a >= n:
                continue
            yield frame if (a, b) == (0, n) else _cut(frame, a, b)
    except av.error.FFmpegError as e:
        if log:
            log(f"warning: the driving audio stops early at {float(t or 0):.2f} s ({e})")


def _silent_like(frame, samples):
    import av

    planar = frame.format.is_planar
    channels = len(frame.layout.channels)
    shape = (channels, samples) if planar else (1, samples * channels)
    out = av.AudioFrame.from_ndarray(
        np.zeros(shape, frame.to_ndarray().dtype), format=frame.format.name, layout=frame.layout.name
    )
    out.sample_rate = frame.sample_rate
    return out


def _cut(frame, a, b):
    """Samples a..b of an audio frame."""
    import av

    planar = frame.format.is_planar
    data = frame.to_ndarray()
    channels = 1 if planar else len(frame.layout.channels)
    data = data[:, a:b] if planar else data[:, a * channels : b * channels]
    out = av.AudioFrame.from_ndarray(np.ascontiguousarray(data), format=frame.format.name, layout=frame.layout.name)
    out.sample_rate = frame.sample_rate
    return out


def write_wav(audio, path):
    """ComfyUI AUDIO ({"waveform": (B, C, S), "sample_rate"}) → 16-bit WAV (first item, ≤ 2 channels)."""
    import av

    wave = audio["waveform"][0].float().clamp(-1, 1).cpu().numpy()
    if wave.shape[0] > 2:
        wave = wave[:2]
    rate = int(audio["sample_rate"])
    layout = "mono" if wave.shape[0] == 1 else "stereo"
    with av.open(path, "w") as c:
        stream = c.add_stream("pcm_s16le", rate=rate, layout=layout)
        for start in range(0, wave.shape[1], 4096):
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(wave[:, start : start + 4096]), format="fltp", layout=layout
            )
            frame.sample_rate, frame.pts = rate, start
            for packet in stream.encode(frame):
                c.mux(packet)
        for packet in stream.encode():
            c.mux(packet)
    return path


def to_uint8(frames):
    """float frames in [0, 1] → uint8 with rounding."""
    return (np.clip(frames, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
