"""Face crop on synthetic footage: cartoon faces drawn at known places (the drawing helpers here serve
the detection, tracking, paste-back and footage tests as well).

The drawn face is one that OpenCV's frontal Haar cascade detects as well (checked with a cv2 4.x
that bundles it), with its feature layout scaled so that the cascade's box is the square of
`side` around (cx, cy); so the same truth serves both detectors.
"""

import json
import math

import cv2
import numpy as np
import pytest

from personalive_core.media import face_crop as fc
from personalive_core.media.face_detect import detect_face

TOL = 0.08  # centre error allowed, as a fraction of the face size

SKIN, HAIR = (224, 172, 140), (60, 40, 30)


def background(h, w, seed=0):
    """A room-like backdrop: a colour gradient, a few flat-coloured boxes, a little noise."""
    rng = np.random.default_rng(seed)
    corners = rng.uniform(40, 220, (2, 2, 3)).astype(np.float32)
    img = cv2.resize(corners, (w, h), interpolation=cv2.INTER_LINEAR)
    for _ in range(6):
        x, y = rng.integers(0, w), rng.integers(0, h)
        bw, bh = rng.integers(w // 20, w // 3), rng.integers(h // 20, h // 3)
        cv2.rectangle(img, (int(x), int(y)), (int(x + bw), int(y + bh)), rng.uniform(30, 230, 3).tolist(), -1)
    return np.clip(img + rng.normal(0, 4, (h, w, 3)), 0, 255).astype(np.uint8)


def draw_face(img, cx, cy, side, features=True):
    """Cartoon head whose detector face box is the square of `side` centred at (cx, cy)."""
    s = side / 1.2  # the cascade's box is 1.2× this layout's unit

    def ellipse(u, v, au, av, colour):
        centre = (round((cx + (u - 0.5) * s) * 16), round((cy + (v - 0.5) * s) * 16))
        cv2.ellipse(img, centre, (round(au * s * 16), round(av * s * 16)), 0, 0, 360, colour, -1, cv2.LINE_AA, 4)

    ellipse(0.5, 0.38, 0.62, 0.72, HAIR)
    ellipse(0.5, 1.2, 0.14, 0.35, tuple(0.85 * c for c in SKIN))  # neck
    ellipse(0.5, 0.5, 0.47, 0.62, SKIN)
    ellipse(0.5, 0.0, 0.50, 0.22, HAIR)  # fringe
    if features:
        for u in (0.3, 0.7):
            ellipse(u, 0.31, 0.11, 0.025, (70, 50, 40))  # brow
            ellipse(u, 0.42, 0.085, 0.04, (235, 235, 230))  # eye white
            ellipse(u, 0.42, 0.04, 0.04, (40, 30, 25))  # iris
        ellipse(0.5, 0.64, 0.07, 0.03, (150, 100, 85))  # nose shadow
        ellipse(0.5, 0.79, 0.12, 0.035, (150, 60, 60))  # mouth
    return img


def frame_with_face(h, w, cx, cy, side, seed=0):
    return cv2.GaussianBlur(draw_face(background(h, w, seed), cx, cy, side), (0, 0), 1.0)


def centre_error(box, cx, cy, side):
    bx, by, _ = fc.box_center_side(box)
    return math.hypot(bx - cx, by - cy) / side


def test_square_crop_box_geometry():
    box = fc.square_crop_box((100, 200, 300, 400), scale=2.0, shift=0.1)
    cx, cy, side = fc.box_center_side(box)
    assert (cx, cy, side) == (200, 300 - 0.1 * 200, 400)
    assert box[2] - box[0] == box[3] - box[1]


def test_crop_inside_matches_resize_and_info_is_json():
    img = background(1080, 1920)
    out, info = fc.crop(img, (100.4, 50.2, 612.4, 562.2), size=256)
    assert out.shape == (256, 256, 3) and out.dtype == np.uint8
    assert info.box == (100, 50, 612, 562) and info.image_hw == (1080, 1920) and info.size == 256
    expected = cv2.resize(img[50:562, 100:612], (256, 256), interpolation=cv2.INTER_AREA)
    assert np.array_equal(out, expected)
    assert fc.CropInfo.from_dict(json.loads(json.dumps(info.to_dict()))) == info


def test_crop_past_border_pads_and_keeps_face_centred():
    img = (np.random.default_rng(0).random((720, 1280, 3))).astype(np.float32)
    out, info = fc.crop(img, (-100, -50, 412, 462), size=512, pad="replicate")
    assert out.shape == (512, 512, 3) and out.dtype == np.float32
    assert np.array_equal(out[:50, 100:], np.broadcast_to(img[0, :412], (50, 412, 3)))  # replicated top row
    assert np.array_equal(out[50:, 100:], img[:462, :412])
    out, _ = fc.crop(img, (-100, -50, 412, 462), size=512, pad="constant")
    assert not out[:50].any() and not out[:, :100].any()


def test_crop_box_must_overlap_image():
    with pytest.raises(ValueError):
        fc.crop(np.zeros((100, 100, 3), np.uint8), (200, 200, 300, 300))


def test_refine_hook_maps_crop_box_back():
    img = frame_with_face(1080, 1920, 900, 500, 240)
    seen = []

    def refine(patch):
        seen.append(patch.shape)
        return (64, 80, 192, 208)  # a face box in crop pixels

    box = fc.find_crop_box(img, refine=refine, refine_size=256)
    detected = fc.square_crop_box(detect_face(img))
    _, info = fc.crop(img, detected, 256)
    assert seen == [(256, 256, 3)]
    assert np.allclose(box, fc.square_crop_box(info.box_to_image((64, 80, 192, 208))))
