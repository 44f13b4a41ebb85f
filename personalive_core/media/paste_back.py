"""Paste-back: generated square crops warped back into the original pictures they were cut from,
blended with a feathered round mask; outside the mask the original is untouched."""

from functools import lru_cache

import cv2
import numpy as np

from .face_crop import resize_square


@lru_cache(maxsize=8)
def feather_mask(size, feather=0.2):
    """size×size float32 disc mask: 1 inside, a smoothstep ramp over the outer `feather` of the
    radius, exactly 0 from the box's inscribed circle outwards (so the box edge never shows)."""
    c = (np.arange(size) + 0.5) * (2 / size) - 1  # pixel centres, box edges at ±1
    r = np.hypot(c[None, :], c[:, None])
    t = np.clip((1 - r) / max(feather, 1e-6), 0, 1)
    mask = (t * t * (3 - 2 * t)).astype(np.float32)
    mask.flags.writeable = False
    return mask


def _as_float(image):
    return image.astype(np.float32) / 255 if image.dtype == np.uint8 else image.astype(np.float32)


STRIP = 256  # rows blended at a time: the float work of an 8K frame's face box costs MBs, not a GB


def paste_back(generated, original, info, feather=0.2, mask=None):
    """Warp a generated square crop back into `original` (the frame `info` was cropped from).

    Blends with `mask` (S×S in crop pixels, values in [0, 1]; default `feather_mask`). The result
    has the original's size and dtype, and pixels where the mask is 0 are exactly the original's.
    Tall boxes are blended STRIP rows at a time, so the memory beyond the result stays small.
    """
    h, w = original.shape[:2]
    if tuple(info.image_hw) != (h, w):
        raise ValueError(f"CropInfo is for a {info.image_hw} image, got {(h, w)}")
    x0, y0, x1, y1 = info.box
    side = x1 - x0
    mask = feather_mask(generated.shape[0], feather) if mask is None else np.asarray(mask, np.float32)
    # the part of the box that lies inside the image
    ix0, iy0, ix1, iy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    out = original.copy()
    if ix0 >= ix1 or iy0 >= iy1:
        return out
    gen_rows, mask_rows = _box_rows(_as_float(generated), side), _box_rows(mask, side)
    for r0 in range(iy0, iy1, STRIP):
        r1 = min(r0 + STRIP, iy1)
        gen = gen_rows(r0 - y0, r1 - y0)[:, ix0 - x0 : ix1 - x0]
        m = mask_rows(r0 - y0, r1 - y0)[:, ix0 - x0 : ix1 - x0, None]
        region = original[r0:r1, ix0:ix1]
        blend = _as_float(region) + m * (gen - _as_float(region))
        if original.dtype == np.uint8:
            blend = np.clip(blend * 255 + 0.5, 0, 255).astype(np.uint8)
        out[r0:r1, ix0:ix1] = np.where(m > 0, blend.astype(original.dtype), region)
    return out


def _box_rows(image, side):
    """rows(a, b): rows a..b of `image` (S×S) resized to side×side as `resize_square` resizes it.
    An enlargement past STRIP rows is computed for those rows only: bilinear is separable, so the
    columns are resized once (S rows) and each output row blends its two nearest source rows."""
    s = image.shape[0]
    if side <= STRIP or side < s:  # one strip, or a shrink (AREA): the whole resize is small
        full = resize_square(image, side)
        return lambda a, b: full[a:b]
    across = cv2.resize(image, (side, s), interpolation=cv2.INTER_LINEAR)

    def rows(a, b):
        y = (np.arange(a, b) + 0.5) * (s / side) - 0.5  # source row of each output row, as OpenCV maps it
        top = np.floor(y).astype(int)
        f = np.where((top < 0) | (top >= s - 1), 0.0, y - top).astype(np.float32)
        top = np.clip(top, 0, s - 1)
        f = f.reshape(-1, *([1] * (across.ndim - 1)))
        return across[top] * (1 - f) + across[np.minimum(top + 1, s - 1)] * f

    return rows
