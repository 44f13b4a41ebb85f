"""PersonaLive Stream Sampler: reference + motion → frames, streamed chunk by chunk (4 frames per
denoiser pass), each chunk decoded as soon as it leaves the window."""
import torch

import comfy.model_management as mm
import comfy.utils
from comfy_api.latest import io

from personalive_core.streaming.render import chunks_needed, kept_slice
from personalive_core.streaming.session import WARMUP, StreamingSession

from .common import (CATEGORY, EncodedReference, MotionBundle, PersonaLiveModel, PersonaLiveMotion,
                     PersonaLiveReference, check_compatible, expect, keyframe_inputs, load_networks, progress_preview,
                     stream_settings)
from .host_models import check_vae, unscale, vae_decode


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
                PersonaLiveMotion.Input("motion", tooltip="From 'PersonaLive Extract Motion' (same reference "
                                                          "picture, size and resize mode)."),
                io.Vae.Input("vae", tooltip="The SD 1.x VAE (sd-vae-ft-mse) that decodes each finished chunk."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="Seed of the noise stream (one CPU generator, as the core CLI)."),
                *keyframe_inputs(),
                io.Boolean.Input("keep_warmup", default=False,
                                 tooltip="Also output the 12 warm-up frames (the reference easing into the first "
                                         "driving pose) before the driven frames, as the official live demo shows "
                                         "them. Off: exactly one frame per driving frame, in sync with its audio."),
            ],
            outputs=[
                io.Image.Output(display_name="images", tooltip="The animated frames, size × size."),
                io.Latent.Output(display_name="latent", tooltip="The same frames as SD latents (unscaled, what "
                                                                "'VAE Decode' expects)."),
            ],
        )

    @classmethod
    @torch.no_grad()
    def execute(cls, model, reference, motion, vae, seed, keyframe_threshold=17.0, max_keyframes=3,
                keep_warmup=False) -> io.NodeOutput:
        expect(reference, EncodedReference, "reference", "PersonaLive Encode Reference")
        expect(motion, MotionBundle, "motion", "PersonaLive Extract Motion")
        check_compatible(model, reference, motion)
        check_vae(vae)
        if len(motion.chunks) != chunks_needed(motion.frames):
            raise ValueError(f"motion: {len(motion.chunks)} chunks for {motion.frames} frames, expected "
                             f"{chunks_needed(motion.frames)}; re-run 'PersonaLive Extract Motion'")
        size = reference.size
        settings = stream_settings(keyframe_threshold, max_keyframes)
        m = load_networks(model, size)
        session = StreamingSession(m, reference.reference, seed, settings)

        count = (WARMUP if keep_warmup else 0) + motion.frames
        device = mm.intermediate_device()
        images = torch.empty((count, size, size, 3), dtype=torch.float32, device=device)
        latents = torch.empty((count, 4, size // 8, size // 8), dtype=torch.float32, device=device)
        bar = comfy.utils.ProgressBar(len(motion.chunks))
        done = 0
        for k, chunk in enumerate(motion.chunks):
            mm.throw_exception_if_processing_interrupted()
            load_networks(model, size)  # the VAE may have pushed the networks out between chunks
            kept = unscale(session.push_motion(chunk))[kept_slice(k, motion.frames, keep_warmup)]
            if len(kept):  # chunks holding only warm-up or padding frames are skipped, not decoded
                frames = vae_decode(vae, kept)
                if tuple(frames.shape[1:]) != (size, size, 3):
                    raise ValueError(f"vae: decoded frames of shape {tuple(frames.shape[1:])}, expected "
                                     f"({size}, {size}, 3); connect an SD 1.x VAE (sd-vae-ft-mse)")
                images[done:done + len(kept)] = frames.to(device)
                latents[done:done + len(kept)] = kept.float().to(device)
                done += len(kept)
                bar.update_absolute(k + 1, len(motion.chunks), progress_preview(frames[-1]))
            else:
                bar.update_absolute(k + 1, len(motion.chunks))
        return io.NodeOutput(images, {"samples": latents})
