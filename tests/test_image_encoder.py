import json

import pytest
import torch
import torch.nn.functional as F

from personalive_core.errors import WeightsWarning
from personalive_core.models import image_encoder as ie
from personalive_core.models.weights import read_state_dict, save_state_dict
from personalive_core.devtools import random_weights as R


def reference_forward(sd, c, x):
    """Straight-line CLIP vision forward written from the HF formulas (explicit softmax attention)."""
    p = "vision_model."
    h = F.conv2d(x, sd[p + "embeddings.patch_embedding.weight"], stride=c.patch_size).flatten(2).transpose(1, 2)
    h = torch.cat([sd[p + "embeddings.class_embedding"].expand(x.shape[0], 1, -1), h], 1)
    h = h + sd[p + "embeddings.position_embedding.weight"]
    ln = lambda t, n: F.layer_norm(t, t.shape[-1:], sd[n + ".weight"], sd[n + ".bias"], c.layer_norm_eps)
    lin = lambda t, n: F.linear(t, sd[n + ".weight"], sd.get(n + ".bias"))
    h = ln(h, p + "pre_layrnorm")
    b, n, d = h.shape
    heads = lambda t: t.view(b, n, c.num_attention_heads, -1).transpose(1, 2)
    for i in range(c.num_hidden_layers):
        L = f"{p}encoder.layers.{i}."
        a = ln(h, L + "layer_norm1")
        q, k, v = (heads(lin(a, L + f"self_attn.{s}_proj")) for s in "qkv")
        w = (q * (d // c.num_attention_heads) ** -0.5) @ k.transpose(-1, -2)
        a = (w.softmax(-1) @ v).transpose(1, 2).reshape(b, n, d)
        h = h + lin(a, L + "self_attn.out_proj")
        m = lin(ln(h, L + "layer_norm2"), L + "mlp.fc1")
        h = h + lin(m * torch.sigmoid(1.702 * m), L + "mlp.fc2")
    return lin(ln(h[:, 0], p + "post_layernorm"), "visual_projection")


@pytest.fixture(scope="module")
def enc_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("image_encoder")
    R.write_image_encoder(d, seed=0)
    return d


def test_layout_and_forward_matches_formula(enc_dir):
    cfg = json.loads((enc_dir / "config.json").read_text())
    assert cfg["model_type"] == "clip_vision_model" and cfg["hidden_act"] == "quick_gelu"
    model = ie.load_image_encoder(enc_dir)
    sd = read_state_dict(enc_dir / "model.safetensors")
    assert "visual_projection.weight" in sd and "vision_model.pre_layrnorm.weight" in sd
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = model(x)
    assert out.shape == (2, R.TINY_CLIP.projection_dim) and out.dtype == torch.float32
    torch.testing.assert_close(out, reference_forward(sd, R.TINY_CLIP, x), atol=1e-5, rtol=1e-5)
    assert not model.training


def test_bin_with_position_ids(tmp_path, enc_dir):
    sd = read_state_dict(enc_dir / "model.safetensors")
    save_state_dict(
        {**sd, "vision_model.embeddings.position_ids": torch.arange(50)[None]}, tmp_path / "pytorch_model.bin"
    )
    (tmp_path / "config.json").write_text((enc_dir / "config.json").read_text())
    x = torch.randn(1, 3, 224, 224)
    torch.testing.assert_close(ie.load_image_encoder(tmp_path)(x), ie.load_image_encoder(enc_dir)(x), atol=0, rtol=0)


def test_single_file_infers_config(tmp_path):
    cfg = ie.CLIPVisionConfig(
        hidden_size=128,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=2,
        patch_size=56,
        projection_dim=8,
    )
    single = save_state_dict(R.image_encoder_state_dict(cfg, seed=2), tmp_path / "clip_vision.safetensors")
    assert ie.load_image_encoder(single).config == cfg
    tiny = save_state_dict(R.image_encoder_state_dict(seed=2), tmp_path / "tiny" / "clip.safetensors")
    with pytest.raises(ValueError, match=r"clip.safetensors: cannot infer the head count"):
        ie.load_image_encoder(tiny)  # width 32: heads are not derivable without config.json
    model = ie.load_image_encoder(
        tiny,
        config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "patch_size": 32,
            "projection_dim": 16,
        },
    )
    assert model.config == R.TINY_CLIP


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_dtypes(enc_dir, dtype):
    model = ie.load_image_encoder(enc_dir, dtype=dtype)
    x = torch.randn(1, 3, 224, 224)
    out = model(x)  # input is cast to the model dtype inside
    assert out.dtype == dtype
    torch.testing.assert_close(out.float(), ie.load_image_encoder(enc_dir)(x), atol=0.05, rtol=0.05)


def test_strict_errors_name_the_file(tmp_path, enc_dir):
    sd = read_state_dict(enc_dir / "model.safetensors")
    cfg = (enc_dir / "config.json").read_text()
    cases = {
        "missing": {k: v for k, v in sd.items() if "layers.1.mlp" not in k},
        "shape": {**sd, "visual_projection.weight": torch.zeros(8, 32)},
    }
    for name, bad in cases.items():
        d = tmp_path / name
        save_state_dict(bad, d / "pytorch_model.bin")
        (d / "config.json").write_text(cfg)
        with pytest.raises(ValueError, match=name if name != "shape" else "wrong shape") as e:
            ie.load_image_encoder(d)
        assert str(d / "pytorch_model.bin") in str(e.value) and "image_encoder" in str(e.value)
    with pytest.raises(ValueError) as missing:
        ie.load_image_encoder(tmp_path / "missing")
    assert "layers.1.mlp.fc1.bias" in str(missing.value)
    # a key the encoder does not have (a full CLIP's text tower): left out, with a warning naming file and key
    save_state_dict(
        {**sd, "text_model.embeddings.token_embedding.weight": torch.zeros(3, 3)},
        tmp_path / "extra" / "pytorch_model.bin",
    )
    (tmp_path / "extra" / "config.json").write_text(cfg)
    with pytest.warns(WeightsWarning, match=r"extra.pytorch_model.bin: 1 key .*ignored: text_model.embeddings"):
        ie.load_image_encoder(tmp_path / "extra")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty: no weight file found; expected one of model.safetensors"):
        ie.load_image_encoder(tmp_path / "empty")


class Payload:  # any non-tensor class: the weights_only unpickler must refuse to build it
    pass


def test_refuses_pickled_objects(tmp_path):
    torch.save({"w": torch.zeros(1), "obj": Payload()}, tmp_path / "pytorch_model.bin")
    with pytest.raises(ValueError, match="pytorch_model.bin"):
        ie.load_image_encoder(tmp_path / "pytorch_model.bin")


def test_activations_and_config_from_dict():
    cfg = ie.CLIPVisionConfig.from_dict({"hidden_size": 64, "hidden_act": "gelu", "dropout": 0.0})
    assert cfg.hidden_size == 64 and cfg.hidden_act == "gelu"
    x = torch.linspace(-3, 3, 7)
    torch.testing.assert_close(ie.ACTIVATIONS["quick_gelu"](x), x * torch.sigmoid(1.702 * x))
    with pytest.raises(ValueError, match="hidden_act"):
        ie.MLP(ie.CLIPVisionConfig(hidden_act="relu6"))
