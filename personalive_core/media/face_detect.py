"""Face detection: the box of the main face in an RGB picture.

A *face box* `(x0, y0, x1, y1)` (image pixels, ends exclusive) covers brows to chin and cheek to
cheek, the convention of OpenCV's frontal Haar cascade. Detection uses OpenCV's bundled Haar
cascades when the installed cv2 has them (4.x wheels). OpenCV 5 moved `CascadeClassifier` out of the
main package and its wheels ship no cascade files, so there a built-in detector takes over:
multi-scale normalised cross-correlation with a procedural face template (dark eyes, brows and mouth
on a lighter face). It is coarser than the cascade; `face_crop.find_crop_box`'s `refine` hook (e.g.
a keypoint-derived box) is where precision comes from.

Images are HWC RGB, uint8 or float in [0, 1] (ComfyUI IMAGE frames).
"""

from functools import lru_cache
import math
import threading

import cv2
import numpy as np

DETECT_SHORT_SIDE = 320  # detection runs on a grey copy this small: fast, and enough for faces ≥ 10 %


def _grey_small(image):
    """uint8 grey copy with the short side ≤ DETECT_SHORT_SIDE, and the factor applied."""
    if image.dtype not in (np.uint8, np.float32):
        image = image.astype(np.float32)
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    f = min(1.0, DETECT_SHORT_SIDE / min(grey.shape))
    if f < 1:
        grey = cv2.resize(grey, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
    if grey.dtype != np.uint8:  # after the downscale: converting a full float frame costs more
        grey = (np.clip(grey, 0, 1) * 255 + 0.5).astype(np.uint8)
    return grey, f


@lru_cache(maxsize=1)
def _cascades():
    """(frontal cascades, profile cascade) from cv2's bundled data, or None where cv2 has none."""
    data = getattr(getattr(cv2, "data", None), "haarcascades", None)
    if not hasattr(cv2, "CascadeClassifier") or not data:
        return None
    load = lambda name: cv2.CascadeClassifier(data + name)
    frontal = [load(n) for n in ("haarcascade_frontalface_default.xml", "haarcascade_frontalface_alt2.xml")]
    frontal = [c for c in frontal if not c.empty()]
    profile = load("haarcascade_profileface.xml")
    return (frontal, None if profile.empty() else profile) if frontal else None


def available_detectors():
    """Detector names `detect_face` accepts here; "cascade" only where cv2 bundles cascades."""
    return ("cascade", "template") if _cascades() else ("template",)


def _pick(boxes, shape):
    """Largest box, discounted by distance from the image centre (the subject is usually central)."""
    h, w = shape

    def score(b):
        x, y, bw, bh = b
        d = math.hypot(x + bw / 2 - w / 2, y + bh / 2 - h / 2) / math.hypot(w / 2, h / 2)
        return bw * bh * (1 - 0.5 * d)

    return max(boxes, key=score)


_CASCADE_LOCK = threading.Lock()  # one CascadeClassifier serves every thread, and it is not thread-safe


def _detect_cascade(grey, min_px):
    with _CASCADE_LOCK:
        return _cascade_box(grey, min_px)


def _cascade_box(grey, min_px):
    frontal, profile = _cascades()
    kw = dict(scaleFactor=1.15, minNeighbors=4, minSize=(min_px, min_px))
    for cascade in frontal:
        found = cascade.detectMultiScale(grey, **kw)
        if len(found):
            return _pick(found, grey.shape)
    if profile is None:
        return None
    # the profile cascade knows one side only: run it on the mirror image as well
    w = grey.shape[1]
    found = list(profile.detectMultiScale(grey, **kw))
    found += [(w - x - bw, y, bw, bh) for x, y, bw, bh in profile.detectMultiScale(grey[:, ::-1].copy(), **kw)]
    return _pick(found, grey.shape) if found else None


# Template geometry in face-box coordinates; calibrated so that its boxes match the frontal
# cascade's on PersonaLive's demo frames (median centre error ~2 % of the face size).
_T_SIZE = 24  # face-box side in template pixels
_T_X, _T_Y = (0.12, 0.88), (0.22, 0.92)  # the part of the face box the template covers
_T_BOX_GAIN = 1.25  # template scale → cascade-sized box
_SIZE_BIAS = 0.06  # score bonus per octave of face size, see _detect_template
_MIN_STD = 8.0  # grey levels; flat patches give meaningless correlations
MIN_CORRELATION = 0.45
MIN_CONTRAST = 0.4  # see _face_evidence
MIN_DETAIL = 0.3
MAX_FACE = 0.8  # × short side: larger faces leave the crop mostly padding
# regions (u range, v range) in face-box coordinates for the contrast tests
_EYES = ((0.20, 0.36), (0.64, 0.80)), (0.36, 0.47)
_CHEEKS_V, _BRIDGE_U, _BRIDGE_V = (0.53, 0.65), (0.45, 0.55), (0.36, 0.48)
_MOUTH = (0.38, 0.62), (0.76, 0.84)


@lru_cache(maxsize=1)
def _face_template():
    def blob(cx, cy, sx, sy):
        return np.exp(-0.5 * (((u - cx) / sx) ** 2 + ((v - cy) / sy) ** 2))

    u = np.linspace(*_T_X, round(_T_SIZE * (_T_X[1] - _T_X[0])))[None, :]
    v = np.linspace(*_T_Y, round(_T_SIZE * (_T_Y[1] - _T_Y[0])))[:, None]
    t = np.ones((v.size, u.size))
    for ex in (0.28, 0.72):
        t -= 0.55 * blob(ex, 0.40, 0.075, 0.04)  # eye
        t -= 0.35 * blob(ex, 0.29, 0.10, 0.025)  # brow
    t -= 0.25 * blob(0.5, 0.635, 0.06, 0.035)  # nostrils
    t -= 0.45 * blob(0.5, 0.81, 0.12, 0.035)  # mouth
    t -= 0.35 * np.clip(np.abs(u - 0.5) - 0.3, 0, None) / 0.2  # cheeks turning away from the light
    return t.astype(np.float32)


def _region_means(integral, u, v, ys, xs):
    """Mean of region (u, v) (face-box coords) for the template positions (ys, xs)."""
    (c0, c1), (r0, r1) = ([round((a - lo) * _T_SIZE) for a in rng] for rng, lo in ((u, _T_X[0]), (v, _T_Y[0])))
    s = (
        integral[ys + r1, xs + c1]
        - integral[ys + r0, xs + c1]
        - integral[ys + r1, xs + c0]
        + integral[ys + r0, xs + c0]
    )
    return s / ((r1 - r0) * (c1 - c0))


def _face_evidence(level, std, ys, xs):
    """The weakest of five face cues, for the template positions (ys, xs) (≥ 0 where all hold):
    each eye darker than the cheek below it, the nose bridge lighter than both eyes, the mouth
    darker than the cheeks (in units of the window's std, less MIN_CONTRAST), and more detail
    (gradient energy) in the eye band than on the smoother cheek (relative, less MIN_DETAIL).
    A correlation is an average that half a face or clutter can earn; requiring every cue at
    once is what rejects most non-faces."""
    ii = cv2.integral(level)
    eyes = [_region_means(ii, u, _EYES[1], ys, xs) for u in _EYES[0]]
    cheeks = [_region_means(ii, u, _CHEEKS_V, ys, xs) for u in _EYES[0]]
    bridge = _region_means(ii, _BRIDGE_U, _BRIDGE_V, ys, xs)
    mouth = _region_means(ii, *_MOUTH, ys, xs)
    contrast = (
        np.minimum.reduce(
            [cheeks[0] - eyes[0], cheeks[1] - eyes[1], bridge - np.maximum(*eyes), (cheeks[0] + cheeks[1]) / 2 - mouth]
        )
        / std[ys, xs]
    )
    grad = cv2.integral(cv2.magnitude(cv2.Sobel(level, cv2.CV_32F, 1, 0), cv2.Sobel(level, cv2.CV_32F, 0, 1)))
    eye_detail = _region_means(grad, (_EYES[0][0][0], _EYES[0][1][1]), _EYES[1], ys, xs)
    cheek_detail = np.minimum(*(_region_means(grad, u, _CHEEKS_V, ys, xs) for u in _EYES[0]))
    detail = (eye_detail - cheek_detail) / (eye_detail + cheek_detail + 1e-3)
    return np.minimum(contrast - MIN_CONTRAST, detail - MIN_DETAIL)


def _local_std(img, th, tw, out_shape):
    """Std of every th×tw window (top-left anchored), cropped to matchTemplate's output shape."""
    box = lambda a: cv2.boxFilter(a, -1, (tw, th), anchor=(0, 0), borderType=cv2.BORDER_CONSTANT)
    mean, sq = box(img), box(img * img)
    var = (sq - mean * mean)[: out_shape[0], : out_shape[1]]
    return np.sqrt(np.maximum(var, 0))


def _detect_template(grey, min_px, step=1.12):
    """Best template match that passes `_face_evidence`, over a scale pyramid, as (x, y, w, h)
    in `grey` pixels, or None.

    Hair partings and foreheads mimic the brow/eye pattern at a smaller scale, so the choice
    between levels carries a small bonus for larger faces; acceptance uses the raw correlation.
    """
    t = _face_template()
    th, tw = t.shape
    g = grey.astype(np.float32)
    best, face = None, float(min_px)
    while face <= MAX_FACE * min(g.shape):
        f = _T_SIZE / face
        level = cv2.resize(g, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
        if level.shape[0] < th or level.shape[1] < tw:
            break
        ncc = cv2.matchTemplate(level, t, cv2.TM_CCOEFF_NORMED)
        std = _local_std(level, th, tw, ncc.shape)
        ys, xs = np.nonzero((ncc >= MIN_CORRELATION) & (std >= _MIN_STD))
        keep = _face_evidence(level, std, ys, xs) >= 0
        if keep.any():
            ys, xs = ys[keep], xs[keep]
            k = int(np.argmax(ncc[ys, xs]))
            x, y, raw = int(xs[k]), int(ys[k]), float(ncc[ys[k], xs[k]])
            biased = raw + _SIZE_BIAS * math.log2(face / min_px)
            if best is None or biased > best[0]:
                dx, dy = _subpixel(ncc, x, y)
                best = (biased, _template_to_box(x + dx, y + dy, f))
        face *= step
    if best is None:
        return None
    cx, cy, side = best[1]
    return (cx - side / 2, cy - side / 2, side, side)


def _template_to_box(x, y, f):
    """Template position (top-left, level pixels) at scale f → face box (cx, cy, side) in grey pixels."""
    face = _T_SIZE / f
    return (x / f + (0.5 - _T_X[0]) * face, y / f + (0.5 - _T_Y[0]) * face, face * _T_BOX_GAIN)


def _subpixel(r, x, y):
    """Parabolic peak offset in x and y (0 at the border): positions to a fraction of a pixel."""

    def vertex(a, b, c):
        d = a - 2 * b + c
        return 0.0 if d >= 0 else float(np.clip(0.5 * (a - c) / d, -0.5, 0.5))

    h, w = r.shape
    dx = vertex(r[y, x - 1], r[y, x], r[y, x + 1]) if 0 < x < w - 1 else 0.0
    dy = vertex(r[y - 1, x], r[y, x], r[y + 1, x]) if 0 < y < h - 1 else 0.0
    return dx, dy


def detect_face(image, min_face=0.1, detector="auto"):
    """Face box of the main face in an RGB image, or None.

    min_face: smallest face side as a fraction of the image's short side.
    detector: "cascade" (OpenCV's bundled Haar cascades), "template" (built-in, no data files)
    or "auto" (cascade where cv2 has it).
    """
    if detector == "auto":
        detector = available_detectors()[0]
    if detector not in available_detectors():
        raise ValueError(f"detector {detector!r} not available here; have {available_detectors()}")
    grey, f = _grey_small(image)
    min_px = max(20, round(min_face * min(grey.shape)))
    found = (_detect_cascade if detector == "cascade" else _detect_template)(grey, min_px)
    if found is None:
        return None
    x, y, w, h = (float(v) / f for v in found)
    return (x, y, x + w, y + h)
