"""The one driving-frame reader: paths (video, image folder, image), VIDEO objects through their public
interface only (duck-typed fakes here; tests/test_nodes.py uses the host's own), IMAGE batches."""

import io
from abc import ABC, abstractmethod
from fractions import Fraction
from types import SimpleNamespace

import av
import numpy as np
import pytest
import torch
from PIL import Image

from conftest import moving_frames
from personalive_core.errors import InputError
from personalive_core.media.driving import DEFAULT_FPS, DrivingSource, image_to_uint8
from test_cli import write_video


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    d = tmp_path_factory.mktemp("driving")
    write_video(d / "drive.mp4", moving_frames(9, 48), fps=12)
    write_video(d / "silent.mp4", moving_frames(3, 48), fps=12, audio=False)
    (d / "frames").mkdir()
    frames = moving_frames(3, 40)
    for i, f in enumerate(frames):
        Image.fromarray(f).save(d / "frames" / f"{i:03d}.png")
    (d / "empty").mkdir()
    return d, frames


def decoded(source):
    return np.stack(list(source))


def test_video_file_is_read_lazily_with_rate_count_and_audio(media):
    d, _ = media
    source = DrivingSource(str(d / "drive.mp4"))
    assert source.fps == Fraction(12) and source.estimate == 9
    frames = decoded(source)
    assert frames.shape == (9, 48, 48, 3) and frames.dtype == np.uint8 and source.read == 9
    assert source.audio_file() == str(d / "drive.mp4")
    audio = source.audio()
    assert audio["sample_rate"] == 16000 and audio["waveform"].shape[0] == 1
    assert abs(audio["waveform"].shape[-1] - 12000) < 2048  # 9 frames at 12 fps, whole AAC frames
    silent = DrivingSource(str(d / "silent.mp4"))
    assert silent.audio() is None and silent.audio_file() is None


def test_limit_cuts_frames_and_audio(media):
    d, _ = media
    source = DrivingSource(str(d / "drive.mp4"), limit=5)
    assert source.estimate == 5 and len(decoded(source)) == 5
    assert source.audio()["waveform"].shape[-1] == round(5 / 12 * 16000)
    whole = DrivingSource(str(d / "drive.mp4"), limit=50)  # a limit the video does not reach cuts nothing
    assert len(decoded(whole)) == 9 and whole.audio()["waveform"].shape[-1] > round(9 / 12 * 16000) - 1024


def test_image_folder_and_single_image(media):
    d, frames = media
    folder = DrivingSource(d / "frames")
    assert folder.fps == DEFAULT_FPS == 25 and folder.estimate == 3
    assert np.array_equal(decoded(folder), np.stack(frames))
    assert folder.audio() is None and folder.audio_file() is None
    one = DrivingSource(str(d / "frames" / "001.png"))
    assert np.array_equal(decoded(one), frames[1][None])


@pytest.mark.parametrize(
    "path, message",
    [
        ("nope.mp4", "driving video not found: nope.mp4"),
        ("{empty}", "no images"),
        ("{bad}", "cannot open driving video"),
    ],
)
def test_bad_paths_are_explained(media, tmp_path, path, message):
    d, _ = media
    (tmp_path / "bad.mp4").write_bytes(b"not a video")
    path = path.format(empty=d / "empty", bad=tmp_path / "bad.mp4")
    with pytest.raises(InputError, match=message):
        DrivingSource(path, name="video")
    with pytest.raises(InputError, match="^video: "):
        DrivingSource(path, name="video")


def test_image_batch_rounds_to_uint8(media):
    _, frames = media
    batch = torch.from_numpy(np.stack(frames)).float() / 255
    source = DrivingSource(torch.cat([batch, torch.ones_like(batch[..., :1])], -1), limit=2)  # RGBA: alpha dropped
    assert source.fps == 25 and source.estimate == 2
    assert np.array_equal(decoded(source), np.stack(frames[:2]))
    assert image_to_uint8(torch.tensor([[[0.0, 0.5, 2.0]]])).tolist() == [[[0, 128, 255]]]
    with pytest.raises(InputError, match="driving_images: expected an IMAGE batch"):
        DrivingSource(torch.zeros(3, 8, 8), name="driving_images")
    with pytest.raises(InputError, match="got SimpleNamespace"):
        DrivingSource(SimpleNamespace())


# -- VIDEO objects: the host's interface, reproduced without importing the host ------------------------
class VideoInterface(ABC):
    """Like comfy_api's VideoInput: abstract get_components, a default get_stream_source that re-encodes."""

    @abstractmethod
    def get_components(self): ...

    def get_stream_source(self):
        raise AssertionError("the default stream source re-encodes the frames; it must not be used")


class FileVideo(VideoInterface):
    def __init__(self, source):
        self.source = source

    def get_components(self):
        raise AssertionError("a file-backed VIDEO must be streamed, not decoded whole")

    def get_stream_source(self):
        return self.source


class ComponentsVideo(VideoInterface):
    def __init__(self, images, audio, rate):
        self.parts = SimpleNamespace(images=images, audio=audio, frame_rate=rate)

    def get_components(self):
        return self.parts


@pytest.mark.parametrize("in_memory", [False, True])
def test_video_with_its_own_stream_source_is_decoded_from_it(media, tmp_path, in_memory):
    d, _ = media
    path = str(d / "drive.mp4")
    source = io.BytesIO(open(path, "rb").read()) if in_memory else path
    video = DrivingSource(FileVideo(source), limit=4)
    direct = DrivingSource(path, limit=4)
    assert video.fps == 12 and np.array_equal(decoded(video), decoded(direct))
    assert torch.equal(video.audio()["waveform"], direct.audio()["waveform"])
    audio_file = video.audio_file(str(tmp_path))
    assert audio_file == path if not in_memory else audio_file.startswith(str(tmp_path))
    assert DrivingSource(audio_file).estimate == 9  # the spilled copy is the whole file


def test_video_from_components_uses_them(media, tmp_path):
    _, frames = media
    images = torch.from_numpy(np.stack(frames)).float() / 255
    wave = torch.sin(torch.arange(8000) / 10.0)[None, None].repeat(1, 2, 1) * 0.5
    video = DrivingSource(ComponentsVideo(images, {"waveform": wave, "sample_rate": 8000}, Fraction(30000, 1001)))
    assert video.fps == Fraction(30000, 1001) and video.estimate == 3
    assert np.array_equal(decoded(video), np.stack(frames))
    assert video.audio()["waveform"] is wave
    with av.open(video.audio_file(str(tmp_path))) as c:  # written as WAV for the muxer
        a = c.streams.audio[0]
        assert (a.rate, a.channels) == (8000, 2) and sum(f.samples for f in c.decode(a)) == 8000
    silent = DrivingSource(ComponentsVideo(images, None, None))
    assert silent.fps == DEFAULT_FPS and silent.audio() is None and silent.audio_file(str(tmp_path)) is None
