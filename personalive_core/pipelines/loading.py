"""Loading the networks: a weights folder in the official layout to PersonaLiveModels ready on their
device (dtype, model rewrites), the five PersonaLive networks from six files for a host that brings
its own image encoder and VAE, the TAESD decoder, and the weights reports (`check-weights`,
`convert`)."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch

from .. import download
from ..config import SpeedOptions, StreamConfig
from ..errors import WeightsMissing, WeightsWarning
from ..models.loader import Layout
from ..models.loader import PersonaLiveModels, build_personalive_networks, load_models as load_folder
from ..models.rewrites import apply_rewrites
from ..models.weights import find_weights, save_state_dict
from ..models.image_encoder import WEIGHT_NAMES as IMAGE_ENCODER_WEIGHTS, load_image_encoder
from ..models.keypoints import MotionExtractor
from ..models.loader import (
    OPTIONAL_BUFFERS,
    PERSONALIVE_FILES,
    build_denoising_unet,
    build_reference_unet,
    denoising_state_dict,
    expected_listing,
    find_layout,
)
from ..models.motion import MotEncoder
from ..models.pose_guider import PoseGuider
from ..models.vae import WEIGHT_NAMES as VAE_WEIGHTS, load_vae
from ..errors import WeightsError
from ..models.weights import load_exact, read_state_dict

SIMPLE = {"pose_guider": PoseGuider, "motion_encoder": MotEncoder, "motion_extractor": MotionExtractor}


def _check_simple(cls: Any, path: str) -> str:
    sd = read_state_dict(path)
    return _count(load_exact(cls(**cls.config_from_state_dict(sd)), sd, path, OPTIONAL_BUFFERS))


def _checks(layout: Layout) -> Iterator[tuple[str, Callable[[], str]]]:
    p = layout.personalive
    yield "personalive/denoising_unet + temporal_module", lambda: _check_denoising(layout)
    yield (
        "personalive/reference_unet",
        lambda: _count(build_reference_unet(read_state_dict(p["reference_unet"]), p["reference_unet"])),
    )
    for name, cls in SIMPLE.items():
        yield f"personalive/{name}", partial(_check_simple, cls, p[name])
    yield "image encoder", lambda: _count(load_image_encoder(layout.image_encoder))
    yield "vae", lambda: _count(load_vae(layout.vae))


def _count(module: torch.nn.Module) -> str:
    return f"{len(module.state_dict())} keys, complete"


def _check_denoising(layout: Layout) -> str:
    sd, source = denoising_state_dict(layout)
    return _count(build_denoising_unet(sd, source, layout.base_unet))


@contextmanager
def weights_notes() -> Iterator[list[WeightsWarning]]:
    """Collect the WeightsWarnings of a load (extra keys ignored, prefix stripped, wrapper unwrapped) instead
    of printing them; other warnings go on as usual. Not thread-safe (as `warnings.catch_warnings`)."""
    notes: list[WeightsWarning] = []
    catcher = warnings.catch_warnings(record=True)
    seen = catcher.__enter__()
    try:
        warnings.simplefilter("always", WeightsWarning)
        yield notes
    finally:  # also when the load failed: what it noted before is kept
        catcher.__exit__(None, None, None)
        for w in seen:
            if isinstance(w.message, WeightsWarning):
                notes.append(w.message)
            else:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def check_weights(root: str | os.PathLike[str]) -> tuple[bool, list[str]]:
    """(ok, lines): one line per expected file, then one per component's key coverage, each followed by a
    `note` line for what its load adjusted (extra keys ignored, prefix stripped, wrapper unwrapped)."""
    try:
        layout = find_layout(root)
    except WeightsError as e:
        return False, [f"error: {e}"]
    lines: list[str] = []
    ok = True
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
        with weights_notes() as notes:
            try:
                lines.append(f"ok      {what}: {check()}")
            except (WeightsError, ValueError, KeyError) as e:
                lines.append(f"BAD     {what}: {e}")
                ok = False
        lines += [f"note    {what}: {n.kind}: {n}" for n in notes]
    return ok, lines


def lacking_weights(root: str | os.PathLike[str]) -> list[download.PlannedFile]:
    """The files of the download table (its default components, official layout) that the loader would miss
    in `root`: what `render --download` fetches. A file the loader finds under another accepted name or place
    (a .safetensors twin, `pretrained_weights/`, a flat folder, the official script's .bin files) counts as
    there. A folder holding only `pretrained_weights/` gets the files there."""
    root = Path(root)
    nested = root / "pretrained_weights"
    target = nested if nested.is_dir() and not (root / "personalive").is_dir() else root
    try:
        layout = find_layout(root)
    except WeightsMissing:  # no folder yet: everything is lacking
        layout = None
    return [f for f in download.plan(target) if not f.dest.is_file() and not _found(layout, f.source)]


def fetch_lacking_weights(
    root: str | os.PathLike[str], progress: download.Progress | None = None, log: download.Log | None = None
) -> list[str]:
    """Download what the loader would miss in `root` (`lacking_weights`; nothing, and no network, when the
    folder is complete), verified, under the download's per-file locks, so that every worker of a machine may
    ask at once and one fetch serves them all. Returns the files fetched or taken (relative paths)."""
    lacking = lacking_weights(root)
    if not lacking:
        return []
    if log is not None:
        log(f"fetching {len(lacking)} file(s) {root} lacks: {', '.join(f.rel for f in lacking)}")
    download.download(
        lacking[0].root,
        files=[f.rel for f in lacking],
        components=list(dict.fromkeys(f.source.component for f in lacking)),
        progress=progress,
        log=log,
    )
    return [f.rel for f in lacking]


def _found(layout: Layout | None, source: download.Source) -> bool:
    """Whether the loader finds the weights `source` is one file of (a component's config file goes with its
    weights: the loader infers the config from the tensors when it is absent)."""
    if layout is None:
        return False
    if source.component == "personalive":
        return bool(layout.personalive.get(Path(source.path).stem))
    folder, names = {
        "image_encoder": (layout.image_encoder, IMAGE_ENCODER_WEIGHTS),
        "vae": (layout.vae, VAE_WEIGHTS),
    }.get(source.component, (None, ()))
    return folder is not None and any(os.path.isfile(os.path.join(folder, n)) for n in names)


def convert_to_safetensors(root: str | os.PathLike[str]) -> list[str]:
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
        written.append(str(save_state_dict(read_state_dict(path), twin)))
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
    models: PersonaLiveModels = load_folder(os.fspath(weights), where.device, where.dtype)
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
    networks: dict[str, torch.nn.Module] = build_personalive_networks(dict(files))
    speed = SpeedOptions().resolve(str(torch.device(device).type), dtype)
    for module in networks.values():
        torch.nn.Module.to(module, dtype=dtype).eval().requires_grad_(False)
    apply_rewrites(networks.values(), speed)
    return networks


def taesd_decoder(
    path: str | os.PathLike[str], models: PersonaLiveModels, config: StreamConfig | None = None
) -> Callable[[torch.Tensor], torch.Tensor]:
    """A decoder (scaled latents → frames (N, H, W, 3) in [0, 1]) from the TAESD weights at `path` (a file
    or a taesd/ folder), on the models' device and dtype, with the config's channels-last rewrite: much
    faster than the SD VAE, slightly softer."""
    from ..models.taesd import decode, load_taesd

    taesd = load_taesd(os.fspath(path), models.device, models.dtype)
    speed = (config or StreamConfig()).speed.resolve(models.device.type, models.dtype)
    apply_rewrites([taesd], SpeedOptions(channels_last=speed.channels_last, onednn_linear=False))
    return lambda latents: decode(taesd, latents)
