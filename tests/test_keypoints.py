import pytest
import torch

from personalive_core.streaming.keypoint_tracker import KeypointTracker
from personalive_core.models.keypoints import (
    Fp32LayerNorm,
    MotionExtractor,
    draw_keypoints,
    face_boxes,
    headpose_to_degrees,
    rotation_matrix,
)

torch.set_grad_enabled(False)


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    # the toy models are per-op-overhead bound; intra-op threads only add sync cost (and stall on a busy host)
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


IDX = torch.arange(66, dtype=torch.float32)


def random_tiny(seed=0):
    """Tiny extractor with random weights whose heads give keypoints inside the image."""
    torch.manual_seed(seed)
    model = MotionExtractor.tiny()
    for name, p in model.named_parameters():
        if "grn" in name or name.endswith("norm.bias"):
            p.copy_(torch.randn_like(p) * 0.1)
    det = model.detector
    det.fc_kp.bias.copy_((torch.rand(63) - 0.5) * 0.7)
    det.fc_scale.bias.fill_(1.0)
    for head in (det.fc_kp, det.fc_t, det.fc_scale):
        head.weight.mul_(0.05)
    return model


@pytest.fixture(scope="module")
def tiny():
    return random_tiny()


def test_full_size_key_layout():
    with torch.device("meta"):
        sd = MotionExtractor().state_dict()
    assert len(sd) == 213
    expected = {
        "idx_tensor": (66,),
        "detector.downsample_layers.0.0.weight": (96, 3, 4, 4),
        "detector.downsample_layers.0.1.weight": (96,),
        "detector.downsample_layers.3.0.bias": (384,),
        "detector.downsample_layers.3.1.weight": (768, 384, 2, 2),
        "detector.stages.0.0.dwconv.weight": (96, 1, 7, 7),
        "detector.stages.2.8.grn.gamma": (1, 1, 1, 1536),
        "detector.stages.3.2.pwconv2.weight": (768, 3072),
        "detector.norm.weight": (768,),
        "detector.fc_kp.weight": (63, 768),
        "detector.fc_exp.bias": (63,),
        "detector.fc_pitch.weight": (66, 768),
        "detector.fc_scale.weight": (1, 768),
        "detector.fc_t.weight": (3, 768),
    }
    assert {k: tuple(sd[k].shape) for k in expected} == expected
    assert all(k.startswith("detector.") for k in sd if k != "idx_tensor")
    assert MotionExtractor.config_from_state_dict(sd) == dict(dims=[96, 192, 384, 768], depths=[3, 3, 9, 3], num_kp=21)


def test_strict_round_trip_and_missing_idx_tensor(tiny):
    sd = tiny.state_dict()
    assert MotionExtractor.config_from_state_dict(sd) == dict(dims=[8, 16, 32, 64], depths=[1, 1, 1, 1], num_kp=21)
    x = torch.rand(2, 3, 256, 256)
    ref = tiny(x)
    assert {k: tuple(v.shape) for k, v in ref.items()} == {
        "pitch": (2, 66),
        "yaw": (2, 66),
        "roll": (2, 66),
        "t": (2, 3),
        "scale": (2, 1),
        "kp": (2, 63),
    }
    clone = MotionExtractor.from_state_dict({k: v for k, v in sd.items() if k != "idx_tensor"})
    assert torch.equal(clone.idx_tensor, IDX)
    assert all(torch.equal(clone(x)[k], ref[k]) for k in ref)
    with pytest.raises(RuntimeError):
        MotionExtractor.from_state_dict({k: v for k, v in sd.items() if k != "detector.fc_t.bias"})


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_layernorm_weights_stay_fp32_when_cast(dtype):
    model = random_tiny()
    ln = model.detector.stages[0][0].norm
    ln.weight.fill_(1 + 2**-20)  # not representable in 16 bits: a cast round trip would lose it
    model.to(dtype)
    assert ln.weight.dtype == torch.float32 and ln.weight[0].item() == 1 + 2**-20
    assert model.detector.downsample_layers[1][0].weight.dtype == torch.float32
    assert model.detector.norm.weight.dtype == dtype  # the final nn.LayerNorm follows the cast
    assert model.detector.stages[0][0].pwconv1.weight.dtype == dtype
    out = model(torch.rand(1, 3, 256, 256))
    assert all(v.dtype == dtype for v in out.values())
    x = torch.randn(2, 8, 5, 5, dtype=dtype)
    cf = Fp32LayerNorm(8, channels_first=True).to(dtype)
    y = cf(x)
    assert y.dtype == dtype
    expected = torch.nn.functional.layer_norm(x.float().permute(0, 2, 3, 1), (8,), eps=1e-6).permute(0, 3, 1, 2)
    assert torch.equal(y, expected.to(dtype))


