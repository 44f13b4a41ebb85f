"""LivePortrait-style 3-D implicit keypoints: the MotionExtractor (ConvNeXt-V2 backbone with pose,
scale, translation and canonical-keypoint heads) with its relative-motion arithmetic, and the
keypoint rendering / face boxes derived from it. The stateful online tracker of a stream is
`streaming/keypoint_tracker.py`.

Parameter names follow the published `motion_extractor.pth` (`detector.*`, buffer `idx_tensor`).
Fixed sizes: 256x256 input, 66 head-pose bins of 3 degrees, 4 stages.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

NUM_BINS = 66
SELECTED = (1, 2, 3, 4, 12, 15, 20)  # the 7 keypoints drawn and used for face boxes
COLORS = ((255, 0, 0), (255, 255, 0), (0, 255, 0), (0, 255, 255), (0, 0, 255), (255, 0, 255), (255, 0, 85))
RADIUS_SQ = 16


class Fp32LayerNorm(nn.Module):
    """LayerNorm whose weights stay fp32 when the module is cast to fp16/bf16, and which computes in
    fp32, returning the input dtype (as the published model does). channels_first normalises dim 1."""

    def __init__(self, dim, channels_first=False, eps=1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.channels_first = channels_first
        self.eps = eps

    def _apply(self, fn, recurse=True):
        # cast from the pre-cast fp32 values, so a half round trip never rounds the weights
        before = {k: p.data for k, p in self._parameters.items()}
        super()._apply(fn, recurse)
        for k, p in self._parameters.items():
            if p.dtype in (torch.float16, torch.bfloat16):
                p.data = before[k].to(device=p.device, dtype=torch.float32)
        return self

    def forward(self, x):
        y = x.float()
        if self.channels_first:
            y = y.permute(0, 2, 3, 1)
        y = F.layer_norm(y, self.weight.shape, self.weight, self.bias, self.eps)
        if self.channels_first:
            y = y.permute(0, 3, 1, 2)
        return y.to(x.dtype)


class GRN(nn.Module):
    """Global response normalisation over (H, W) of NHWC features."""

    def __init__(self, dim):
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1, 1, 1, dim))
        self.beta = nn.Parameter(torch.zeros(1, 1, 1, dim))

    def forward(self, x):
        gx = torch.norm(x, p=2, dim=(1, 2), keepdim=True)
        nx = gx / (gx.mean(dim=-1, keepdim=True) + 1e-6)
        return self.gamma * (x * nx) + self.beta + x


class Block(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = Fp32LayerNorm(dim)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.grn = GRN(4 * dim)
        self.pwconv2 = nn.Linear(4 * dim, dim)

    def forward(self, x):
        y = self.norm(self.dwconv(x).permute(0, 2, 3, 1))
        y = self.pwconv2(self.grn(F.gelu(self.pwconv1(y))))
        return x + y.permute(0, 3, 1, 2)


class ConvNeXtV2(nn.Module):
    """Backbone + heads: (N, 3, 256, 256) in [0, 1] -> dict of raw head outputs."""

    def __init__(self, dims, depths, num_kp):
        super().__init__()
        self.downsample_layers = nn.ModuleList(
            [nn.Sequential(nn.Conv2d(3, dims[0], 4, stride=4), Fp32LayerNorm(dims[0], channels_first=True))]
        )
        for i in range(3):
            self.downsample_layers.append(
                nn.Sequential(Fp32LayerNorm(dims[i], channels_first=True), nn.Conv2d(dims[i], dims[i + 1], 2, stride=2))
            )
        self.stages = nn.ModuleList(nn.Sequential(*(Block(d) for _ in range(n))) for d, n in zip(dims, depths))
        self.norm = nn.LayerNorm(dims[-1], eps=1e-6)
        c = dims[-1]
        self.fc_kp = nn.Linear(c, 3 * num_kp)
        self.fc_scale = nn.Linear(c, 1)
        self.fc_pitch = nn.Linear(c, NUM_BINS)
        self.fc_yaw = nn.Linear(c, NUM_BINS)
        self.fc_roll = nn.Linear(c, NUM_BINS)
        self.fc_t = nn.Linear(c, 3)
        self.fc_exp = nn.Linear(c, 3 * num_kp)  # published but never evaluated

    def forward(self, x):
        for down, stage in zip(self.downsample_layers, self.stages):
            x = stage(down(x))
        x = self.norm(x.mean([-2, -1]))
        return {
            "pitch": self.fc_pitch(x),
            "yaw": self.fc_yaw(x),
            "roll": self.fc_roll(x),
            "t": self.fc_t(x),
            "scale": self.fc_scale(x),
            "kp": self.fc_kp(x),
        }


def headpose_to_degrees(pred, idx):
    """(N, 66) bin logits -> (N,) degrees (expected bin · 3 − 97.5); anything else is taken as degrees already."""
    if pred.dim() > 1 and pred.shape[1] == idx.numel():
        return torch.softmax(pred, dim=1) @ idx * 3 - 97.5
    return pred


def rotation_matrix(pitch, yaw, roll):
    """Degrees (N, 1) each -> (N, 3, 3) = (Rz·Ry·Rx)ᵀ. Angles are converted in their own dtype; the
    matrices are at least fp32 (fp32 ones/zeros promote them)."""
    x, y, z = (a.reshape(-1, 1) / 180 * math.pi for a in (pitch, yaw, roll))
    n = x.shape[0]
    one = torch.ones(n, 1, device=x.device)
    zero = torch.zeros(n, 1, device=x.device)

    def mat(*entries):
        return torch.cat(entries, dim=1).reshape(n, 3, 3)

    rx = mat(one, zero, zero, zero, x.cos(), -x.sin(), zero, x.sin(), x.cos())
    ry = mat(y.cos(), zero, y.sin(), zero, one, zero, -y.sin(), zero, y.cos())
    rz = mat(z.cos(), -z.sin(), zero, z.sin(), z.cos(), zero, zero, zero, one)
    return (rz @ ry @ rx).transpose(1, 2)


def interpolate_rows(a, b, num):
    """(1, …) endpoints -> (num − 1, …): (1−α)·a + α·b for α = linspace(0, 1, num) in a's dtype, last row dropped."""
    alphas = torch.linspace(0, 1, num, device=a.device, dtype=a.dtype).view((num,) + (1,) * (a.dim() - 1))
    return ((1 - alphas) * a + alphas * b)[:-1]


