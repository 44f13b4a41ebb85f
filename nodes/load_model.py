"""Load PersonaLive Model: the six PersonaLive files from models/personalive/ → PERSONALIVE_MODEL."""
import hashlib
import os

import torch

import comfy.model_management as mm
import comfy.model_patcher
import folder_paths
from comfy_api.latest import io

from personalive_core.models.loader import PERSONALIVE_FILES, build_personalive_networks
from personalive_core.models.speed import apply_default_options, mark_compiled
from personalive_core.models.weights import WeightsError, find_weights

from .common import (CATEGORY, COMPILE_TOOLTIP, MODEL_FOLDER, TOP_LEVEL, ModelInfo, PersonaLiveModel,
                     PersonaLiveNetworks, weight_sets)

PRECISIONS = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
SOURCE = "huggingface.co/huaichang/PersonaLive (pretrained_weights/personalive/)"


def _subfolder(label):
    if label == TOP_LEVEL:
        return ""
    if label.startswith(TOP_LEVEL + "/"):
        return label[len(TOP_LEVEL) + 1:]
    raise ValueError(f"weights {label!r}: expected '{TOP_LEVEL}' or '{TOP_LEVEL}/<subfolder>'")


def expected_files_message(label, missing, folders):
    names = ", ".join(f"{n}.pth" for n in PERSONALIVE_FILES)
    return (f"PersonaLive weights {label!r}: missing {', '.join(missing)}. "
            f"Searched: {'; '.join(folders) or '(no folder registered)'}. "
            f"Put the six files of {SOURCE} — {names} (.safetensors twins are accepted too) — together in "
            f"models/{MODEL_FOLDER}/ or one subfolder of it (extra_model_paths.yaml may add folders under the key "
            f"'{MODEL_FOLDER}'). The image encoder (sd-image-variations-diffusers/image_encoder) goes to "
            "models/clip_vision/ for 'Load CLIP Vision', the VAE (sd-vae-ft-mse) to models/vae/ for 'Load VAE'.")


def resolve_files(label):
    """component name → path; FileNotFoundError listing what is missing and where it was looked for."""
    sub = _subfolder(label)
    folders = [os.path.join(root, sub) for root in folder_paths.get_folder_paths(MODEL_FOLDER)]
    files = {}
    for name in PERSONALIVE_FILES:
        for folder in folders:
            path = find_weights(folder, name)
            if path:
                files[name] = path
                break
    missing = [n for n in PERSONALIVE_FILES if n not in files]
    if missing:
        raise FileNotFoundError(expected_files_message(label, missing, folders))
    return files


def pick_dtype(precision, device):
    if precision == "auto":
        return mm.unet_dtype(device, supported_dtypes=[torch.float16, torch.bfloat16, torch.float32])
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: use auto, {', '.join(PRECISIONS)}")
    if precision == "fp16" and mm.is_device_cpu(device):
        raise ValueError("precision fp16 is not supported on the CPU; use auto, fp32 or bf16")
    return PRECISIONS[precision]


def _key(files, dtype):
    h = hashlib.sha1(str(dtype).encode())
    for name in PERSONALIVE_FILES:
        st = os.stat(files[name])
        h.update(f"{files[name]}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def build_networks(files, dtype, label="", device=None, compile=False):
    """The core's strict loaders (every key and shape must match), then one cast and the core's
    per-module defaults for the load device (speed.apply_default_options: on a CPU channels-last and,
    in float32, oneDNN linear layers); the host's process settings (memory reuse) are left alone.
    `compile`: every stream on these networks runs the compiled static chunk step; the weights stay
    inputs of the graph (not frozen), so the host may move, offload or patch them; a new device or
    dtype compiles again (torch.compile's guards)."""
    try:
        networks = build_personalive_networks(files)
    except WeightsError as e:
        raise WeightsError(f"PersonaLive weights {label!r}: {e} Expected the six files of {SOURCE}.") from e
    for m in networks.values():
        torch.nn.Module.to(m, dtype=dtype).eval().requires_grad_(False)
        apply_default_options(m, device or "cpu", dtype)
    if compile:
        mark_compiled(networks["denoising_unet"], device or "cpu", frozen_weights=False)
    return PersonaLiveNetworks(**networks, info=ModelInfo(label, dict(files), dtype, _key(files, dtype)))


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
                io.Combo.Input("weights", options=weight_sets(),
                               tooltip="Folder holding denoising_unet, temporal_module, reference_unet, pose_guider, "
                                       "motion_encoder and motion_extractor (.pth or .safetensors): "
                                       f"'{TOP_LEVEL}' = models/{MODEL_FOLDER}/ itself, "
                                       f"'{TOP_LEVEL}/<name>' = a subfolder."),
                io.Combo.Input("precision", options=["auto", *PRECISIONS], default="auto",
                               tooltip="Weight and compute dtype. auto: ComfyUI's choice for diffusion models on this "
                                       "device (fp16 on most GPUs, fp32 on the CPU). fp16 needs a GPU."),
                io.Boolean.Input("compile", default=False, optional=True,
                                 tooltip=COMPILE_TOOLTIP + " Applies to every node using this model."),
            ],
            outputs=[PersonaLiveModel.Output(display_name="model",
                                             tooltip="The PersonaLive networks, managed (loaded/offloaded) by ComfyUI.")],
        )

    @classmethod
    def fingerprint_inputs(cls, weights, precision, compile=False):
        """Reload when a weight file is replaced on disk."""
        try:
            files = resolve_files(weights)
        except (FileNotFoundError, ValueError):
            return f"{weights}|{precision}|{compile}|missing"
        return f"{precision}|{compile}|" + _key(files, None)

    @classmethod
    def execute(cls, weights, precision, compile=False) -> io.NodeOutput:
        files = resolve_files(weights)
        device = mm.get_torch_device()
        dtype = pick_dtype(precision, device)
        networks = build_networks(files, dtype, weights, device, compile)
        patcher = comfy.model_patcher.ModelPatcher(networks, load_device=device,
                                                   offload_device=mm.unet_offload_device())
        return io.NodeOutput(patcher)

