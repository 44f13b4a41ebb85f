import torch

from personalive_core.devtools.random_weights import TINY_UNET
from personalive_core.streaming.reference import ReferenceAttention, record_tokens
from personalive_core.models.unet import UNet, UNetConfig

torch.manual_seed(0)
REF = UNetConfig(**{**TINY_UNET.__dict__, "out_channels": 0, "motion_dim": 0, "temporal_pos_len": 0})


def pair():
    return UNet(REF).eval(), UNet(TINY_UNET).eval()


def run(den, x):
    n = x.shape[0]
    return den(x, torch.zeros(n, dtype=torch.long), torch.ones(1, 1, 16), frames=n, motion=torch.zeros(n, 32, 16))


@torch.no_grad()
def test_record_tokens_are_norm1_outputs_per_block():
    ref, _ = pair()
    z = torch.randn(1, 4, 8, 8)
    tokens = record_tokens(ref, z, torch.ones(1, 1, 16))
    name = "down_blocks.0.attentions.0.transformer_blocks.0"
    assert tokens[name].shape == (1, 64, 64)  # (B, h·w, C)
    assert torch.allclose(tokens[name].mean(-1), torch.zeros(1, 64), atol=1e-5)  # LayerNorm output
    assert all(b.reference is None for b in ref.modules() if hasattr(b, "reference"))


@torch.no_grad()
def test_reference_tokens_extend_self_attention_like_concatenated_keys():
    """Cached keys/values of the bank give what projecting cat([own, bank]) gives."""
    ref, den = pair()
    att = ReferenceAttention(ref, den, bank_dtype=None, cache_kv=True)
    att.set_tokens(record_tokens(ref, torch.randn(1, 4, 8, 8), torch.ones(1, 1, 16)))
    att.bind()
    x = torch.randn(4, 4, 8, 8)
    cached = run(den, x)
    slot = next(iter(att.slots.values()))
    block = next(b for n, b in den.named_modules() if n in att.slots)
    n = torch.randn(4, 64, 64)
    kv = torch.cat([n, slot.features[0].expand(4, -1, -1)], dim=1)
    assert torch.allclose(slot(block, n, 4), block.attn1(n, kv), atol=1e-5)
    att.clear()
    att.bind()
    assert not torch.allclose(run(den, x), cached)  # the bank matters


@torch.no_grad()
def test_keyframes_append_tokens_and_fp16_bank():
    ref, den = pair()
    att = ReferenceAttention(ref, den)  # official: tokens stored as float16
    ctx = torch.ones(1, 1, 16)
    att.set_tokens(record_tokens(ref, torch.randn(1, 4, 8, 8), ctx))
    att.add_keyframe(torch.randn(1, 4, 8, 8), ctx)
    slot = next(iter(att.slots.values()))
    assert len(slot.features) == 2 and slot.features[1].dtype == torch.float16
    assert att.keyframes == 1
