"""PersonaLive Crop Face / PersonaLive Paste Back: real-world pictures and footage of any size and
aspect in and out of the model's square (`personalive_core.media`: face_detect, face_crop, face_track,
paste_back).

Crop Face finds the face in every image of a batch (a video's frames: tracked and smoothed), cuts
the square around it at the generation size and passes on where each crop came from
(PERSONALIVE_CROP). Paste Back warps generated frames back into the original pictures with a
feathered round mask; outside the mask the originals are untouched.
"""
import logging
from dataclasses import dataclass, field

import torch

import comfy.model_management as mm
import comfy.utils
from comfy_api.latest import io

from personalive_core.media import face_crop as fc
from personalive_core.media.face_detect import available_detectors
from personalive_core.media.face_track import crop_video_boxes
from personalive_core.media.paste_back import paste_back

from .common import CATEGORY

PersonaLiveCrop = io.Custom("PERSONALIVE_CROP")
DETECTORS = ["auto", "cascade", "template"]


@dataclass
class FaceCrops:
    """PERSONALIVE_CROP: one `face_crop.CropInfo` per cropped image (square box in original pixels,
    original size, crop size), and the indices of images in which no face was found."""
    infos: list
    missing: list = field(default_factory=list)

    def __len__(self):
        return len(self.infos)

    def to_dict(self):
        return {"infos": [i.to_dict() for i in self.infos], "missing": list(self.missing)}


def _frame(image, i):
    """IMAGE frame i → float32 numpy (H, W, 3) in [0, 1] (one frame at a time: no batch-size copy)."""
    return image[i, ..., :3].float().clamp(0, 1).cpu().numpy()


def _check_batch(image, name):
    if not isinstance(image, torch.Tensor) or image.dim() != 4 or image.shape[-1] < 3 or image.shape[0] == 0:
        raise ValueError(f"{name}: expected an IMAGE (batch, height, width, channels), got "
                         f"{getattr(image, 'shape', type(image).__name__)}")


def _detector(name):
    if name == "auto":
        return name
    if name not in available_detectors():
        raise ValueError(f"detector {name!r} is not available with this OpenCV (no bundled Haar cascades); "
                         f"use one of {['auto', *available_detectors()]}")
    return name


def crop_boxes(image, scale, shift, smoothing, detector, bar=None):
    """Crop box per image of the batch and the indices without a face."""
    n = image.shape[0]

    def frames():
        for i in range(n):
            mm.throw_exception_if_processing_interrupted()
            yield _frame(image, i)
            if bar is not None:
                bar.update(1)

    if smoothing and n > 1:
        return crop_video_boxes(frames(), scale=scale, shift=shift, detector=detector)
    boxes, missing = [], []
    for i, frame in enumerate(frames()):
        box = fc.find_crop_box(frame, scale=scale, shift=shift, detector=detector)
        if box is None:
            missing.append(i)
            box = fc.center_box(frame.shape[:2])
        boxes.append(box)
    return boxes, missing


