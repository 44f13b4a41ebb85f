"""Seeded random weights, every writer in one place: the six PersonaLive files, the image encoder,
the VAE and TAESD, in the official file layout (`make-random-weights`), plus in-memory random models.

`tiny`: the smallest models of the same design that load through the same code (tests, CI).
`comfy`: tiny PersonaLive networks with 768-d cross-attention, the full CLIP ViT-L/14 image encoder and
the full SD VAE — what ComfyUI's own CLIP Vision and VAE loaders accept (tests through a real host).
`full`: the published sizes (benchmarks without the published files).
Random weights animate nothing meaningful; they exercise every code path with O(1) activations.
The motion extractor's heads get a plausible operating point (keypoints inside the image, small
head rotations), since face boxes come from those keypoints; the denoiser's projections of motion
tokens are matched to the tokens' scale (`match_motion_token_scale_`), so frames depend smoothly on
the inputs instead of chaotically.
"""

import json
import os
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from ..models import image_encoder
from ..models.keypoints import MotionExtractor
from ..models.motion import MotEncoder
from ..models.pose_guider import PoseGuider
from ..models.taesd import TAESDDecoder
from ..models.unet import UNet, UNetConfig
from ..models.vae import autoencoder_kl
from ..models.weights import read_state_dict, save_state_dict

# Smallest SD-shaped VAE: 4 blocks (×8 downsampling), GroupNorm needs channels % groups == 0.
TINY_VAE = {
    "block_out_channels": [8, 8, 8, 8],
    "layers_per_block": 1,
    "norm_num_groups": 4,
    "latent_channels": 4,
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "sample_size": 64,
}
TINY_CLIP = image_encoder.CLIPVisionConfig(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=2,
    image_size=224,
    patch_size=32,
    projection_dim=16,
)


def random_state_dict(module, seed, gain=1.0):
    """Deterministic random weights with the module's keys and shapes, scaled so activations stay O(1).

    Matrices/kernels get std gain/sqrt(fan_in); norm scales (LayerNorm, GroupNorm, BatchNorm)
    1 + 0.1·N(0,1); biases and other vectors 0.02·N(0,1); buffers keep the module's values.
    Used to write random checkpoints for tests and benchmarks.
    """
    norms = (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm2d)
    norm_params = {f"{name}.weight" for name, m in module.named_modules() if isinstance(m, norms)}
    params = {name for name, _ in module.named_parameters()}
    g = torch.Generator().manual_seed(seed)
    out = {}
    for key, t in module.state_dict().items():
        if key not in params:
            out[key] = t.clone() if t.device.type != "meta" else torch.zeros(t.shape, dtype=t.dtype)
            continue
        noise = torch.randn(t.shape, generator=g)
        if key in norm_params:
            out[key] = 1 + 0.1 * noise
        elif t.dim() >= 2:
            out[key] = noise * (gain / t[0].numel() ** 0.5)
        else:
            out[key] = 0.02 * noise
    return out


def vae_state_dict(config=TINY_VAE, seed=0):
    """Random SD-VAE (AutoencoderKL) weights of `config`."""
    with torch.device("meta"):  # shapes only; no time spent on random init
        model = autoencoder_kl().from_config(config)
    return random_state_dict(model, seed)


