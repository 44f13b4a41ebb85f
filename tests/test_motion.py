import math

import pytest
import torch
import torch.nn.functional as F

from personalive_core.models.motion import MotEncoder, SpatialTransformer, crop_faces, interpolate_motion, sincos_2d

torch.set_grad_enabled(False)


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    # the toy models are per-op-overhead bound; intra-op threads only add sync cost (and stall on a busy host)
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def random_tiny(seed=0):
    """Tiny MotEncoder with random weights and non-trivial BatchNorm statistics."""
    torch.manual_seed(seed)
    model = MotEncoder.tiny()
    for name, t in model.state_dict().items():
        if name.endswith("running_mean") or name.endswith(".bias"):
            t.copy_(torch.randn_like(t) * 0.1)
        elif name.endswith("running_var"):
            t.copy_(torch.rand_like(t) + 0.5)
    return model


@pytest.fixture(scope="module")
def tiny():
    return random_tiny()


def test_full_size_key_layout():
    with torch.device("meta"):
        sd = MotEncoder().state_dict()
    assert len(sd) == 403
    expected = {
        "pe": (1, 32, 16),
        "model.conv1.weight": (64, 3, 7, 7),
        "model.conv2.downsample.0.running_var": (64,),
        "model.conv2.downsample.2.weight": (128, 64, 1, 1),
        "model.m0.b2_plus_1.conv3.weight": (64, 64, 3, 3),
        "model.l0.weight": (68, 256, 1, 1),
        "model.fc.weight": (512, 784),
        "model.att_1.norm.weight": (128,),
        "model.att_1.pos_embed.proj.weight": (1024, 128, 4, 4),
        "model.att_1.proj_out.weight": (128, 64),
        "model.att_3.proj_out.weight": (256, 256),
        "model.att_2.transformer_blocks.0.attention_blocks.0.to_out.0.bias": (1024,),
        "model.att_2.transformer_blocks.0.ff.net.0.proj.weight": (8192, 1024),
        "model.att_2.transformer_blocks.0.ff.net.2.weight": (1024, 4096),
        "final_proj.weight": (512, 512),
    }
    assert {k: tuple(sd[k].shape) for k in expected} == expected
    hourglass = {k.split(".")[2] for k in sd if k.startswith("model.m0.")}
    assert hourglass == {
        "b1_1",
        "b1_2",
        "b1_3",
        "b1_4",
        "b2_1",
        "b2_2",
        "b2_3",
        "b2_4",
        "b2_plus_1",
        "b3_1",
        "b3_2",
        "b3_3",
        "b3_4",
    }
    assert not any("pos_embed.pos_embed" in k for k in sd)  # the 2-D table is not persistent
    assert sum(k.endswith("downsample.0.weight") for k in sd) == 2  # only conv2 and conv4 change width
    assert MotEncoder.config_from_state_dict(sd) == dict(width=64, attn_dim=1024, hourglass_depth=4, landmarks=68)


def test_strict_round_trip_and_config_inference(tiny):
    sd = tiny.state_dict()
    assert MotEncoder.config_from_state_dict(sd) == dict(width=16, attn_dim=64, hourglass_depth=4, landmarks=8)
    clone = MotEncoder.from_state_dict(sd)
    assert not clone.training
    x = torch.rand(1, 3, 1, 224, 224) * 2 - 1
    assert torch.equal(clone(x), tiny(x))
    with pytest.raises(RuntimeError):
        MotEncoder.from_state_dict({k: v for k, v in sd.items() if k != "model.bn5.running_var"})


def test_positional_table_values():
    pe = MotEncoder.tiny().pe[0]
    assert pe.shape == (32, 16)
    assert torch.equal(pe[0], torch.tensor([0.0] * 8 + [1.0] * 8))
    w = [10000 ** (-k / 8) for k in range(8)]
    assert pe[1, 0].item() == pytest.approx(math.sin(1))
    assert pe[1, 8].item() == pytest.approx(math.cos(1))
    assert pe[5, 3].item() == pytest.approx(math.sin(5 * w[3]))
    assert pe[31, 15].item() == pytest.approx(math.cos(31 * w[7]))
    t = sincos_2d(8, 3)  # row-major 3x3 grid; first half encodes the column, second the row
    row, col = 1, 2
    assert t[row * 3 + col].tolist() == pytest.approx(
        [
            math.sin(col),
            math.sin(col * 0.01),
            math.cos(col),
            math.cos(col * 0.01),
            math.sin(row),
            math.sin(row * 0.01),
            math.cos(row),
            math.cos(row * 0.01),
        ]
    )


def test_forward_folds_frames_and_uses_running_stats(tiny):
    x = torch.rand(2, 3, 2, 224, 224) * 2 - 1
    out = tiny(x)
    assert out.shape == (2, 2, 32, 16) and out.dtype == torch.float32
    single = tiny.encode(x[1, :, 0][None])  # batch 1, frame 0, alone: BatchNorm must not see the batch
    torch.testing.assert_close(out[1, 0], single[0], rtol=1e-4, atol=1e-5)
    assert not torch.allclose(out[0, 0], out[1, 0])


