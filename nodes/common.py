"""What the PersonaLive nodes share: socket types, the model folder, the bundles passed between
nodes, and the few host calls (model loading, devices) every node makes."""
import hashlib
import os
from dataclasses import dataclass

import torch

import comfy.model_management as mm
import folder_paths
from comfy_api.latest import io

from personalive_core.media.driving import image_to_uint8
from personalive_core.streaming.history import KeyframeSettings
from personalive_core.models.loader import PERSONALIVE_FILES, PersonaLiveModels
from personalive_core.models.preprocess import vae_pixels_from_tensor
from personalive_core.streaming.motion_controls import MotionControls
from personalive_core.streaming.session import Settings

CATEGORY = "PersonaLive"
MODEL_FOLDER = "personalive"  # models/personalive/, or any `personalive:` entry of extra_model_paths.yaml
TOP_LEVEL = "personalive"  # combo label of the files directly inside a personalive folder
RESIZE_MODES = ["stretch", "center crop"]
PREVIEW_SIZE = 512  # longest side of the progress-bar previews

PersonaLiveModel = io.Custom("PERSONALIVE_MODEL")
PersonaLiveReference = io.Custom("PERSONALIVE_REFERENCE")
PersonaLiveMotion = io.Custom("PERSONALIVE_MOTION")


def register_model_folder():
    """Register `models/personalive` (weights: .pth/.safetensors/...). Paths that
    extra_model_paths.yaml already added under the same name are kept."""
    default = os.path.join(folder_paths.models_dir, MODEL_FOLDER)
    entry = folder_paths.folder_names_and_paths.get(MODEL_FOLDER)
    if entry is None:
        folder_paths.folder_names_and_paths[MODEL_FOLDER] = ([default], set(folder_paths.supported_pt_extensions))
        return
    paths, extensions = entry
    if default not in paths:
        paths.append(default)
    if not extensions:  # add_model_folder_path creates an empty set, which would list every file
        extensions.update(folder_paths.supported_pt_extensions)


# -- bundles travelling between nodes ------------------------------------------------------------
class PersonaLiveNetworks(torch.nn.Module):
    """The five networks built from the six PersonaLive files, as one module so that a single
    ModelPatcher moves, offloads and measures them together."""

    def __init__(self, denoising_unet, reference_unet, pose_guider, motion_encoder, motion_extractor, info):
        super().__init__()
        self.denoising_unet = denoising_unet
        self.reference_unet = reference_unet
        self.pose_guider = pose_guider
        self.motion_encoder = motion_encoder
        self.motion_extractor = motion_extractor
        self.info = info


@dataclass
class ModelInfo:
    label: str  # the combo entry it came from
    files: dict  # component name -> path
    dtype: torch.dtype
    key: str  # identity of weights + dtype; references and motion remember it


@dataclass
class EncodedReference:
    """PERSONALIVE_REFERENCE: the core `Reference` (kept on the CPU) and what it was made from."""
    reference: object  # personalive_core.reference.Reference
    size: int
    fingerprint: str  # of the reference pixels; motion must come from the same picture
    model_key: str


@dataclass
class MotionBundle:
    """PERSONALIVE_MOTION: one MotionChunk per denoiser pass (CPU), including the chunks of
    mirrored padding frames that flush the window after the last driving frame."""
    chunks: list
    frames: int  # driving frames (the sampler outputs one frame per driving frame)
    size: int
    fingerprint: str
    model_key: str
    fps: float = None


def model_info(patcher):
    info = getattr(getattr(patcher, "model", None), "info", None)
    if not isinstance(info, ModelInfo):
        raise ValueError("expected a PERSONALIVE_MODEL from the 'Load PersonaLive Model' node, "
                         f"got {type(patcher).__name__}")
    return info


