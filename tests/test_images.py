"""Pictures as phones and editors save them: every EXIF orientation, 16-bit, float, CMYK, palette,
alpha, grey and bilevel pictures load upright as 8-bit RGB; empty and non-image files get an error
naming the file. Also through the command line (reference and image-folder driving input)."""

import numpy as np
import pytest

from conftest import SIZE
from media_factory import exif_photo, mode_pictures, quadrant_colours, quadrant_picture
from personalive_core.errors import InputError
from personalive_core.media.images import BACKGROUND, load_image
from personalive_core.cli.main import main

UPRIGHT_HW = (60, 100)  # landscape: a missed 90° turn changes the shape as well as the colours
JPEG_TOL = 8  # grey levels: JPEG error in a flat quadrant's centre


@pytest.fixture(scope="module")
def pictures(tmp_path_factory):
    return mode_pictures(tmp_path_factory.mktemp("modes"))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied(tmp_path, orientation):
    upright = quadrant_picture(*UPRIGHT_HW)
    path = exif_photo(tmp_path / f"o{orientation}.jpg", orientation, upright)
    got = np.asarray(load_image(str(path)))
    assert got.shape == UPRIGHT_HW + (3,) and got.dtype == np.uint8
    assert np.abs(quadrant_colours(got) - quadrant_colours(upright)).max() < JPEG_TOL


@pytest.mark.parametrize(
    "name",
    [
        "grey16_png",
        "rgb16_png",
        "grey16_tif",
        "float_tif",
        "cmyk_jpg",
        "cmyk_tif",
        "palette_png",
        "palette_alpha_png",
        "rgba_png",
        "rgba_webp",
        "grey_alpha_png",
        "grey_png",
        "bilevel_png",
    ],
)
def test_every_mode_loads_as_8bit_rgb(pictures, name):
    path, expected, tol = pictures[name]
    got = load_image(str(path))
    assert got.mode == "RGB"
    diff = np.abs(np.asarray(got).astype(int) - expected.astype(int))
    assert diff.max() <= tol, (name, diff.max())


def test_transparent_parts_are_white(pictures):
    path, _, _ = pictures["rgba_png"]
    assert tuple(np.asarray(load_image(str(path)))[0, 0]) == BACKGROUND  # the left half is transparent


def bad_file(folder, kind):
    if kind == "missing":
        return folder / "missing.png"
    if kind == "folder":
        return folder
    path, content = {
        "empty": ("empty.jpg", b""),
        "text": ("notes.png", b"not a picture"),
        "heic": ("phone.heic", b"\0\0\0\x18ftypheic"),
    }[kind]
    (folder / path).write_bytes(content)
    return folder / path


@pytest.mark.parametrize(
    "kind, message",
    [
        ("missing", "reference image not found: {path}"),
        ("folder", "reference image {path} is not a file"),
        ("empty", "reference image {path} is empty (0 bytes)"),
        ("text", "cannot read reference image {path}"),
        ("heic", "pillow-heif"),
    ],
)
def test_unreadable_pictures_name_the_file(tmp_path, kind, message):
    path = bad_file(tmp_path, kind)
    with pytest.raises(InputError) as e:
        load_image(str(path))
    assert message.format(path=path) in str(e.value)


def test_truncated_jpeg_names_the_file(tmp_path):
    path = exif_photo(tmp_path / "full.jpg", 1, quadrant_picture(*UPRIGHT_HW))
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(path.read_bytes()[:400])
    with pytest.raises(InputError, match=f"cannot read driving image {cut}"):
        load_image(str(cut), "driving image")


def test_cli_reference_upright_and_hostile_driving_folder(tiny_weights, pictures, tmp_path, capsys):
    """An orientation-6 reference (stored 60 wide and 100 high, upright 100 wide and 60 high) pasted back
    keeps its upright size; a driving folder of pictures in every mode renders one frame each."""
    ref = exif_photo(tmp_path / "ref.jpg", 6, quadrant_picture(*UPRIGHT_HW))
    folder = tmp_path / "driving"
    folder.mkdir()
    for i, (path, _, _) in enumerate(sorted(pictures.values())):
        (folder / f"{i:02d}{path.suffix}").write_bytes(path.read_bytes())
    out = tmp_path / "o.npy"
    assert (
        main(
            [
                "render",
                "--weights",
                tiny_weights,
                "--reference",
                str(ref),
                "--driving",
                str(folder),
                "--size",
                str(SIZE),
                "--out",
                str(out),
                "--crop",
                "auto",
                "--paste-into",
                "reference",
            ]
        )
        == 0
    )
    frames = np.load(out)
    assert frames.shape == (len(pictures),) + UPRIGHT_HW + (3,)
    (folder / "-empty.png").write_bytes(b"")  # sorted first
    assert (
        main(
            [
                "render",
                "--weights",
                tiny_weights,
                "--reference",
                str(ref),
                "--driving",
                str(folder),
                "--size",
                str(SIZE),
                "--out",
                str(tmp_path / "p.npy"),
            ]
        )
        == 2
    )
    assert f"driving image {folder / '-empty.png'} is empty (0 bytes)" in capsys.readouterr().err
