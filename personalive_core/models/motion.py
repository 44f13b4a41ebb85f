"""Implicit face-motion encoder (MotEncoder) and the face crops it consumes.

The encoder is a FAN-style landmark network (ConvBlocks + one HourGlass) with three spatial
self-attention transformers spliced in, whose 512-d output becomes 32 motion tokens of 16 dims
plus a fixed sin/cos table. Parameter names follow the published `motion_encoder.pth`
(`model.*`, `final_proj.*`, buffer `pe`).

Fixed sizes (independent of the width parameters): 224x224 crops, the 28x28 token grid of every
spatial transformer, `model.fc` 784 -> 512 and the 32 x 16 motion tokens.
"""

import torch
import torch.nn.functional as F
from torch import nn

from .attention import SequenceTransformerBlock

FACE_SIZE = 224
TOKENS, TOKEN_DIM = 32, 16
GRID = 28  # token grid of the spatial transformers and size of conv6's output map


def sincos_1d(dim, pos):
    """(len(pos), dim) table: sin(p·w_k) in the first half, cos in the second, w_k = 1e4^(-k/(dim/2))."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0))
    out = pos.to(torch.float64).reshape(-1, 1) * omega
    return torch.cat([out.sin(), out.cos()], dim=1)


def sincos_2d(dim, grid):
    """(grid², dim) table of a square grid; the first half encodes the column, the second the row."""
    r = torch.arange(grid, dtype=torch.float64)
    rows, cols = torch.meshgrid(r, r, indexing="ij")
    return torch.cat([sincos_1d(dim // 2, cols), sincos_1d(dim // 2, rows)], dim=1)


def conv3x3(cin, cout):
    return nn.Conv2d(cin, cout, 3, padding=1, bias=False)


class ConvBlock(nn.Module):
    """Pre-activation block whose three 3x3 convs (out/2, out/4, out/4) are concatenated."""

    def __init__(self, cin, cout):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = conv3x3(cin, cout // 2)
        self.bn2 = nn.BatchNorm2d(cout // 2)
        self.conv2 = conv3x3(cout // 2, cout // 4)
        self.bn3 = nn.BatchNorm2d(cout // 4)
        self.conv3 = conv3x3(cout // 4, cout // 4)
        self.downsample = None
        if cin != cout:
            self.downsample = nn.Sequential(
                nn.BatchNorm2d(cin, eps=1e-4), nn.ReLU(True), nn.Conv2d(cin, cout, 1, bias=False)
            )

    def forward(self, x):
        o1 = self.conv1(F.relu(self.bn1(x)))
        o2 = self.conv2(F.relu(self.bn2(o1)))
        o3 = self.conv3(F.relu(self.bn3(o2)))
        res = x if self.downsample is None else self.downsample(x)
        return torch.cat([o1, o2, o3], 1) + res


class HourGlass(nn.Module):
    """Recursive hourglass; modules are registered in the published order (b1_n, b2_n, …, b3_n)."""

    def __init__(self, depth, ch):
        super().__init__()
        self.depth = depth
        self._build(depth, ch)

    def _build(self, level, ch):
        self.add_module(f"b1_{level}", ConvBlock(ch, ch))
        self.add_module(f"b2_{level}", ConvBlock(ch, ch))
        if level > 1:
            self._build(level - 1, ch)
        else:
            self.add_module(f"b2_plus_{level}", ConvBlock(ch, ch))
        self.add_module(f"b3_{level}", ConvBlock(ch, ch))

    def _run(self, level, x):
        up = self._modules[f"b1_{level}"](x)  # the published Dropout(0.5) here is inactive in eval
        low = self._modules[f"b2_{level}"](F.max_pool2d(x, 2, stride=2))
        low = self._run(level - 1, low) if level > 1 else self._modules[f"b2_plus_{level}"](low)
        low = self._modules[f"b3_{level}"](low)
        return up + F.interpolate(low, size=up.shape[-2:], mode="bilinear", align_corners=False)

    def forward(self, x):
        return self._run(self.depth, x)


class PatchEmbed(nn.Module):
    """Non-overlapping patch conv to tokens, plus a fixed 2-D sin/cos table (not in the state dict)."""

    def __init__(self, cin, dim, patch, grid):
        super().__init__()
        self.proj = nn.Conv2d(cin, dim, patch, stride=patch)
        self.register_buffer("pos_embed", sincos_2d(dim, grid).float()[None], persistent=False)

    def forward(self, x):
        t = self.proj(x).flatten(2).transpose(1, 2)
        return (t + self.pos_embed).to(t.dtype)


class SpatialTransformer(nn.Module):
    """Residual transformer over the 28x28 patch tokens of a feature map; the output projection
    unpatchifies each token back to its p x p pixels."""

    def __init__(self, ch, patch, dim, heads=8):
        super().__init__()
        self.patch = patch
        self.norm = nn.GroupNorm(32, ch, eps=1e-6)
        self.transformer_blocks = nn.ModuleList([SequenceTransformerBlock(dim, heads, 1)])
        self.proj_out = nn.Linear(dim // patch**2, ch)
        self.pos_embed = PatchEmbed(ch, dim, patch, GRID)

    def forward(self, x):
        n, c, h, w = x.shape
        p = self.patch
        t = self.pos_embed(self.norm(x))
        for block in self.transformer_blocks:
            t = block(t)
        t = self.proj_out(t.reshape(n, h // p, w // p, p, p, -1))
        return torch.einsum("nhwpqc->nchpwq", t).reshape(n, c, h, w) + x


class FAN(nn.Module):
    """FAN_SA: face crop (N, 3, 224, 224) -> (N, 512) feature."""

    def __init__(self, width=64, attn_dim=1024, hourglass_depth=4, landmarks=68, heads=8):
        super().__init__()
        w2, w4 = 2 * width, 4 * width
        self.conv1 = nn.Conv2d(3, width, 7, stride=2, padding=3)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = ConvBlock(width, w2)
        self.conv3 = ConvBlock(w2, w2)
        self.conv4 = ConvBlock(w2, w4)
        self.m0 = HourGlass(hourglass_depth, w4)
        self.top_m_0 = ConvBlock(w4, w4)
        self.conv_last0 = nn.Conv2d(w4, w4, 1)
        self.l0 = nn.Conv2d(w4, landmarks, 1)
        self.bn_end0 = nn.BatchNorm2d(w4)
        self.conv6 = nn.Conv2d(landmarks, 1, 3, stride=2, padding=1)
        self.fc = nn.Linear(GRID * GRID, TOKENS * TOKEN_DIM)
        self.bn5 = nn.BatchNorm2d(landmarks)
        self.att_1 = SpatialTransformer(w2, 4, attn_dim, heads)
        self.att_2 = SpatialTransformer(w4, 2, attn_dim, heads)
        self.att_3 = SpatialTransformer(w4, 2, attn_dim, heads)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))  # 112²
        x = self.att_1(self.conv2(x))
        x = self.att_2(self.conv4(self.conv3(F.max_pool2d(x, 2))))  # 56²
        x = self.bn_end0(self.conv_last0(self.top_m_0(self.m0(x))))
        x = self.l0(F.relu(self.att_3(x)))
        x = self.conv6(F.relu(self.bn5(x)))  # (N, 1, 28, 28)
        return self.fc(F.relu(x.flatten(1)))


class MotEncoder(nn.Module):
    """Face crops (B, 3, F, 224, 224) in [-1, 1] -> motion tokens (B, F, 32, 16). Use in eval()."""

    def __init__(self, width=64, attn_dim=1024, hourglass_depth=4, landmarks=68):
        super().__init__()
        self.model = FAN(width, attn_dim, hourglass_depth, landmarks)
        self.register_buffer("pe", sincos_1d(TOKEN_DIM, torch.arange(TOKENS)).float()[None])
        self.final_proj = nn.Linear(TOKENS * TOKEN_DIM, TOKENS * TOKEN_DIM)

    @property
    def dtype(self):
        return self.final_proj.weight.dtype

    def encode(self, faces):
        """(N, 3, 224, 224) -> (N, 32, 16)."""
        z = self.final_proj(self.model(faces.to(self.dtype)))
        return z.view(-1, TOKENS, TOKEN_DIM) + self.pe

    def forward(self, x):
        b, c, f, h, w = x.shape
        z = self.encode(x.transpose(1, 2).reshape(b * f, c, h, w))
        return z.view(b, f, TOKENS, TOKEN_DIM)

    @staticmethod
    def config_from_state_dict(sd):
        return dict(
            width=sd["model.conv1.weight"].shape[0],
            attn_dim=sd["model.att_1.pos_embed.proj.weight"].shape[0],
            hourglass_depth=sum(1 for k in sd if k.startswith("model.m0.b1_") and k.endswith(".bn1.weight")),
            landmarks=sd["model.l0.weight"].shape[0],
        )

    @classmethod
    def from_state_dict(cls, sd):
        model = cls(**cls.config_from_state_dict(sd))
        model.load_state_dict(sd, strict=True)
        return model.eval()

    @classmethod
    def tiny(cls):
        """Same design at toy widths, for tests. Limits: GroupNorm(32) needs width % 16 == 0; attn_dim must
        divide by the 8 heads and by 16 (att_1 unpatchifies 4x4 pixels per token)."""
        return cls(width=16, attn_dim=64, hourglass_depth=4, landmarks=8).eval()


def interpolate_motion(x, y, num):
    """(B, 1, …) endpoints -> (B, num, …): (1-a)·x + a·y, a = linspace(0, 1, num) in x's dtype."""
    a = torch.linspace(0, 1, num, device=x.device, dtype=x.dtype)
    a = a.view((1, num) + (1,) * (x.dim() - 2))
    return (1 - a) * x + a * y