def test_headpose_decoding():
    logits = torch.full((4, 66), -1e4)
    for row, b in enumerate((0, 32, 65)):
        logits[row, b] = 0.0
    logits[3] = 0.0  # uniform: expected bin 32.5
    deg = headpose_to_degrees(logits, IDX)
    assert deg.tolist() == pytest.approx([-97.5, -1.5, 97.5, 0.0], abs=1e-4)
    degrees = torch.tensor([[12.5], [-3.0]])
    assert headpose_to_degrees(degrees, IDX) is degrees  # already degrees: passed through


def rot(p, y, r, dtype=torch.float32):
    t = lambda v: torch.tensor([[v]], dtype=dtype)
    return rotation_matrix(t(p), t(y), t(r))


def test_rotation_convention():
    assert torch.equal(rot(0, 0, 0)[0], torch.eye(3))
    x, y, z = torch.eye(3)
    close = lambda a, b: torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    close(x @ rot(0, 90, 0)[0], -z)  # yaw: x -> -z, z -> x
    close(z @ rot(0, 90, 0)[0], x)
    close(y @ rot(90, 0, 0)[0], z)  # pitch: y -> z
    close(x @ rot(0, 0, 90)[0], y)  # roll: x -> y
    close(y @ rot(90, 90, 0)[0], x)  # pitch applied before yaw: y -> z -> x
    assert rot(10, 20, 30, torch.float16).dtype == torch.float32  # fp32 ones/zeros promote the matrices


def test_keypoints_transform(tiny):
    kp = torch.randn(1, 63)
    info = {
        "pitch": torch.zeros(1),
        "yaw": torch.full((1,), 90.0),
        "roll": torch.zeros(1),
        "t": torch.tensor([[0.1, -0.2, 5.0]]),
        "scale": torch.tensor([[2.0]]),
        "kp": kp,
    }
    out = tiny.keypoints(info)
    c = kp.view(21, 3)
    expected = torch.stack([c[:, 2] * 2 + 0.1, c[:, 1] * 2 - 0.2, -c[:, 0] * 2], dim=1)  # t_z unused
    torch.testing.assert_close(out[0], expected, rtol=0, atol=1e-5)


def test_online_keypoints(tiny):
    g = torch.Generator().manual_seed(3)
    ref = torch.rand(1, 3, 256, 256, generator=g)
    frames = torch.rand(8, 3, 256, 256, generator=g)
    tracker = KeypointTracker(tiny, num_interp=13)
    pose, dri = tracker(frames[:4], ref=ref)
    assert pose.shape == (16, 21, 3) and dri.shape == (4, 21, 3)
    info_ref, info_dri = tiny(ref), tiny(frames[:4])
    torch.testing.assert_close(pose[0], tiny.keypoints(info_ref)[0])  # easing starts at the reference pose
    torch.testing.assert_close(dri, tiny.keypoints(info_dri))
    # driving rows: driving head pose, reference canonical kps and scale, translation ref + 0.5·(t − t_first)
    expected = tiny.keypoints(
        dict(
            info_dri,
            kp=info_ref["kp"].repeat(4, 1),
            scale=info_ref["scale"].expand(4, 1),
            t=(info_dri["t"] - info_dri["t"][0]) * 0.5 + info_ref["t"],
        )
    )
    torch.testing.assert_close(pose[12:], expected)
    # the anchor of later chunks is the separate batch-1 pass over the first frame
    assert torch.equal(tracker.anchor["t"], tiny(frames[:1])["t"])
    pose2, dri2 = tracker(frames[4:])
    info2 = tiny(frames[4:])
    expected2 = tiny.keypoints(
        dict(
            info2,
            kp=info_ref["kp"].repeat(4, 1),
            scale=info_ref["scale"].expand(4, 1),
            t=(info2["t"] - tracker.anchor["t"]) * 0.5 + info_ref["t"],
        )
    )
    torch.testing.assert_close(pose2, expected2)
    torch.testing.assert_close(dri2, tiny.keypoints(info2))
    tracker.reset()
    assert not tracker.started


