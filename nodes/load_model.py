"""Load PersonaLive Model: the six PersonaLive files from models/personalive/ → PERSONALIVE_MODEL; files it
lacks are downloaded on first use (`download_missing`, nodes/downloads.py), and its Download models button
(web/js/personalive_download.js) fetches the CLIP vision and VAE files too."""

import hashlib
import os

import torch

import comfy.model_management as mm
import comfy.model_patcher
import folder_paths
from comfy_api.latest import io

from ..personalive_core import InputError, WeightsError
from ..personalive_core.pipelines import PERSONALIVE_FILES, build_networks, personalive_files
from .common import CATEGORY, MODEL_FOLDER, TOP_LEVEL, ModelInfo, PersonaLiveModel, PersonaLiveNetworks, weight_sets
from .downloads import fetch_personalive
from .options import config_inputs, node_config

SOURCE = "huggingface.co/huaichang/PersonaLive (pretrained_weights/personalive/)"
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def _subfolder(label):
    if label == TOP_LEVEL:
        return ""
    if label.startswith(TOP_LEVEL + "/"):
        return label[len(TOP_LEVEL) + 1 :]
    raise InputError(f"weights {label!r}: expected '{TOP_LEVEL}' or '{TOP_LEVEL}/<subfolder>'")


def expected_files_message(label, missing, folders):
    names = ", ".join(f"{n}.pth" for n in PERSONALIVE_FILES)
    fetch = (
        "Turn on download_missing on this node, or press its Download models button, to fetch them from "
        "Hugging Face (HF_ENDPOINT: a mirror; docs/DOWNLOAD.md); or put"
        if label == TOP_LEVEL
        else f"The download (download_missing, Download models) fills models/{MODEL_FOLDER}/ itself: choose "
        f"'{TOP_LEVEL}', or put"
    )
    return (
        f"PersonaLive weights {label!r}: missing {', '.join(missing)}. "
        f"Searched: {'; '.join(folders) or '(no folder registered)'}. "
        f"{fetch} the six files of {SOURCE} — {names} (.safetensors twins are accepted too) — together in "
        f"models/{MODEL_FOLDER}/ or one subfolder of it (extra_model_paths.yaml may add folders under the key "
        f"'{MODEL_FOLDER}'). The image encoder (sd-image-variations-diffusers/image_encoder) goes to "
        "models/clip_vision/ for 'Load CLIP Vision', the VAE (sd-vae-ft-mse) to models/vae/ for 'Load VAE'."
    )


DOWNLOAD_MISSING = True  # the optional input's default, also for workflows saved before it existed


def resolve_files(label, download_missing=False):
    """component name → path; FileNotFoundError listing what is missing and where it was looked for.
    `download_missing`: first fetch what the personalive folders lack (label TOP_LEVEL only: the download
    fills models/personalive/ itself)."""
    if download_missing and label == TOP_LEVEL:
        fetch_personalive()
    sub = _subfolder(label)
    folders = [os.path.join(root, sub) for root in folder_paths.get_folder_paths(MODEL_FOLDER)]
    files = {}
    for folder in folders:
        for name, path in personalive_files(folder).items():
            if path and name not in files:
                files[name] = path
    missing = [n for n in PERSONALIVE_FILES if n not in files]
    if missing:
        raise FileNotFoundError(expected_files_message(label, missing, folders))
    return files


def pick_dtype(name, device):
    """The node's dtype: auto = ComfyUI's choice for diffusion models on this device."""
    if name == "auto":
        return mm.unet_dtype(device, supported_dtypes=[torch.float16, torch.bfloat16, torch.float32])
    if name == "fp16" and mm.is_device_cpu(device):
        raise InputError("dtype fp16 is not supported on the CPU; use auto, fp32 or bf16")
    return DTYPES[name]


def _key(files, dtype):
    h = hashlib.sha1(str(dtype).encode())
    for name in PERSONALIVE_FILES:
        st = os.stat(files[name])
        h.update(f"{files[name]}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def load_personalive(files, dtype, label="", device=None, compile=False):
    """PersonaLiveNetworks from the six files: the core's strict loaders, one cast and the core's default
    rewrites for the load device; the host's process settings are left alone. `compile`: every stream on
    these networks runs the compiled static chunk step, the weights inputs of the graph (never frozen), so
    the host may move, offload or patch them."""
    try:
        networks = build_networks(files, dtype, str(device or "cpu"))
    except WeightsError as e:
        raise WeightsError(f"PersonaLive weights {label!r}: {e} Expected the six files of {SOURCE}.") from e
    return PersonaLiveNetworks(**networks, info=ModelInfo(label, dict(files), dtype, _key(files, dtype), compile))


class PersonaLiveLoadModel(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PersonaLiveLoadModel",
            display_name="Load PersonaLive Model",
            category=CATEGORY,
            description="Loads the six PersonaLive networks (denoising UNet + temporal module, reference UNet, "
            "pose guider, motion encoder, motion extractor) from models/personalive/. The image "
            "encoder and the VAE come from the core 'Load CLIP Vision' and 'Load VAE' nodes.",
            inputs=[
                io.Combo.Input(
                    "weights",
                    options=weight_sets(),
                    tooltip="Folder holding denoising_unet, temporal_module, reference_unet, pose_guider, "
                    "motion_encoder and motion_extractor (.pth or .safetensors): "
                    f"'{TOP_LEVEL}' = models/{MODEL_FOLDER}/ itself, "
                    f"'{TOP_LEVEL}/<name>' = a subfolder.",
                ),
                *config_inputs(
                    "dtype",
                    notes={"dtype": "In ComfyUI auto is the host's choice for diffusion models on this device."},
                ),
                *config_inputs(
                    "compile",
                    optional=("compile",),
                    notes={
                        "compile": "Weights moved or offloaded by ComfyUI are picked up (never frozen "
                        "into the graph). Applies to every node using this model."
                    },
                ),
                io.Boolean.Input(
                    "download_missing",
                    default=DOWNLOAD_MISSING,
                    optional=True,
                    tooltip=f"On first use, download the PersonaLive files models/{MODEL_FOLDER}/ "
                    "lacks from huggingface.co/huaichang/PersonaLive (about 10.5 GB; HF_ENDPOINT "
                    "for a mirror, HF_TOKEN for a token), verified and resumable, with this "
                    "node's progress bar. Off: a missing file stops with the list. The Download "
                    "models button also fetches the CLIP vision and VAE files.",
                ),
            ],
            outputs=[
                PersonaLiveModel.Output(
                    display_name="model", tooltip="The PersonaLive networks, managed (loaded/offloaded) by ComfyUI."
                )
            ],
        )

    @classmethod
    def fingerprint_inputs(cls, weights, **options):
        """Reload when a weight file is replaced on disk."""
        values = "|".join(f"{k}={v}" for k, v in sorted(options.items()))
        try:
            files = resolve_files(weights)
        except (FileNotFoundError, InputError):
            return f"{weights}|{values}|missing"
        return f"{values}|" + _key(files, None)

    @classmethod
    def execute(cls, weights, download_missing=DOWNLOAD_MISSING, **options) -> io.NodeOutput:
        config = node_config(options)
        files = resolve_files(weights, download_missing)
        device = mm.get_torch_device()
        networks = load_personalive(
            files, pick_dtype(config.precision.dtype, device), weights, device, config.speed.compile
        )
        patcher = comfy.model_patcher.ModelPatcher(
            networks, load_device=device, offload_device=mm.unet_offload_device()
        )
        return io.NodeOutput(patcher)
