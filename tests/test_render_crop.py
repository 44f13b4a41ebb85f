"""`render --crop auto --paste-into reference` on synthetic real-world-like footage: non-square frames (a
1920×1080 / 1080×1920 layout scaled down to 320×180 / 180×320 for speed) with a drawn face the
detectors find, a frame without a face, output at the original size, untouched outside the mask."""

import math

import av
import numpy as np
import pytest
from PIL import Image

from conftest import SIZE
from test_cli import write_video
from test_face_crop import background, frame_with_face
from personalive_core.media import face_crop as fc
from personalive_core.media.face_track import FaceTracker
from personalive_core.cli.main import main
from personalive_core.pipelines.footage import Reframer
from personalive_core.media.driving import DrivingSource

NO_FACE = 3  # the driving frame without a face


def driving_path(t):
    """(cx, cy, side) of the face in the 180×320 (portrait) driving video at frame t."""
    return 90 + 6 * math.sin(t / 2), 150 + 4 * t, 56 + t


@pytest.fixture(scope="module")
def footage(tmp_path_factory):
    d = tmp_path_factory.mktemp("footage")
    Image.fromarray(frame_with_face(180, 320, 170, 85, 60)).save(d / "ref.png")  # landscape
    Image.fromarray(frame_with_face(181, 321, 150, 90, 60, seed=4)).save(d / "ref_odd.png")
    Image.fromarray(background(181, 321, seed=9)).save(d / "ref_noface.png")
    frames = [
        background(320, 180, seed=t) if t == NO_FACE else frame_with_face(320, 180, *driving_path(t), seed=t)
        for t in range(7)
    ]
    write_video(d / "drive.mp4", frames)  # portrait, with audio
    return d


def render(weights, footage, out, *extra, reference="ref.png"):
    return main(
        [
            "render",
            "--weights",
            weights,
            "--reference",
            str(footage / reference),
            "--size",
            str(SIZE),
            "--driving",
            str(footage / "drive.mp4"),
            "--out",
            str(out),
            *extra,
        ]
    )


def outside_disc(info, margin=1.06):
    """Pixels of the original farther than the crop box's inscribed circle (× margin: the mask,
    0 from that circle outwards at crop size, is upscaled bilinearly to the box, a 64-pixel crop
    to ~100 pixels here, so it reaches about one crop pixel, 3 % of the radius, past the circle)."""
    x0, y0, x1, y1 = info.box
    yy, xx = np.mgrid[: info.image_hw[0], : info.image_hw[1]]
    return np.hypot(xx + 0.5 - (x0 + x1) / 2, yy + 0.5 - (y0 + y1) / 2) / ((x1 - x0) / 2) > margin


def test_paste_into_reference_keeps_reference_size_and_pixels(tiny_weights, footage, tmp_path, capsys):
    out = tmp_path / "o.npy"
    assert render(tiny_weights, footage, out, "--crop", "auto", "--paste-into", "reference") == 0
    frames = np.load(out)
    ref = np.asarray(Image.open(footage / "ref.png").convert("RGB"))
    assert frames.shape == (7, 180, 320, 3)
    # the crop the CLI used is the detected face's square
    _, info = fc.crop(ref, fc.find_crop_box(ref), SIZE)
    outside = outside_disc(info)
    expected = ref.astype(np.float32) / 255
    for f in frames:
        assert np.array_equal(f[outside], expected[outside])  # exactly the reference outside the mask
        assert not np.array_equal(f, expected)  # the face was pasted
    assert not np.array_equal(frames[0], frames[-1])  # and it moves
    err = capsys.readouterr().err
    assert f"no face found in 1 of 7 driving frames (frames {NO_FACE})" in err


