"""CLIP ViT vision tower with projection (the `image_embeds` of HF `CLIPVisionModelWithProjection`).

PersonaLive conditions both UNets on the projected CLIP embedding of the reference image
(sd-image-variations' ViT-L/14, 768-d). Parameter names follow the Hugging Face layout so the
published `image_encoder/` folder and ComfyUI clip_vision files holding HF keys load unchanged.
"""

import math
from dataclasses import dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .weights import first_existing, load_strict, read_json, read_state_dict

WEIGHT_NAMES = ("model.safetensors", "pytorch_model.bin")
EXPECTED = (
    "a CLIP vision tower with projection in the Hugging Face layout "
    "(sd-image-variations-diffusers/image_encoder/{model.safetensors,pytorch_model.bin})"
)
# Older transformers saved this index buffer; it carries no information.
IGNORED_KEYS = ("vision_model.embeddings.position_ids",)

ACTIVATIONS = {
    "quick_gelu": lambda x: x * torch.sigmoid(1.702 * x),
    "gelu": F.gelu,
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
}


@dataclass
class CLIPVisionConfig:
    hidden_size: int = 1024
    intermediate_size: int = 4096
    num_hidden_layers: int = 24
    num_attention_heads: int = 16
    image_size: int = 224
    patch_size: int = 14
    num_channels: int = 3
    projection_dim: int = 768
    layer_norm_eps: float = 1e-5
    hidden_act: str = "quick_gelu"

    @classmethod
    def from_dict(cls, d):
        """Keep the fields we use; the HF config.json carries many more (dropouts, init ranges, ...)."""
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})


class Embeddings(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.class_embedding = nn.Parameter(torch.empty(c.hidden_size))
        self.patch_embedding = nn.Conv2d(c.num_channels, c.hidden_size, c.patch_size, c.patch_size, bias=False)
        self.position_embedding = nn.Embedding((c.image_size // c.patch_size) ** 2 + 1, c.hidden_size)

    def forward(self, pixels):
        patches = self.patch_embedding(pixels).flatten(2).transpose(1, 2)
        cls = self.class_embedding.expand(pixels.shape[0], 1, -1)
        return torch.cat([cls, patches], dim=1) + self.position_embedding.weight


class SelfAttention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.heads = c.num_attention_heads
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (
            nn.Linear(c.hidden_size, c.hidden_size) for _ in range(4)
        )

    def forward(self, x):
        b, n, d = x.shape
        q, k, v = (p(x).view(b, n, self.heads, -1).transpose(1, 2) for p in (self.q_proj, self.k_proj, self.v_proj))
        out = F.scaled_dot_product_attention(q, k, v)
        return self.out_proj(out.transpose(1, 2).reshape(b, n, d))


class MLP(nn.Module):
    def __init__(self, c):
        super().__init__()
        if c.hidden_act not in ACTIVATIONS:
            raise ValueError(f"unsupported CLIP hidden_act {c.hidden_act!r}; one of {list(ACTIVATIONS)}")
        self.act = ACTIVATIONS[c.hidden_act]
        self.fc1 = nn.Linear(c.hidden_size, c.intermediate_size)
        self.fc2 = nn.Linear(c.intermediate_size, c.hidden_size)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class EncoderLayer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.self_attn = SelfAttention(c)
        self.layer_norm2 = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.mlp = MLP(c)

    def forward(self, x):
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class Encoder(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(c) for _ in range(c.num_hidden_layers))

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


class VisionTransformer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.embeddings = Embeddings(c)
        self.pre_layrnorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)  # sic, HF spelling
        self.encoder = Encoder(c)
        self.post_layernorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)

    def forward(self, pixels):
        x = self.encoder(self.pre_layrnorm(self.embeddings(pixels)))
        return self.post_layernorm(x[:, 0])  # pooled = class token


class CLIPImageEncoder(nn.Module):
    """pixels (B,3,S,S), CLIP-normalised → image_embeds (B, projection_dim)."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.vision_model = VisionTransformer(config)
        self.visual_projection = nn.Linear(config.hidden_size, config.projection_dim, bias=False)

    def forward(self, pixels):
        w = self.visual_projection.weight
        return self.visual_projection(self.vision_model(pixels.to(w.device, w.dtype)))


def infer_config(sd, file):
    """Config from the tensor shapes; heads = hidden/64 and quick_gelu, as in OpenAI's ViT-B/L."""
    try:
        hidden = sd["vision_model.embeddings.class_embedding"].shape[0]
        patch = sd["vision_model.embeddings.patch_embedding.weight"]
        positions = sd["vision_model.embeddings.position_embedding.weight"].shape[0]
        fc1 = sd["vision_model.encoder.layers.0.mlp.fc1.weight"]
        projection = sd["visual_projection.weight"].shape[0]
    except KeyError as e:
        raise ValueError(f"{file}: missing {e.args[0]}; expected {EXPECTED}") from None
    if hidden % 64:
        raise ValueError(
            f"{file}: cannot infer the head count for width {hidden}; put the model's config.json beside it"
        )
    layers = {int(k.split(".")[3]) for k in sd if k.startswith("vision_model.encoder.layers.")}
    return CLIPVisionConfig(
        hidden_size=hidden,
        intermediate_size=fc1.shape[0],
        num_hidden_layers=max(layers) + 1,
        num_attention_heads=hidden // 64,
        image_size=math.isqrt(positions - 1) * patch.shape[-1],
        patch_size=patch.shape[-1],
        num_channels=patch.shape[1],
        projection_dim=projection,
    )


def load_image_encoder(path, device="cpu", dtype=torch.float32, config=None):
    """Load a directory (config.json + model.safetensors / pytorch_model.bin) or a single weight file.

    The config comes from `config` (dict), else `config.json` beside the weights, else the tensor
    shapes (`infer_config`).
    """
    path = Path(path)
    file = first_existing(path, WEIGHT_NAMES, EXPECTED) if path.is_dir() else path
    sd = {k: v for k, v in read_state_dict(file).items() if k not in IGNORED_KEYS}
    json_path = file.parent / "config.json"
    if config is None and json_path.is_file():
        config = read_json(json_path)
    cfg = CLIPVisionConfig.from_dict(config) if config else infer_config(sd, file)
    with torch.device("meta"):
        model = CLIPImageEncoder(cfg)
    load_strict(model, sd, file, EXPECTED)
    # requires_grad stays True as in the official modules: ATen's matmul folds (B,N,C)@W differently
    # when W requires grad, which changes low-order bits in half precision
    return model.to(device=device, dtype=dtype).eval()
