"""Adapters from the host's CLIP_VISION and VAE objects to what the core needs.

CLIP_VISION (`comfy.clip_vision.ClipVisionModel`): the projected pooled embedding (`image_embeds`, (B, D))
that PersonaLive's UNets cross-attend to (context (1, 1, D)); the host's model is fed the official
CLIPImageProcessor pixels when it has the standard interface, else `encode_image(IMAGE)` is used.
VAE (`comfy.sd.VAE`): `encode(IMAGE 0..1)` → unscaled latents, `decode(unscaled)` → IMAGE 0..1; the
core works with latents scaled by 0.18215 (the literal of the official code).
"""

import logging

import torch

import comfy.model_management as mm

from ..personalive_core import InputError
from ..personalive_core.pipelines import CLIP_INPUT, clip_pixels

log = logging.getLogger(__name__)
CLIP_HINT = (
    "load the sd-image-variations-diffusers image encoder (CLIP ViT-L/14 vision tower with a 768-d "
    "projection, e.g. image_encoder/model.safetensors put in models/clip_vision/) with 'Load CLIP Vision'"
)
VAE_HINT = "load an SD 1.x VAE such as sd-vae-ft-mse (models/vae/) with 'Load VAE'"


def _standard_clip(clip_vision):
    """A host CLIP vision model we can feed CLIPImageProcessor pixels directly (ComfyUI's own
    `clip_preprocess` resizes with torch's bicubic instead of PIL's, a ~1% change of the embedding)."""
    size, mean, std = CLIP_INPUT
    return (
        all(hasattr(clip_vision, a) for a in ("model", "patcher", "load_device", "image_size"))
        and clip_vision.image_size == size
        and torch.allclose(torch.tensor(getattr(clip_vision, "image_mean", [0.0])).float(), torch.tensor(mean))
        and torch.allclose(torch.tensor(getattr(clip_vision, "image_std", [0.0])).float(), torch.tensor(std))
    )


def image_embedder(clip_vision, width):
    """The host's CLIP_VISION as the core's image encoder: (picture, IMAGE (1,H,W,3)) → (1, width) float32
    (CPU). Preprocessing as the official code (transformers' CLIPImageProcessor, via the core) when the
    host model allows it."""
    if not hasattr(clip_vision, "encode_image"):
        raise InputError(f"clip_vision: expected a CLIP_VISION model, got {type(clip_vision).__name__}; {CLIP_HINT}")

    def embed(picture, image):
        embeds = None
        if _standard_clip(clip_vision):
            mm.load_model_gpu(clip_vision.patcher)
            pixels = clip_pixels(picture).to(clip_vision.load_device)
            try:
                out = clip_vision.model(pixel_values=pixels, intermediate_output=-2)
                embeds = out[2] if isinstance(out, (tuple, list)) and len(out) > 2 else None
            except TypeError:  # another ComfyUI's model interface: fall back to its own preprocessing
                log.warning("PersonaLive: CLIP vision model with an unknown interface; using encode_image")
        if embeds is None:
            embeds = getattr(clip_vision.encode_image(image), "image_embeds", None)
        if embeds is None:
            raise InputError(f"clip_vision: this model gives no projected image embeddings; {CLIP_HINT}")
        if embeds.shape[-1] != width:
            raise InputError(
                f"clip_vision: the model gives {embeds.shape[-1]}-d image embeddings but the PersonaLive "
                f"UNets expect {width}-d; {CLIP_HINT}"
            )
        return embeds[:1].float().cpu()

    return embed


def check_vae(vae):
    if not (hasattr(vae, "encode") and hasattr(vae, "decode")):
        raise InputError(f"vae: expected a VAE, got {type(vae).__name__}; {VAE_HINT}")
    channels, ratio = getattr(vae, "latent_channels", None), getattr(vae, "downscale_ratio", None)
    if channels != 4 or ratio != 8:
        raise InputError(
            f"vae: PersonaLive works in the SD 1.x latent space (4 channels, 8× downscale); the "
            f"connected VAE has {channels} channels and downscale {ratio}; {VAE_HINT}"
        )
    return vae
