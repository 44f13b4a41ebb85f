"""Face detection on drawn faces (both detectors where cv2 has the cascades)."""

import cv2
import numpy as np
import pytest

from personalive_core.media.face_detect import available_detectors, detect_face
from personalive_core.media import face_crop as fc
from test_face_crop import TOL, background, centre_error, draw_face, frame_with_face

DETECTORS = [
    pytest.param(
        d,
        marks=pytest.mark.skipif(
            d not in available_detectors(), reason=f"cv2 {cv2.__version__} bundles no Haar cascades"
        ),
    )
    for d in ("cascade", "template")
]


@pytest.mark.parametrize("detector", DETECTORS)
@pytest.mark.parametrize(
    "h,w,cx,cy,side",
    [
        (1080, 1920, 960, 540, 240),
        (1080, 1920, 400, 700, 180),
        (1080, 1920, 1500, 420, 420),
        (1280, 720, 360, 640, 220),
        (1280, 720, 250, 400, 150),
        (1280, 720, 470, 900, 330),
    ],
)
def test_detects_drawn_face(detector, h, w, cx, cy, side):
    box = detect_face(frame_with_face(h, w, cx, cy, side), detector=detector)
    assert box is not None
    assert centre_error(box, cx, cy, side) <= TOL
    assert 0.8 <= fc.box_center_side(box)[2] / side <= 1.25


@pytest.mark.parametrize("detector", DETECTORS)
def test_no_face_gives_none(detector):
    blank_head = cv2.GaussianBlur(draw_face(background(1080, 1920, 3), 900, 500, 260, features=False), (0, 0), 1.0)
    for img in (background(1080, 1920, 1), background(1280, 720, 2), blank_head, np.zeros((720, 1280, 3), np.uint8)):
        assert detect_face(img, detector=detector) is None


def test_float_and_uint8_agree():
    img = frame_with_face(1080, 1920, 700, 500, 260)
    a = detect_face(img)
    b = detect_face(img.astype(np.float32) / 255)
    assert np.abs(np.subtract(a, b)).max() <= 0.02 * 260


def test_unknown_detector_raises():
    with pytest.raises(ValueError):
        detect_face(np.zeros((64, 64, 3), np.uint8), detector="mediapipe")
