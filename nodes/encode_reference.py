"""PersonaLive Encode Reference: the portrait → PERSONALIVE_REFERENCE (CLIP context, VAE latents,
reference-attention tokens), computed once and reused by every sampler run."""

import torch

from comfy_api.latest import io

from ..personalive_core.pipelines import encode_reference, prepare_reference
from .common import (
    CATEGORY,
    SAME_VALUE,
    EncodedReference,
    PersonaLiveModel,
    PersonaLiveReference,
    load_networks,
    model_info,
)
from .host_models import check_vae, image_embedder
from .options import config_inputs, node_config


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
                io.ClipVision.Input(
                    "clip_vision",
                    tooltip="The sd-image-variations image encoder (CLIP ViT-L/14, "
                    "768-d projection) from 'Load CLIP Vision'.",
                ),
                io.Vae.Input("vae", tooltip="An SD 1.x VAE (sd-vae-ft-mse) from 'Load VAE'."),
                io.Image.Input("image", tooltip="The reference portrait (one image)."),
                *config_inputs("size", "resize", notes={"size": SAME_VALUE, "resize": SAME_VALUE}),
            ],
            outputs=[
                PersonaLiveReference.Output(
                    display_name="reference", tooltip="The encoded reference for 'PersonaLive Stream Sampler'."
                )
            ],
        )

    @classmethod
    @torch.no_grad()
    def execute(cls, model, clip_vision, vae, image, **options) -> io.NodeOutput:
        config = node_config(options)
        picture = prepare_reference(image, config.size, config.framing.resize)
        info = model_info(model)
        embed = image_embedder(clip_vision, model.model.reference_unet.config.cross_attention_dim)
        reference = encode_reference(load_networks(model, config.size), picture, embed, check_vae(vae))
        return io.NodeOutput(EncodedReference(reference.to("cpu"), config.size, picture.fingerprint, info.key))
