"""Face tracking through synthetic videos: drawn faces on a known path, frames without a face, a
fake detector for jitter, outliers and cuts."""

import math

import numpy as np
import pytest

from personalive_core.media import face_crop as fc
from personalive_core.media.face_track import FaceTracker, crop_video_boxes
from test_face_crop import TOL, background, centre_error, frame_with_face


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
    boxes, missing = crop_video_boxes(video(h, w), scale=2.0)
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
    boxes, missing = crop_video_boxes(background(720, 1280, s) for s in range(4))
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
    noise = lambda: rng.normal(0, 0.02)
    raw = [face_box(x + noise() * side, y + noise() * side, side * (1 + noise())) for x, y in truth]
    fake_detector(monkeypatch, raw)
    boxes, missing = crop_video_boxes([np.zeros((1080, 1920, 3), np.uint8)] * n)
    assert missing == []
    smooth = np.array([fc.box_center_side(b) for b in boxes])
    unsmoothed = np.array([fc.box_center_side(fc.square_crop_box(b)) for b in raw])
    jitter = lambda a: np.abs(np.diff(a[:, :2], axis=0) - (4, 0)).mean()
    assert jitter(smooth) < jitter(unsmoothed) / 2
    assert np.abs(np.diff(smooth[:, 2])).mean() < np.abs(np.diff(unsmoothed[:, 2])).mean() / 2
    err = np.hypot(*(smooth[10:, :2] - np.array(truth[10:])).T) / side
    assert err.max() <= TOL


def test_outlier_rejected_then_relock(monkeypatch):
    here, there = face_box(500, 500, 200), face_box(1400, 600, 200)
    fake_detector(monkeypatch, [here] * 5 + [there] + [here] * 3 + [there] * 4)
    tracker = FaceTracker()
    frame = np.zeros((1080, 1920, 3), np.uint8)
    out = [(tracker.update(frame), tracker.found) for _ in range(13)]
    assert out[5][0] == out[4][0] and not out[5][1]  # a lone jump is ignored and reported
    assert all(found for _, found in out[6:9])
    assert [found for _, found in out[9:]] == [False, False, True, True]  # relock on the 3rd
    assert fc.box_center_side(out[12][0])[:2] == pytest.approx((1400, 600), abs=20)
