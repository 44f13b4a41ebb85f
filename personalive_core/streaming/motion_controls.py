"""Artist controls on the hybrid motion: expression strength, head-pose strength, smoothing.

PersonaLive drives each frame with two signals (streaming/hybrid_motion.py):
- head pose (explicit): the reference's canonical 3-D keypoints, rotated by the driving frame's
  pitch/yaw/roll (its absolute angles), scaled by the reference scale, moved by the reference
  translation plus half the driving translation since the first driving frame (x, y);
- expression (implicit): the MotEncoder's 32×16 motion tokens of the driving face crop.

The controls (`config.MotionControls`, where their defaults and ranges live):
- expression strength α ∈ [0, 2]: tokens m = m_ref + α (m_drv − m_ref), m_ref the reference
  portrait's own tokens. 1 = as driven; 0 = the reference's expression throughout; > 1 exaggerates.
- head-pose strength β ∈ [0, 2]: every pose parameter p of the posed keypoints becomes
  p_ref + β (p − p_ref): angles ref + β (drv − ref), translation t_ref + β · 0.5 (t_drv − t_first).
  Equivalently, the head starts at (1 − β) · ref + β · first-driving pose and follows β times the
  driving motion relative to the first driving frame. 0 locks the head to the reference pose (the
  keypoints are the reference's) while the expression still follows; scale and canonical keypoints
  are the reference's at any β, as in the official code.
- smoothness s ∈ [0, 1]: a causal one-euro filter (Casiez et al., CHI 2012) over the frames of the
  stream on the pose parameters (angles, translation) and the motion tokens. 0 = off. Higher values
  lower the cut-off frequency of slow motion (more jitter removed, more lag); fast motion raises it
  again, so quick head turns lag less than the jitter is smoothed.
The defaults (1, 1, 0) leave the motion untouched, bit for bit: no control is computed at all.
The 12 motion-interpolated warm-up rows of the first chunk go through the same controls (they ease
from the reference to the first controlled driving frame).
"""

import math

import torch

from ..config import MotionControls

POSE_KEYS = ("pitch", "yaw", "roll", "t")  # scale and canonical kp are the reference's, constant

# one-euro parameters; time is counted in stream frames (whatever the camera's fps)
CUTOFF_OFF, CUTOFF_FULL = 1.0, 0.02  # slow-motion cut-off (cycles/frame) at smoothness → 0 and at 1
SPEED_GAIN = 0.01  # one-euro β: the cut-off rises by this per unit of speed (per frame)
DERIVATIVE_CUTOFF = 1.0  # cycles/frame, for the speed estimate
UNITS = {"angles": 1.0, "t": 0.01, "tokens": 0.1}  # speed units: 1°, 0.5 % of the frame width, tokens


def lerp(ref, value, weight):
    """ref + weight · (value − ref), in value's dtype."""
    return ref.to(value.dtype) + weight * (value - ref.to(value.dtype))


def one_euro_alpha(cutoff):
    """Smoothing factor of a first-order low-pass at `cutoff` cycles per frame (one frame per sample)."""
    tau = 1.0 / (2 * math.pi * cutoff)
    return 1.0 / (1.0 + tau)


class OneEuro:
    """Causal one-euro filter over rows (time) of a tensor; every element filtered on its own."""

    def __init__(self, unit):
        self.unit = unit
        self.value = self.speed = None

    def __call__(self, rows, smoothness):
        cutoff = CUTOFF_OFF * (CUTOFF_FULL / CUTOFF_OFF) ** smoothness
        a_speed = one_euro_alpha(DERIVATIVE_CUTOFF)
        out = []
        for row in rows.float():
            if self.value is None:
                self.value, self.speed = row, torch.zeros_like(row)
            else:
                self.speed = self.speed + a_speed * (row - self.value - self.speed)
                tau = 1.0 / (2 * math.pi * (cutoff + SPEED_GAIN * self.speed.abs() / self.unit))
                self.value = self.value + (row - self.value) / (1.0 + tau)
            out.append(self.value)
        return torch.stack(out).to(rows.dtype)


class MotionFilter:
    """The controls' state in one stream: the filters, started on the stream's first frame."""

    def __init__(self, controls=None):
        self.controls = controls or MotionControls()
        self.reset()

    def reset(self):
        self.filters = {
            "angles": OneEuro(UNITS["angles"]),
            "t": OneEuro(UNITS["t"]),
            "tokens": OneEuro(UNITS["tokens"]),
        }

    def set(self, controls):
        """Change the controls from the next frame on (live); smoothing restarts when switched on."""
        if controls.smoothness == 0.0:
            self.reset()
        self.controls = controls

    def pose(self, info, reference):
        """Pose parameters (N rows, `KeypointTracker.pose`) and the reference's (1 row) → controlled."""
        c = self.controls
        info = dict(info)
        if c.head_pose != 1.0:
            for key in POSE_KEYS:
                info[key] = lerp(reference[key], info[key], c.head_pose)
        if c.smoothness > 0.0:
            angles = torch.stack([info["pitch"], info["yaw"], info["roll"]], dim=1)
            info["pitch"], info["yaw"], info["roll"] = self.filters["angles"](angles, c.smoothness).unbind(1)
            info["t"] = self.filters["t"](info["t"], c.smoothness)
        return info

    def tokens(self, tokens, reference_tokens):
        """Driving motion tokens (N, 32, 16) and the reference's (1, 32, 16) → controlled; applied
        before the warm-up rows are interpolated from the reference."""
        if self.controls.expression != 1.0:
            tokens = lerp(reference_tokens, tokens, self.controls.expression)
        return tokens

    def smooth_tokens(self, tokens):
        """All rows of a chunk in stream order (warm-up rows first), through the token filter."""
        if self.controls.smoothness > 0.0:
            tokens = self.filters["tokens"](tokens, self.controls.smoothness)
        return tokens
