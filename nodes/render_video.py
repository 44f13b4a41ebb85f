"""PersonaLive Render Video: a driving VIDEO in, the animated VIDEO out, written to disk as it renders.

Unlike the IMAGE-batch path (Extract Motion → Stream Sampler), nothing here grows with the video's
length: a VIDEO loaded from a file is decoded one frame at a time, each finished chunk is decoded by
the VAE, optionally pasted back into the original footage, and appended to an H.264 mp4 in
output/ (fragmented: a cancelled run leaves a playable file). The driving audio is added at the end.
The returned VIDEO is backed by that file.
"""

import os
import shutil
import tempfile

import torch

import comfy.model_management as mm
import comfy.utils
import folder_paths
from comfy_api.latest import InputImpl, io, ui

from ..personalive_core import InputError
from ..personalive_core.pipelines import (
    DrivingSource,
    Output,
    Reframer,
    chunks_needed,
    host_decoder,
    image_to_uint8,
    render_footage,
)
from .common import (
    CATEGORY,
    EncodedReference,
    PersonaLiveModel,
    PersonaLiveReference,
    check_compatible,
    expect,
    load_networks,
    log,
    progress_preview,
    stream_config,
)
from .face_crop import FaceCrops, PersonaLiveCrop
from .host_models import check_vae
from .options import RENDER, config_inputs


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
                PersonaLiveReference.Input(
                    "reference",
                    tooltip="From 'PersonaLive Encode Reference'. For real photos encode the "
                    "face crop of 'PersonaLive Crop Face' (size = its size).",
                ),
                io.Vae.Input("vae", tooltip="The SD 1.x VAE (sd-vae-ft-mse) that decodes each finished chunk."),
                io.Video.Input(
                    "video",
                    tooltip="The driving video (e.g. from 'Load Video'). A video loaded from a "
                    "file is decoded one frame at a time.",
                ),
                *config_inputs(
                    "seed",
                    "crop",
                    "paste_into",
                    "crop_scale",
                    "feather",
                    "max_frames",
                    "keyframe_threshold",
                    "max_keyframes",
                    notes={
                        "paste_into": "For 'reference' connect reference_crop and reference_image.",
                        "crop_scale": "Use the same value as for the reference crop.",
                    },
                ),
                io.String.Input(
                    "filename_prefix",
                    default="PersonaLive/render",
                    tooltip="Where the mp4 goes, relative to ComfyUI's output folder.",
                ),
                *config_inputs("expression", "head_pose", "smoothness"),
                PersonaLiveCrop.Input(
                    "reference_crop",
                    optional=True,
                    tooltip="For paste_into 'reference': the crop_info of the 'PersonaLive Crop "
                    "Face' that cut the reference picture.",
                ),
                io.Image.Input(
                    "reference_image",
                    optional=True,
                    tooltip="For paste_into 'reference': the original reference picture (what "
                    "'PersonaLive Crop Face' got).",
                ),
            ],
            outputs=[
                io.Video.Output(
                    display_name="video", tooltip="The rendered video, backed by the mp4 written in output/."
                )
            ],
            is_output_node=True,
        )

    @classmethod
    @torch.no_grad()
    def execute(
        cls, model, reference, vae, video, filename_prefix, reference_crop=None, reference_image=None, **options
    ) -> io.NodeOutput:
        expect(reference, EncodedReference, "reference", "PersonaLive Encode Reference")
        check_compatible(model, reference)
        check_vae(vae)
        config = stream_config(model, options, RENDER).replace(size=reference.size)
        reframer = Reframer(config, log=log.warning)
        if config.framing.paste_into == "reference":
            if not isinstance(reference_crop, FaceCrops) or reference_image is None:
                raise InputError(
                    "paste_into 'reference' needs 'reference_crop' (crop_info of 'PersonaLive Crop "
                    "Face' on the reference picture) and 'reference_image' (that picture) connected"
                )
            if len(reference_crop) != 1 or reference_image.shape[0] != 1:
                raise InputError(
                    f"reference_crop / reference_image: expected one picture, got "
                    f"{len(reference_crop)} crop infos and {reference_image.shape[0]} images"
                )
            reframer.set_reference_crop(image_to_uint8(reference_image[0]), reference_crop.infos[0])
        scratch = tempfile.mkdtemp(prefix="personalive-", dir=folder_paths.get_temp_directory())
        try:
            return cls._render(model, reference, vae, video, config, reframer, filename_prefix, scratch)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    @classmethod
    def _render(cls, model, reference, vae, video, config, reframer, filename_prefix, scratch):
        size = config.size
        driving = DrivingSource(video, config.max_frames, name="video", log=log.warning)
        total = chunks_needed(driving.estimate) if driving.estimate else None
        folder, name, counter, subfolder, _ = folder_paths.get_save_image_path(
            filename_prefix, folder_paths.get_output_directory(), size, size
        )
        file = f"{name}_{counter:05}_.mp4"
        path = os.path.join(folder, file)
        m = load_networks(model, size)
        bar = comfy.utils.ProgressBar(total or 1)

        def on_chunk(n, frames):
            bar.update_absolute(n, max(total or 0, n), progress_preview(frames[-1]))
            mm.throw_exception_if_processing_interrupted()
            load_networks(model, size)  # the VAE may have pushed the networks out

        out = Output(path, driving.fps, driving.audio_file(scratch), log.info, driving.time_base, driving.start)
        try:
            render_footage(out, m, reference.reference, driving, reframer, config, on_chunk, host_decoder(vae, size))
        except BaseException:
            log.warning(f"PersonaLive Render Video: stopped after {out.count} frames; {path} holds them")
            raise
        finally:
            if reframer.report():
                log.warning(f"PersonaLive Render Video: {reframer.report()}")
        return io.NodeOutput(
            InputImpl.VideoFromFile(path), ui=ui.PreviewVideo([ui.SavedResult(file, subfolder, io.FolderType.output)])
        )
