"""The online keypoint state of one stream: the reference's head pose and the first driving frame's
translation anchor, set by the stream's first chunk and used by every later one (the explicit half of
hybrid motion; the MotionExtractor's arithmetic is `models/keypoints.py`)."""


class KeypointTracker:
    """Online pose state: the reference's head info and the first driving frame's translation anchor."""

    def __init__(self, extractor, num_interp=13):
        self.extractor = extractor
        self.num_interp = num_interp
        self.reset()

    def reset(self):
        self.ref = self.anchor = None

    @property
    def started(self):
        return self.ref is not None

    def reference_pose(self):
        """The reference's pose parameters (1 row, degrees), as the first eased row holds them."""
        return self.extractor.head_pose(self.ref)

    def pose(self, frames, ref=None):
        """frames (N, 3, 256, 256) in [0, 1]; `ref` (1, 3, 256, 256) on the first call only. Returns (pose
        parameters: num_interp−1+N rows on the first call, N later; absolute driving kps (N, K, 3))."""
        if not self.started:
            info, self.ref, self.anchor, kps_dri = self.extractor.posed_online(ref, frames, self.num_interp)
            return info, kps_dri
        return self.extractor.posed(self.ref, self.anchor, frames)

    def __call__(self, frames, ref=None):
        """`pose` with the pose composed: (pose kps, absolute driving kps (N, K, 3))."""
        info, kps_dri = self.pose(frames, ref)
        return self.extractor.keypoints(info), kps_dri
