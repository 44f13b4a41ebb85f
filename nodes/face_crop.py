"""PersonaLive Crop Face / PersonaLive Paste Back: real-world pictures and footage of any size and
aspect in and out of the model's square (`personalive_core.pipelines.faces`).

Crop Face finds the face in every image of a batch (a video's frames: tracked and smoothed), cuts
the square around it at the generation size and passes on where each crop came from
(PERSONALIVE_CROP). Paste Back warps generated frames back into the original pictures with a
feathered round mask; outside the mask the originals are untouched.
"""

import torch

import comfy.model_management as mm
import comfy.utils
from comfy_api.latest import io

from ..personalive_core import InputError
from ..personalive_core.pipelines import (
    DETECTORS,
    FaceCrops,
    check_originals,
    crop_boxes,
    cut_face,
    paste_face,
    paste_plan,
)
from .common import CATEGORY, log
from .options import config_inputs, node_config

PersonaLiveCrop = io.Custom("PERSONALIVE_CROP")
__all__ = ["FaceCrops", "PersonaLiveCrop", "PersonaLiveCropFace", "PersonaLivePasteBack"]


def _frame(image, i):
    """IMAGE frame i → float32 numpy (H, W, 3) in [0, 1] (one frame at a time: no batch-size copy)."""
    return image[i, ..., :3].float().clamp(0, 1).cpu().numpy()


def _check_batch(image, name):
    if not isinstance(image, torch.Tensor) or image.dim() != 4 or image.shape[-1] < 3 or image.shape[0] == 0:
        raise InputError(
            f"{name}: expected an IMAGE (batch, height, width, channels), got "
            f"{getattr(image, 'shape', type(image).__name__)}"
        )


class PersonaLiveCropFace(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PersonaLiveCropFace",
            display_name="PersonaLive Crop Face",
            category=CATEGORY,
            description="Finds the face in each image (any size or aspect ratio) and cuts the square around it at "
            "the generation size, framed as PersonaLive was trained. For a batch of video frames the "
            "face is tracked and its box smoothed; images without a face reuse the last box (the "
            "centred square before the first face) and are listed in the log.",
            inputs=[
                io.Image.Input("image", tooltip="A picture (the reference portrait) or a batch of video frames."),
                *config_inputs("size", "crop_scale"),
                io.Float.Input(
                    "shift",
                    default=0.0,
                    min=-0.5,
                    max=0.5,
                    step=0.01,
                    tooltip="Moves the crop up (positive) or down by this fraction of the face height.",
                ),
                io.Boolean.Input(
                    "smoothing",
                    default=True,
                    tooltip="For batches: track the face across the frames and smooth its box (no "
                    "jitter, outlier detections ignored). Off: every image on its own.",
                ),
                io.Combo.Input(
                    "detector",
                    options=list(DETECTORS),
                    default="auto",
                    tooltip="Face detector: 'cascade' = OpenCV's Haar cascades (when this OpenCV "
                    "bundles them), 'template' = the built-in detector, 'auto' = cascade "
                    "where available.",
                ),
            ],
            outputs=[
                io.Image.Output(display_name="crops", tooltip="The square face crops, size × size, one per image."),
                PersonaLiveCrop.Output(
                    display_name="crop_info",
                    tooltip="Where every crop came from, for 'PersonaLive Paste Back' or 'PersonaLive Render Video'.",
                ),
            ],
        )

    @classmethod
    def execute(cls, image, shift, smoothing, detector, **options) -> io.NodeOutput:
        _check_batch(image, "image")
        config = node_config(options)
        size, n = config.size, image.shape[0]
        bar = comfy.utils.ProgressBar(2 * n)

        def frames():
            for i in range(n):
                mm.throw_exception_if_processing_interrupted()
                yield _frame(image, i)
                bar.update(1)

        boxes, missing = crop_boxes(frames(), config.framing.crop_scale, shift, smoothing and n > 1, detector)
        crops = torch.empty((n, size, size, 3), dtype=torch.float32, device=mm.intermediate_device())
        infos = []
        for i, box in enumerate(boxes):
            patch, info = cut_face(_frame(image, i), box, size)
            crops[i] = torch.from_numpy(patch)
            infos.append(info)
            bar.update(1)
        result = FaceCrops(infos, missing)
        if result.report():
            log.warning(f"PersonaLive Crop Face: {result.report()}")
        return io.NodeOutput(crops, result)


class PersonaLivePasteBack(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PersonaLivePasteBack",
            display_name="PersonaLive Paste Back",
            category=CATEGORY,
            description="Warps generated square frames back into the original pictures they were cropped from, "
            "at the originals' size, blended with a feathered round mask; pixels outside the mask are "
            "exactly the original's. One original (the reference portrait) for all frames, or one "
            "original per generated frame (the driving video).",
            inputs=[
                io.Image.Input("images", tooltip="Generated frames (e.g. from 'PersonaLive Stream Sampler')."),
                PersonaLiveCrop.Input(
                    "crop_info", tooltip="From the 'PersonaLive Crop Face' that cut the original(s)."
                ),
                io.Image.Input(
                    "original",
                    tooltip="The picture(s) 'PersonaLive Crop Face' got: one image, or one per generated frame.",
                ),
                *config_inputs("feather"),
            ],
            outputs=[
                io.Image.Output(
                    display_name="images", tooltip="The frames pasted into the original(s), at the original size."
                )
            ],
        )

    @classmethod
    def execute(cls, images, crop_info, original, **options) -> io.NodeOutput:
        _check_batch(images, "images")
        _check_batch(original, "original")
        if not isinstance(crop_info, FaceCrops):
            raise InputError(
                f"crop_info: expected the output of 'PersonaLive Crop Face', got {type(crop_info).__name__}"
            )
        feather = node_config(options).framing.feather
        n = images.shape[0]
        plan = paste_plan(n, len(crop_info.infos), original.shape[0])
        h, w = original.shape[1:3]
        check_originals(crop_info.infos, h, w)
        out = torch.empty((n, h, w, 3), dtype=torch.float32, device=mm.intermediate_device())
        bar = comfy.utils.ProgressBar(n)
        for i, (c, o) in enumerate(plan):
            mm.throw_exception_if_processing_interrupted()
            out[i] = torch.from_numpy(paste_face(_frame(images, i), _frame(original, o), crop_info.infos[c], feather))
            bar.update(1)
        return io.NodeOutput(out)
