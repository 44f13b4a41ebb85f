"""The reference portrait: prepared once (squared, resized, fingerprinted), then encoded once into what
every stream needs (CLIP context, VAE latents, the reference UNet's attention tokens).

One preparation for every front end: a picture from a file (the command line, batch, live) or an IMAGE
tensor (the nodes) goes through the same resize arithmetic (diffusers' VaeImageProcessor, bit-exact with
the official pipeline), so the same picture gives the same reference everywhere. The encoders are the
core's own (`models.image_encoder`, `models.vae`) or a host's (`host.py`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import cast

import torch
from PIL import Image

from ..config import RESIZE_MODES
from ..errors import InputError
from ..models.loader import PersonaLiveModels
from ..models.preprocess import clip_pixels, tensor_to_pil, vae_pixels
from ..models.vae import encode_mean
from ..streaming.reference import Reference, record_tokens
from .host import HostVAE, ImageEmbedder, picture_tensor, scaled_latents

MOTION_SIZE = 256  # the motion extractor's input side


@dataclass(frozen=True)
class ReferencePicture:
    """A reference portrait made square: `picture` (PIL RGB, what the image encoder sees), `pixels`
    (1, 3, size, size) in [-1, 1] (what the VAE encodes), `cond` (1, 3, 256, 256) in [-1, 1] (what the
    motion extractor sees), and a `fingerprint` of the pixels (motion and reference must agree on it)."""

    picture: Image.Image
    pixels: torch.Tensor
    cond: torch.Tensor
    fingerprint: str

    @property
    def size(self) -> int:
        return int(self.pixels.shape[-1])

    @property
    def image(self) -> torch.Tensor:
        """The picture as an IMAGE (1, H, W, 3) in [0, 1] (for a host's own image encoder)."""
        return picture_tensor(self.picture)


def _extractor_dtype(models: PersonaLiveModels) -> torch.dtype:
    """The motion extractor's compute dtype (its published LayerNorms stay fp32 whatever the cast)."""
    return cast(torch.dtype, models.motion_extractor.dtype)


def _as_picture(image: Image.Image | torch.Tensor, name: str) -> Image.Image:
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if not isinstance(image, torch.Tensor) or image.dim() != 4 or image.shape[-1] < 3:
        raise InputError(
            f"{name}: expected an IMAGE (batch, height, width, channels), got "
            f"{getattr(image, 'shape', type(image).__name__)}"
        )
    if image.shape[0] != 1:
        raise InputError(
            f"{name}: expected one image, got a batch of {image.shape[0]}; pick one with an 'ImageFromBatch' node"
        )
    picture: Image.Image = tensor_to_pil(image[..., :3])
    return picture


def _center_square(picture: Image.Image) -> Image.Image:
    """The centred square, offsets floored (as `video_io.square`)."""
    side = min(picture.size)
    left, top = (picture.width - side) // 2, (picture.height - side) // 2
    return picture.crop((left, top, left + side, top + side))


def prepare_reference(
    image: Image.Image | torch.Tensor, size: int, resize: str = "stretch", name: str = "reference image"
) -> ReferencePicture:
    """A picture (PIL, or a one-image IMAGE batch) → its ReferencePicture at generation size `size`.
    `resize`: "stretch" (the whole picture resized, as the official code does) or "center crop"."""
    if resize not in RESIZE_MODES:
        raise InputError(f"resize {resize!r}: use one of {', '.join(RESIZE_MODES)}")
    picture = _as_picture(image, name)
    if resize == "center crop":
        picture = _center_square(picture)
    pixels = vae_pixels(picture, size, size)
    cond = vae_pixels(picture, MOTION_SIZE, MOTION_SIZE)
    digest = hashlib.sha1(pixels.numpy().tobytes()).hexdigest()[:16]
    return ReferencePicture(picture, pixels, cond, f"{size}:{digest}")


@torch.no_grad()
def encode_reference(
    models: PersonaLiveModels, picture: ReferencePicture, embed: ImageEmbedder | None = None, vae: HostVAE | None = None
) -> Reference:
    """Everything the stream needs from the reference, on the models' device: the CLIP context (the
    core's image encoder, or a host's `embed(picture, image)` → (1, D)), the VAE latents (the core's VAE,
    or a host `vae`) and the reference UNet's attention tokens."""
    device, dtype = models.device, models.dtype
    if embed is None:
        context = models.image_encoder(clip_pixels(picture.picture).to(device, dtype))[:, None]
    else:
        context = embed(picture.picture, picture.image).reshape(1, 1, -1).to(device, dtype)
    if vae is None:
        latents = encode_mean(models.vae, picture.pixels.to(device, dtype)).to(dtype)
    else:
        latents = scaled_latents(vae, picture.pixels).to(device, dtype)
    cond = picture.cond.to(device, _extractor_dtype(models)) / 2 + 0.5
    tokens = record_tokens(models.reference_unet, latents, context)
    return Reference(picture.pixels[0].to(device, dtype), cond, context, latents, tokens)


def motion_reference(models: PersonaLiveModels, picture: ReferencePicture) -> Reference:
    """The part of a reference that motion extraction needs (the picture and the motion extractor's input),
    without encoding it: Extract Motion runs apart from Encode Reference."""
    device = models.device
    cond = picture.cond.to(device, _extractor_dtype(models)) / 2 + 0.5
    return Reference(picture.pixels[0].to(device, models.dtype), cond, None, None, {})
