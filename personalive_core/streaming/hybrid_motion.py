"""Hybrid motion control: what drives each frame.

Two signals per driving frame, both relative to the reference:
- explicit: LivePortrait-style 3D implicit keypoints — the reference's canonical keypoints posed by
  the driving head rotation, the reference scale, and the reference translation moved by half the
  driving translation since the first driving frame — rendered as coloured dots (for the
  PoseGuider), plus the driving face box (from the driving frame's own keypoints);
- implicit: 32×16 motion tokens of the driving face crop (MotEncoder).
The first chunk also yields the motion-interpolated initialisation (MII): 12 warm-up frames easing
from the reference's keypoints and motion tokens to the first driving frame's.
Artist controls (expression / head-pose strength, smoothing: motion_controls.py) act on both
signals here, so every path (render, nodes, live) gets them; their defaults change nothing.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..models.keypoints import face_boxes
from ..models.motion import crop_faces, interpolate_motion
from .keypoint_tracker import KeypointTracker
from .motion_controls import MotionFilter
from .window import CHUNK, CHUNKS

KEYPOINT_SIZE = 256  # the motion extractor's input size
FACE_SIZE = 224  # the MotEncoder's input size
WARMUP = (CHUNKS - 1) * CHUNK  # 12 motion-interpolated frames fill the window before frame 0


@dataclass
class MotionChunk:
    """Motion of one chunk: `keypoints` (n, 21, 3) posed for rendering, `tokens` (n, 32, 16),
    `boxes` (4, 4) driving face boxes in pixels; n = 16 on the first chunk (MII + 4), else 4."""

    keypoints: torch.Tensor
    tokens: torch.Tensor
    boxes: torch.Tensor

    def to(self, device):
        return MotionChunk(self.keypoints.to(device), self.tokens.to(device), self.boxes.to(device))


class HybridMotion:
    """Stateful extractor: the first call anchors the stream (reference pose, first driving frame).
    `controls` (MotionControls) may be changed between calls with `set_controls` (live)."""

    def __init__(self, motion_extractor, motion_encoder, reference, controls=None):
        self.encoder = motion_encoder
        self.extractor = motion_extractor
        self.tracker = KeypointTracker(motion_extractor)
        self.reference = reference
        self.reference_tokens = None
        self.filter = MotionFilter(controls)

    def set_controls(self, controls):
        self.filter.set(controls)

    @torch.no_grad()
    def __call__(self, frames):
        """frames: (4, 3, H, W) float32 in [-1, 1] at the reference size → MotionChunk."""
        size = frames.shape[-1]
        small = F.interpolate(frames, (KEYPOINT_SIZE, KEYPOINT_SIZE), mode="bilinear", align_corners=False) / 2 + 0.5
        first = not self.tracker.started
        pose, driving = self.tracker.pose(small, self.reference.cond if first else None)
        if not self.filter.controls.identity:
            pose = self.filter.pose(pose, self.tracker.reference_pose())
        posed = self.extractor.keypoints(pose)
        boxes = face_boxes(driving, size)
        crops = crop_faces(frames, boxes, FACE_SIZE)
        if first:
            ref_crop = crop_faces(self.reference.image[None], face_boxes(posed[:1], size), FACE_SIZE)
            crops = torch.cat([ref_crop.to(crops.dtype), crops])
        tokens = self.encoder(crops.transpose(0, 1)[None])[0]
        if first:
            self.reference_tokens, tokens = tokens[:1], tokens[1:]
        tokens = self.filter.tokens(tokens, self.reference_tokens)
        if first:
            warm = interpolate_motion(self.reference_tokens[None], tokens[None, :1], WARMUP + 1)[0, :-1]
            tokens = torch.cat([warm, tokens])
        return MotionChunk(posed, self.filter.smooth_tokens(tokens), boxes)