def test_online_keypoints_still_driver_is_constant(tiny):
    ref = torch.rand(1, 3, 256, 256)
    pose, _ = KeypointTracker(tiny)(ref.expand(4, 3, 256, 256), ref=ref)
    torch.testing.assert_close(pose, pose[:1].expand(16, 21, 3), rtol=0, atol=1e-5)


def kps_at(pixels, size=512):
    """(N, 7, 2) integer pixel (x, y) of the 7 drawn keypoints -> (N, 21, 3) normalised keypoints."""
    kps = torch.zeros(pixels.shape[0], 21, 3)
    kps[:, [1, 2, 3, 4, 12, 15, 20], :2] = pixels.float() / size * 2 - 1
    return kps


def test_draw_keypoints_positions_and_colours():
    px = torch.tensor([[[100, 50], [300, 300], [300, 300], [400, 60], [60, 400], [200, 450], [200, 450]]])
    img = draw_keypoints(kps_at(px), 512)
    assert img.shape == (1, 3, 512, 512) and img.dtype == torch.float32
    rgb = lambda x, y: img[0, :, y, x].tolist()
    assert rgb(100, 50) == [1, 0, 0]
    assert rgb(104, 50) == [1, 0, 0] and rgb(100, 46) == [1, 0, 0]  # radius² 16 is inside
    assert rgb(105, 50) == [0, 0, 0] and rgb(103, 53) == [0, 0, 0]  # 25 and 18 are outside
    assert rgb(102, 53) == [1, 0, 0]  # 13
    red_disc = (img[0, 0, :200, :200] > 0).sum().item()
    assert red_disc == 49  # lattice points with x² + y² ≤ 16
    assert rgb(300, 300) == [1, 1, 0]  # yellow + green overlap: added, then clamped
    assert rgb(400, 60) == [0, 1, 1] and rgb(60, 400) == [0, 0, 1]
    assert rgb(200, 450) == [1, 0, 1]  # magenta + (255, 0, 85): blue 1 + 1/3 clamped
    solo = draw_keypoints(kps_at(torch.tensor([[[10, 10]] * 6 + [[200, 450]]])), 512)
    assert solo[0, :, 450, 200].tolist() == pytest.approx([1, 0, 85 / 255])
    small = draw_keypoints(kps_at(px, 256), (256, 256))
    assert small.shape == (1, 3, 256, 256) and small[0, :, 50, 100].tolist() == [1, 0, 0]


def test_draw_keypoints_truncates_in_kps_dtype():
    kps = torch.zeros(1, 21, 3)
    kps[0, 1, :2] = 0.5 - 2**-12  # x = 383.9375 px in fp32; fp16 math rounds 0.75 − 2^-13 up to 0.75
    kps[0, [2, 3, 4, 12, 15, 20], :2] = -0.9
    for dtype, col in ((torch.float32, 383), (torch.float16, 384)):
        img = draw_keypoints(kps.to(dtype), 512)
        row = int((0.5 - 2**-12) * 0.5 * 512 + 256)
        lit = img[0, 0, row].nonzero().flatten()
        assert (lit.min() + lit.max()).item() // 2 == col
    kps[0, 1, :2] = -1 - 1 / 512  # −0.5 px truncates towards zero: the disc is centred on pixel 0
    img = draw_keypoints(kps, 512)
    assert img[0, 0, 0, 4] == 1 and img[0, 0, 0, 5] == 0 and img[0, 0, 4, 0] == 1


def test_face_boxes_numbers():
    xs = torch.tensor([100, 120, 140, 160, 180, 200, 220])
    ys = torch.tensor([200, 210, 220, 230, 240, 250, 260])
    px = torch.stack([xs, ys], 1)[None]
    # cx 160, cy 230, side (230 − 200)·2·1.7 = 102: [160 − 48.45, 230 − 48.45, 160 + 53.55, 230 + 53.55]
    assert face_boxes(kps_at(px)).tolist() == [[111, 181, 213, 283]]
    edge = torch.stack([xs - 90, ys + 240], 1)[None]  # cx 70, cy 470: clamped to the canvas
    assert face_boxes(kps_at(edge)).tolist() == [[21, 421, 123, 511]]
    half = torch.stack([xs // 2, ys // 2], 1)[None]  # cx 80, cy 115, side 51 on a 256 canvas
    assert face_boxes(kps_at(half, 256), 256).tolist() == [[55, 90, 106, 141]]
    assert face_boxes(kps_at(px).half()).dtype == torch.long