class MotionExtractor(nn.Module):
    """LivePortrait motion extractor; call it on (N, 3, 256, 256) images in [0, 1] for the raw head
    outputs, use `keypoints` to turn them into posed 3-D keypoints (N, num_kp, 3)."""

    def __init__(self, dims=(96, 192, 384, 768), depths=(3, 3, 9, 3), num_kp=21):
        super().__init__()
        self.detector = ConvNeXtV2(dims, depths, num_kp)
        self.register_buffer("idx_tensor", torch.arange(NUM_BINS, dtype=torch.float32))

    @property
    def dtype(self):
        return self.detector.fc_kp.weight.dtype

    def forward(self, x):
        return self.detector(x.to(self.dtype))

    def degrees(self, *preds):
        """Pitch/yaw/roll predictions (logits or degrees) -> the three in degrees, one call as published."""
        return headpose_to_degrees(torch.cat(preds, dim=0), self.idx_tensor).chunk(3, dim=0)

    def keypoints(self, info):
        """kp = (canonical @ R) · scale, then + (tx, ty); no expression term, t_z unused."""
        n = info["kp"].shape[0]
        pitch, yaw, roll = self.degrees(info["pitch"], info["yaw"], info["roll"])
        rot = rotation_matrix(pitch, yaw, roll).to(self.dtype)
        kp = (info["kp"].reshape(n, -1, 3) @ rot) * info["scale"][..., None]
        return torch.cat([kp[..., :2] + info["t"][:, None, :2], kp[..., 2:]], dim=-1)

    def head_pose(self, info):
        """Raw head outputs → the pose parameters: pitch/yaw/roll in degrees (N,) each; t, scale, kp as given."""
        pitch, yaw, roll = self.degrees(info["pitch"], info["yaw"], info["roll"])
        return dict(info, pitch=pitch, yaw=yaw, roll=roll)

    def posed_online(self, ref, motion, num_interp=13, t_scale=0.5, s_scale=0):
        """First chunk: `num_interp − 1` frames easing the reference pose into the first driving pose,
        then the N driving frames (reference canonical keypoints and scale; translation relative to
        the first driving frame). Returns (pose parameters of those num_interp−1+N frames (degrees;
        `keypoints` composes them), ref info, first-frame info, absolute driving kps (N, K, 3))."""
        kp_ref = self(ref)
        kp_frame1 = self(motion[:1])  # separate batch-1 pass: the anchor later chunks use
        kp_dri = self(motion)
        p1, y1, r1 = self.degrees(kp_ref["pitch"], kp_ref["yaw"], kp_ref["roll"])
        p2, y2, r2 = self.degrees(kp_dri["pitch"], kp_dri["yaw"], kp_dri["roll"])
        t2 = (kp_dri["t"] - kp_dri["t"][0]) * t_scale + kp_ref["t"]
        s2 = kp_dri["scale"] * s_scale + kp_ref["scale"]

        def ease(first, drv):
            return torch.cat([interpolate_rows(first, drv[:1], num_interp), drv], dim=0)

        info = {
            "pitch": ease(p1, p2),
            "yaw": ease(y1, y2),
            "roll": ease(r1, r2),
            "t": ease(kp_ref["t"], t2),
            "scale": ease(kp_ref["scale"], s2),
            "kp": kp_ref["kp"].repeat(num_interp - 1 + motion.shape[0], 1),
        }
        return info, kp_ref, kp_frame1, self.keypoints(kp_dri)

    def posed(self, kp_ref, kp_frame1, motion, t_scale=0.5, s_scale=0):
        """Later chunks: the driving head pose on the reference keypoints. Returns (pose parameters
        (degrees), absolute driving kps)."""
        m = self(motion)
        info = dict(
            self.head_pose(m),
            t=(m["t"] - kp_frame1["t"]) * t_scale + kp_ref["t"],
            scale=m["scale"] * s_scale + kp_ref["scale"],
            kp=kp_ref["kp"].repeat(motion.shape[0], 1),
        )
        return info, self.keypoints(m)

    @staticmethod
    def config_from_state_dict(sd):
        dims = [sd["detector.downsample_layers.0.0.weight"].shape[0]]
        dims += [sd[f"detector.downsample_layers.{i}.1.weight"].shape[0] for i in (1, 2, 3)]
        depths = [len({k.split(".")[3] for k in sd if k.startswith(f"detector.stages.{i}.")}) for i in range(4)]
        return dict(dims=dims, depths=depths, num_kp=sd["detector.fc_kp.weight"].shape[0] // 3)

    @classmethod
    def from_state_dict(cls, sd):
        """Strict load; `idx_tensor` (a constant the official loader tolerates missing) is filled in if absent."""
        model = cls(**cls.config_from_state_dict(sd))
        model.load_state_dict({"idx_tensor": model.idx_tensor, **sd}, strict=True)
        return model.eval()

    @classmethod
    def tiny(cls):
        return cls(dims=(8, 16, 32, 64), depths=(1, 1, 1, 1)).eval()


def _canvas_hw(size):
    return (size, size) if isinstance(size, int) else tuple(size)


def _pixel_points(kps, height, width):
    """Selected keypoints -> integer pixel (x, y), (N, 7) each: arithmetic in the kps dtype, then truncation.
    Picked with slices: an index list would be a host tensor copied synchronously to the device."""
    pts = torch.cat([kps[:, i : i + 1] for i in SELECTED], dim=1) * 0.5 + 0.5
    return (pts[..., 0] * width).long(), (pts[..., 1] * height).long()


def draw_keypoints(kps, size=512):
    """(N, K, 3) keypoints -> (N, 3, H, W) fp32 image: a radius-4 disc per selected point, colours added,
    clamped to 1."""
    h, w = _canvas_hw(size)
    x, y = _pixel_points(kps, h, w)
    cols = torch.arange(w, device=kps.device)
    rows = torch.arange(h, device=kps.device)[:, None]
    canvas = kps.new_zeros((kps.shape[0], 3, h, w), dtype=torch.float32)
    for i, colour in enumerate(COLORS):
        disc = (x[:, i, None, None] - cols) ** 2 + (y[:, i, None, None] - rows) ** 2 <= RADIUS_SQ
        for c, v in enumerate(colour):
            if v:  # python scalars, so no colour table has to be uploaded
                canvas[:, c] += disc * (v / 255.0)
    return canvas.clamp(0, 1)


def face_boxes(kps, size=512):
    """(N, K, 3) keypoints -> (N, 4) long [x1, y1, x2, y2] face boxes in canvas pixels (exclusive ends)."""
    h, w = _canvas_hw(size)
    x, y = _pixel_points(kps, h, w)
    cx, cy = x.float().mean(dim=1), y.float().mean(dim=1)
    side = (cy - y.float().min(dim=1).values) * 2.0
    side = side * 1.7
    x1 = (cx - side / 2 * 0.95).clamp(0, w - 1).long()
    y1 = (cy - side / 2 * 0.95).clamp(0, h - 1).long()
    x2 = (cx + side / 2 * 1.05).clamp(0, w - 1).long()
    y2 = (cy + side / 2 * 1.05).clamp(0, h - 1).long()
    return torch.stack([x1, y1, x2, y2], dim=1)
