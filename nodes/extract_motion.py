"""PersonaLive Extract Motion: driving frames → PERSONALIVE_MOTION (hybrid motion per 4-frame chunk,
including the mirrored padding chunks that flush the window) + a keypoint/face-box preview."""

import torch

import comfy.model_management as mm
import comfy.utils
from comfy_api.latest import io

from ..personalive_core import InputError
from ..personalive_core.pipelines import (
    PREVIEWS,
    DrivingSource,
    MotionTrack,
    chunks_needed,
    extract_motion,
    motion_preview,
    prepare_reference,
)
from .common import (
    CATEGORY,
    SAME_VALUE,
    MotionBundle,
    PersonaLiveModel,
    PersonaLiveMotion,
    load_networks,
    log,
    model_info,
    to_image,
)
from .options import config_inputs, node_config


class PersonaLiveExtractMotion(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PersonaLiveExtractMotion",
            display_name="PersonaLive Extract Motion",
            category=CATEGORY,
            description="Hybrid motion of the driving frames relative to the reference: 3D keypoints (rendered for "
            "the pose guider) and face motion tokens, per chunk of 4 frames. Takes an IMAGE batch or "
            "a VIDEO; a VIDEO from 'Load Video' is decoded frame by frame (use it for long videos).",
            inputs=[
                PersonaLiveModel.Input("model", tooltip="From 'Load PersonaLive Model'."),
                io.Image.Input(
                    "reference_image",
                    tooltip="The same reference portrait as in 'PersonaLive Encode "
                    "Reference' (motion is measured relative to it).",
                ),
                *config_inputs("size", "resize", notes={"size": SAME_VALUE, "resize": SAME_VALUE}),
                io.Image.Input(
                    "driving_images",
                    optional=True,
                    tooltip="Driving frames as an IMAGE batch (e.g. 'Get Video Components' images). "
                    "Each is centre-cropped to a square and resized to size. Connect this or "
                    "driving_video.",
                ),
                io.Video.Input(
                    "driving_video",
                    optional=True,
                    tooltip="Driving VIDEO (e.g. 'Load Video'), decoded one frame at a time so long "
                    "videos fit in memory; also gives the fps and audio outputs. Connect this "
                    "or driving_images.",
                ),
                *config_inputs("max_frames"),
                io.Combo.Input(
                    "preview",
                    options=list(PREVIEWS),
                    default=PREVIEWS[0],
                    tooltip="preview output: 'keypoints' = the rendered keypoints the pose guider sees, "
                    "with the face box; 'side by side' = the cropped driving frame next to it; "
                    "'none' = one black frame (saves memory on long videos).",
                ),
                *config_inputs("expression", "head_pose", "smoothness"),
            ],
            outputs=[
                PersonaLiveMotion.Output(display_name="motion", tooltip="For 'PersonaLive Stream Sampler'."),
                io.Image.Output(display_name="preview", tooltip="One preview frame per driving frame."),
                io.Float.Output(display_name="fps", tooltip="Frame rate of driving_video (25 for driving_images)."),
                io.Audio.Output(
                    display_name="audio",
                    tooltip="Audio of driving_video, cut to max_frames (None for driving_images or a silent video).",
                ),
            ],
        )

    @classmethod
    @torch.no_grad()
    def execute(
        cls, model, reference_image, preview, driving_images=None, driving_video=None, **options
    ) -> io.NodeOutput:
        config = node_config(options)
        picture = prepare_reference(reference_image, config.size, config.framing.resize)
        info = model_info(model)
        if (driving_images is None) == (driving_video is None):
            raise InputError(
                "connect exactly one driving input: 'driving_images' (an IMAGE batch, e.g. from "
                "'Get Video Components') or 'driving_video' (a VIDEO from 'Load Video')"
            )
        source = (
            DrivingSource(driving_images, config.max_frames, "driving_images")
            if driving_video is None
            else DrivingSource(driving_video, config.max_frames, "driving_video", log=log.warning)
        )
        models = load_networks(model, config.size)
        total = chunks_needed(source.estimate) if source.estimate else 0
        bar = comfy.utils.ProgressBar(max(total, 1))
        chunks, previews = [], []
        for chunk, motion in extract_motion(models, picture, source, config):
            mm.throw_exception_if_processing_interrupted()
            chunks.append(motion)
            shown = motion_preview(motion, chunk, config.size, preview)
            if shown is not None:
                previews.append(shown)
            bar.update_absolute(len(chunks), max(total, len(chunks) + 1))
        bar.update_absolute(len(chunks), len(chunks))
        track = MotionTrack(chunks, source.read, config.size, picture.fingerprint)
        shown = to_image(torch.cat(previews)) if previews else torch.zeros((1, 64, 64, 3))
        return io.NodeOutput(MotionBundle(track, info.key, float(source.fps)), shown, float(source.fps), source.audio())