def _bilinear_taps(start, stop, out, dtype):
    """Source indices and weights of a 1-D bilinear resize (align_corners=False) of [start, stop)
    to `out` samples, per row of `start`/`stop` (N,); same arithmetic as F.interpolate."""
    size = (stop - start).clamp(min=1)[:, None]
    scale = size.to(dtype) / out
    dst = torch.arange(out, device=start.device, dtype=dtype)
    # The CPU and CUDA kernels evaluate scale·(dst+0.5)−0.5 as one fused multiply-add (a single
    # rounding); the exact product in float64 reproduces that, which matters: an ulp of a source
    # position near 500 moves the sample by 3e-5. (MPS has no float64: plain rounding there.)
    wide = torch.float32 if start.device.type == "mps" else torch.float64
    src = (scale.to(wide) * (dst.to(wide) + 0.5) - 0.5).to(dtype).clamp(min=0)
    i0 = torch.minimum(src.floor().long(), size - 1)
    lam1 = (src - i0).clamp(0, 1)
    i1 = i0 + (i0 < size - 1).long()
    return start[:, None] + i0, start[:, None] + i1, 1 - lam1, lam1


def crop_faces(images, boxes, size=FACE_SIZE):
    """Per-image crop images[n, :, y1:y2, x1:x2] resized to size x size (bilinear,
    align_corners=False), as a gather with no host sync. images (N, C, H, W); boxes (N, 4) long
    [x1, y1, x2, y2]. An empty box is treated as 1 pixel wide (the slice+interpolate version fails)."""
    n, c, h, w = images.shape
    op = torch.float64 if images.dtype == torch.float64 else torch.float32
    x1, y1, x2, y2 = boxes.to(images.device).long().unbind(1)
    ya, yb, wy0, wy1 = _bilinear_taps(y1.clamp(0, h - 1), y2.clamp(0, h), size, op)
    xa, xb, wx0, wx1 = _bilinear_taps(x1.clamp(0, w - 1), x2.clamp(0, w), size, op)

    def rows(idx):  # (N, C, size, W)
        return images.gather(2, idx[:, None, :, None].expand(n, c, size, w)).to(op)

    def cols(t, idx):  # (N, C, size, size)
        return t.gather(3, idx[:, None, None, :].expand(n, c, size, size))

    wx0, wx1 = wx0[:, None, None, :], wx1[:, None, None, :]
    r0, r1 = rows(ya), rows(yb)
    top = wx0 * cols(r0, xa) + wx1 * cols(r0, xb)
    bottom = wx0 * cols(r1, xa) + wx1 * cols(r1, xb)
    out = wy0[:, None, :, None] * top + wy1[:, None, :, None] * bottom
    return out.to(images.dtype)
