"""Motion modules and temporal modules of the denoising UNet.

Both are AnimateDiff-style blocks that sit after every resnet/attention pair:
- a *motion module* lets each frame's spatial tokens cross-attend to that frame's 32 implicit
  motion tokens (MotEncoder output, 16-d);
- a *temporal module* lets each spatial position attend across the 16 frames of the window, with a
  sinusoidal frame-position table.
Their output is added to the input (the block is residual as a whole).
"""

from torch import nn

from .attention import SequenceTransformerBlock

HEADS = 8


class FrameTransformer(nn.Module):
    """GroupNorm → Linear in → transformer block → Linear out, over (B·F, C, h, w) feature maps."""

    def __init__(self, channels, context_dim=None, pos_len=None):
        super().__init__()
        self.norm = nn.GroupNorm(32, channels, eps=1e-6)
        self.proj_in = nn.Linear(channels, channels)
        self.transformer_blocks = nn.ModuleList([SequenceTransformerBlock(channels, HEADS, 2, context_dim, pos_len)])
        self.proj_out = nn.Linear(channels, channels)

    def tokens_in(self, x):
        n, c, h, w = x.shape
        return self.proj_in(self.norm(x).permute(0, 2, 3, 1).reshape(n, h * w, c))

    def tokens_out(self, t, like):
        n, c, h, w = like.shape
        return self.proj_out(t).reshape(n, h, w, c).permute(0, 3, 1, 2) + like


class MotionModule(nn.Module):
    """Per-frame cross-attention from spatial tokens to the frame's motion tokens."""

    def __init__(self, channels, motion_dim):
        super().__init__()
        self.temporal_transformer = FrameTransformer(channels, context_dim=motion_dim)

    def forward(self, x, motion):
        """x: (B·F, C, h, w); motion: (B·F, tokens, motion_dim)."""
        tt = self.temporal_transformer
        t = tt.tokens_in(x)
        for block in tt.transformer_blocks:
            t = block(t, motion)
        return tt.tokens_out(t, x)


class TemporalModule(nn.Module):
    """Self-attention across the frames of the window at every spatial position."""

    def __init__(self, channels, pos_len=32):
        super().__init__()
        self.temporal_transformer = FrameTransformer(channels, pos_len=pos_len)

    def forward(self, x, frames):
        tt = self.temporal_transformer
        t = tt.tokens_in(x)
        nf, hw, c = t.shape
        # (b f) d c -> (b d) f c; LayerNorm and FF are per token, so the whole block runs here
        t = t.view(nf // frames, frames, hw, c).transpose(1, 2).reshape(-1, frames, c)
        for block in tt.transformer_blocks:
            t = block(t)
        t = t.view(nf // frames, hw, frames, c).transpose(1, 2).reshape(nf, hw, c)
        return tt.tokens_out(t, x)
