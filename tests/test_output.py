"""Output timing: frames keep the driving video's presentation times (variable frame rate, exact
NTSC rates), and the audio stays in sync with them, checked by tones that start on marked frames."""

from fractions import Fraction

import av
import numpy as np
import pytest

from media_factory import audio_onsets, write_video
from personalive_core.media.output import Output

MARKS = (40, 170, 290)  # frames drawn white, with a tone starting at their presentation time
SYNC_TOL = 0.005  # s: tone onsets found to the sample (1/16000 s); AAC smears an onset by about a millisecond


def marked_frames(n, size=64):
    for i in range(n):
        yield np.full((size, size, 3), 255 if i in MARKS else 20, np.uint8)


def decode(path):
    """(frames, presentation times as Fractions, time base, average rate) of a file's video."""
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        frames, times = zip(*[(f.to_ndarray(format="rgb24"), f.pts * f.time_base) for f in c.decode(video=0)])
        return list(frames), list(times), v.time_base, v.average_rate


def rewrite(src, out, lead_frames=0):
    """What the render path does with a video: every frame at its own time (from the first frame),
    after `lead_frames` frames without a time (warm-up)."""
    frames, times, tb, rate = decode(src)
    o = Output(str(out), Fraction(rate), str(src), time_base=tb, audio_start=times[0])
    for _ in range(lead_frames):
        o.write(np.zeros_like(frames[0]))
    for frame, t in zip(frames, times):
        o.write(frame, t - times[0])
    o.close()
    return times


def bright_times(path):
    frames, times, _, _ = decode(path)
    return [float(t) for f, t in zip(frames, times) if f.mean() > 128]


@pytest.fixture(scope="module")
def vfr(tmp_path_factory):
    """Phone-like variable frame rate, 300 frames in 10.6 s: 60 fps, then 20 fps (the light dims), then
    30 fps with jitter."""
    rng = np.random.default_rng(1)
    steps = (
        [Fraction(1, 60)] * 100
        + [Fraction(1, 20)] * 100
        + list(rng.choice([Fraction(1, 36), Fraction(1, 30), Fraction(1, 25)], 99))
    )
    times = [Fraction(0)] + [Fraction(t) for t in np.cumsum(steps)]
    path = tmp_path_factory.mktemp("vfr") / "vfr.mp4"
    return write_video(path, marked_frames(300), fps=30, times=times, beeps=[float(times[k]) for k in MARKS]), times


def test_variable_frame_rate_keeps_times_and_lip_sync(vfr, tmp_path):
    src, times = vfr
    rewrite(src, tmp_path / "o.mp4")
    _, out_times, _, _ = decode(tmp_path / "o.mp4")
    assert out_times == times  # exactly, in the input's time base
    marks = bright_times(tmp_path / "o.mp4")
    assert marks == [float(times[k]) for k in MARKS]
    # the tones start on the marked frames (frames placed by index at the average rate would miss them
    # by up to this much)
    average = len(times) / float(times[-1] + Fraction(1, 30))
    assert max(abs(k / average - float(times[k])) for k in MARKS) > 0.5
    assert np.abs(audio_onsets(tmp_path / "o.mp4") - marks).max() < SYNC_TOL


@pytest.mark.parametrize("rate", [Fraction(30000, 1001), Fraction(60000, 1001)])
def test_ntsc_rates_stay_exact(tmp_path, rate):
    src = write_video(tmp_path / "ntsc.mp4", marked_frames(300), fps=rate, beeps=[float(k / rate) for k in MARKS])
    times = rewrite(src, tmp_path / "o.mp4")
    _, out_times, _, out_rate = decode(tmp_path / "o.mp4")
    assert Fraction(out_rate) == rate and out_times == times == [i / rate for i in range(300)]
    assert np.abs(audio_onsets(tmp_path / "o.mp4") - bright_times(tmp_path / "o.mp4")).max() < SYNC_TOL


def test_warmup_frames_come_first_and_the_audio_waits_for_them(vfr, tmp_path):
    src, times = vfr
    rewrite(src, tmp_path / "o.mp4", lead_frames=12)
    _, out_times, tb, _ = decode(tmp_path / "o.mp4")
    shifts = {out - t for out, t in zip(out_times[12:], times)}
    rate = decode(src)[3]  # warm-up frames last 1 / the average rate each, each rounded to the time base
    assert len(shifts) == 1 and abs(shifts.pop() - 12 / Fraction(rate)) <= 12 * tb / 2
    assert np.abs(audio_onsets(tmp_path / "o.mp4") - bright_times(tmp_path / "o.mp4")).max() < SYNC_TOL
