import numpy as np
import pytest
import torch
from PIL import Image

from personalive_core.models import preprocess as P


def clip_norm(rgb01):
    """Expected CLIP value of a pure colour given in [0,1] (float32 arithmetic, as transformers)."""
    return (np.asarray(rgb01, np.float32) - P.CLIP_MEAN) / P.CLIP_STD


def test_clip_resize_rule_truncates():
    assert P.clip_resize_size(512, 512) == (224, 224)
    assert P.clip_resize_size(333, 517) == (224, 347)  # 224·517/333 = 347.77 → 347
    assert P.clip_resize_size(1000, 217) == (1032, 224)  # 1032.26 → 1032
    assert P.clip_resize_size(448, 300) == (334, 224)  # 334.51 → 334 (not rounded up)


def test_center_crop_offset_floors():
    assert P.center_crop_box(224, 347) == (0, 61, 224, 285)  # (347−224)/2 = 61.5 → 61
    assert P.center_crop_box(1032, 224) == (404, 0, 628, 224)


def test_clip_crop_keeps_rows_for_odd_excess():
    # 224×227 needs no resize (short side already 224); the crop must keep rows 1..224
    rows = np.arange(227, dtype=np.uint8)[:, None, None].repeat(224, 1).repeat(3, 2)
    out = P.clip_pixels(Image.fromarray(rows))
    assert out.shape == (1, 3, 224, 224) and out.dtype == torch.float32
    expected = (np.arange(1, 225, dtype=np.float64) * (1 / 255)).astype(np.float32)
    expected = (expected - P.CLIP_MEAN[0]) / P.CLIP_STD[0]
    assert torch.equal(out[0, 0, :, 0], torch.from_numpy(expected))


def test_clip_two_colour_image():
    # left half red, right half blue, 448×300 → 334×224 → crop columns 55..278 (boundary at 167)
    arr = np.zeros((300, 448, 3), np.uint8)
    arr[:, :224, 0] = 255
    arr[:, 224:, 2] = 255
    out = P.clip_pixels(Image.fromarray(arr))[0]
    np.testing.assert_array_equal(out[:, 100, 0].numpy(), clip_norm([1, 0, 0]))
    np.testing.assert_array_equal(out[:, 100, -1].numpy(), clip_norm([0, 0, 1]))
    mixed = out[0, 0, 105:118]  # bicubic ramp around crop column 167−55 = 112
    assert (mixed < clip_norm([1, 0, 0])[0]).any() and (mixed > clip_norm([0, 0, 1])[0]).any()


def test_clip_converts_grayscale_and_rgba_to_rgb():
    grey = Image.new("L", (300, 300), 128)
    out = P.clip_pixels(grey)[0]
    np.testing.assert_array_equal(out[:, 7, 9].numpy(), clip_norm(np.float32(np.float64(128) / 255) * np.ones(3)))
    rgba = Image.new("RGBA", (300, 300), (10, 20, 30, 0))  # alpha is dropped, not composited
    np.testing.assert_array_equal(
        P.clip_pixels(rgba)[0, :, 0, 0].numpy(), clip_norm((np.array([10, 20, 30]) * (1 / 255)).astype(np.float32))
    )


def test_vae_values_and_sizes():
    colour = (10, 200, 255)
    img = Image.new("RGB", (16, 8), colour)
    out = P.vae_pixels(img)
    assert out.shape == (1, 3, 8, 16) and out.dtype == torch.float32 and out.is_contiguous()
    expected = 2.0 * (np.array(colour, np.float32) / 255.0) - 1.0
    np.testing.assert_array_equal(out[0, :, 3, 5].numpy(), expected)
    # sizes floor to multiples of 8, (height, width) order
    assert P.vae_pixels(Image.new("RGB", (37, 61))).shape == (1, 3, 56, 32)
    assert P.vae_pixels(img, 256, 512).shape == (1, 3, 256, 512)
    assert P.vae_pixels(img, 250, 250).shape == (1, 3, 248, 248)
    # uniform colour stays exact through LANCZOS
    np.testing.assert_array_equal(P.vae_pixels(img, 64, 64)[0, :, 10, 10].numpy(), expected)


def test_vae_resizes_before_rgb_conversion():
    """diffusers resizes in the image's own mode: an RGBA image resamples premultiplied."""
    rng = np.random.default_rng(0)
    rgba = Image.fromarray(rng.integers(0, 256, (40, 48, 4), dtype=np.uint8), "RGBA")
    assert not torch.equal(P.vae_pixels(rgba, 16, 16), P.vae_pixels(rgba.convert("RGB"), 16, 16))
    # at its own size no resampling happens, so both orders agree
    assert torch.equal(P.vae_pixels(rgba), P.vae_pixels(rgba.convert("RGB")))


def comfy_image(pil):
    """What ComfyUI's LoadImage produces: float32 (1,H,W,3) = uint8 / 255."""
    return torch.from_numpy(np.asarray(pil.convert("RGB")).astype(np.float32) / 255.0)[None]


def test_every_8bit_level_round_trips():
    levels = torch.arange(256, dtype=torch.uint8).view(16, 16, 1).expand(16, 16, 3)
    img = Image.fromarray(levels.numpy())
    assert np.array_equal(np.asarray(P.tensor_to_pil(comfy_image(img))), levels.numpy())


def test_tensor_path_equals_file_path():
    rng = np.random.default_rng(1)
    img = Image.fromarray(rng.integers(0, 256, (300, 410, 3), dtype=np.uint8))
    t = comfy_image(img)
    assert torch.equal(P.clip_pixels_from_tensor(t), P.clip_pixels(img))
    assert torch.equal(P.vae_pixels_from_tensor(t, 256, 256), P.vae_pixels(img, 256, 256))
    assert torch.equal(P.vae_pixels_from_tensor(t[0]), P.vae_pixels(img))
    # values that are not 8-bit levels are rounded to the nearest level (out-of-range clamped)
    off = (t + 0.3 / 255).clamp(max=1.2)
    assert torch.equal(P.clip_pixels_from_tensor(off), P.clip_pixels(img))


def test_tensor_to_pil_rejects_batches_and_bad_shapes():
    with pytest.raises(ValueError, match="batch of 2"):
        P.tensor_to_pil(torch.zeros(2, 8, 8, 3))
    with pytest.raises(ValueError, match="shape"):
        P.tensor_to_pil(torch.zeros(3, 8, 8))
