"""PersonaLive Render Video: a driving VIDEO in, the animated VIDEO out, written to disk as it renders.

Unlike the IMAGE-batch path (Extract Motion → Stream Sampler), nothing here grows with the video's
length: a VIDEO loaded from a file is decoded one frame at a time, each finished chunk is decoded by
the VAE, optionally pasted back into the original footage, and appended to an H.264 mp4 in
output/ (fragmented: a cancelled run leaves a playable file). The driving audio is added at the end.
The returned VIDEO is backed by that file.
"""
import logging
import os
import shutil
import tempfile

import torch

import comfy.model_management as mm
import comfy.utils
import folder_paths
from comfy_api.latest import InputImpl, io, ui

from personalive_core.media.driving import DrivingSource, image_to_uint8
from personalive_core.media.face_crop import DEFAULT_SCALE
from personalive_core.media.footage import CROP_MODES, PASTE_TARGETS, Reframer, render_footage
from personalive_core.media.output import Output
from personalive_core.streaming.motion_controls import MotionControls
from personalive_core.streaming.render import chunks_needed

from .common import (CATEGORY, EncodedReference, PersonaLiveModel, PersonaLiveReference, check_compatible, expect,
                     keyframe_inputs, load_networks, motion_control_inputs, progress_preview,
                     stream_settings)
from .face_crop import FaceCrops, PersonaLiveCrop
from .host_models import check_vae, unscale, vae_decode


