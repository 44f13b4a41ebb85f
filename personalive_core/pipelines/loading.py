"""Loading the networks: a weights folder in the official layout to PersonaLiveModels ready on their
device (dtype, model rewrites), the five PersonaLive networks from six files for a host that brings
its own image encoder and VAE, the TAESD decoder, and the weights reports (`check-weights`,
`convert`)."""
from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

from ..config import SpeedOptions, StreamConfig
from ..models.loader import PersonaLiveModels, build_personalive_networks, load_models as load_folder
from ..models.rewrites import apply_rewrites
from ..models.weights import find_weights, save_state_dict
from ..models.image_encoder import load_image_encoder
from ..models.keypoints import MotionExtractor
from ..models.loader import (OPTIONAL_BUFFERS, PERSONALIVE_FILES, build_denoising_unet, build_reference_unet,
                     denoising_state_dict, expected_listing, find_layout)
from ..models.motion import MotEncoder
from ..models.pose_guider import PoseGuider
from ..models.vae import load_vae
from ..models.weights import WeightsError, coverage, read_state_dict

SIMPLE = {"pose_guider": PoseGuider, "motion_encoder": MotEncoder, "motion_extractor": MotionExtractor}


def _check_simple(cls, path):
    sd = read_state_dict(path)
    module = cls(**cls.config_from_state_dict(sd))
    missing, unexpected, wrong = coverage(module, sd, OPTIONAL_BUFFERS)
    if missing or unexpected or wrong:
        raise WeightsError(f"{len(missing)} missing, {len(unexpected)} unexpected, {len(wrong)} wrong-shape keys")
    return f"{len(sd)} keys, complete"


def _checks(layout):
    p = layout.personalive
    yield "personalive/denoising_unet + temporal_module", lambda: _check_denoising(layout)
    yield "personalive/reference_unet", lambda: _count(build_reference_unet(read_state_dict(p["reference_unet"]), p["reference_unet"]))
    for name, cls in SIMPLE.items():
        yield f"personalive/{name}", lambda cls=cls, name=name: _check_simple(cls, p[name])
    yield "image encoder", lambda: _count(load_image_encoder(layout.image_encoder))
    yield "vae", lambda: _count(load_vae(layout.vae))


def _count(module):
    return f"{len(module.state_dict())} keys, complete"


def _check_denoising(layout):
    sd, source = denoising_state_dict(layout)
    return _count(build_denoising_unet(sd, source, layout.base_unet))


def check_weights(root):
    """(ok, lines): one line per expected file, then one per component's key coverage."""
    try:
        layout = find_layout(root)
    except WeightsError as e:
        return False, [f"error: {e}"]
    lines, ok = [], True
    for name in PERSONALIVE_FILES:
        path = layout.personalive[name]
        lines.append(f"{'found  ' if path else 'MISSING'} personalive/{name}: {path or '-'}")
        ok &= bool(path)
    for what, path in (("image encoder", layout.image_encoder), ("vae", layout.vae)):
        lines.append(f"{'found  ' if path else 'MISSING'} {what}: {path or '-'}")
        ok &= bool(path)
    if not ok:
        lines.append(expected_listing(root))
        return False, lines
    for what, check in _checks(layout):
        try:
            lines.append(f"ok      {what}: {check()}")
        except (WeightsError, ValueError, KeyError) as e:
            lines.append(f"BAD     {what}: {e}")
            ok = False
    return ok, lines


def convert_to_safetensors(root):
    """Write a `.safetensors` twin beside every pickled weight file of a weights folder."""
    layout = find_layout(root)
    paths = [layout.personalive[n] for n in PERSONALIVE_FILES if layout.personalive[n]]
    for folder in (layout.image_encoder, layout.vae):
        if folder:
            paths += [os.path.join(folder, f) for f in os.listdir(folder) if f.endswith((".bin", ".pth"))]
    written = []
    for path in paths:
        if path.endswith(".safetensors"):
            continue
        twin = os.path.splitext(path)[0] + ".safetensors"
        if path.endswith("pytorch_model.bin"):
            twin = os.path.join(os.path.dirname(path), "model.safetensors")
        written.append(save_state_dict(read_state_dict(path), twin))
    return written


@dataclass(frozen=True)
class Placement:
    """Where and how a config runs: the device, the torch dtype and the speed options decided for them."""

    device: str
    dtype: torch.dtype
    speed: SpeedOptions


def placement(config: StreamConfig) -> Placement:
    """`config`'s device, dtype and speed options with every "auto" decided for this machine."""
    device = config.precision.resolve_device()
    dtype = config.precision.resolve_dtype(device)
    return Placement(device, dtype, config.speed.resolve(device, dtype))


def load_models(weights: str | os.PathLike[str], config: StreamConfig | None = None) -> PersonaLiveModels:
    """Every network from a weights folder in the official layout, on the config's device and dtype,
    with its model rewrites (channels-last, oneDNN or fp8 linear layers) applied. WeightsError names
    the file when one is missing or does not fit its module."""
    where = placement(config or StreamConfig())
    models = load_folder(os.fspath(weights), where.device, where.dtype)
    apply_rewrites(models.modules().values(), where.speed, fp8=[models.denoising_unet])
    return models


def personalive_files(folder: str | os.PathLike[str]) -> dict[str, str | None]:
    """The six PersonaLive files in `folder` (.safetensors preferred), None where one is missing."""
    return {name: find_weights(os.fspath(folder), name) for name in PERSONALIVE_FILES}


def build_networks(files: Mapping[str, str], dtype: torch.dtype, device: str = "cpu") -> dict[str, torch.nn.Module]:
    """The five PersonaLive networks from the six files, for a host that brings its own image encoder and
    VAE: strict loads, one cast to `dtype`, eval mode without gradients, and the rewrites that are on by
    default for `device` (on a CPU channels-last and, in float32, oneDNN linear layers). The weights stay
    on the CPU for the host to place."""
    networks = build_personalive_networks(dict(files))
    speed = SpeedOptions().resolve(str(torch.device(device).type), dtype)
    for module in networks.values():
        torch.nn.Module.to(module, dtype=dtype).eval().requires_grad_(False)
    apply_rewrites(networks.values(), speed)
    return networks


def taesd_decoder(path: str | os.PathLike[str], models: PersonaLiveModels,
                  config: StreamConfig | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """A decoder (scaled latents → frames (N, H, W, 3) in [0, 1]) from the TAESD weights at `path` (a file
    or a taesd/ folder), on the models' device and dtype, with the config's channels-last rewrite: much
    faster than the SD VAE, slightly softer."""
    from ..models.taesd import decode, load_taesd

    taesd = load_taesd(os.fspath(path), models.device, models.dtype)
    speed = (config or StreamConfig()).speed.resolve(models.device.type, models.dtype)
    apply_rewrites([taesd], SpeedOptions(channels_last=speed.channels_last, onednn_linear=False))
    return lambda latents: decode(taesd, latents)
