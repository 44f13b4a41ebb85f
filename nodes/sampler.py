"""PersonaLive Stream Sampler: reference + motion → frames, streamed chunk by chunk (4 frames per
denoiser pass), each chunk decoded as soon as it leaves the window."""

import torch

import comfy.model_management as mm
import comfy.utils
from comfy_api.latest import io

from ..personalive_core.pipelines import WARMUP, host_decoder, sample_motion, unscaled
from .common import (
    CATEGORY,
    EncodedReference,
    MotionBundle,
    PersonaLiveModel,
    PersonaLiveMotion,
    PersonaLiveReference,
    check_compatible,
    expect,
    load_networks,
    progress_preview,
    stream_config,
)
from .host_models import check_vae
from .options import RENDER, config_inputs


class PersonaLiveStreamSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PersonaLiveStreamSampler",
            display_name="PersonaLive Stream Sampler",
            category=CATEGORY,
            description="Animates the reference with the extracted motion: micro-chunk streaming (4 frames in, 4 "
            "frames out per pass, 4 denoising steps in flight), historical keyframes, one output frame "
            "per driving frame. Memory stays flat apart from the output frames.",
            inputs=[
                PersonaLiveModel.Input("model", tooltip="From 'Load PersonaLive Model'."),
                PersonaLiveReference.Input("reference", tooltip="From 'PersonaLive Encode Reference'."),
                PersonaLiveMotion.Input(
                    "motion",
                    tooltip="From 'PersonaLive Extract Motion' (same reference picture, size and resize mode).",
                ),
                io.Vae.Input("vae", tooltip="The SD 1.x VAE (sd-vae-ft-mse) that decodes each finished chunk."),
                *config_inputs("seed", "keyframe_threshold", "max_keyframes", "keep_warmup"),
            ],
            outputs=[
                io.Image.Output(display_name="images", tooltip="The animated frames, size × size."),
                io.Latent.Output(
                    display_name="latent",
                    tooltip="The same frames as SD latents (unscaled, what 'VAE Decode' expects).",
                ),
            ],
        )

    @classmethod
    @torch.no_grad()
    def execute(cls, model, reference, motion, vae, **options) -> io.NodeOutput:
        expect(reference, EncodedReference, "reference", "PersonaLive Encode Reference")
        expect(motion, MotionBundle, "motion", "PersonaLive Extract Motion")
        check_compatible(model, reference, motion)
        config = stream_config(model, options, RENDER)
        size, track = reference.size, motion.track
        decode = host_decoder(check_vae(vae), size)
        count = (WARMUP if config.keep_warmup else 0) + track.frames
        device = mm.intermediate_device()
        images = torch.empty((count, size, size, 3), dtype=torch.float32, device=device)
        latents = torch.empty((count, 4, size // 8, size // 8), dtype=torch.float32, device=device)
        total = len(track.chunks)
        bar = comfy.utils.ProgressBar(total)

        def before_chunk(k):
            mm.throw_exception_if_processing_interrupted()
            return load_networks(model, size)  # the VAE may have pushed the networks out between chunks

        done = 0
        stream = sample_motion(load_networks(model, size), reference.reference, track, config, before_chunk)
        for k, kept in enumerate(stream):
            if len(kept):  # chunks holding only warm-up or padding frames are skipped, not decoded
                frames = decode(kept)
                images[done : done + len(kept)] = frames.to(device)
                latents[done : done + len(kept)] = unscaled(kept).float().to(device)
                done += len(kept)
                bar.update_absolute(k + 1, total, progress_preview(frames[-1]))
            else:
                bar.update_absolute(k + 1, total)
        return io.NodeOutput(images, {"samples": latents})
