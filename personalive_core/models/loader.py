"""The seven networks of PersonaLive, found in the official layout and loaded key for key (models/weights.py).

Official layout (what huaichang/PersonaLive and the two diffusers repos unpack to):
    <root>/personalive/{denoising_unet,reference_unet,pose_guider,motion_encoder,
                        motion_extractor,temporal_module}.pth   (or .safetensors twins)
    <root>/sd-image-variations-diffusers/image_encoder/          (config.json + weights)
    <root>/sd-vae-ft-mse/                                        (config.json + weights)
`<root>` may also be the folder holding `pretrained_weights/`, or a flat folder with the six
files and `image_encoder/`, `vae/` beside them.
"""

import os
from dataclasses import dataclass, fields

import torch

from ..errors import WeightsMissing
from .image_encoder import load_image_encoder
from .keypoints import MotionExtractor
from .motion import MotEncoder
from .pose_guider import PoseGuider
from .unet import UNet, UNetConfig
from .vae import load_vae
from .weights import WeightsError, find_weights, load_exact, read_state_dict

PERSONALIVE_FILES = (
    "denoising_unet",
    "reference_unet",
    "pose_guider",
    "motion_encoder",
    "motion_extractor",
    "temporal_module",
)
IMAGE_ENCODER_DIRS = ("sd-image-variations-diffusers/image_encoder", "image_encoder")
VAE_DIRS = ("sd-vae-ft-mse", "vae")
BASE_UNET_DIR = "sd-image-variations-diffusers/unet"
# deterministic sinusoid tables: published files may or may not carry them
OPTIONAL_BUFFERS = ("pos_encoder.pe", "idx_tensor")


@dataclass
class Layout:
    """Where each component's weights are (None: not found)."""

    personalive: dict
    image_encoder: str
    vae: str
    base_unet: str


def _roots(root):
    return [root, os.path.join(root, "pretrained_weights")]


def find_layout(root):
    root = os.path.abspath(root)
    if not os.path.isdir(root):
        raise WeightsMissing(f"weights folder not found: {root}")
    files = dict.fromkeys(PERSONALIVE_FILES)
    for r in _roots(root):
        for folder in (os.path.join(r, "personalive"), r):
            for name in files:
                files[name] = files[name] or find_weights(folder, name)

    def first_dir(candidates):
        for r in _roots(root):
            for c in candidates:
                if os.path.isdir(os.path.join(r, c)):
                    return os.path.join(r, c)
        return None

    base = first_dir([BASE_UNET_DIR])
    return Layout(
        files,
        first_dir(IMAGE_ENCODER_DIRS),
        first_dir(VAE_DIRS),
        base and find_weights(base, "diffusion_pytorch_model"),
    )


def expected_listing(root):
    names = ",".join(PERSONALIVE_FILES)
    return (
        f"expected under {root}: personalive/{{{names}}}.pth (or .safetensors), "
        "sd-image-variations-diffusers/image_encoder/, sd-vae-ft-mse/"
    )


def _require(path, what, root):
    if path is None:
        raise WeightsMissing(f"missing {what}; {expected_listing(root)}")
    return path


def denoising_state_dict(layout, root="."):
    """denoising_unet + temporal_module, with keys absent from both taken from the base SD UNet
    (the official code initialises from it before loading the two files non-strictly)."""
    den = _require(layout.personalive["denoising_unet"], "personalive/denoising_unet.pth", root)
    tmp = _require(layout.personalive["temporal_module"], "personalive/temporal_module.pth", root)
    sd = dict(read_state_dict(den))
    sd.update(read_state_dict(tmp))
    return sd, f"{den} + {tmp}"


def build_denoising_unet(sd, source, base_unet=None):
    try:
        cfg = UNetConfig.from_state_dict(sd)
    except (KeyError, ValueError, StopIteration) as e:
        raise WeightsError(f"{source} is not a PersonaLive denoising UNet (no {e})") from e
    if not (cfg.motion_dim and cfg.temporal_pos_len and cfg.out_channels):
        raise WeightsError(f"{source} lacks motion modules, temporal modules or conv_out")
    unet = UNet(cfg)
    missing = [k for k in unet.state_dict() if k not in sd and not k.endswith(OPTIONAL_BUFFERS)]
    if missing and base_unet:
        base = read_state_dict(base_unet)
        sd = {**{k: base[k] for k in missing if k in base}, **sd}
        source += f" (+ {len(missing)} keys from {base_unet})"
    return load_exact(unet, sd, source, OPTIONAL_BUFFERS)