def activation_memory(size, dtype, frames=16):
    """Rough working memory of one denoiser pass over the 16-frame window (bytes), in the
    spirit of ComfyUI's SD1 estimate (area × dtype size × 0.01 MiB), with some margin."""
    area = frames * (size // 8) ** 2
    return int(area * torch.finfo(dtype).bits // 8 * 0.015 * 1024 * 1024)


def load_networks(patcher, size=512):
    """Load (or keep) the networks on the compute device through ComfyUI's model management,
    evicting other models if needed; returns the core's model view (no image encoder / VAE:
    those come from the host's CLIP_VISION and VAE)."""
    info = model_info(patcher)
    mm.load_models_gpu([patcher], memory_required=activation_memory(size, info.dtype), force_full_load=True)
    n = patcher.model
    return PersonaLiveModels(n.denoising_unet, n.reference_unet, n.pose_guider, n.motion_encoder,
                             n.motion_extractor, image_encoder=None, vae=None)


def weight_sets():
    """Combo entries: every folder (relative to a personalive folder) holding a denoising_unet file."""
    sets = set()
    try:
        names = folder_paths.get_filename_list(MODEL_FOLDER)
    except KeyError:
        names = []
    for name in names:
        folder, file = os.path.split(name.replace("\\", "/"))
        if os.path.splitext(file)[0] == PERSONALIVE_FILES[0]:
            sets.add(f"{TOP_LEVEL}/{folder}" if folder else TOP_LEVEL)
    return sorted(sets) or [TOP_LEVEL]


# -- images ----------------------------------------------------------------------------------------
def single_image(image, name):
    if not isinstance(image, torch.Tensor) or image.dim() != 4 or image.shape[-1] < 3:
        raise ValueError(f"{name}: expected an IMAGE (batch, height, width, channels), got "
                         f"{getattr(image, 'shape', type(image).__name__)}")
    if image.shape[0] != 1:
        raise ValueError(f"{name}: expected one image, got a batch of {image.shape[0]}; "
                         "pick one with an 'ImageFromBatch' node")
    return image[..., :3]


def check_size(size):
    if size % 64 or size < 64:
        raise ValueError(f"size {size}: must be a multiple of 64 (e.g. 256 or 512)")


def center_square(image):
    """(1,H,W,3) → the centred square crop, offsets floored as in `video_io.square`."""
    h, w = image.shape[1:3]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return image[:, top:top + side, left:left + side]


def reference_inputs(image, size, resize):
    """What both the reference encoder and the motion extractor take from the reference picture:
    (picture for CLIP (1,H,W,3), pixels (1,3,S,S) in [-1,1], pixels (1,3,256,256) in [-1,1] for the
    motion extractor (`cond = x.to(dtype) / 2 + 0.5`), fingerprint). Same preprocessing as
    `personalive_core.reference.encode_reference`."""
    image = single_image(image, "reference image")
    check_size(size)
    if resize not in RESIZE_MODES:
        raise ValueError(f"resize {resize!r}: use one of {RESIZE_MODES}")
    if resize == "center crop":
        image = center_square(image)
    pixels = vae_pixels_from_tensor(image, size, size)
    cond = vae_pixels_from_tensor(image, 256, 256)
    digest = hashlib.sha1(pixels.numpy().tobytes()).hexdigest()[:16]
    return image, pixels, cond, f"{size}:{digest}"


def progress_preview(frame):
    """A generated frame (H, W, 3) in [0, 1] → the preview a progress bar shows next to its count."""
    from PIL import Image
    return "JPEG", Image.fromarray(image_to_uint8(frame)), PREVIEW_SIZE


def to_image(frames_nchw):
    """(N,3,H,W) in [0,1] → IMAGE (N,H,W,3) float32 on the intermediate device."""
    return frames_nchw.float().clamp(0, 1).movedim(1, -1).to(mm.intermediate_device())


def check_compatible(model, reference=None, motion=None):
    info = model_info(model)
    for what, item in (("reference", reference), ("motion", motion)):
        if item is not None and item.model_key != info.key:
            raise ValueError(f"the PersonaLive {what} was made with another model or precision than the one "
                             "connected to this node; connect the same 'Load PersonaLive Model' output everywhere")
    if reference is not None and motion is not None:
        if reference.size != motion.size:
            raise ValueError(f"the reference was encoded at size {reference.size} but the motion extracted at "
                             f"size {motion.size}; use the same size in both nodes")
        if reference.fingerprint != motion.fingerprint:
            raise ValueError("the motion was extracted against a different reference picture (or resize mode) "
                             "than the encoded reference; connect the same reference IMAGE and resize mode "
                             "to 'PersonaLive Encode Reference' and 'PersonaLive Extract Motion'")
    return info


# -- streaming nodes (sampler, render video, live) -------------------------------------------------
def keyframe_inputs():
    """The historical-keyframe widgets of every node that streams."""
    return [
        io.Float.Input("keyframe_threshold", default=17.0, min=0.0, max=1000.0, step=0.5,
                       tooltip="Historical keyframes: a finished frame whose motion is farther than this (L2 over "
                               "its motion tokens) from every stored keyframe becomes an extra reference. Official: 17."),
        io.Int.Input("max_keyframes", default=3, min=0, max=16, step=1,
                     tooltip="At most this many historical keyframes (0 = off). Official: 3."),
    ]


def stream_settings(keyframe_threshold, max_keyframes, controls=None, compile=False):
    return Settings(keyframes=KeyframeSettings(threshold=keyframe_threshold, max_keyframes=max_keyframes),
                    controls=controls or MotionControls(), compile=compile)


COMPILE_TOOLTIP = ("torch.compile the chunk step (denoiser + DDIM step, pose guider) with fixed shapes; CUDA graphs "
                   "on a GPU. The first chunk compiles (minutes the first time, faster from the compiler's cache), "
                   "then no recompiles, keyframes included. Frames equal the plain path's to float rounding. "
                   "Weights moved or offloaded by ComfyUI are picked up (never frozen into the graph). Off: plain "
                   "PyTorch.")


def expect(value, cls, name, source):
    """Refuse a socket value that is not the output of node `source`."""
    if not isinstance(value, cls):
        raise ValueError(f"{name}: expected the output of '{source}', got {type(value).__name__}")


# -- motion controls (extract motion, render video, live) ------------------------------------------
def motion_control_inputs():
    """Expression / head-pose strength and smoothing (personalive_core.streaming.motion_controls)."""
    return [
        io.Float.Input("expression", default=1.0, min=0.0, max=2.0, step=0.05,
                       tooltip="Expression strength α: the face-motion tokens become reference + α·(driving − "
                               "reference). 1 = as driven (official), 0 = the reference's own expression, above 1 "
                               "exaggerates."),
        io.Float.Input("head_pose", default=1.0, min=0.0, max=2.0, step=0.05,
                       tooltip="Head-pose strength β on the 3D keypoints: rotation and translation become "
                               "reference + β·(driving − reference) (translation relative to the first driving "
                               "frame). 1 = as driven (official), 0 = the head stays in the reference pose while "
                               "the expression still follows."),
        io.Float.Input("smoothness", default=0.0, min=0.0, max=1.0, step=0.05,
                       tooltip="Temporal smoothing of head pose and expression (causal one-euro filter, so it "
                               "works live): 0 = off, 0.5 removes about half the jitter with a lag of about 1 "
                               "frame, 1 = strongest (lag up to about 4 frames on slow motion)."),
    ]