def missing_message(missing, total):
    shown = ", ".join(map(str, missing[:10])) + (", …" if len(missing) > 10 else "")
    return f"PersonaLive Crop Face: no face found in {len(missing)} of {total} images ({shown})"


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
                io.Int.Input("size", default=512, min=64, max=2048, step=64,
                             tooltip="Side of the square crops in pixels; use the generation size (512 for the "
                                     "published weights)."),
                io.Float.Input("scale", default=fc.DEFAULT_SCALE, min=1.0, max=4.0, step=0.05,
                               tooltip="Crop side / detected face side. 1.75 matches PersonaLive's training "
                                       "framing (head and some shoulders); larger shows more background."),
                io.Float.Input("shift", default=0.0, min=-0.5, max=0.5, step=0.01,
                               tooltip="Moves the crop up (positive) or down by this fraction of the face height."),
                io.Boolean.Input("smoothing", default=True,
                                 tooltip="For batches: track the face across the frames and smooth its box (no "
                                         "jitter, outlier detections ignored). Off: every image on its own."),
                io.Combo.Input("detector", options=DETECTORS, default="auto",
                               tooltip="Face detector: 'cascade' = OpenCV's Haar cascades (when this OpenCV "
                                       "bundles them), 'template' = the built-in detector, 'auto' = cascade "
                                       "where available."),
            ],
            outputs=[
                io.Image.Output(display_name="crops", tooltip="The square face crops, size × size, one per image."),
                PersonaLiveCrop.Output(display_name="crop_info",
                                       tooltip="Where every crop came from, for 'PersonaLive Paste Back' or "
                                               "'PersonaLive Render Video'."),
            ],
        )

    @classmethod
    def execute(cls, image, size, scale=fc.DEFAULT_SCALE, shift=0.0, smoothing=True, detector="auto") -> io.NodeOutput:
        _check_batch(image, "image")
        if size % 64 or size < 64:
            raise ValueError(f"size {size}: must be a multiple of 64 (e.g. 256 or 512)")
        n = image.shape[0]
        bar = comfy.utils.ProgressBar(2 * n)
        boxes, missing = crop_boxes(image, scale, shift, smoothing, _detector(detector), bar)
        if missing:
            logging.warning(missing_message(missing, n))
        crops = torch.empty((n, size, size, 3), dtype=torch.float32, device=mm.intermediate_device())
        infos = []
        for i, box in enumerate(boxes):
            patch, info = fc.crop(_frame(image, i), box, size)
            crops[i] = torch.from_numpy(patch)
            infos.append(info)
            bar.update(1)
        return io.NodeOutput(crops, FaceCrops(infos, missing))


def pairs(n, crops, originals):
    """Index pairs (crop info, original) for n generated frames; one info or one original is shared
    by all frames, otherwise they go frame for frame."""
    k, m = len(crops), originals.shape[0]
    if k not in (1, n) or m not in (1, n):
        hint = (" (12 more generated frames than crops: turn 'keep_warmup' off in the sampler)"
                if n == max(k, m) + 12 else "")
        raise ValueError(f"Paste Back: {n} generated frames, {k} crop infos and {m} original images; give one crop "
                         f"info and one original for all frames, or one of each per frame{hint}")
    return [(i if k > 1 else 0, i if m > 1 else 0) for i in range(n)]


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
                        "original per frame (the driving video).",
            inputs=[
                io.Image.Input("images", tooltip="Generated frames (e.g. from 'PersonaLive Stream Sampler')."),
                PersonaLiveCrop.Input("crop_info", tooltip="From the 'PersonaLive Crop Face' that cut the original(s)."),
                io.Image.Input("original", tooltip="The picture(s) 'PersonaLive Crop Face' got: one image, or one per "
                                                   "generated frame."),
                io.Float.Input("feather", default=0.2, min=0.01, max=1.0, step=0.01,
                               tooltip="Width of the mask's soft edge as a fraction of the crop's radius."),
            ],
            outputs=[io.Image.Output(display_name="images",
                                     tooltip="The frames pasted into the original(s), at the original size.")],
        )

    @classmethod
    def execute(cls, images, crop_info, original, feather=0.2) -> io.NodeOutput:
        _check_batch(images, "images")
        _check_batch(original, "original")
        if not isinstance(crop_info, FaceCrops):
            raise ValueError(f"crop_info: expected the output of 'PersonaLive Crop Face', got {type(crop_info).__name__}")
        n = images.shape[0]
        plan = pairs(n, crop_info.infos, original)
        h, w = original.shape[1:3]
        for info in crop_info.infos:
            if tuple(info.image_hw) != (h, w):
                raise ValueError(f"crop_info is for {info.image_hw[1]}x{info.image_hw[0]} pictures, the original is "
                                 f"{w}x{h}; connect the image(s) that went into 'PersonaLive Crop Face'")
        out = torch.empty((n, h, w, 3), dtype=torch.float32, device=mm.intermediate_device())
        bar = comfy.utils.ProgressBar(n)
        for i, (c, o) in enumerate(plan):
            mm.throw_exception_if_processing_interrupted()
            pasted = paste_back(_frame(images, i), _frame(original, o), crop_info.infos[c], feather)
            out[i] = torch.from_numpy(pasted)
            bar.update(1)
        return io.NodeOutput(out)
