"""What a host application (ComfyUI) brings instead of the core's own image encoder and VAE, and the
adapters that keep every host on the core's conventions.

A host VAE is any object with `encode(images)` (IMAGE (N, H, W, 3) in [0, 1] → unscaled SD latents) and
`decode(latents)` (unscaled → IMAGE), as ComfyUI's VAE has; the core works with latents scaled by
0.18215 (the official literal), so the scaling happens here and nowhere else. A host image encoder is a
function from the reference picture to its projected CLIP image embedding (1, D); `clip_pixels` gives
it the official CLIPImageProcessor input when it can take pixels directly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np
import torch
from PIL import Image

from ..errors import InputError
from ..models.preprocess import CLIP_MEAN, CLIP_SIZE, CLIP_STD, clip_pixels as _clip_pixels
from ..models.vae import SCALE

LATENT_SCALE = SCALE
CLIP_INPUT = (CLIP_SIZE, tuple(float(x) for x in CLIP_MEAN), tuple(float(x) for x in CLIP_STD))  # size, mean, std
VAE_HINT = "connect an SD 1.x VAE such as sd-vae-ft-mse"


class HostVAE(Protocol):
    def encode(self, images: torch.Tensor) -> torch.Tensor: ...
    def decode(self, latents: torch.Tensor) -> torch.Tensor: ...


ImageEmbedder = Callable[["Image.Image", torch.Tensor], torch.Tensor]  # (PIL picture, IMAGE (1,H,W,3)) → (1, D)


def clip_pixels(picture: Image.Image) -> torch.Tensor:
    """The official CLIPImageProcessor input (1, 3, 224, 224) of a picture (transformers' exact arithmetic)."""
    pixels: torch.Tensor = _clip_pixels(picture)
    return pixels


def scaled_latents(vae: HostVAE, pixels: torch.Tensor) -> torch.Tensor:
    """pixels (N, 3, H, W) in [-1, 1] → the core's scaled latents (N, 4, H/8, W/8), float32 on the CPU."""
    latents = vae.encode((pixels.float() / 2 + 0.5).movedim(1, -1))
    return latents.float().cpu() * SCALE


def unscaled(latents: torch.Tensor) -> torch.Tensor:
    """The core's scaled latents → the unscaled SD latents a host VAE (and a LATENT) holds."""
    return 1 / SCALE * latents


def host_decoder(vae: HostVAE, size: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """A decoder for the streaming pipelines from a host VAE: scaled latents (N, 4, s/8, s/8) → frames
    (N, s, s, 3) float32 in [0, 1]; InputError when the VAE decodes to another shape (not an SD 1.x VAE)."""

    def decode(latents: torch.Tensor) -> torch.Tensor:
        frames = vae.decode(unscaled(latents)).to(torch.float32)
        if tuple(frames.shape[1:]) != (size, size, 3):
            raise InputError(
                f"vae: decoded frames of shape {tuple(frames.shape[1:])}, expected ({size}, {size}, 3); {VAE_HINT}"
            )
        return frames

    return decode


def picture_tensor(picture: Image.Image) -> torch.Tensor:
    """PIL RGB → IMAGE (1, H, W, 3) float32 in [0, 1]."""
    return torch.from_numpy(np.asarray(picture.convert("RGB"), dtype=np.float32) / 255.0)[None]