def test_paste_into_driving_follows_the_tracked_face(tiny_weights, footage, tmp_path, capsys, monkeypatch):
    pending = []
    output = Reframer.output

    def spy(self, frame, warmup=False):
        pending.append(len(self.pending))
        return output(self, frame, warmup)

    monkeypatch.setattr(Reframer, "output", spy)
    out = tmp_path / "o.npy"
    assert render(tiny_weights, footage, out, "--crop", "auto", "--paste-into", "driving", "--keep-warmup") == 0
    frames = np.load(out)
    assert frames.shape == (12 + 7, 320, 180, 3)  # warm-up first, then one per driving frame
    assert max(pending) <= 20  # only frames still in flight are held
    originals = list(DrivingSource(str(footage / "drive.mp4")))
    tracker = FaceTracker()
    infos = [fc.crop(o, tracker.update(o), SIZE)[1] for o in originals]
    for i, f in enumerate(frames):
        j = max(i - 12, 0)  # warm-up frames are pasted into the first driving frame
        outside = outside_disc(infos[j])
        assert np.array_equal(f[outside], originals[j][outside].astype(np.float32) / 255), i
        assert not np.array_equal(f, originals[j].astype(np.float32) / 255), i
    # the face moved down the frame; the crop followed it
    assert infos[-1].box[1] > infos[0].box[1] + 15
    assert infos[NO_FACE].box == infos[NO_FACE - 1].box  # no face: the last box again
    assert "no face found in 1 of 7 driving frames" in capsys.readouterr().err


def test_mp4_with_odd_size_and_no_face_in_reference(tiny_weights, footage, tmp_path, capsys):
    out = tmp_path / "o.mp4"
    assert (
        render(
            tiny_weights,
            footage,
            out,
            "--crop",
            "auto",
            "--paste-into",
            "reference",
            "--max-frames",
            "4",
            reference="ref_noface.png",
        )
        == 0
    )
    err = capsys.readouterr().err
    assert "no face found in the reference" in err and "odd side" in err
    with av.open(str(out)) as c:
        v = c.streams.video[0]
        assert (v.width, v.height) == (322, 182) and c.streams.audio
        assert sum(1 for _ in c.decode(video=0)) == 4


def test_crop_without_paste_back_gives_model_size(tiny_weights, footage, tmp_path):
    out = tmp_path / "pngs"
    assert render(tiny_weights, footage, out, "--crop", "auto", "--max-frames", "2", reference="ref_odd.png") == 0
    shapes = {np.asarray(Image.open(p)).shape for p in out.iterdir()}
    assert shapes == {(SIZE, SIZE, 3)} and len(list(out.iterdir())) == 2


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--paste-into", "reference"],
            "paste_into 'reference' needs the reference picture's face crop: use crop 'auto'",
        ),
        (["--paste-into", "driving"], "--paste-into 'driving' needs crop 'auto'"),
        (["--crop", "auto", "--crop-scale", "0.5"], "--crop-scale 0.5"),
        (["--crop", "auto", "--feather", "0"], "--feather 0"),
    ],
)
def test_bad_crop_options_exit_2(tiny_weights, footage, tmp_path, capsys, args, message):
    assert render(tiny_weights, footage, tmp_path / "o.npy", *args) == 2
    assert message in capsys.readouterr().err


def test_rotated_phone_video_pastes_into_upright_frames(tiny_weights, footage, tmp_path):
    """The portrait driving video as a phone stores it: landscape pixels and a 90° display matrix. The
    output is upright (portrait) and the face lands where it is in the upright frames."""
    from media_factory import write_video as write_phone_video

    upright = list(DrivingSource(str(footage / "drive.mp4")))
    phone = write_phone_video(tmp_path / "phone.mp4", [np.rot90(f, -1) for f in upright], fps=12, rotation=90)
    out = tmp_path / "o.npy"
    assert (
        main(
            [
                "render",
                "--weights",
                tiny_weights,
                "--reference",
                str(footage / "ref.png"),
                "--size",
                str(SIZE),
                "--driving",
                str(phone),
                "--out",
                str(out),
                "--crop",
                "auto",
                "--paste-into",
                "driving",
            ]
        )
        == 0
    )
    frames = np.load(out)
    assert frames.shape == (7, 320, 180, 3)
    tracker = FaceTracker()
    for f, original in zip(frames, upright):
        info = fc.crop(original, tracker.update(original), SIZE)[1]
        outside, inside = outside_disc(info, margin=1.15), ~outside_disc(info, margin=0.5)
        # outside the face: the upright driving frame (re-encoded once more: a few grey levels)
        assert np.abs(f[outside] * 255 - original[outside]).mean() < 3
        assert np.abs(f[inside] * 255 - original[inside]).mean() > 10  # inside: the generated face
