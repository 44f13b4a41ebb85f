"""TAESD: the Tiny AutoEncoder for Stable Diffusion (madebyollin/taesd), decoder only.

A fast, lower-quality stand-in for the SD VAE decoder (about 1 % of its work): previews and
speed runs. It decodes the latents the UNet works on (SD latents already multiplied by 0.18215)
straight to images in [0, 1], so `decode(taesd, latents)` has the interface of
`models/vae.py decode` and `streaming/session.py decode` accept either decoder.
The reference is still encoded by the SD VAE.

Accepted weight layouts (only the SD-1.x TAESD fits: 4 latent channels):
- the published `taesd_decoder.pth` / `taesd_decoder.safetensors`: keys are the indices of the
  decoder's nn.Sequential ("1.weight", "3.conv.0.weight", ..., "19.bias");
- ComfyUI's combined TAESD (keys "taesd_decoder.*", with "taesd_encoder.*", "vae_scale",
  "vae_shift", which are ignored);
- diffusers' AutoencoderTiny (madebyollin/taesd on the Hub, `diffusion_pytorch_model.*`):
  "decoder.layers.N.*" is "N+1.*" here ("encoder.*" ignored).
"""

from pathlib import Path

import torch
from torch import nn

from .weights import WeightsError, load_strict, read_state_dict

LATENT_CHANNELS = 4
FILE_NAMES = (
    "taesd_decoder.safetensors",
    "taesd_decoder.pth",
    "diffusion_pytorch_model.safetensors",
    "diffusion_pytorch_model.bin",
)
EXPECTED = (
    "the SD-1.x TAESD decoder (taesd_decoder.pth or .safetensors from madebyollin/taesd, "
    "ComfyUI's combined taesd file, or the diffusers AutoencoderTiny folder)"
)
IGNORED_PREFIXES = ("taesd_encoder.", "encoder.")
IGNORED_KEYS = ("vae_scale", "vae_shift")


def conv(n_in, n_out, bias=True):
    return nn.Conv2d(n_in, n_out, 3, padding=1, bias=bias)


class Clamp(nn.Module):
    """Soft clamp of the latents to (−3, 3)."""

    def forward(self, x):
        return torch.tanh(x / 3) * 3


class Block(nn.Module):
    def __init__(self, n_in, n_out):
        super().__init__()
        self.conv = nn.Sequential(conv(n_in, n_out), nn.ReLU(), conv(n_out, n_out), nn.ReLU(), conv(n_out, n_out))
        self.skip = nn.Conv2d(n_in, n_out, 1, bias=False) if n_in != n_out else nn.Identity()
        self.fuse = nn.ReLU()

    def forward(self, x):
        return self.fuse(self.conv(x) + self.skip(x))


class TAESDDecoder(nn.Sequential):
    """UNet-space latents (N, 4, h, w) → images (N, 3, 8h, 8w), about [0, 1] (not clamped)."""

    def __init__(self, latent_channels=LATENT_CHANNELS):
        layers = [Clamp(), conv(latent_channels, 64), nn.ReLU()]
        for _ in range(3):
            layers += [
                Block(64, 64),
                Block(64, 64),
                Block(64, 64),
                nn.Upsample(scale_factor=2),
                conv(64, 64, bias=False),
            ]
        layers += [Block(64, 64), conv(64, 3)]
        super().__init__(*layers)

    @property
    def device(self):
        return self[1].weight.device

    @property
    def dtype(self):
        return self[1].weight.dtype


@torch.no_grad()
def decode(taesd, latents):
    """Scaled latents (N, 4, h, w) → frames (N, 8h, 8w, 3) in [0, 1], float32."""
    images = taesd(latents.to(taesd.device, taesd.dtype))
    return images.permute(0, 2, 3, 1).clamp(0, 1).float()


def _diffusers_key(key):
    index, _, rest = key[len("decoder.layers.") :].partition(".")
    return f"{int(index) + 1}.{rest}"


def normalize_state_dict(sd, file):
    """Any accepted layout → the published decoder's keys."""
    if any(k.startswith("taesd_decoder.") for k in sd):
        sd = {
            k.removeprefix("taesd_decoder."): v
            for k, v in sd.items()
            if not (k.startswith(IGNORED_PREFIXES) or k in IGNORED_KEYS)
        }
    elif any(k.startswith("decoder.layers.") for k in sd):
        stray = [k for k in sd if not k.startswith(("decoder.layers.",) + IGNORED_PREFIXES)]
        if stray:
            raise WeightsError(
                f"{file}: unexpected keys beside an AutoencoderTiny decoder: "
                f"{', '.join(sorted(stray)[:5])}; expected {EXPECTED}"
            )
        sd = {_diffusers_key(k): v for k, v in sd.items() if k.startswith("decoder.layers.")}
    elif "0.weight" in sd and "1.weight" not in sd:
        raise WeightsError(f"{file} looks like the TAESD encoder (taesd_encoder.*); expected {EXPECTED}")
    first = sd.get("1.weight")
    if first is not None and first.ndim == 4 and first.shape[1] != LATENT_CHANNELS:
        raise WeightsError(
            f"{file}: a TAESD decoder for {first.shape[1]}-channel latents (TAESD3/TAEF1?); "
            f"PersonaLive's latents have {LATENT_CHANNELS} channels. Expected {EXPECTED}"
        )
    return sd


def find_taesd(path):
    """The decoder weight file at `path` (a file, or a folder holding one of FILE_NAMES)."""
    path = Path(path)
    if path.is_dir():
        for name in FILE_NAMES:
            if (path / name).is_file():
                return path / name
        raise WeightsError(f"{path}: no TAESD decoder file; expected one of {', '.join(FILE_NAMES)}")
    if not path.is_file():
        raise WeightsError(f"TAESD weights not found: {path}")
    return path


def load_taesd(path, device="cpu", dtype=torch.float32):
    """TAESDDecoder from a file or folder, every key checked, in eval mode."""
    file = find_taesd(path)
    sd = normalize_state_dict(read_state_dict(file), file)
    with torch.device("meta"):
        model = TAESDDecoder()
    load_strict(model, sd, file, EXPECTED)
    return model.to(device=device, dtype=dtype).eval()