def test_zero_projection_gives_the_table(tiny):
    model = random_tiny()
    model.final_proj.weight.zero_()
    model.final_proj.bias.zero_()
    out = model(torch.rand(1, 3, 2, 224, 224))
    assert torch.equal(out, model.pe.expand(2, 32, 16)[None])


def test_spatial_transformer_unpatchify_layout():
    st = SpatialTransformer(32, patch=2, dim=64)
    block = st.transformer_blocks[0]
    for lin in (block.attention_blocks[0].to_out[0], block.ff.net[2]):  # block becomes the identity
        lin.weight.zero_()
        lin.bias.zero_()
    st.pos_embed.proj.weight.zero_()
    st.pos_embed.proj.bias.zero_()
    table = torch.arange(784 * 64, dtype=torch.float32).view(1, 784, 64)
    st.pos_embed.pos_embed.copy_(table)  # tokens = this table
    st.proj_out.weight.copy_(torch.eye(32, 16))
    st.proj_out.bias.zero_()
    x = torch.randn(1, 32, 56, 56)
    out = st(x) - x
    r, s = torch.meshgrid(torch.arange(56), torch.arange(56), indexing="ij")
    # pixel (r, s) of channel c < 16 holds token (r//2, s//2), sub-pixel (r%2, s%2), slot c
    for c in (0, 7, 15):
        expected = table[0, (r // 2) * 28 + s // 2, ((r % 2) * 2 + s % 2) * 16 + c]
        torch.testing.assert_close(out[0, c], expected, rtol=0, atol=1e-2)
    assert out[0, 16:].abs().max() == 0


def test_low_precision_forward(tiny):
    model = random_tiny().to(torch.bfloat16)
    x = torch.rand(1, 3, 1, 224, 224) * 2 - 1
    out = model(x)  # fp32 input is cast to the module dtype
    assert out.dtype == torch.bfloat16
    ref = tiny(x)
    assert ((out.float() - ref).norm() / ref.norm()).item() < 0.05


def naive_crop(images, boxes, size=224):
    return torch.cat(
        [
            F.interpolate(img[:, y1:y2, x1:x2][None], (size, size), mode="bilinear", align_corners=False)
            for img, (x1, y1, x2, y2) in zip(images, boxes.tolist())
        ]
    )


def test_crop_faces_matches_slice_and_interpolate():
    g = torch.Generator().manual_seed(0)
    n = 24
    images = torch.randn(n, 3, 512, 512, generator=g)
    x1 = torch.randint(0, 500, (n,), generator=g)
    y1 = torch.randint(0, 500, (n,), generator=g)
    x2 = torch.minimum(x1 + torch.randint(1, 512, (n,), generator=g), torch.tensor(511))
    y2 = torch.minimum(y1 + torch.randint(1, 512, (n,), generator=g), torch.tensor(511))
    boxes = torch.stack([x1, y1, x2, y2], 1)
    boxes[0] = torch.tensor([0, 0, 511, 511])  # down-sampling
    boxes[1] = torch.tensor([10, 20, 11, 23])  # 1 x 3 pixels: up-sampling, edge clamping
    boxes[2] = torch.tensor([100, 100, 324, 324])  # exactly 224: identity
    out = crop_faces(images, boxes)
    assert out.shape == (n, 3, 224, 224)
    torch.testing.assert_close(out, naive_crop(images, boxes), rtol=0, atol=2e-6)
    assert torch.equal(out[2], images[2, :, 100:324, 100:324])


def test_crop_faces_keeps_dtype_and_non_square_images():
    images = torch.rand(2, 3, 300, 400)
    boxes = torch.tensor([[5, 7, 390, 290], [200, 100, 260, 130]])
    out = crop_faces(images.half(), boxes)
    assert out.dtype == torch.float16
    torch.testing.assert_close(out.float(), naive_crop(images, boxes), rtol=0, atol=2e-3)


def test_interpolate_motion():
    x = torch.zeros(2, 1, 32, 16, dtype=torch.float16)
    y = torch.ones(2, 1, 32, 16, dtype=torch.float16)
    out = interpolate_motion(x, y, 13)
    assert out.shape == (2, 13, 32, 16) and out.dtype == torch.float16
    assert torch.equal(out[:, 0], x[:, 0]) and torch.equal(out[:, -1], y[:, 0])
    # alphas are fp16 linspace values (1/12 rounds to 0.08331298828125)
    assert out[1, 1, 5, 5].item() == torch.tensor(1 / 12, dtype=torch.float16).item() == 0.08331298828125
    a = torch.randn(1, 1, 4)
    b = torch.randn(1, 1, 4)
    torch.testing.assert_close(interpolate_motion(a, b, 5)[0, 2], (a + b)[0, 0] / 2)
