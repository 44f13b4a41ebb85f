"""The driving reader on videos as phones and downloads deliver them: rotated and mirrored (display
matrix), variable frame rate, cut off mid-stream, damaged in the middle, empty or not media at all,
8K and 4000×300 frames (bounded memory)."""

import tracemalloc
from fractions import Fraction

import cv2
import numpy as np
import pytest

from media_factory import corrupt, noisy_frames, quadrant_colours, quadrant_picture, truncate, write_video
from personalive_core.config import StreamConfig
from personalive_core.errors import InputError
from personalive_core.media.driving import DrivingSource

UPRIGHT = quadrant_picture(48, 80)  # landscape: a missed quarter turn shows in the shape
COLOUR_TOL = 12  # grey levels: H.264 (yuv420p) error in the centre of a flat quadrant


def stored(upright, rotation, hflip=False):
    """The pixels a camera stores for `upright` with this display matrix (PyAV's convention: turn
    `rotation` degrees counter-clockwise, then mirror)."""
    return np.ascontiguousarray(np.rot90(upright[:, ::-1] if hflip else upright, -rotation // 90))


def read(path, **kw):
    messages = []
    source = DrivingSource(str(path), log=messages.append, **kw)
    frames = list(source)
    return source, frames, messages


def assert_upright(frame):
    assert frame.shape == UPRIGHT.shape
    assert np.abs(quadrant_colours(frame) - quadrant_colours(UPRIGHT)).max() < COLOUR_TOL


@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_rotated_video_is_upright_as_players_show_it(tmp_path, rotation):
    path = write_video(tmp_path / "r.mp4", [stored(UPRIGHT, rotation)] * 3, rotation=rotation, audio=False)
    _, frames, _ = read(path)
    assert len(frames) == 3
    for frame in frames:
        assert_upright(frame)
    ok, shown = cv2.VideoCapture(str(path)).read()  # OpenCV's FFmpeg backend turns by the same metadata
    assert ok and np.abs(shown[..., ::-1].astype(int) - frames[0]).mean() < 3


@pytest.mark.parametrize("rotation", [0, 90, 180, 270])
def test_mirrored_video_is_upright(tmp_path, rotation):
    path = write_video(
        tmp_path / "m.mp4", [stored(UPRIGHT, rotation, hflip=True)] * 2, rotation=rotation, hflip=True, audio=False
    )
    for frame in read(path)[1]:
        assert_upright(frame)


def test_rotate_tag_without_display_matrix(tmp_path):
    """Matroska keeps a `rotate` tag as plain metadata (older FFmpeg builds exposed only the tag)."""
    import av

    path = tmp_path / "tag.mkv"
    with av.open(str(path), "w") as c:
        v = c.add_stream("libx264", rate=25)
        v.width, v.height, v.pix_fmt = 48, 80, "yuv420p"
        v.metadata["rotate"] = "90"  # clockwise, by the tag's convention
        for p in v.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(np.rot90(UPRIGHT, 1)), format="rgb24")):
            c.mux(p)
        for p in v.encode():
            c.mux(p)
    assert_upright(read(path)[1][0])


def test_variable_frame_rate_times(tmp_path):
    times = [Fraction(0)] + [Fraction(t) for t in np.cumsum([Fraction(1, 60)] * 5 + [Fraction(1, 15)] * 5)]
    path = write_video(tmp_path / "vfr.mp4", noisy_frames(11, 32, 32), fps=30, times=times)
    source = DrivingSource(str(path))
    source.keep_times = True
    got = []
    for _ in source:
        got.append(source.times.popleft())
    assert got == times and source.time_base == Fraction(1, 90000) and source.start == 0


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """40 frames of 25 fps with audio, in an mp4 with its index first (a cut keeps the index)."""
    d = tmp_path_factory.mktemp("clip")
    return write_video(d / "clip.mp4", noisy_frames(40, 96, 128), options={"movflags": "faststart"})


def test_truncated_video_gives_what_was_decoded_and_says_where(clip, tmp_path):
    _, frames, messages = read(truncate(clip, tmp_path / "cut.mp4", 0.6))
    assert 5 <= len(frames) < 40
    assert len(messages) == 1 and f"after frame {len(frames) - 1} " in messages[0] and "cut.mp4" in messages[0]


def test_truncated_stream_without_error_is_reported(tmp_path):
    """A Matroska file cut off decodes to its cut without an error; its stated duration tells."""
    path = write_video(tmp_path / "clip.mkv", noisy_frames(40, 96, 128), fmt="matroska")
    _, frames, messages = read(truncate(path, tmp_path / "cut.mkv", 0.5))
    assert 5 <= len(frames) < 40
    assert len(messages) == 1 and "cut short" in messages[0] and f"after frame {len(frames) - 1} " in messages[0]


def test_damaged_packets_are_skipped_and_counted(clip, tmp_path):
    _, frames, messages = read(corrupt(clip, tmp_path / "bad.mp4", at=0.5, nbytes=3000))
    assert 10 <= len(frames) <= 40
    assert all(f.shape == (96, 128, 3) for f in frames)
    assert messages and "bad.mp4" in messages[0]


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "is empty (0 bytes)"),
        (b"this is a text file, not a video" * 10, "cannot open driving video"),
        ("moovless", "index"),  # an mp4 cut off while recording: its index (moov) was never written
    ],
)
def test_unreadable_videos_name_the_file(tmp_path, content, message):
    path = tmp_path / "v.mp4"
    if content == "moovless":
        plain = write_video(tmp_path / "plain.mp4", noisy_frames(10, 64, 64))
        truncate(plain, path, 0.7)
    else:
        path.write_bytes(content)
    with pytest.raises(InputError) as e:
        DrivingSource(str(path))
    assert str(path) in str(e.value) and message in str(e.value)


