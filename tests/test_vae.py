import json

import pytest
import torch

from personalive_core.errors import WeightsWarning
from personalive_core.models import vae as V
from personalive_core.models.weights import read_state_dict, save_state_dict
from personalive_core.devtools import random_weights as R

SD32 = {**R.TINY_VAE, "block_out_channels": [32, 32, 32, 32], "norm_num_groups": 32}


@pytest.fixture(scope="module")
def vae_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("sd-vae-ft-mse")
    R.write_vae(d, seed=0)
    return d


@pytest.fixture(scope="module")
def pixels():
    return torch.rand(2, 3, 32, 48, generator=torch.Generator().manual_seed(0)) * 2 - 1


def outputs(vae, pixels):
    with torch.no_grad():
        z = V.encode_mean(vae, pixels)
        return z, V.decode(vae, z)


@pytest.fixture(scope="module")
def ref(vae_dir, pixels):
    return outputs(V.load_vae(vae_dir), pixels)


def test_encode_decode_formulas(vae_dir, pixels):
    assert json.loads((vae_dir / "config.json").read_text())["_class_name"] == "AutoencoderKL"
    vae = V.load_vae(vae_dir)
    z, img = outputs(vae, pixels)
    assert z.shape == (2, 4, 4, 6) and img.shape == (2, 32, 48, 3)
    with torch.no_grad():
        torch.testing.assert_close(z, vae.encode(pixels).latent_dist.mean * 0.18215, atol=0, rtol=0)
        raw = vae.decode(z * (1 / 0.18215)).sample
    torch.testing.assert_close(img, (raw.permute(0, 2, 3, 1) / 2 + 0.5).clamp(0, 1), atol=0, rtol=0)
    assert torch.equal(V.encode_mean(vae, pixels), z)  # the mean, no sampling
    assert img.min() >= 0 and img.max() <= 1 and not vae.training


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_dtypes(vae_dir, pixels, ref, dtype):
    out = outputs(V.load_vae(vae_dir, dtype=dtype), pixels)  # fp32 input is cast inside
    for half, full in zip(out, ref):
        assert half.dtype == dtype
        assert (half.float() - full).abs().mean() < 0.01 and (half.float() - full).abs().max() < 0.2


def test_bin_and_deprecated_attention_names(tmp_path, vae_dir, pixels, ref):
    sd = read_state_dict(vae_dir / "diffusion_pytorch_model.safetensors")
    old_names = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}
    old = {}
    for k, v in sd.items():
        for new, dep in old_names.items():
            k = k.replace(f"attentions.0.{new}.", f"attentions.0.{dep}.")
        old[k] = v
    assert "encoder.mid_block.attentions.0.query.weight" in old
    for name, weights in (("bin", sd), ("old", old)):
        save_state_dict(weights, tmp_path / name / "diffusion_pytorch_model.bin")
        (tmp_path / name / "config.json").write_text((vae_dir / "config.json").read_text())
        for a, b in zip(outputs(V.load_vae(tmp_path / name), pixels), ref):
            assert torch.equal(a, b)


def test_single_file_infers_config(tmp_path):
    single = save_state_dict(R.vae_state_dict(SD32, seed=1), tmp_path / "vae.safetensors")
    cfg = V.load_vae(single).config
    assert list(cfg.block_out_channels) == SD32["block_out_channels"]
    assert (cfg.layers_per_block, cfg.latent_channels, cfg.norm_num_groups) == (1, 4, 32)
    tiny = save_state_dict(R.vae_state_dict(seed=1), tmp_path / "tiny" / "vae.safetensors")
    with pytest.raises(ValueError, match=r"vae.safetensors: .*norm_num_groups cannot be inferred"):
        V.load_vae(tiny)
    assert V.load_vae(tiny, config=R.TINY_VAE).config.norm_num_groups == 4


def to_ldm(sd, n_blocks=4):
    """diffusers → LDM (original SD) key layout; the inverse of diffusers' converter, for testing."""
    attn = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
    out = {}
    for k, v in sd.items():
        k = k.replace("conv_shortcut", "nin_shortcut").replace("conv_norm_out", "norm_out")
        k = k.replace("downsamplers.0", "downsample").replace("upsamplers.0", "upsample")
        p = k.split(".")
        if p[1] == "down_blocks":
            p[1] = "down"
        elif p[1] == "up_blocks":
            p[1:3] = ["up", str(n_blocks - 1 - int(p[2]))]
        elif p[1:3] == ["mid_block", "resnets"]:
            p[1:4] = ["mid", f"block_{int(p[3]) + 1}"]
        elif p[1:3] == ["mid_block", "attentions"]:
            p = [p[0], "mid", "attn_1", attn[".".join(p[4:-1])], p[-1]]
            v = v[:, :, None, None] if v.dim() == 2 else v  # LDM uses 1×1 convs
        out[".".join(p).replace(".resnets.", ".block.")] = v
    return out


def test_ldm_single_file(tmp_path, pixels):
    sd = R.vae_state_dict(SD32, seed=3)
    save_state_dict(sd, tmp_path / "diffusers" / "diffusion_pytorch_model.safetensors")
    ldm = to_ldm(sd)
    assert "encoder.down.0.block.0.conv1.weight" in ldm and "decoder.mid.attn_1.q.weight" in ldm
    single = save_state_dict(ldm, tmp_path / "vae-ft-mse-840000-ema-pruned.safetensors")
    for a, b in zip(
        outputs(V.load_vae(single), pixels), outputs(V.load_vae(tmp_path / "diffusers", config=SD32), pixels)
    ):
        assert torch.equal(a, b)
    save_state_dict({**ldm, "model_ema.decay": torch.tensor(0.9)}, tmp_path / "stray.safetensors")
    with pytest.raises(ValueError, match=r"stray.safetensors: .*model_ema.decay"):
        V.load_vae(tmp_path / "stray.safetensors")


def test_strict_errors_name_the_file(tmp_path, vae_dir):
    sd = read_state_dict(vae_dir / "diffusion_pytorch_model.safetensors")
    cases = {
        "missing": {k: v for k, v in sd.items() if not k.startswith("post_quant_conv")},
        "wrong shape": {**sd, "quant_conv.weight": torch.zeros(8, 8, 3, 3)},
    }
    for i, (what, bad) in enumerate(cases.items()):
        d = tmp_path / str(i)
        save_state_dict(bad, d / "diffusion_pytorch_model.bin")
        (d / "config.json").write_text((vae_dir / "config.json").read_text())
        with pytest.raises(ValueError, match=what) as e:
            V.load_vae(d)
        assert str(d / "diffusion_pytorch_model.bin") in str(e.value) and "sd-vae-ft-mse" in str(e.value)
    # a key the VAE does not have: left out, with a warning naming file and key
    save_state_dict({**sd, "decoder.extra.weight": torch.zeros(1)}, tmp_path / "extra" / "diffusion_pytorch_model.bin")
    (tmp_path / "extra" / "config.json").write_text((vae_dir / "config.json").read_text())
    with pytest.warns(WeightsWarning, match=r"extra.diffusion_pytorch_model.bin: 1 key .*ignored: decoder.extra"):
        V.load_vae(tmp_path / "extra")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="diffusion_pytorch_model.safetensors, diffusion_pytorch_model.bin"):
        V.load_vae(tmp_path / "empty")
