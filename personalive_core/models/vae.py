"""The SD VAE (sd-vae-ft-mse): a thin layer over `diffusers.AutoencoderKL`.

Loads the diffusers layout (`config.json` + `diffusion_pytorch_model.{safetensors,bin}`, old
`query/key/value/proj_attn` attention names included) or a single file, whose config then comes
from the tensor shapes. A single LDM-layout file (`encoder.down.N.block.M...`, e.g.
vae-ft-mse-840000-ema-pruned.safetensors) is converted with diffusers' own helper.

diffusers is imported where a VAE is built, not with this module: the ComfyUI nodes use the host's VAE and
only this module's constants, and a host's Python need not have diffusers (requirements.txt vs
requirements-cli.txt).
"""

from pathlib import Path

import torch

from .weights import first_existing, load_strict, read_json, read_state_dict

SCALE = 0.18215  # the literal the official code uses (not vae.config.scaling_factor)
WEIGHT_NAMES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
EXPECTED = (
    "an SD AutoencoderKL in the diffusers layout (sd-vae-ft-mse/"
    "diffusion_pytorch_model.{safetensors,bin}) or the LDM layout (vae-ft-mse-840000-ema-pruned)"
)
DEPRECATED_ATTENTION = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}
LDM_PREFIXES = ("encoder.", "decoder.", "quant_conv.", "post_quant_conv.")


def autoencoder_kl():
    try:
        from diffusers import AutoencoderKL
    except ImportError as e:
        raise ImportError(
            f"the core's own VAE needs diffusers ({e}): pip install -r requirements-cli.txt "
            "(the ComfyUI nodes use the host's VAE and do not need it)"
        ) from e
    return AutoencoderKL


def _block_indices(sd, prefix):
    return {int(k[len(prefix) :].split(".")[0]) for k in sd if k.startswith(prefix)}


def infer_config(sd, file):
    """AutoencoderKL config from diffusers-layout shapes (norm groups assumed 32, as in SD)."""
    n_blocks = len(_block_indices(sd, "encoder.down_blocks."))
    if not n_blocks:
        raise ValueError(f"{file}: no encoder.down_blocks.* keys; expected {EXPECTED}")
    try:
        channels = [sd[f"encoder.down_blocks.{i}.resnets.0.conv1.weight"].shape[0] for i in range(n_blocks)]
        cfg = {
            "in_channels": sd["encoder.conv_in.weight"].shape[1],
            "out_channels": sd["decoder.conv_out.weight"].shape[0],
            "latent_channels": sd["decoder.conv_in.weight"].shape[1],
            "block_out_channels": channels,
            "layers_per_block": len(_block_indices(sd, "encoder.down_blocks.0.resnets.")),
        }
    except KeyError as e:
        raise ValueError(f"{file}: missing {e.args[0]}; expected {EXPECTED}") from None
    if any(c % 32 for c in channels):
        raise ValueError(
            f"{file}: block_out_channels {channels} are not multiples of 32, so "
            "norm_num_groups cannot be inferred; put the model's config.json beside it"
        )
    return {
        **cfg,
        "norm_num_groups": 32,
        "down_block_types": ["DownEncoderBlock2D"] * n_blocks,
        "up_block_types": ["UpDecoderBlock2D"] * n_blocks,
        "use_quant_conv": "quant_conv.weight" in sd,
        "use_post_quant_conv": "post_quant_conv.weight" in sd,
        "mid_block_add_attention": "encoder.mid_block.attentions.0.to_q.weight" in sd,
    }


def _rename_deprecated_attention(sd):
    """Attention names of VAEs saved by diffusers < 0.14 → to_q/to_k/to_v/to_out.0."""
    out = {}
    for key, value in sd.items():
        parts = key.split(".")
        if ".attentions." in key and parts[-2] in DEPRECATED_ATTENTION:
            key = ".".join(parts[:-2] + [DEPRECATED_ATTENTION[parts[-2]], parts[-1]])
        out[key] = value
    return out


def _convert_ldm(sd, file):
    stray = [k for k in sd if not k.startswith(LDM_PREFIXES)]
    if stray:
        raise ValueError(
            f"{file}: LDM VAE file holds non-VAE keys (e.g. {', '.join(sorted(stray)[:5])}); expected {EXPECTED}"
        )
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    n_blocks = len(_block_indices(sd, "encoder.down."))
    # the helper only reads how many blocks there are from the config
    converted = convert_ldm_vae_checkpoint(
        sd, {"down_block_types": [None] * n_blocks, "up_block_types": [None] * n_blocks}
    )
    if len(converted) != len(sd):
        raise ValueError(
            f"{file}: {len(sd) - len(converted)} LDM tensors have no diffusers counterpart; expected {EXPECTED}"
        )
    return converted


def load_vae(path, device="cpu", dtype=torch.float32, config=None):
    """AutoencoderKL from a directory or a single weight file, strictly, in eval mode.

    Config: `config` (dict), else `config.json` beside the weights, else inferred from shapes.
    """
    path = Path(path)
    file = first_existing(path, WEIGHT_NAMES, EXPECTED) if path.is_dir() else path
    sd = read_state_dict(file)
    if "encoder.down.0.block.0.conv1.weight" in sd:
        sd = _convert_ldm(sd, file)
    sd = _rename_deprecated_attention(sd)
    json_path = file.parent / "config.json"
    if config is None and json_path.is_file():
        config = read_json(json_path)
    with torch.device("meta"):
        model = autoencoder_kl().from_config(config or infer_config(sd, file))
    load_strict(model, sd, file, EXPECTED)
    # plain Module.to: diffusers' override warns about fp32-only modules, which AutoencoderKL has none of
    # requires_grad stays True as in the official modules: ATen's matmul folds (B,N,C)@W differently
    # when W requires grad, which changes low-order bits in half precision
    return torch.nn.Module.to(model, device=device, dtype=dtype).eval()


def encode_mean(vae, pixels):
    """pixels (N,3,H,W) in [−1,1] → scaled latents (N,C,H/8,W/8): posterior mean, no sampling."""
    return vae.encode(pixels.to(vae.device, vae.dtype)).latent_dist.mean * SCALE


def decode(vae, latents):
    """scaled latents (N,C,h,w) → images (N,8h,8w,3) in [0,1] on the VAE's device and dtype."""
    # `1 / SCALE * x` as the official code writes it: in fp32 `x / SCALE` differs in the last bit
    images = vae.decode(1 / SCALE * latents.to(vae.device, vae.dtype)).sample
    return (images.permute(0, 2, 3, 1) / 2 + 0.5).clamp(0, 1)
