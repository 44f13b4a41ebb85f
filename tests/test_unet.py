import torch

from personalive_core.devtools.random_weights import TINY_UNET
from personalive_core.models.unet import UNet, UNetConfig, timestep_embedding, transformer_blocks

torch.manual_seed(0)


def tiny(**kw):
    return UNet(UNetConfig(**{**TINY_UNET.__dict__, **kw})).eval()


def test_config_read_back_from_weights():
    for cfg in (TINY_UNET, UNetConfig(**{**TINY_UNET.__dict__, "layers_per_block": 2, "linear_projection": True})):
        assert UNetConfig.from_state_dict(UNet(cfg).state_dict()) == cfg


def test_published_key_layout():
    """The SD-1.x layout of the published denoising UNet, built on the meta device."""
    with torch.device("meta"):
        sd = UNet(UNetConfig(motion_dim=16, temporal_pos_len=32)).state_dict()
    assert sd["conv_in.weight"].shape == (320, 4, 3, 3)
    assert sd["down_blocks.2.attentions.1.transformer_blocks.0.attn2.to_k.weight"].shape == (1280, 768)
    assert sd["up_blocks.0.resnets.2.conv1.weight"].shape == (1280, 2560, 3, 3)
    assert sd["up_blocks.3.resnets.0.conv_shortcut.weight"].shape == (320, 960, 1, 1)
    mm = "down_blocks.3.motion_modules.1.temporal_transformer.transformer_blocks.0.attention_blocks.0.to_k.weight"
    assert sd[mm].shape == (1280, 16)
    pe = "mid_block.temporal_modules.0.temporal_transformer.transformer_blocks.0.attention_blocks.1.pos_encoder.pe"
    assert sd[pe].shape == (1, 32, 1280)
    # one of each per resnet layer: 4 down blocks × 2 + mid 1 + 4 up blocks × 3
    assert sum(".motion_modules." in k and k.endswith("proj_in.weight") for k in sd) == 21
    assert sum(".temporal_modules." in k and k.endswith("proj_in.weight") for k in sd) == 21
    assert len([k for k in sd if k.startswith("up_blocks.0.attentions")]) == 0


def test_timestep_embedding_cos_first():
    e = timestep_embedding(torch.tensor([0, 10]), 8)
    assert torch.equal(e[0], torch.tensor([1.0] * 4 + [0.0] * 4))
    assert torch.allclose(e[1, 0], torch.cos(torch.tensor(10.0)))


def test_shapes_and_per_frame_independence_of_motion():
    unet = tiny()
    n, h = 16, 8
    x = torch.randn(n, 4, h, h)
    t = torch.tensor([0, 333, 666, 999]).repeat_interleave(4)
    ctx = torch.randn(1, 1, 16)
    motion = torch.randn(n, 32, 16)
    with torch.no_grad():
        out = unet(x, t, ctx, frames=n, motion=motion, pose=torch.zeros(n, 64, h, h))
        assert out.shape == x.shape
        # the temporal modules mix frames: changing frame 15's motion changes frame 0
        m2 = motion.clone()
        m2[15] += 1
        assert not torch.allclose(unet(x, t, ctx, frames=n, motion=m2)[0], unet(x, t, ctx, frames=n, motion=motion)[0])


def test_reference_unet_has_no_head_and_sixteen_blocks_at_published_size():
    with torch.device("meta"):
        ref = UNet(UNetConfig(out_channels=0))
    sd = ref.state_dict()
    assert not any(k.startswith(("conv_out", "conv_norm_out")) for k in sd)
    assert len(transformer_blocks(ref)) == 16


def test_bf16_forward():
    unet = tiny().to(torch.bfloat16)
    x = torch.randn(4, 4, 8, 8, dtype=torch.bfloat16)
    with torch.no_grad():
        out = unet(
            x,
            torch.zeros(4, dtype=torch.long),
            torch.randn(1, 1, 16, dtype=torch.bfloat16),
            frames=4,
            motion=torch.randn(4, 32, 16, dtype=torch.bfloat16),
        )
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()
