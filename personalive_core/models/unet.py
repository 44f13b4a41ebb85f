"""The two SD-1.x-shaped UNets of PersonaLive.

- The *reference UNet* (2-D) runs once per reference image at t=0 only to record, at each of its
  spatial transformer blocks, the normalised tokens that the denoising UNet will attend to. It
  has no output head (the published file carries no `conv_norm_out` / `conv_out`).
- The *denoising UNet* (3-D) works on the 16-frame window folded into the batch, (B·F, C, h, w):
  per-frame timesteps, pose features added after `conv_in`, reference attention in every spatial
  transformer, and a motion module plus a temporal module after every resnet/attention pair.

Key names are those of diffusers' UNet2DConditionModel / PersonaLive's UNet3DConditionModel, so
the published state dicts load as they are. Widths and depths are read off the weights
(`UNetConfig.from_state_dict`), so smaller models of the same design load the same way.
"""

import math
import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .attention import Attention, FeedForward
from .temporal import MotionModule, TemporalModule

HEADS = 8  # the published config's attention_head_dim=8 is used as the number of heads


@dataclass(frozen=True)
class UNetConfig:
    block_out_channels: tuple = (320, 640, 1280, 1280)
    layers_per_block: int = 2
    attention_blocks: tuple = (True, True, True, False)  # down blocks with spatial transformers
    cross_attention_dim: int = 768
    in_channels: int = 4
    out_channels: int = 4  # 0: no output head (reference UNet)
    linear_projection: bool = False
    motion_dim: int = 0  # 0: no motion modules
    temporal_pos_len: int = 0  # 0: no temporal modules

    @classmethod
    def from_state_dict(cls, sd):
        def shape(key):
            if key not in sd:
                raise KeyError(key)
            return tuple(sd[key].shape)

        n_down = 1 + max(int(m.group(1)) for k in sd if (m := re.match(r"down_blocks\.(\d+)\.", k)))
        layers = 1 + max(int(m.group(1)) for k in sd if (m := re.match(r"down_blocks\.0\.resnets\.(\d+)\.", k)))
        widths = tuple(shape(f"down_blocks.{i}.resnets.0.conv1.weight")[0] for i in range(n_down))
        attn = tuple(any(k.startswith(f"down_blocks.{i}.attentions.") for k in sd) for i in range(n_down))
        proj = next(k for k in sd if k.endswith("attentions.0.proj_in.weight"))
        cross = shape(next(k for k in sd if k.endswith("transformer_blocks.0.attn2.to_k.weight")))[1]
        motion = next((k for k in sd if ".motion_modules." in k and k.endswith("attention_blocks.0.to_k.weight")), None)
        temporal = any(".temporal_modules." in k for k in sd)
        return cls(
            block_out_channels=widths,
            layers_per_block=layers,
            attention_blocks=attn,
            cross_attention_dim=cross,
            in_channels=shape("conv_in.weight")[1],
            out_channels=shape("conv_out.weight")[0] if "conv_out.weight" in sd else 0,
            linear_projection=len(shape(proj)) == 2,
            motion_dim=shape(motion)[1] if motion else 0,
            temporal_pos_len=32 if temporal else 0,
        )


def timestep_embedding(t, dim):
    """Sinusoidal embedding with cos first (flip_sin_to_cos=True, shift 0), float32."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class TimestepEmbedding(nn.Module):
    def __init__(self, dim, emb_dim):
        super().__init__()
        self.linear_1 = nn.Linear(dim, emb_dim)
        self.linear_2 = nn.Linear(emb_dim, emb_dim)

    def forward(self, x):
        return self.linear_2(F.silu(self.linear_1(x)))


class ResnetBlock(nn.Module):
    def __init__(self, cin, cout, emb_dim):
        super().__init__()
        self.norm1 = nn.GroupNorm(32, cin, eps=1e-5)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.time_emb_proj = nn.Linear(emb_dim, cout)
        self.norm2 = nn.GroupNorm(32, cout, eps=1e-5)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        if cin != cout:
            self.conv_shortcut = nn.Conv2d(cin, cout, 1)

    def forward(self, x, emb):
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.time_emb_proj(F.silu(emb))[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return (self.conv_shortcut(x) if hasattr(self, "conv_shortcut") else x) + h


class Downsample(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, stride=2, padding=1)

    def forward(self, x):
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x, size):
        """Nearest upsampling to the matching skip's size (×2 for even sizes), then a conv."""
        return self.conv(F.interpolate(x, size=size, mode="nearest"))


