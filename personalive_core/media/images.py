"""Reading pictures as they come from phones and editors: any orientation, bit depth, colour mode.

`load_image` gives an upright 8-bit RGB picture whatever the file holds: the EXIF orientation is
applied (as ComfyUI's Load Image, browsers and phones do), 16-bit and float greys are scaled (not
clipped) to 8 bits, CMYK, palette, bilevel and grey pictures are converted, and transparent parts
are composited on white (a cut-out portrait gets a plain background, not the arbitrary colours that
transparent pixels store).
"""

import os

import numpy as np
from PIL import Image, ImageOps

from ..errors import InputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".avif")
NEEDS_PLUGIN = (".heic", ".heif")  # Pillow reads these only with the pillow-heif plugin
BACKGROUND = (255, 255, 255)  # under transparent parts


def load_image(path, role="reference image"):
    """An image file → upright PIL RGB, 8 bits per channel. `role` names the file in errors."""
    if not os.path.exists(path):
        raise InputError(f"{role} not found: {path}")
    if not os.path.isfile(path):
        raise InputError(f"{role} {path} is not a file")
    if os.path.getsize(path) == 0:
        raise InputError(f"{role} {path} is empty (0 bytes): export the picture again")
    try:
        with Image.open(path) as im:
            im.load()
            return to_rgb(im)
    except Exception as e:
        hint = (
            " HEIC pictures need the pillow-heif package (pip install pillow-heif), or save the picture as JPEG."
            if path.lower().endswith(NEEDS_PLUGIN)
            else " Use a PNG, JPEG or WebP picture."
        )
        raise InputError(f"cannot read {role} {path}: {e}.{hint}") from e


def to_rgb(image):
    """A PIL image of any mode → upright 8-bit RGB (EXIF orientation applied, alpha on white)."""
    image = ImageOps.exif_transpose(image)
    if image.mode.startswith("I") or image.mode == "F":
        image = _to_8bit_grey(image)
    if image.has_transparency_data:
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, BACKGROUND + (255,)), rgba)
    return image.convert("RGB")


def _to_8bit_grey(image):
    """16-bit, 32-bit and float greys → "L", scaled by the range the mode implies (PIL's own
    conversion clips, turning a 16-bit picture white). "I" and "F" carry no range: values up to
    1 (float), 255 or 65535 are read as that range, larger ones are scaled by their maximum."""
    a = np.asarray(image, dtype=np.float64)
    top = float(a.max()) if a.size else 0.0
    if image.mode.startswith("I;16"):
        scale = 65535.0
    else:
        scale = next((r for r in ((1.0,) if image.mode == "F" else ()) + (255.0, 65535.0) if top <= r), top)
    return Image.fromarray(np.clip(a * (255.0 / scale) + 0.5, 0, 255).astype(np.uint8))
