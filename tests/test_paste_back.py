"""Paste-back: generated crops back into the original pictures, untouched outside the mask."""

import numpy as np
import pytest

from personalive_core.media import face_crop as fc
from personalive_core.media.paste_back import paste_back
from test_face_crop import background, frame_with_face


@pytest.mark.parametrize("h,w,box", [(1080, 1920, (700, 200, 1300, 800)), (1280, 720, (-150, 900, 450, 1500))])
@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_paste_back_size_and_untouched_outside_mask(h, w, box, dtype):
    original = background(h, w)
    original = original if dtype == np.uint8 else original.astype(np.float32) / 255
    _, info = fc.crop(original, box, size=512)
    generated = np.zeros((512, 512, 3), dtype)
    generated[..., 1] = 255 if dtype == np.uint8 else 1.0
    out = paste_back(generated, original, info, feather=0.2)
    assert out.shape == original.shape and out.dtype == original.dtype

    # outside the disc inscribed in the box nothing may change, not even by rounding
    x0, y0, x1, y1 = info.box
    yy, xx = np.mgrid[:h, :w]
    r = np.hypot(xx + 0.5 - (x0 + x1) / 2, yy + 0.5 - (y0 + y1) / 2) / ((x1 - x0) / 2)
    outside = r > 1.01
    assert np.array_equal(out[outside], original[outside])
    assert not np.array_equal(out, original)

    # well inside the disc the generated content is all there is
    core = r < 0.75
    assert np.allclose(out[core].astype(np.float32), generated[0, 0].astype(np.float32), atol=1)


def test_crop_paste_round_trip():
    original = frame_with_face(1080, 1920, 900, 500, 300)
    box = fc.square_crop_box((750, 350, 1050, 650), scale=1.75)
    crop, info = fc.crop(original, box, size=512)
    out = paste_back(crop, original, info)
    x0, y0, x1, y1 = info.box
    diff = np.abs(out[y0:y1, x0:x1].astype(int) - original[y0:y1, x0:x1].astype(int))
    assert diff.mean() < 1.0 and np.percentile(diff, 99) <= 8


def test_paste_back_rejects_wrong_frame():
    _, info = fc.crop(np.zeros((100, 200, 3), np.uint8), (10, 10, 60, 60), 32)
    with pytest.raises(ValueError):
        paste_back(np.zeros((32, 32, 3), np.uint8), np.zeros((100, 100, 3), np.uint8), info)


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_tall_boxes_are_blended_in_strips_with_the_same_result(dtype):
    """A box taller than STRIP rows goes row strip by row strip; the result is the one-piece blend's
    (float rounding apart) and the memory beyond the result stays a few strips."""
    import tracemalloc
    from personalive_core.media import paste_back as pb

    rng = np.random.default_rng(0)
    original = rng.integers(0, 256, (1100, 1500, 3)).astype(np.uint8)
    original = original if dtype == np.uint8 else original.astype(np.float32) / 255
    generated = rng.random((64, 64, 3), dtype=np.float32)
    info = fc.CropInfo((200, -150, 1250, 900), (1100, 1500), 64)  # 1050 rows, partly above the frame
    strips = pb.paste_back(generated, original, info)
    one_piece = _one_piece(generated, original, info)
    tol = 1 if dtype == np.uint8 else 1e-5
    assert np.abs(strips.astype(np.float64) - one_piece).max() <= tol
    tracemalloc.start()
    try:
        pb.paste_back(generated, original, info)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < original.nbytes + 12 * pb.STRIP * 1050 * 3 * 4  # the result + a few float strips


def _one_piece(generated, original, info):
    """The blend in one piece (the whole box resized at once), in float64 for comparison."""
    import cv2
    from personalive_core.media.paste_back import feather_mask

    x0, y0, x1, y1 = info.box
    side, (h, w) = x1 - x0, original.shape[:2]
    gen = cv2.resize(generated, (side, side), interpolation=cv2.INTER_LINEAR)
    m = cv2.resize(feather_mask(64), (side, side), interpolation=cv2.INTER_LINEAR)[..., None]
    ix0, iy0, ix1, iy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    scale = 255.0 if original.dtype == np.uint8 else 1.0
    out = original.astype(np.float64)
    region = out[iy0:iy1, ix0:ix1] / scale
    g, mm = gen[iy0 - y0 : iy1 - y0, ix0 - x0 : ix1 - x0], m[iy0 - y0 : iy1 - y0, ix0 - x0 : ix1 - x0]
    out[iy0:iy1, ix0:ix1] = np.where(mm > 0, (region + mm * (g - region)) * scale, region * scale)
    return out
