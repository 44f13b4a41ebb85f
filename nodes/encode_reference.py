"""PersonaLive Encode Reference: the portrait → PERSONALIVE_REFERENCE (CLIP context, VAE latents,
reference-attention tokens), computed once and reused by every sampler run."""
import torch

from comfy_api.latest import io

from personalive_core.streaming.reference import Reference, record_tokens

from .common import (CATEGORY, RESIZE_MODES, EncodedReference, PersonaLiveModel, PersonaLiveReference,
                     load_networks, model_info, reference_inputs)
from .host_models import clip_context, vae_encode

SIZE_TOOLTIP = ("Generation size in pixels (square, multiple of 64). PersonaLive was trained at 512. "
                "Use the same value in 'PersonaLive Encode Reference' and 'PersonaLive Extract Motion'.")
RESIZE_TOOLTIP = ("How the reference becomes square: 'stretch' resizes the whole picture (as the official code "
                  "does), 'center crop' cuts the centred square first. Use the same value in 'PersonaLive Encode "
                  "Reference' and 'PersonaLive Extract Motion'.")


class PersonaLiveEncodeReference(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PersonaLiveEncodeReference",
            display_name="PersonaLive Encode Reference",
            category=CATEGORY,
            description="Encodes the reference portrait once: CLIP image embedding, VAE latents and the reference "
                        "UNet's attention tokens. Reused across runs while its inputs stay the same.",
            inputs=[
                PersonaLiveModel.Input("model", tooltip="From 'Load PersonaLive Model'."),
                io.ClipVision.Input("clip_vision", tooltip="The sd-image-variations image encoder (CLIP ViT-L/14, "
                                                           "768-d projection) from 'Load CLIP Vision'."),
                io.Vae.Input("vae", tooltip="An SD 1.x VAE (sd-vae-ft-mse) from 'Load VAE'."),
                io.Image.Input("image", tooltip="The reference portrait (one image)."),
                io.Int.Input("size", default=512, min=64, max=2048, step=64, tooltip=SIZE_TOOLTIP),
                io.Combo.Input("resize", options=RESIZE_MODES, default=RESIZE_MODES[0], tooltip=RESIZE_TOOLTIP),
            ],
            outputs=[PersonaLiveReference.Output(display_name="reference",
                                                 tooltip="The encoded reference for 'PersonaLive Stream Sampler'.")],
        )

    @classmethod
    @torch.no_grad()
    def execute(cls, model, clip_vision, vae, image, size, resize) -> io.NodeOutput:
        picture, pixels, cond, fingerprint = reference_inputs(image, size, resize)
        info = model_info(model)
        width = model.model.reference_unet.config.cross_attention_dim
        context = clip_context(clip_vision, picture, width)
        latents = vae_encode(vae, pixels)
        m = load_networks(model, size)
        device, dtype = m.device, m.dtype
        tokens = record_tokens(m.reference_unet, latents.to(device, dtype), context.to(device, dtype))
        reference = Reference(pixels[0].to(dtype), cond.to(m.motion_extractor.dtype) / 2 + 0.5, context.to(dtype),
                              latents.to(dtype), {k: v.cpu() for k, v in tokens.items()})
        return io.NodeOutput(EncodedReference(reference, size, fingerprint, info.key))