class PersonaLiveRenderVideo(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PersonaLiveRenderVideo",
            display_name="PersonaLive Render Video",
            category=CATEGORY,
            description="Animates the reference with a driving VIDEO of any length, size and aspect and writes the "
                        "result straight to an mp4 in output/ (with the driving audio): frames are read, rendered, "
                        "decoded, optionally pasted back and written chunk by chunk, so memory does not grow with "
                        "the video. Optional face crop of the driving frames and paste-back into the original "
                        "reference picture or the original driving frames.",
            inputs=[
                PersonaLiveModel.Input("model", tooltip="From 'Load PersonaLive Model'."),
                PersonaLiveReference.Input("reference",
                                           tooltip="From 'PersonaLive Encode Reference'. For real photos encode the "
                                                   "face crop of 'PersonaLive Crop Face' (size = its size)."),
                io.Vae.Input("vae", tooltip="The SD 1.x VAE (sd-vae-ft-mse) that decodes each finished chunk."),
                io.Video.Input("video", tooltip="The driving video (e.g. from 'Load Video'). A video loaded from a "
                                                "file is decoded one frame at a time."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="Seed of the noise stream (one CPU generator, as the core CLI)."),
                io.Combo.Input("crop", options=list(CROP_MODES), default="center",
                               tooltip="How driving frames become square: 'center' = centred square, resized; "
                                       "'auto' = the square around the tracked, smoothed face (any framing, any "
                                       "aspect). Frames without a face reuse the last box and are logged."),
                io.Combo.Input("paste_into", options=list(PASTE_TARGETS), default="none",
                               tooltip="'none': output the generated squares. 'reference': paste every frame "
                                       "back into the original reference picture (connect reference_crop and "
                                       "reference_image). 'driving': paste into the original driving frames "
                                       "(needs crop 'auto'). The output then has that picture's size."),
                io.Float.Input("crop_scale", default=DEFAULT_SCALE, min=1.0, max=4.0, step=0.05,
                               tooltip="With crop 'auto': crop side / detected face side (1.75 = the training "
                                       "framing). Use the same value as for the reference crop."),
                io.Float.Input("feather", default=0.2, min=0.01, max=1.0, step=0.01,
                               tooltip="Paste-back: width of the mask's soft edge as a fraction of the crop radius."),
                io.Int.Input("max_frames", default=0, min=0, max=10_000_000,
                             tooltip="Render only the first N driving frames (0 = all)."),
                *keyframe_inputs(),
                io.String.Input("filename_prefix", default="PersonaLive/render",
                                tooltip="Where the mp4 goes, relative to ComfyUI's output folder."),
                *motion_control_inputs(),
                PersonaLiveCrop.Input("reference_crop", optional=True,
                                      tooltip="For paste_into 'reference': the crop_info of the 'PersonaLive Crop "
                                              "Face' that cut the reference picture."),
                io.Image.Input("reference_image", optional=True,
                               tooltip="For paste_into 'reference': the original reference picture (what "
                                       "'PersonaLive Crop Face' got)."),
            ],
            outputs=[io.Video.Output(display_name="video",
                                     tooltip="The rendered video, backed by the mp4 written in output/.")],
            is_output_node=True,
        )

    @classmethod
    @torch.no_grad()
    def execute(cls, model, reference, vae, video, seed, crop="center", paste_into="none",
                crop_scale=DEFAULT_SCALE, feather=0.2, max_frames=0, keyframe_threshold=17.0, max_keyframes=3,
                filename_prefix="PersonaLive/render", reference_crop=None, reference_image=None, expression=1.0,
                head_pose=1.0, smoothness=0.0) -> io.NodeOutput:
        expect(reference, EncodedReference, "reference", "PersonaLive Encode Reference")
        check_compatible(model, reference)
        check_vae(vae)
        controls = MotionControls(expression, head_pose, smoothness)
        if paste_into == "driving" and crop != "auto":
            raise ValueError("paste_into 'driving' needs crop 'auto' (the paste-back warps the driving face crops "
                             "back into their frames)")
        size = reference.size
        reframer = Reframer(size, crop, paste_into, scale=crop_scale, feather=feather, log=logging.warning)
        if paste_into == "reference":
            if not isinstance(reference_crop, FaceCrops) or reference_image is None:
                raise ValueError("paste_into 'reference' needs 'reference_crop' (crop_info of 'PersonaLive Crop "
                                 "Face' on the reference picture) and 'reference_image' (that picture) connected")
            if len(reference_crop) != 1 or reference_image.shape[0] != 1:
                raise ValueError(f"reference_crop / reference_image: expected one picture, got "
                                 f"{len(reference_crop)} crop infos and {reference_image.shape[0]} images")
            reframer.set_reference_crop(image_to_uint8(reference_image[0]),
                                        reference_crop.infos[0])

        scratch = tempfile.mkdtemp(prefix="personalive-", dir=folder_paths.get_temp_directory())
        try:
            return cls._render(model, reference, vae, video, seed, size, reframer, max_frames,
                               stream_settings(keyframe_threshold, max_keyframes, controls),
                               filename_prefix, scratch)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    @classmethod
    def _render(cls, model, reference, vae, video, seed, size, reframer, max_frames, settings, filename_prefix,
                scratch):
        driving = DrivingSource(video, max_frames, name="video", log=logging.warning)
        total = chunks_needed(driving.estimate) if driving.estimate else None
        folder, name, counter, subfolder, _ = folder_paths.get_save_image_path(
            filename_prefix, folder_paths.get_output_directory(), size, size)
        file = f"{name}_{counter:05}_.mp4"
        path = os.path.join(folder, file)
        m = load_networks(model, size)
        bar = comfy.utils.ProgressBar(total or 1)

        def decoder(latents):
            frames = vae_decode(vae, unscale(latents))
            if tuple(frames.shape[1:]) != (size, size, 3):
                raise ValueError(f"vae: decoded frames of shape {tuple(frames.shape[1:])}, expected ({size}, {size}, "
                                 "3); connect an SD 1.x VAE (sd-vae-ft-mse)")
            return frames

        def on_chunk(n, frames):
            bar.update_absolute(n, max(total or 0, n), progress_preview(frames[-1]))
            mm.throw_exception_if_processing_interrupted()
            load_networks(model, size)  # the VAE may have pushed the networks out

        out = Output(path, driving.fps, driving.audio_file(scratch), logging.info, driving.time_base, driving.start)
        try:
            render_footage(out, m, reference.reference, driving, reframer, seed, False, settings, on_chunk, decoder)
        except BaseException:
            logging.warning(f"PersonaLive Render Video: stopped after {out.count} frames; {path} holds them")
            raise
        finally:
            if reframer.report():
                logging.warning(f"PersonaLive Render Video: {reframer.report()}")
        return io.NodeOutput(InputImpl.VideoFromFile(path),
                             ui=ui.PreviewVideo([ui.SavedResult(file, subfolder, io.FolderType.output)]))