def write_vae(directory, config=TINY_VAE, seed=0, weights="diffusion_pytorch_model.safetensors"):
    """Write random weights in the official `sd-vae-ft-mse/` layout (config.json + weights)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKL", **config}, indent=2))
    return save_state_dict(vae_state_dict(config, seed), directory / weights)


def image_encoder_state_dict(config=TINY_CLIP, seed=0):
    """Random CLIP vision encoder weights of `config`."""
    with torch.device("meta"):
        model = image_encoder.CLIPImageEncoder(config)
    return random_state_dict(model, seed)


def write_image_encoder(directory, config=TINY_CLIP, seed=0, weights="model.safetensors"):
    """Write random weights in the official `image_encoder/` layout (HF config.json + weights)."""
    directory = Path(directory)
    hf = {
        "architectures": ["CLIPVisionModelWithProjection"],
        "model_type": "clip_vision_model",
        "attention_dropout": 0.0,
        "initializer_factor": 1.0,
        "initializer_range": 0.02,
        **asdict(config),
    }
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(hf, indent=2))
    return save_state_dict(image_encoder_state_dict(config, seed), directory / weights)


def random_taesd(seed=0, device="cpu", dtype=torch.float32):
    """A TAESDDecoder with seeded random weights (tests, benchmarks without the file)."""
    model = TAESDDecoder()
    model.load_state_dict(random_state_dict(model, seed))
    return model.to(device=device, dtype=dtype).eval()


def write_taesd(path, seed=0, prefix=""):
    """Write random decoder weights in the published layout (`prefix="taesd_decoder."`: ComfyUI's)."""
    with torch.device("meta"):
        model = TAESDDecoder()
    sd = {prefix + k: v for k, v in random_state_dict(model, seed).items()}
    return save_state_dict(sd, path)


FULL_UNET = UNetConfig(motion_dim=16, temporal_pos_len=32)
TINY_UNET = UNetConfig(
    block_out_channels=(64, 64, 64, 64), layers_per_block=1, cross_attention_dim=16, motion_dim=16, temporal_pos_len=32
)
# MotEncoder final-projection gain: makes the keyframe test (threshold 17) fire on moving input
MOTION_GAIN = 2.4


# the published image encoder (CLIP ViT-L/14 with a 768-d projection) and sd-vae-ft-mse
FULL_CLIP = image_encoder.CLIPVisionConfig(
    hidden_size=1024,
    intermediate_size=4096,
    num_hidden_layers=24,
    num_attention_heads=16,
    image_size=224,
    patch_size=14,
    projection_dim=768,
)
FULL_VAE = {
    "block_out_channels": [128, 256, 512, 512],
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "latent_channels": 4,
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
}


# small PersonaLive UNets that cross-attend to the 768-d embedding of the full image encoder
COMFY_UNET = UNetConfig(**{**TINY_UNET.__dict__, "cross_attention_dim": FULL_CLIP.projection_dim})
PRESETS = ("tiny", "comfy", "full")


def _preset(name):
    if name == "tiny":
        return dict(
            unet=TINY_UNET,
            pose=PoseGuider(64, (8, 8, 8, 8)),
            motion=MotEncoder.tiny(),
            extractor=MotionExtractor.tiny(),
            clip=TINY_CLIP,
            vae=TINY_VAE,
        )
    if name == "full":
        return dict(
            unet=FULL_UNET,
            pose=PoseGuider(),
            motion=MotEncoder(),
            extractor=MotionExtractor(),
            clip=FULL_CLIP,
            vae=FULL_VAE,
        )
    if name == "comfy":
        # the host's CLIP-vision and VAE loaders accept only the standard architectures; the host keeps
        # CLIP-vision weights in fp16 (computing in fp32), so the values are written fp16-exact and both
        # sides compute with the same numbers
        return dict(
            unet=COMFY_UNET,
            pose=PoseGuider(64, (8, 8, 8, 8)),
            motion=MotEncoder.tiny(),
            extractor=MotionExtractor.tiny(),
            clip=FULL_CLIP,
            vae=FULL_VAE,
            clip_fp16=True,
        )
    raise ValueError(f"unknown preset {name!r}: use {', '.join(PRESETS)}")


def plausible_heads_(sd, seed):
    """Canonical keypoints inside the face, scale ≈ 1, small pose/translation responses."""
    g = torch.Generator().manual_seed(seed)
    n = sd["detector.fc_kp.bias"].numel() // 3
    kp = torch.rand((n, 3), generator=g)
    kp[:, :2] = kp[:, :2] * 0.7 - 0.35
    kp[:, 2] = kp[:, 2] * 0.2 - 0.1
    sd["detector.fc_kp.bias"] = kp.reshape(-1)
    sd["detector.fc_scale.bias"] = torch.ones(1)
    for name in ("fc_t", "fc_exp", "fc_pitch", "fc_yaw", "fc_roll"):
        sd[f"detector.{name}.bias"] = torch.zeros_like(sd[f"detector.{name}.bias"])
    for name, gain in (
        ("fc_kp", 0.05),
        ("fc_t", 0.05),
        ("fc_scale", 0.05),
        ("fc_exp", 0.05),
        ("fc_pitch", 0.5),
        ("fc_yaw", 0.5),
        ("fc_roll", 0.5),
    ):
        sd[f"detector.{name}.weight"] = sd[f"detector.{name}.weight"] * gain
    return sd


@torch.no_grad()
def motion_token_rms(motion_encoder):
    """RMS of the motion tokens `motion_encoder` gives for a fixed smooth probe face (random encoders:
    45–70 for both presets, on probes and on real crops alike)."""
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 224), torch.linspace(-1, 1, 224), indexing="ij")
    probe = torch.stack([xx, yy, xx * yy])[None]
    return float(motion_encoder.eval().encode(probe).pow(2).mean().sqrt())


