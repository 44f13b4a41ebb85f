"""PersonaLive Extract Motion: driving frames → PERSONALIVE_MOTION (hybrid motion per 4-frame chunk,
including the mirrored padding chunks that flush the window) + a keypoint/face-box preview."""
import logging

import numpy as np
import torch

import comfy.model_management as mm
import comfy.utils
from comfy_api.latest import io

from personalive_core.media.driving import DrivingSource
from personalive_core.media.footage import Reframer
from personalive_core.models.keypoints import draw_keypoints
from personalive_core.streaming.hybrid_motion import HybridMotion
from personalive_core.streaming.motion_controls import MotionControls
from personalive_core.streaming.reference import Reference
from personalive_core.streaming.render import chunks_needed, driving_chunks, to_model_frames
from personalive_core.streaming.window import CHUNK

from .common import (CATEGORY, RESIZE_MODES, MotionBundle, PersonaLiveModel, PersonaLiveMotion, load_networks,
                     model_info, motion_control_inputs, reference_inputs, to_image)
from .encode_reference import RESIZE_TOOLTIP, SIZE_TOOLTIP

PREVIEWS = ["keypoints", "side by side", "none"]


def draw_boxes(images, boxes, width=2):
    """White box outlines on (N,3,H,W) images in place; boxes (N,4) [x1,y1,x2,y2] in pixels."""
    for img, (x1, y1, x2, y2) in zip(images, boxes.tolist()):
        img[:, y1:y1 + width, x1:x2 + 1] = 1
        img[:, max(y2 - width + 1, 0):y2 + 1, x1:x2 + 1] = 1
        img[:, y1:y2 + 1, x1:x1 + width] = 1
        img[:, y1:y2 + 1, max(x2 - width + 1, 0):x2 + 1] = 1
    return images


def render_preview(chunk, frames_u8, size, mode):
    """Preview frames (N,3,S,S or S,2S) for the real driving frames of one MotionChunk."""
    n = len(frames_u8)
    kps = chunk.keypoints[-CHUNK:][:n].float().cpu()  # the first chunk also carries the warm-up frames
    boxes = chunk.boxes[:n].cpu()
    canvas = draw_boxes(draw_keypoints(kps, size), boxes)
    if mode == "side by side":
        driving = torch.from_numpy(np.stack(frames_u8)).permute(0, 3, 1, 2).float() / 255
        canvas = torch.cat([draw_boxes(driving, boxes), canvas], dim=-1)
    return canvas


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
                io.Image.Input("reference_image", tooltip="The same reference portrait as in 'PersonaLive Encode "
                                                          "Reference' (motion is measured relative to it)."),
                io.Int.Input("size", default=512, min=64, max=2048, step=64, tooltip=SIZE_TOOLTIP),
                io.Combo.Input("resize", options=RESIZE_MODES, default=RESIZE_MODES[0], tooltip=RESIZE_TOOLTIP),
                io.Image.Input("driving_images", optional=True,
                               tooltip="Driving frames as an IMAGE batch (e.g. 'Get Video Components' images). "
                                       "Each is centre-cropped to a square and resized to size. Connect this or "
                                       "driving_video."),
                io.Video.Input("driving_video", optional=True,
                               tooltip="Driving VIDEO (e.g. 'Load Video'), decoded one frame at a time so long "
                                       "videos fit in memory; also gives the fps and audio outputs. Connect this "
                                       "or driving_images."),
                io.Int.Input("max_frames", default=0, min=0, max=1_000_000, step=1,
                             tooltip="Use only the first N driving frames (0 = all)."),
                io.Combo.Input("preview", options=PREVIEWS, default=PREVIEWS[0],
                               tooltip="preview output: 'keypoints' = the rendered keypoints the pose guider sees, "
                                       "with the face box; 'side by side' = the cropped driving frame next to it; "
                                       "'none' = one black frame (saves memory on long videos)."),
                *motion_control_inputs(),
            ],
            outputs=[
                PersonaLiveMotion.Output(display_name="motion", tooltip="For 'PersonaLive Stream Sampler'."),
                io.Image.Output(display_name="preview", tooltip="One preview frame per driving frame."),
                io.Float.Output(display_name="fps", tooltip="Frame rate of driving_video (25 for driving_images)."),
                io.Audio.Output(display_name="audio", tooltip="Audio of driving_video, cut to max_frames "
                                                              "(None for driving_images or a silent video)."),
            ],
        )

    @classmethod
    @torch.no_grad()
    def execute(cls, model, reference_image, size, resize, driving_images=None, driving_video=None,
                max_frames=0, preview="keypoints", expression=1.0, head_pose=1.0, smoothness=0.0) -> io.NodeOutput:
        if preview not in PREVIEWS:
            raise ValueError(f"preview {preview!r}: use one of {PREVIEWS}")
        controls = MotionControls(expression, head_pose, smoothness)
        _, pixels, cond, fingerprint = reference_inputs(reference_image, size, resize)
        info = model_info(model)
        if (driving_images is None) == (driving_video is None):
            raise ValueError("connect exactly one driving input: 'driving_images' (an IMAGE batch, e.g. from "
                             "'Get Video Components') or 'driving_video' (a VIDEO from 'Load Video')")
        source = DrivingSource(driving_images, max_frames, "driving_images") if driving_video is None else \
            DrivingSource(driving_video, max_frames, "driving_video", log=logging.warning)
        m = load_networks(model, size)
        reference = Reference(pixels[0].to(m.device, m.dtype), cond.to(m.device, m.motion_extractor.dtype) / 2 + 0.5,
                              None, None, {})
        motion = HybridMotion(m.motion_extractor, m.motion_encoder, reference, controls)
        total_chunks = chunks_needed(source.estimate) if source.estimate else 0
        bar = comfy.utils.ProgressBar(max(total_chunks, 1))
        chunks, previews = [], []
        for chunk in driving_chunks(Reframer(size).driving(source)):
            mm.throw_exception_if_processing_interrupted()
            motion_chunk = motion(to_model_frames(chunk.frames, m.device)).to("cpu")
            chunks.append(motion_chunk)
            if preview != "none" and chunk.real:
                previews.append(render_preview(motion_chunk, chunk.frames[:chunk.real], size, preview))
            bar.update_absolute(len(chunks), max(total_chunks, len(chunks) + 1))
        bar.update_absolute(len(chunks), len(chunks))

        audio = source.audio()
        shown = to_image(torch.cat(previews)) if previews else torch.zeros((1, 64, 64, 3))
        bundle = MotionBundle(chunks, source.read, size, fingerprint, info.key, float(source.fps))
        return io.NodeOutput(bundle, shown, float(source.fps), audio)
