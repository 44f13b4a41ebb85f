"""Attention and transformer building blocks shared by every PersonaLive network.

Parameter names follow the diffusers layout the published weights use (`to_q`, `to_k`, `to_v`,
`to_out.0`; `ff.net.0.proj`, `ff.net.2`), so checkpoints load without renaming. All attention
goes through `scaled_dot_product_attention`, which picks flash / memory-efficient kernels where
the device has them.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn


class Attention(nn.Module):
    """Multi-head attention: queries from `x`, keys and values from `context` (or `x`)."""

    def __init__(self, query_dim, heads, head_dim, context_dim=None):
        super().__init__()
        inner = heads * head_dim
        self.heads = heads
        self.to_q = nn.Linear(query_dim, inner, bias=False)
        self.to_k = nn.Linear(context_dim or query_dim, inner, bias=False)
        self.to_v = nn.Linear(context_dim or query_dim, inner, bias=False)
        # index 1 is the (parameter-free) dropout of the original layout
        self.to_out = nn.ModuleList([nn.Linear(inner, query_dim), nn.Identity()])

    def split_heads(self, t):
        b, n, _ = t.shape
        return t.view(b, n, self.heads, -1).transpose(1, 2)

    def project_kv(self, context):
        """Keys and values in head layout (B, heads, N, d); reusable across calls."""
        return self.split_heads(self.to_k(context)), self.split_heads(self.to_v(context))

    def attend(self, x, k, v, mask=None):
        """`mask`: additive, broadcast to (B, heads, Nq, Nk) (−inf hides a key)."""
        q = self.split_heads(self.to_q(x))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        b, _, n, _ = out.shape
        return self.to_out[0](out.transpose(1, 2).reshape(b, n, -1))

    def forward(self, x, context=None):
        k, v = self.project_kv(x if context is None else context)
        return self.attend(x, k, v)


class GEGLU(nn.Module):
    def __init__(self, dim, inner):
        super().__init__()
        self.proj = nn.Linear(dim, inner * 2)

    def forward(self, x):
        hidden, gate = self.proj(x).chunk(2, dim=-1)
        return hidden * F.gelu(gate)


class FeedForward(nn.Module):
    """GEGLU feed-forward, 4x expansion (`net.0.proj`, `net.2`)."""

    def __init__(self, dim, mult=4):
        super().__init__()
        self.net = nn.ModuleList([GEGLU(dim, dim * mult), nn.Identity(), nn.Linear(dim * mult, dim)])

    def forward(self, x):
        for layer in self.net:
            x = layer(x)
        return x


def sinusoid_table(length, dim):
    """AnimateDiff-style positional table (1, length, dim): sin on even, cos on odd channels."""
    pos = torch.arange(length, dtype=torch.float32).unsqueeze(1)
    div = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    pe = torch.zeros(1, length, dim)
    pe[0, :, 0::2] = torch.sin(pos * div)
    pe[0, :, 1::2] = torch.cos(pos * div)
    return pe


class PositionalEncoding(nn.Module):
    def __init__(self, dim, max_len):
        super().__init__()
        self.register_buffer("pe", sinusoid_table(max_len, dim))

    def forward(self, x):
        return x + self.pe[:, : x.shape[1]].to(x.dtype)


class SequenceAttention(Attention):
    """An attention block of a sequence transformer; optionally adds a positional table first."""

    def __init__(self, dim, heads, context_dim=None, pos_len=None):
        super().__init__(dim, heads, dim // heads, context_dim)
        self.is_cross = context_dim is not None
        if pos_len:
            self.pos_encoder = PositionalEncoding(dim, pos_len)

    def forward(self, x, context=None):
        if hasattr(self, "pos_encoder"):
            x = self.pos_encoder(x)
        return super().forward(x, context if self.is_cross else None)


class SequenceTransformerBlock(nn.Module):
    """Pre-norm attention blocks then a GEGLU feed-forward, each with a residual.

    The layout of AnimateDiff's motion-module block (`attention_blocks`, `norms`, `ff`, `ff_norm`),
    used by PersonaLive's motion modules (cross-attention to motion tokens), temporal modules
    (self-attention across frames) and the MotEncoder's spatial transformers.
    """

    def __init__(self, dim, heads, n_attn, context_dim=None, pos_len=None):
        super().__init__()
        self.attention_blocks = nn.ModuleList(
            SequenceAttention(dim, heads, context_dim, pos_len) for _ in range(n_attn)
        )
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(n_attn))
        self.ff = FeedForward(dim)
        self.ff_norm = nn.LayerNorm(dim)

    def forward(self, x, context=None):
        for attn, norm in zip(self.attention_blocks, self.norms):
            x = attn(norm(x), context) + x
        return self.ff(self.ff_norm(x)) + x
