"""Face crop / tracking / paste-back on synthetic footage: cartoon faces drawn at known places.

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

TOL = 0.08  # centre error allowed, as a fraction of the face size
DETECTORS = [pytest.param(d, marks=pytest.mark.skipif(d not in fc.available_detectors(),
                                                     reason=f"cv2 {cv2.__version__} bundles no Haar cascades"))
             for d in ("cascade", "template")]

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
            ellipse(u, 0.31, 0.11, 0.025, (70, 50, 40))     # brow
            ellipse(u, 0.42, 0.085, 0.04, (235, 235, 230))  # eye white
            ellipse(u, 0.42, 0.04, 0.04, (40, 30, 25))      # iris
        ellipse(0.5, 0.64, 0.07, 0.03, (150, 100, 85))      # nose shadow
        ellipse(0.5, 0.79, 0.12, 0.035, (150, 60, 60))      # mouth
    return img


def frame_with_face(h, w, cx, cy, side, seed=0):
    return cv2.GaussianBlur(draw_face(background(h, w, seed), cx, cy, side), (0, 0), 1.0)


def centre_error(box, cx, cy, side):
    bx, by, _ = fc.box_center_side(box)
    return math.hypot(bx - cx, by - cy) / side


# ----------------------------------------------------------------------------- detection

@pytest.mark.parametrize("detector", DETECTORS)
@pytest.mark.parametrize("h,w,cx,cy,side", [
    (1080, 1920, 960, 540, 240), (1080, 1920, 400, 700, 180), (1080, 1920, 1500, 420, 420),
    (1280, 720, 360, 640, 220), (1280, 720, 250, 400, 150), (1280, 720, 470, 900, 330),
])
def test_detects_drawn_face(detector, h, w, cx, cy, side):
    box = fc.detect_face(frame_with_face(h, w, cx, cy, side), detector=detector)
    assert box is not None
    assert centre_error(box, cx, cy, side) <= TOL
    assert 0.8 <= fc.box_center_side(box)[2] / side <= 1.25


@pytest.mark.parametrize("detector", DETECTORS)
def test_no_face_gives_none(detector):
    blank_head = cv2.GaussianBlur(draw_face(background(1080, 1920, 3), 900, 500, 260, features=False), (0, 0), 1.0)
    for img in (background(1080, 1920, 1), background(1280, 720, 2), blank_head, np.zeros((720, 1280, 3), np.uint8)):
        assert fc.detect_face(img, detector=detector) is None


def test_float_and_uint8_agree():
    img = frame_with_face(1080, 1920, 700, 500, 260)
    a = fc.detect_face(img)
    b = fc.detect_face(img.astype(np.float32) / 255)
    assert np.abs(np.subtract(a, b)).max() <= 0.02 * 260


def test_unknown_detector_raises():
    with pytest.raises(ValueError):
        fc.detect_face(np.zeros((64, 64, 3), np.uint8), detector="mediapipe")


# ----------------------------------------------------------------------------- boxes and crop

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
    detected = fc.square_crop_box(fc.detect_face(img))
    _, info = fc.crop(img, detected, 256)
    assert seen == [(256, 256, 3)]
    assert np.allclose(box, fc.square_crop_box(info.box_to_image((64, 80, 192, 208))))


# ----------------------------------------------------------------------------- video

def path(t, h, w):
    """Truth (cx, cy, side) at frame t: a diagonal move with a bob and a slow zoom."""
    side = 0.2 * min(h, w) * (1 + 0.3 * t / 30)
    return w * (0.3 + 0.4 * t / 30), h * (0.4 + 0.2 * t / 30) + 0.03 * h * math.sin(t / 3), side


NO_FACE = (0, 1, 12, 13, 25)


def video(h, w, n=31):
    for t in range(n):
        if t in NO_FACE:
            yield background(h, w, seed=t)
        else:
            yield frame_with_face(h, w, *path(t, h, w), seed=t)


@pytest.mark.parametrize("h,w", [(1080, 1920), (1280, 720)])
def test_video_boxes_follow_face_and_report_missing(h, w):
    boxes, missing = fc.crop_video_boxes(video(h, w), scale=2.0)
    assert len(boxes) == 31 and missing == list(NO_FACE)
    for t, box in enumerate(boxes):
        x0, y0, x1, y1 = box
        assert x1 - x0 == pytest.approx(y1 - y0)
        if t not in NO_FACE:
            cx, cy, side = path(t, h, w)
            assert centre_error(box, cx, cy, side) <= TOL, t
            assert fc.box_center_side(box)[2] == pytest.approx(2.0 * side, rel=0.15)
    assert boxes[0] == boxes[1] == boxes[2]  # before the first face: the first face's box
    assert boxes[12] == boxes[13] == boxes[11] and boxes[25] == boxes[24]


def test_video_without_any_face_gives_centre_squares():
    boxes, missing = fc.crop_video_boxes(background(720, 1280, s) for s in range(4))
    assert missing == [0, 1, 2, 3]
    assert boxes == [fc.center_box((720, 1280))] * 4


def fake_detector(monkeypatch, faces):
    """Make the tracker see the given face boxes (None = no face), one per update."""
    it = iter(faces)
    monkeypatch.setattr(fc, "detect_face", lambda image, **kw: next(it))


def face_box(cx, cy, side):
    return fc.box_from_center(cx, cy, side)


def test_smoothing_reduces_jitter(monkeypatch):
    rng = np.random.default_rng(0)
    n, side = 60, 200.0
    truth = [(600 + 4 * t, 500.0) for t in range(n)]  # slow drift
    noise = lambda: rng.normal(0, 0.02)  # noqa: E731  (≈ the template detector's spread)
    raw = [face_box(x + noise() * side, y + noise() * side, side * (1 + noise())) for x, y in truth]
    fake_detector(monkeypatch, raw)
    boxes, missing = fc.crop_video_boxes([np.zeros((1080, 1920, 3), np.uint8)] * n)
    assert missing == []
    smooth = np.array([fc.box_center_side(b) for b in boxes])
    unsmoothed = np.array([fc.box_center_side(fc.square_crop_box(b)) for b in raw])
    jitter = lambda a: np.abs(np.diff(a[:, :2], axis=0) - (4, 0)).mean()  # noqa: E731  (drift removed)
    assert jitter(smooth) < jitter(unsmoothed) / 2
    assert np.abs(np.diff(smooth[:, 2])).mean() < np.abs(np.diff(unsmoothed[:, 2])).mean() / 2
    err = np.hypot(*(smooth[10:, :2] - np.array(truth[10:])).T) / side
    assert err.max() <= TOL


def test_outlier_rejected_then_relock(monkeypatch):
    here, there = face_box(500, 500, 200), face_box(1400, 600, 200)
    fake_detector(monkeypatch, [here] * 5 + [there] + [here] * 3 + [there] * 4)
    tracker = fc.FaceTracker()
    frame = np.zeros((1080, 1920, 3), np.uint8)
    out = [(tracker.update(frame), tracker.found) for _ in range(13)]
    assert out[5][0] == out[4][0] and not out[5][1]  # a lone jump is ignored and reported
    assert all(found for _, found in out[6:9])
    assert [found for _, found in out[9:]] == [False, False, True, True]  # relock on the 3rd
    assert fc.box_center_side(out[12][0])[:2] == pytest.approx((1400, 600), abs=20)


# ----------------------------------------------------------------------------- paste-back

@pytest.mark.parametrize("h,w,box", [(1080, 1920, (700, 200, 1300, 800)), (1280, 720, (-150, 900, 450, 1500))])
@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_paste_back_size_and_untouched_outside_mask(h, w, box, dtype):
    original = background(h, w)
    original = original if dtype == np.uint8 else original.astype(np.float32) / 255
    _, info = fc.crop(original, box, size=512)
    generated = np.zeros((512, 512, 3), dtype)
    generated[..., 1] = 255 if dtype == np.uint8 else 1.0
    out = fc.paste_back(generated, original, info, feather=0.2)
    assert out.shape == original.shape and out.dtype == original.dtype

    # outside the disc inscribed in the box nothing may change, not even by rounding
    x0, y0, x1, y1 = info.box
    yy, xx = np.mgrid[:h, :w]
    r = np.hypot(xx + 0.5 - (x0 + x1) / 2, yy + 0.5 - (y0 + y1) / 2) / ((x1 - x0) / 2)
    outside = r > 1.01
    assert np.array_equal(out[outside], original[outside])
    assert not np.array_equal(out, original)

    # well inside the disc the generated content is all there is
    core = r < 0.75
    assert np.allclose(out[core].astype(np.float32), generated[0, 0].astype(np.float32), atol=1)


def test_crop_paste_round_trip():
    original = frame_with_face(1080, 1920, 900, 500, 300)
    box = fc.square_crop_box((750, 350, 1050, 650), scale=1.75)
    crop, info = fc.crop(original, box, size=512)
    out = fc.paste_back(crop, original, info)
    x0, y0, x1, y1 = info.box
    diff = np.abs(out[y0:y1, x0:x1].astype(int) - original[y0:y1, x0:x1].astype(int))
    assert diff.mean() < 1.0 and np.percentile(diff, 99) <= 8


def test_paste_back_rejects_wrong_frame():
    _, info = fc.crop(np.zeros((100, 200, 3), np.uint8), (10, 10, 60, 60), 32)
    with pytest.raises(ValueError):
        fc.paste_back(np.zeros((32, 32, 3), np.uint8), np.zeros((100, 100, 3), np.uint8), info)
