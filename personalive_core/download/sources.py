"""What is fetched from where (the one table), where each file goes in the official and the ComfyUI
layouts, and the plan of a download."""

from __future__ import annotations

import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..errors import InputError


# "main", as the official tools/download_weights.py: none of the four repositories has a release tag to pin,
# and the record keeps the commit each file came from (`revision=` or --revision pins one).
DEFAULT_REVISION = "main"
PART_SUFFIX = ".part"
Layout = Literal["official", "comfyui"]
LAYOUTS: tuple[str, ...] = ("official", "comfyui")


@dataclass(frozen=True)
class Source:
    """One file: where it is on the hub, and where it goes in each layout."""

    component: str
    repo: str
    path: str  # in the repository
    official: str  # under DIR
    comfyui: str | None  # under COMFYUI_DIR/models; None: ComfyUI's loaders do not need it
    revision: str = DEFAULT_REVISION


PERSONALIVE_NAMES = (
    "denoising_unet",
    "reference_unet",
    "pose_guider",
    "motion_encoder",
    "motion_extractor",
    "temporal_module",
)


COMPONENTS = ("personalive", "image_encoder", "vae", "taesd", "base_unet")
DEFAULT_COMPONENTS = ("personalive", "image_encoder", "vae")
_PERSONALIVE = "huaichang/PersonaLive"
_SD_IV = "lambdalabs/sd-image-variations-diffusers"
_VAE = "stabilityai/sd-vae-ft-mse"
_TAESD = "madebyollin/taesd"
# `.safetensors` where a repository has one (the official script takes the `.bin` twins: same tensors, no pickle).
# taesd: the optional fast preview decoder. base_unet (3.4 GB): only on request; the loader reads it only for
# keys the PersonaLive files lack (published files cover every key, so renders never need it).
SOURCES: tuple[Source, ...] = (
    *(
        Source(
            "personalive",
            _PERSONALIVE,
            f"pretrained_weights/personalive/{n}.pth",
            f"personalive/{n}.pth",
            f"personalive/{n}.pth",
        )
        for n in PERSONALIVE_NAMES
    ),
    Source(
        "image_encoder",
        _SD_IV,
        "image_encoder/config.json",
        "sd-image-variations-diffusers/image_encoder/config.json",
        None,
    ),
    Source(
        "image_encoder",
        _SD_IV,
        "image_encoder/model.safetensors",
        "sd-image-variations-diffusers/image_encoder/model.safetensors",
        "clip_vision/sd-image-variations-image-encoder.safetensors",
    ),
    Source("vae", _VAE, "config.json", "sd-vae-ft-mse/config.json", None),
    Source(
        "vae",
        _VAE,
        "diffusion_pytorch_model.safetensors",
        "sd-vae-ft-mse/diffusion_pytorch_model.safetensors",
        "vae/sd-vae-ft-mse.safetensors",
    ),
    Source(
        "taesd",
        _TAESD,
        "taesd_decoder.safetensors",
        "taesd/taesd_decoder.safetensors",
        "vae_approx/taesd_decoder.safetensors",
    ),
    Source("base_unet", _SD_IV, "unet/config.json", "sd-image-variations-diffusers/unet/config.json", None),
    Source(
        "base_unet",
        _SD_IV,
        "unet/diffusion_pytorch_model.safetensors",
        "sd-image-variations-diffusers/unet/diffusion_pytorch_model.safetensors",
        None,
    ),
)


@dataclass(frozen=True)
class PlannedFile:
    """A file of the plan: its source, the folder its record lives in, and its local path under that folder."""

    source: Source
    root: Path  # DIR, or COMFYUI_DIR/models
    rel: str  # posix path under root: also the name shown in progress, reports and the record
    revision: str

    @property
    def dest(self) -> Path:
        return self.root.joinpath(*self.rel.split("/"))

    @property
    def part(self) -> Path:
        return self.dest.with_name(self.dest.name + PART_SUFFIX)

    def url(self, endpoint: str) -> str:
        rev = urllib.parse.quote(self.revision, safe="")  # refs/pr/1 -> refs%2Fpr%2F1, as the hub wants
        return f"{endpoint}/{self.source.repo}/resolve/{rev}/{urllib.parse.quote(self.source.path)}"


def parse_components(value: str | Iterable[str] | None) -> tuple[str, ...]:
    """Component names from `"a,b"`, a list, `"all"` or None (the defaults); InputError names an unknown one."""
    if value is None:
        return DEFAULT_COMPONENTS
    names = value.split(",") if isinstance(value, str) else list(value)
    names = [n.strip() for n in names if n.strip()]
    if names == ["all"]:
        return COMPONENTS
    unknown = [n for n in names if n not in COMPONENTS]
    if unknown or not names:
        raise InputError(
            f"unknown component(s) {', '.join(map(repr, unknown)) or '(none given)'}: "
            f"choose from {', '.join(COMPONENTS)} (or 'all'), comma-separated"
        )
    return tuple(dict.fromkeys(names))


def layout_root(target: str | os.PathLike[str], layout: str = "official") -> Path:
    """The folder the layout's paths (and the record) are relative to: DIR, or COMFYUI_DIR/models."""
    if layout not in LAYOUTS:
        raise InputError(
            f"unknown layout {layout!r}: use 'official' (a weights folder) or 'comfyui' (a ComfyUI folder)"
        )
    path = Path(target).expanduser()
    if path.exists() and not path.is_dir():
        raise InputError(f"{path} is a file: pass a folder")
    if layout == "official":
        return path
    if not (path / "models").is_dir():
        raise InputError(f"{path} has no models/ folder: pass the ComfyUI folder (the one holding main.py and models/)")
    return path / "models"


def _revision_for(source: Source, revision: str | Mapping[str, str] | None) -> str:
    if isinstance(revision, Mapping):  # per component or per repository
        revision = revision.get(source.component) or revision.get(source.repo)
    if revision is None:
        return source.revision
    if not revision.strip():
        raise InputError("revision is empty: give a branch, tag or commit (or leave it out for 'main')")
    return revision.strip()


def plan(
    target: str | os.PathLike[str],
    layout: str = "official",
    components: str | Iterable[str] | None = None,
    revision: str | Mapping[str, str] | None = None,
) -> list[PlannedFile]:
    """The files of `components` for a target: an official-layout DIR, or a ComfyUI folder (`layout="comfyui"`).

    `revision`: one for every repository, or a mapping component/repository -> revision."""
    root = layout_root(target, layout)
    chosen = parse_components(components)
    files = []
    for name in chosen:
        sources = [s for s in SOURCES if s.component == name]
        if layout == "comfyui" and all(s.comfyui is None for s in sources):
            raise InputError(
                f"{name} has no place in the ComfyUI layout (the nodes never load it): fetch it into "
                "an official-layout folder instead"
            )
        for s in sources:
            rel = s.official if layout == "official" else s.comfyui
            if rel is not None:
                files.append(PlannedFile(s, root, rel, _revision_for(s, revision)))
    return files


def missing(
    target: str | os.PathLike[str], layout: str = "official", components: str | Iterable[str] | None = None
) -> list[PlannedFile]:
    """The files of the plan that have no final name yet (what a front end offers to download)."""
    return [f for f in plan(target, layout, components) if not f.dest.is_file()]