def match_motion_token_scale_(den_sd, motion_dim, token_rms):
    """Divide the denoiser's key/value projections of motion tokens by the tokens' RMS.

    A trained network's projections match the scale of their inputs; fan-in init assumes O(1) inputs.
    The random MotEncoder's tokens have RMS ≈ 50 (MOTION_GAIN included), which would make the 26 motion
    cross-attentions' logits ≈ 50 — a near-argmax softmax that amplifies any perturbation ~5× per layer
    (a 1e-7 relative change of the CLIP context changed the frames by ~19 dB PSNR) — and their values
    ≈ 50 (the residual stream grew to ≈ 100). Scaled, logits and values are O(1) and the same change
    costs > 100 dB: the frames are a smooth function of the inputs, as with trained weights."""
    for key, value in den_sd.items():
        if ".motion_modules." in key and key.endswith(("to_k.weight", "to_v.weight")) and value.shape[-1] == motion_dim:
            den_sd[key] = value / token_rms
    return den_sd


def personalive_state_dicts(preset, seed=0):
    """The six official `.pth` state dicts (name → dict) of a preset."""
    p = _preset(preset)
    den = UNet(p["unet"])
    den_sd = random_state_dict(den, seed * 1000 + 5)
    ref = UNet(UNetConfig(**{**p["unet"].__dict__, "out_channels": 0, "motion_dim": 0, "temporal_pos_len": 0}))
    motion_sd = random_state_dict(p["motion"], seed * 1000 + 7)
    motion_sd["final_proj.weight"] = motion_sd["final_proj.weight"] * MOTION_GAIN
    p["motion"].load_state_dict(motion_sd)
    match_motion_token_scale_(den_sd, p["unet"].motion_dim, motion_token_rms(p["motion"]))
    extractor_sd = random_state_dict(p["extractor"], seed * 1000 + 8)
    return {
        "denoising_unet": {k: v for k, v in den_sd.items() if ".temporal_modules." not in k},
        "temporal_module": {k: v for k, v in den_sd.items() if ".temporal_modules." in k},
        "reference_unet": random_state_dict(ref, seed * 1000 + 4),
        "pose_guider": random_state_dict(p["pose"], seed * 1000 + 6),
        "motion_encoder": motion_sd,
        "motion_extractor": plausible_heads_(extractor_sd, seed * 1000 + 9),
    }


def write_random_weights(root, preset="tiny", seed=0, log=lambda m: None):
    """Write `root/personalive/*.pth`, `root/sd-image-variations-diffusers/image_encoder/`,
    `root/sd-vae-ft-mse/` (the official layout)."""
    p = _preset(preset)
    for name, sd in personalive_state_dicts(preset, seed).items():
        path = save_state_dict(sd, os.path.join(root, "personalive", f"{name}.pth"))
        log(f"wrote {path}")
    clip_file = write_image_encoder(
        os.path.join(root, "sd-image-variations-diffusers", "image_encoder"), p["clip"], seed * 1000 + 2
    )
    if p.get("clip_fp16"):
        save_state_dict({k: v.half() for k, v in read_state_dict(clip_file).items()}, clip_file)
    write_vae(os.path.join(root, "sd-vae-ft-mse"), p["vae"], seed * 1000 + 3)
    return root


def random_models(preset="tiny", seed=0):
    """PersonaLiveModels with random weights built in memory (benchmarks without any files)."""
    from ..models.image_encoder import CLIPImageEncoder
    from ..models.loader import PersonaLiveModels, _build_from, build_denoising_unet, build_reference_unet
    from diffusers import AutoencoderKL

    p = _preset(preset)
    sds = personalive_state_dicts(preset, seed)
    den = {**sds["denoising_unet"], **sds["temporal_module"]}
    clip = CLIPImageEncoder(p["clip"])
    clip_sd = random_state_dict(clip, seed * 1000 + 2)
    if p.get("clip_fp16"):
        clip_sd = {k: v.half().float() for k, v in clip_sd.items()}
    clip.load_state_dict(clip_sd)
    vae_model = AutoencoderKL.from_config(p["vae"])
    vae_model.load_state_dict(random_state_dict(vae_model, seed * 1000 + 3))
    return PersonaLiveModels(
        denoising_unet=build_denoising_unet(den, "random denoising UNet"),
        reference_unet=build_reference_unet(sds["reference_unet"], "random reference UNet"),
        pose_guider=_build_from(PoseGuider, sds["pose_guider"], "random pose guider"),
        motion_encoder=_build_from(MotEncoder, sds["motion_encoder"], "random motion encoder"),
        motion_extractor=_build_from(MotionExtractor, sds["motion_extractor"], "random motion extractor"),
        image_encoder=clip,
        vae=vae_model,
    )