def build_reference_unet(sd, source):
    try:
        cfg = UNetConfig.from_state_dict(sd)
    except (KeyError, ValueError, StopIteration) as e:
        raise WeightsError(f"{source} is not a reference UNet (no {e})") from e
    # the published reference UNet has no output head; a full SD UNet's head is ignored
    sd = {k: v for k, v in sd.items() if not k.startswith(("conv_norm_out.", "conv_out."))}
    return load_exact(UNet(UNetConfig(**{**cfg.__dict__, "out_channels": 0})), sd, source)


def _build_from(cls, sd, source):
    try:
        module = cls(**cls.config_from_state_dict(sd))
    except (KeyError, ValueError, IndexError) as e:
        raise WeightsError(f"{source} is not a {cls.__name__} checkpoint ({e})") from e
    return load_exact(module, sd, source, OPTIONAL_BUFFERS)


def _build(cls, path):
    return _build_from(cls, read_state_dict(path), path)


def build_personalive_networks(files, base_unet=None):
    """The five PersonaLive networks from the six files (`files`: name → path for every name of
    PERSONALIVE_FILES): denoising UNet (denoising_unet + temporal_module), reference UNet, pose guider,
    motion encoder, motion extractor — a dict of float32 modules, on the CPU. Strict: every key and shape
    must match, else WeightsError naming the file. `base_unet`: SD UNet weights that fill keys absent
    from both denoiser files (as the official code initialises from it)."""
    missing = [n for n in PERSONALIVE_FILES if not files.get(n)]
    if missing:
        raise WeightsMissing(f"missing {', '.join(f'{n}.pth' for n in missing)}")
    networks = dict(
        # one call: its state dict (6.7 GB at the published size) is freed before the next file is read
        denoising_unet=build_denoising_unet(
            *denoising_state_dict(Layout(dict(files), None, None, base_unet)), base_unet
        ),
        reference_unet=build_reference_unet(read_state_dict(files["reference_unet"]), files["reference_unet"]),
        pose_guider=_build(PoseGuider, files["pose_guider"]),
        motion_encoder=_build(MotEncoder, files["motion_encoder"]),
        motion_extractor=_build(MotionExtractor, files["motion_extractor"]),
    )
    if networks["denoising_unet"].config.cross_attention_dim != networks["reference_unet"].config.cross_attention_dim:
        raise WeightsError(
            f"{files['denoising_unet']} and {files['reference_unet']} have different "
            "cross-attention widths; they are not from the same PersonaLive release"
        )
    return networks


@dataclass
class PersonaLiveModels:
    denoising_unet: torch.nn.Module
    reference_unet: torch.nn.Module
    pose_guider: torch.nn.Module
    motion_encoder: torch.nn.Module
    motion_extractor: torch.nn.Module
    image_encoder: torch.nn.Module
    vae: torch.nn.Module

    def modules(self):
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def to(self, device=None, dtype=None):
        for m in self.modules().values():
            # plain Module.to: diffusers warns about fp32-only modules the VAE does not have; grads
            # stay enabled on the parameters (no_grad at run time) because requires_grad=False
            # changes which matmul kernel ATen picks, and so the low bits
            torch.nn.Module.to(m, device=device, dtype=dtype).eval()
        return self

    @property
    def device(self):
        return self.denoising_unet.conv_in.weight.device

    @property
    def dtype(self):
        return self.denoising_unet.conv_in.weight.dtype


def load_models(root, device="cpu", dtype=torch.float32):
    """Load every component from an official-layout folder; raises WeightsError on any mismatch."""
    layout = find_layout(root)
    files = {name: _require(layout.personalive[name], f"personalive/{name}.pth", root) for name in PERSONALIVE_FILES}
    models = PersonaLiveModels(
        **build_personalive_networks(files, layout.base_unet),
        image_encoder=load_image_encoder(_require(layout.image_encoder, "image encoder folder", root)),
        vae=load_vae(_require(layout.vae, "VAE folder", root)),
    )
    return models.to(device, dtype)