class TransformerBlock(nn.Module):
    """Self-attention (extended by reference tokens), cross-attention to the CLIP image embedding,
    feed-forward. `reference` is set by streaming/reference.py: it records the normalised
    tokens (reference UNet) or supplies extra keys/values (denoising UNet)."""

    def __init__(self, dim, cross_dim):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = Attention(dim, HEADS, dim // HEADS)
        self.norm2 = nn.LayerNorm(dim)
        self.attn2 = Attention(dim, HEADS, dim // HEADS, cross_dim)
        self.norm3 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim)
        self.reference = None

    def forward(self, x, context, frames):
        n = self.norm1(x)
        if self.reference is None:
            x = self.attn1(n) + x
        else:
            x = self.reference(self, n, frames) + x
        x = self.attn2(self.norm2(x), context) + x
        return self.ff(self.norm3(x)) + x


class SpatialTransformer(nn.Module):
    def __init__(self, c, cross_dim, linear):
        super().__init__()
        self.norm = nn.GroupNorm(32, c, eps=1e-6)
        self.linear = linear
        self.proj_in = nn.Linear(c, c) if linear else nn.Conv2d(c, c, 1)
        self.transformer_blocks = nn.ModuleList([TransformerBlock(c, cross_dim)])
        self.proj_out = nn.Linear(c, c) if linear else nn.Conv2d(c, c, 1)

    def forward(self, x, context, frames):
        n, c, h, w = x.shape
        t = self.norm(x)
        if not self.linear:
            t = self.proj_in(t)
        t = t.permute(0, 2, 3, 1).reshape(n, h * w, c)
        if self.linear:
            t = self.proj_in(t)
        for block in self.transformer_blocks:
            t = block(t, context, frames)
        if self.linear:
            t = self.proj_out(t)
        t = t.reshape(n, h, w, c).permute(0, 3, 1, 2)
        if not self.linear:
            t = self.proj_out(t)
        return t + x


class Stage(nn.Module):
    """One down, mid or up block: per layer resnet → attention → motion module → temporal module."""

    def __init__(self, cfg, resnet_io, channels, emb_dim, with_attention, sampler=None):
        super().__init__()
        self.resnets = nn.ModuleList(ResnetBlock(i, o, emb_dim) for i, o in resnet_io)
        n = len(resnet_io)
        if with_attention:
            self.attentions = nn.ModuleList(
                SpatialTransformer(channels, cfg.cross_attention_dim, cfg.linear_projection) for _ in range(n)
            )
        if cfg.motion_dim:
            self.motion_modules = nn.ModuleList(MotionModule(channels, cfg.motion_dim) for _ in range(n))
        if cfg.temporal_pos_len:
            self.temporal_modules = nn.ModuleList(TemporalModule(channels, cfg.temporal_pos_len) for _ in range(n))
        if sampler == "down":
            self.downsamplers = nn.ModuleList([Downsample(channels)])
        elif sampler == "up":
            self.upsamplers = nn.ModuleList([Upsample(channels)])

    def layer_extras(self, i, h, ctx):
        """Everything after resnet i: attention, motion module, temporal module."""
        if hasattr(self, "attentions"):
            h = self.attentions[i](h, ctx.context, ctx.frames)
        if hasattr(self, "motion_modules"):
            h = self.motion_modules[i](h, ctx.motion)
        if hasattr(self, "temporal_modules"):
            h = self.temporal_modules[i](h, ctx.frames)
        return h


@dataclass
class _Ctx:
    emb: torch.Tensor
    context: torch.Tensor
    motion: torch.Tensor
    frames: int


class UNet(nn.Module):
    def __init__(self, cfg: UNetConfig):
        super().__init__()
        self.config = cfg
        ch = cfg.block_out_channels
        emb_dim = ch[0] * 4
        self.conv_in = nn.Conv2d(cfg.in_channels, ch[0], 3, padding=1)
        self.time_embedding = TimestepEmbedding(ch[0], emb_dim)
        self.down_blocks = nn.ModuleList()
        cin = ch[0]
        for i, c in enumerate(ch):
            io = [(cin if j == 0 else c, c) for j in range(cfg.layers_per_block)]
            last = i == len(ch) - 1
            self.down_blocks.append(Stage(cfg, io, c, emb_dim, cfg.attention_blocks[i], None if last else "down"))
            cin = c
        self.mid_block = MidStage(cfg, ch[-1], emb_dim)
        self.up_blocks = nn.ModuleList()
        rev = list(reversed(ch))
        attn_up = list(reversed(cfg.attention_blocks))
        skips = self._skip_channels()
        prev = ch[-1]
        for i, c in enumerate(rev):
            io = []
            for j in range(cfg.layers_per_block + 1):
                io.append(((prev if j == 0 else c) + skips.pop(), c))
            last = i == len(rev) - 1
            self.up_blocks.append(Stage(cfg, io, c, emb_dim, attn_up[i], None if last else "up"))
            prev = c
        if cfg.out_channels:
            self.conv_norm_out = nn.GroupNorm(32, ch[0], eps=1e-5)
            self.conv_out = nn.Conv2d(ch[0], cfg.out_channels, 3, padding=1)

    def _skip_channels(self):
        ch = self.config.block_out_channels
        skips = [ch[0]]
        for i, c in enumerate(ch):
            skips += [c] * self.config.layers_per_block
            if i < len(ch) - 1:
                skips.append(c)
        return skips

    @property
    def dtype(self):
        return self.conv_in.weight.dtype

    def forward(self, sample, timesteps, context, frames=1, motion=None, pose=None):
        """sample (N, C, h, w) with N = B·frames; timesteps (N,) or broadcastable (1,);
        context (B, tokens, cross_dim); motion (N, tokens, motion_dim); pose (N, C0, h, w)."""
        emb = self.time_embedding(timestep_embedding(timesteps, self.config.block_out_channels[0]).to(self.dtype))
        if emb.shape[0] != sample.shape[0]:
            emb = emb.expand(sample.shape[0], -1)
        if context.shape[0] != sample.shape[0]:
            context = context.repeat_interleave(sample.shape[0] // context.shape[0], dim=0)
        ctx = _Ctx(emb, context, motion, frames)
        h = self.conv_in(sample)
        if pose is not None:
            h = h + pose
        skips = [h]
        for block in self.down_blocks:
            for i, resnet in enumerate(block.resnets):
                h = block.layer_extras(i, resnet(h, emb), ctx)
                skips.append(h)
            if hasattr(block, "downsamplers"):
                h = block.downsamplers[0](h)
                skips.append(h)
        h = self.mid_block(h, ctx)
        for block in self.up_blocks:
            for i, resnet in enumerate(block.resnets):
                h = block.layer_extras(i, resnet(torch.cat([h, skips.pop()], dim=1), emb), ctx)
            if hasattr(block, "upsamplers"):
                h = block.upsamplers[0](h, skips[-1].shape[-2:])
        if not self.config.out_channels:
            return h
        return self.conv_out(F.silu(self.conv_norm_out(h)))


class MidStage(Stage):
    """resnet 0 → (attention, motion, temporal) → resnet 1."""

    def __init__(self, cfg, c, emb_dim):
        nn.Module.__init__(self)
        self.resnets = nn.ModuleList([ResnetBlock(c, c, emb_dim), ResnetBlock(c, c, emb_dim)])
        self.attentions = nn.ModuleList([SpatialTransformer(c, cfg.cross_attention_dim, cfg.linear_projection)])
        if cfg.motion_dim:
            self.motion_modules = nn.ModuleList([MotionModule(c, cfg.motion_dim)])
        if cfg.temporal_pos_len:
            self.temporal_modules = nn.ModuleList([TemporalModule(c, cfg.temporal_pos_len)])

    def forward(self, h, ctx):
        h = self.layer_extras(0, self.resnets[0](h, ctx.emb), ctx)
        return self.resnets[1](h, ctx.emb)


def transformer_blocks(unet):
    """(name, block) of every spatial transformer block, in module order."""
    return [(n, m) for n, m in unet.named_modules() if isinstance(m, TransformerBlock)]
