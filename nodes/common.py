"""What the PersonaLive nodes share: socket types, the model folder, the bundles passed between
nodes, and the few host calls (model loading, devices) every node makes."""

import logging
import os
import sys
from dataclasses import dataclass

import torch

import comfy.model_management as mm
import folder_paths
from comfy_api.latest import io

from ..personalive_core import InputError
from ..personalive_core.pipelines import PERSONALIVE_FILES, PersonaLiveModels, image_to_uint8

log = logging.getLogger(__name__)

CATEGORY = "PersonaLive"
MODEL_FOLDER = "personalive"  # models/personalive/, or any `personalive:` entry of extra_model_paths.yaml
TOP_LEVEL = "personalive"  # combo label of the files directly inside a personalive folder
PREVIEW_SIZE = 512  # longest side of the progress-bar previews

PersonaLiveModel = io.Custom("PERSONALIVE_MODEL")
PersonaLiveReference = io.Custom("PERSONALIVE_REFERENCE")
PersonaLiveMotion = io.Custom("PERSONALIVE_MOTION")


def host_server():
    """The running host's PromptServer (main.py imports `server` before loading custom nodes); None when the
    nodes are imported without a server, as in tests."""
    server = sys.modules.get("server")
    return getattr(getattr(server, "PromptServer", None), "instance", None)


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
    compile: bool = False  # every stream on these networks runs the compiled chunk step


@dataclass
class EncodedReference:
    """PERSONALIVE_REFERENCE: the core `Reference` (kept on the CPU) and what it was made from."""

    reference: object  # personalive_core.pipelines.Reference
    size: int
    fingerprint: str  # of the reference pixels; motion must come from the same picture
    model_key: str


@dataclass
class MotionBundle:
    """PERSONALIVE_MOTION: the core MotionTrack (one MotionChunk per denoiser pass, on the CPU, the
    mirrored padding chunks that flush the window included) and the networks it came from."""

    track: object  # personalive_core.pipelines.MotionTrack
    model_key: str
    fps: float = None

    @property
    def size(self):
        return self.track.size

    @property
    def fingerprint(self):
        return self.track.fingerprint


def model_info(patcher):
    info = getattr(getattr(patcher, "model", None), "info", None)
    if not isinstance(info, ModelInfo):
        raise InputError(
            f"expected a PERSONALIVE_MODEL from the 'Load PersonaLive Model' node, got {type(patcher).__name__}"
        )
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
    return PersonaLiveModels(
        n.denoising_unet,
        n.reference_unet,
        n.pose_guider,
        n.motion_encoder,
        n.motion_extractor,
        image_encoder=None,
        vae=None,
    )


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
            raise InputError(
                f"the PersonaLive {what} was made with another model or precision than the one "
                "connected to this node; connect the same 'Load PersonaLive Model' output everywhere"
            )
    if reference is not None and motion is not None:
        if reference.size != motion.size:
            raise InputError(
                f"the reference was encoded at size {reference.size} but the motion extracted at "
                f"size {motion.size}; use the same size in both nodes"
            )
        if reference.fingerprint != motion.fingerprint:
            raise InputError(
                "the motion was extracted against a different reference picture (or resize mode) "
                "than the encoded reference; connect the same reference IMAGE and resize mode "
                "to 'PersonaLive Encode Reference' and 'PersonaLive Extract Motion'"
            )
    return info


def expect(value, cls, name, source):
    """Refuse a socket value that is not the output of node `source`."""
    if not isinstance(value, cls):
        raise InputError(f"{name}: expected the output of '{source}', got {type(value).__name__}")


def stream_config(model, options, base):
    """The StreamConfig of a streaming node: its config inputs over `base`, compiled when the model was
    loaded with compile on."""
    from .options import node_config

    config = node_config(options, base)
    return config.replace(compile=True) if model_info(model).compile else config


SAME_VALUE = "Use the same value in 'PersonaLive Encode Reference' and 'PersonaLive Extract Motion'."
