"""Face tracking through a video: one smoothed crop box per frame, O(1) memory.

Each frame's face (`face_crop.find_crop_box`) is checked against the track (outliers rejected, a
consistent jump taken as a cut) and smoothed with a one-euro filter, so the crop neither jitters
while the head is still nor lags when it moves.
"""

import math

import numpy as np

from .face_crop import DEFAULT_SCALE, box_center_side, box_from_center, center_box, find_crop_box


class _OneEuro:
    """One-euro filter on (cx, cy, side), time in frames: strong smoothing while the head is
    still, little lag when it moves. Speed is measured in crop sides per frame so the
    parameters do not depend on resolution. `dt`: the time since the previous sample, in
    frames (live streams pass their camera time, so a dropped frame is a longer step)."""

    def __init__(self, min_cutoff, beta, d_cutoff=0.3):
        self.min_cutoff, self.beta, self.d_cutoff = min_cutoff, beta, d_cutoff
        self.x = self.dx = None

    @staticmethod
    def _alpha(cutoff, dt=1.0):
        return 1.0 / (1.0 + 1.0 / (2 * math.pi * cutoff * dt))

    def reset(self, x):
        self.x, self.dx = np.asarray(x, float), np.zeros(3)

    def __call__(self, x, dt=1.0):
        x = np.asarray(x, float)
        a_d = self._alpha(self.d_cutoff, dt)
        self.dx = a_d * (x - self.x) / (self.x[2] * dt) + (1 - a_d) * self.dx
        a = self._alpha(self.min_cutoff + self.beta * np.abs(self.dx), dt)
        self.x = a * x + (1 - a) * self.x
        return self.x


class FaceTracker:
    """Streaming crop boxes for a video: `update(frame)` → crop box, O(1) memory.

    Per frame: detect (and refine), reject detections that jump further than `max_jump` crop
    sides or change size by more than `max_zoom`×, smooth with a one-euro filter. Frames without
    an accepted detection keep the last box and set `found` False; before the first face the box
    is the centred square. `relock` consecutive consistent jumps are taken as a real move (a cut,
    a fast turn) and restart the filter there.
    """

    def __init__(
        self,
        scale=DEFAULT_SCALE,
        shift=0.0,
        min_cutoff=0.02,
        beta=8.0,
        max_jump=0.5,
        max_zoom=1.5,
        relock=3,
        refine=None,
        refine_size=256,
        **detect_kw,
    ):
        self.box_kw = dict(scale=scale, shift=shift, refine=refine, refine_size=refine_size, **detect_kw)
        self.max_jump, self.log_zoom, self.relock = max_jump, math.log(max_zoom), relock
        self.filter = _OneEuro(min_cutoff, beta)
        self.pending, self.pending_count = None, 0
        self.found = False

    def _consistent(self, a, b):
        return (
            math.hypot(a[0] - b[0], a[1] - b[1]) <= self.max_jump * b[2] and abs(math.log(a[2] / b[2])) <= self.log_zoom
        )

    def _accept(self, z, dt):
        """Feed a measured (cx, cy, side) `dt` frames after the previous one; False when it is
        rejected as an outlier."""
        if self.filter.x is None or self._consistent(z, self.filter.x):
            self.pending, self.pending_count = None, 0
            if self.filter.x is None:
                self.filter.reset(z)
            else:
                self.filter(z, dt)
            return True
        if self.pending is not None and self._consistent(z, self.pending):
            self.pending_count += 1
        else:
            self.pending_count = 1
        self.pending = z
        if self.pending_count < self.relock:
            return False
        self.filter.reset(z)
        self.pending, self.pending_count = None, 0
        return True

    def update(self, frame, dt=1.0):
        """The crop box for `frame`, `dt` frames after the previous update (1 for video frames)."""
        box = find_crop_box(frame, **self.box_kw)
        self.found = box is not None and self._accept(box_center_side(box), dt)
        if self.filter.x is None:
            return center_box(frame.shape[:2])
        return box_from_center(*self.filter.x)


def crop_video_boxes(frames, **tracker_kw):
    """Crop boxes for every frame of an iterable → (boxes, indices of frames without a face).

    Frames before the first face get the first face's box (the tracker alone, being streaming,
    gives them the centred square); if no frame has a face all boxes are centred squares.
    """
    tracker = FaceTracker(**tracker_kw)
    boxes, missing, first = [], [], None
    for i, frame in enumerate(frames):
        boxes.append(tracker.update(frame))
        if not tracker.found:
            missing.append(i)
        elif first is None:
            first = i
    if first:  # None: no face at all; 0: no frame before it
        boxes[:first] = [boxes[first]] * first
    return boxes, missing