# -- big and extreme frames: bounded memory ----------------------------------------------------------
def simulate_stream(reframer, source, lag=20):
    """Model frames through `reframer` as the stream returns them, `lag` frames late (the stream's
    window); generated frames are the crops themselves. → the last output frame."""
    from collections import deque

    waiting, out = deque(), None
    for patch in reframer.driving(source, originals=source.again()):
        waiting.append(patch)
        if len(waiting) > lag:
            out = reframer.output(waiting.popleft().astype(np.float32) / 255)
    while waiting:
        out = reframer.output(waiting.popleft().astype(np.float32) / 255)
    return out


def test_paste_into_driving_holds_no_original_frames(tmp_path):
    """Outputs come ~20 frames after their driving frame; the originals for paste-back are read again
    in step with the output instead of being held (at 8K those 20 frames would be 2 GB)."""
    from personalive_core.pipelines.footage import Reframer

    h, w = 540, 960
    path = write_video(tmp_path / "v.mp4", (quadrant_picture(h, w) for _ in range(30)), audio=False, preset="ultrafast")
    source = DrivingSource(str(path))
    reframer = Reframer(StreamConfig(size=64).replace(crop="auto", paste_into="driving"))
    held = []
    output = reframer.output

    def spy(frame, warmup=False):
        held.append(sum(original is not None for original, _ in reframer.pending))
        return output(frame, warmup)

    reframer.output = spy
    tracemalloc.start()
    try:
        last = simulate_stream(reframer, source)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert last.shape == (h, w, 3) and max(held) == 0 and len(held) == 30
    # the frame decoded, read again and pasted, and paste-back's float strips (measured 7.5 frames);
    # holding the 20 frames in flight would add 20
    assert peak < 10 * h * w * 3


@pytest.mark.parametrize(
    "h, w, frames", [(4320, 7680, 2), (300, 4000, 6), (4000, 300, 6)], ids=["8K", "4000x300", "300x4000"]
)
def test_huge_and_extreme_frames_get_a_crop_in_bounded_memory(tmp_path, h, w, frames):
    from personalive_core.pipelines.footage import Reframer

    path = write_video(
        tmp_path / "v.mp4", (quadrant_picture(h, w) for _ in range(frames)), audio=False, preset="ultrafast"
    )
    source = DrivingSource(str(path))
    reframer = Reframer(StreamConfig(size=64).replace(crop="auto", paste_into="driving"))
    crops = []
    tracemalloc.start()
    try:
        for patch in reframer.driving(source, originals=source.again()):
            crops.append(patch.shape)
            pasted = reframer.output(patch.astype(np.float32) / 255)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert crops == [(64, 64, 3)] * frames and pasted.shape == (h, w, 3)
    # decoded frame, its second read for paste-back, the pasted copy, the float face region: < 6 frames
    assert peak < 6 * h * w * 3


# -- through the command line --------------------------------------------------------------------------
def cli_render(weights, tmp_path, driving, out, *extra):
    from PIL import Image

    from conftest import SIZE
    from personalive_core.cli.main import main

    ref = tmp_path / "ref.png"
    Image.fromarray(quadrant_picture(96, 96)).save(ref)
    return main(
        [
            "render",
            "--weights",
            weights,
            "--reference",
            str(ref),
            "--size",
            str(SIZE),
            "--driving",
            str(driving),
            "--out",
            str(out),
            *extra,
        ]
    )


def decoded_times(path):
    import av

    with av.open(str(path)) as c:
        return [f.pts * f.time_base for f in c.decode(video=0)], bool(c.streams.audio)


def test_cli_cut_off_video_renders_what_is_there(tiny_weights, clip, tmp_path, capsys):
    cut = truncate(clip, tmp_path / "cut.mp4", 0.6)
    read_frames = len(list(DrivingSource(str(cut))))
    out = tmp_path / "o.mp4"
    assert cli_render(tiny_weights, tmp_path, cut, out) == 0
    err = capsys.readouterr().err
    assert f"driving video {cut}: reading stopped after frame {read_frames - 1} " in err
    times, audio = decoded_times(out)  # a playable file with every frame that could be read, and the audio
    assert len(times) == read_frames and audio


def test_cli_keeps_variable_frame_times(tiny_weights, tmp_path):
    times = [Fraction(0)] + [Fraction(t) for t in np.cumsum([Fraction(1, 50)] * 4 + [Fraction(1, 10)] * 4)]
    vfr = write_video(tmp_path / "vfr.mp4", noisy_frames(9, 64, 64), fps=25, times=times)
    out = tmp_path / "o.mp4"
    assert cli_render(tiny_weights, tmp_path, vfr, out) == 0
    assert decoded_times(out)[0] == times


def test_cli_empty_video_exits_2(tiny_weights, tmp_path, capsys):
    (tmp_path / "empty.mov").write_bytes(b"")
    assert cli_render(tiny_weights, tmp_path, tmp_path / "empty.mov", tmp_path / "o.mp4") == 2
    assert f"driving video {tmp_path / 'empty.mov'} is empty (0 bytes)" in capsys.readouterr().err


def test_video_without_a_decodable_frame_is_an_error(clip, tmp_path):
    cut = truncate(clip, tmp_path / "head.mp4", 0.03)  # the index and a piece of the first frame
    with pytest.raises(InputError, match=f"driving video {cut}: no frame could be decoded"):
        list(DrivingSource(str(cut)))
