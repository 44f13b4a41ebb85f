"""Reference-image preprocessing, bit-exact with the official pipeline.

* `clip_pixels`: transformers 4.36 `CLIPImageProcessor()` defaults.
* `vae_pixels`: diffusers 0.27 `VaeImageProcessor(vae_scale_factor=8, do_convert_rgb=True)`.
* `*_from_tensor`: the same from a float image (H,W,3) in [0,1], as ComfyUI's IMAGE.

ComfyUI IMAGEs loaded from 8-bit files hold exactly k/255 (float32), so `tensor_to_pil` (round
to uint8) recovers the file's pixels and the tensor path equals the file path. Differences that
remain: ComfyUI's loader applies the EXIF orientation and flattens RGBA to RGB *before* any
resize (as the official offline script does with `.convert("RGB")`), whereas
`VaeImageProcessor` resizes a PIL image in its own mode first (RGBA resizes premultiplied, palette
images resize with NEAREST) and converts to RGB afterwards; and float images that are not 8-bit
quantised (e.g. generated in-graph) get rounded to 8 bits.
"""

import numpy as np
import torch
from PIL import Image

CLIP_SIZE = 224
CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)
VAE_SCALE_FACTOR = 8


def clip_resize_size(width, height, size=CLIP_SIZE):
    """(W, H) with the short side = size, the long side int(size·long/short) (truncation)."""
    if width <= height:
        return size, int(size * height / width)
    return int(size * width / height), size


def center_crop_box(width, height, size=CLIP_SIZE):
    """PIL box of the centre crop; offsets floor (W−size)//2, as transformers does."""
    left, top = (width - size) // 2, (height - size) // 2
    return left, top, left + size, top + size


def clip_pixels(image):
    """PIL image → (1,3,224,224) float32 CLIP input: RGB, bicubic short-side resize, centre crop,
    ×(1/255) in float64 then float32, (x − mean)/std in float32 (transformers' exact arithmetic)."""
    image = image.convert("RGB").resize(clip_resize_size(*image.size), resample=Image.BICUBIC)
    pixels = np.asarray(image.crop(center_crop_box(*image.size)))
    pixels = (pixels.astype(np.float64) * (1 / 255)).astype(np.float32)
    pixels = (pixels - CLIP_MEAN) / CLIP_STD
    return torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))[None]


def vae_pixels(image, height=None, width=None):
    """PIL image → (1,3,H,W) float32 in [−1,1]; size defaults to the image's, floored to ×8.

    Order as diffusers: LANCZOS resize in the image's own mode, then convert to RGB.
    """
    width, height = (s - s % VAE_SCALE_FACTOR for s in (width or image.width, height or image.height))
    image = image.resize((width, height), resample=Image.LANCZOS).convert("RGB")
    pixels = np.asarray(image).astype(np.float32) / 255.0
    return 2.0 * torch.from_numpy(pixels.transpose(2, 0, 1).copy())[None] - 1.0


def tensor_to_pil(image):
    """Float image (H,W,3) or (1,H,W,3) in [0,1] → RGB PIL, rounding to the nearest 8-bit value."""
    if image.dim() == 4:
        if image.shape[0] != 1:
            raise ValueError(f"expected a single image, got a batch of {image.shape[0]}")
        image = image[0]
    if image.dim() != 3 or image.shape[-1] != 3:
        raise ValueError(f"expected an (H,W,3) image, got shape {tuple(image.shape)}")
    rgb = image.detach().float().cpu().clamp(0, 1).mul(255).round().to(torch.uint8)
    return Image.fromarray(rgb.numpy(), "RGB")


def clip_pixels_from_tensor(image):
    return clip_pixels(tensor_to_pil(image))


def vae_pixels_from_tensor(image, height=None, width=None):
    return vae_pixels(tensor_to_pil(image), height, width)
