import numpy as np
import pytest
import torch

from conftest import SIZE, moving_frames
from personalive_core.models import taesd as T
from personalive_core.streaming.session import decode as session_decode
from personalive_core.errors import WeightsWarning
from personalive_core.models.weights import WeightsError, read_state_dict, save_state_dict
from personalive_core.devtools import random_weights as R


@pytest.fixture(scope="module")
def latents():
    return torch.randn(3, 4, 8, 6, generator=torch.Generator().manual_seed(0))


def same_weights(model, sd):
    own = model.state_dict()
    return own.keys() == sd.keys() and all(torch.equal(own[k], sd[k]) for k in sd)


def test_architecture_and_published_keys():
    keys = list(T.TAESDDecoder().state_dict())
    assert keys[:8] == [
        "1.weight",
        "1.bias",
        "3.conv.0.weight",
        "3.conv.0.bias",
        "3.conv.2.weight",
        "3.conv.2.bias",
        "3.conv.4.weight",
        "3.conv.4.bias",
    ]
    # the convs after the three upsamplings have no bias; the last conv maps to RGB
    assert {"7.weight", "12.weight", "17.weight", "19.weight", "19.bias"} <= set(keys)
    assert not {"7.bias", "12.bias", "17.bias"} & set(keys)
    assert len(keys) == 67


@pytest.mark.parametrize("name", ["taesd_decoder.pth", "taesd_decoder.safetensors"])
def test_loads_the_published_layout(tmp_path, name):
    path = R.write_taesd(tmp_path / name, seed=3)
    sd = read_state_dict(path)
    assert "3.conv.0.weight" in sd and "1.weight" in sd
    for where in (path, tmp_path):  # the file, or the folder holding it
        model = T.load_taesd(where)
        assert same_weights(model, sd) and not model.training


def test_loads_comfyui_combined_layout(tmp_path):
    sd = read_state_dict(R.write_taesd(tmp_path / "a.safetensors", prefix="taesd_decoder."))
    assert all(k.startswith("taesd_decoder.") for k in sd)
    combined = {
        **sd,
        "taesd_encoder.0.weight": torch.zeros(64, 3, 3, 3),
        "vae_scale": torch.tensor(0.18215),
        "vae_shift": torch.tensor(0.0),
    }
    path = save_state_dict(combined, tmp_path / "taesd.safetensors")
    model = T.load_taesd(path)
    assert same_weights(model, {k.removeprefix("taesd_decoder."): v for k, v in sd.items()})


def test_loads_diffusers_autoencoder_tiny(tmp_path, latents):
    """madebyollin/taesd on the Hub: decoder.layers.N ↔ N+1 here; diffusers' decoder outputs [−1, 1]."""
    from diffusers import AutoencoderTiny

    torch.manual_seed(0)
    ae = AutoencoderTiny().eval()
    save_state_dict(ae.state_dict(), tmp_path / "diffusion_pytorch_model.safetensors")
    model = T.load_taesd(tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(model(latents), (ae.decoder(latents) + 1) / 2, atol=1e-6, rtol=0)


def test_wrong_files_raise_weights_error_naming_the_file(tmp_path):
    sd = read_state_dict(R.write_taesd(tmp_path / "good.pth"))
    cases = {
        "missing.pth": {k: v for k, v in sd.items() if k != "3.conv.2.weight"},
        "shape.pth": {**sd, "19.weight": torch.zeros(4, 64, 3, 3)},
        "renamed.pth": {f"decoder.{k}": v for k, v in sd.items()},
    }
    for name, bad in cases.items():
        path = save_state_dict(bad, tmp_path / name)
        with pytest.raises(WeightsError, match=name):
            T.load_taesd(path)
    with pytest.raises(WeightsError, match="missing.pth.*3.conv.2.weight"):
        T.load_taesd(tmp_path / "missing.pth")
    extra = save_state_dict({**sd, "7.bias": torch.zeros(64)}, tmp_path / "extra.pth")  # left out, with a warning
    with pytest.warns(WeightsWarning, match=r"extra.pth: 1 key .*ignored: 7.bias"):
        T.load_taesd(extra)
    encoder = save_state_dict(
        {"0.weight": torch.zeros(64, 3, 3, 3), "0.bias": torch.zeros(64)}, tmp_path / "taesd_encoder.pth"
    )
    with pytest.raises(WeightsError, match="taesd_encoder.pth looks like the TAESD encoder"):
        T.load_taesd(encoder)
    flux = save_state_dict({**sd, "1.weight": torch.zeros(64, 16, 3, 3)}, tmp_path / "taef1_decoder.pth")
    with pytest.raises(WeightsError, match="taef1_decoder.pth.*16-channel"):
        T.load_taesd(flux)
    with pytest.raises(WeightsError, match="not found"):
        T.load_taesd(tmp_path / "absent.pth")
    (tmp_path / "empty").mkdir()
    with pytest.raises(WeightsError, match="no TAESD decoder file"):
        T.load_taesd(tmp_path / "empty")


def test_decode_shape_range_and_determinism(latents):
    model = R.random_taesd(seed=1)
    frames = T.decode(model, latents)
    assert frames.shape == (3, 64, 48, 3) and frames.dtype == torch.float32
    assert frames.min() >= 0 and frames.max() <= 1 and frames.std() > 0.05
    assert torch.equal(frames, T.decode(R.random_taesd(seed=1), latents))
    assert torch.equal(frames, T.decode(model, latents))
    assert not torch.equal(frames, T.decode(R.random_taesd(seed=2), latents))
    # the session's decode takes either decoder; TAESD sees the scaled latents as they are
    assert torch.equal(session_decode(model, latents), frames)
    raw = model(latents).permute(0, 2, 3, 1)
    torch.testing.assert_close(frames, raw.clamp(0, 1))


def test_render_stream_with_taesd(tiny_models, reference_image):
    from personalive_core.pipelines import encode_reference, prepare_reference
    from personalive_core.streaming.render import render_stream

    reference = encode_reference(tiny_models, prepare_reference(reference_image, SIZE))
    model = R.random_taesd(seed=0)

    def run():
        return np.stack(
            list(render_stream(tiny_models, reference, moving_frames(5), decoder=lambda z: T.decode(model, z)))
        )

    frames = run()
    assert frames.shape == (5, SIZE, SIZE, 3) and frames.min() >= 0 and frames.max() <= 1
    np.testing.assert_array_equal(frames, run())
