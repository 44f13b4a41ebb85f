"""Random weight presets, and the public builder of the five PersonaLive networks."""

import copy
import os

import numpy as np
import pytest
import torch

from conftest import SIZE, moving_frames
from personalive_core.cli.main import parser
from personalive_core.models.loader import PERSONALIVE_FILES, build_personalive_networks, find_layout
from personalive_core.devtools.random_weights import FULL_CLIP, personalive_state_dicts
from personalive_core.pipelines import encode_reference, prepare_reference
from personalive_core.streaming.reference import record_tokens
from personalive_core.streaming.render import render_stream
from personalive_core.models.weights import WeightsError, read_state_dict, save_state_dict
from personalive_core.config import StreamConfig


def psnr(a, b):
    return float(10 * np.log10(1 / max(float(((a - b) ** 2).mean()), 1e-20)))


def test_frames_depend_smoothly_on_the_inputs(tiny_models, reference_image):
    """With the motion cross-attention matched to the tokens' scale, a 1e-6 relative change of the CLIP
    context changes the frames by far less than one 8-bit level (with plain fan-in init: ~20 dB).
    At 128 px: at 64 px the deepest level is 1×1 with 2 channels per GroupNorm group, a sign function
    of their difference that rounding-level changes can flip (an architecture × size effect)."""
    size = 2 * SIZE
    reference = encode_reference(tiny_models, prepare_reference(reference_image, size))
    nudged = copy.copy(reference)
    nudged.context = reference.context * (1 + 1e-6)
    with torch.no_grad():
        nudged.tokens = record_tokens(tiny_models.reference_unet, reference.latents, nudged.context)
    frames = moving_frames(9, size)
    a = np.stack(list(render_stream(tiny_models, reference, frames, StreamConfig(seed=42))))
    b = np.stack(list(render_stream(tiny_models, nudged, frames, StreamConfig(seed=42))))
    assert psnr(a, b) > 60, psnr(a, b)


def test_motion_cross_attention_logits_are_order_one(tiny_models, reference_image):
    tokens = tiny_models.motion_encoder.encode(
        torch.from_numpy(moving_frames(1, 224)[0]).permute(2, 0, 1)[None].float() / 127.5 - 1
    )
    assert tokens.pow(2).mean().sqrt() > 20  # large tokens (the keyframe test needs them) ...
    with torch.no_grad():
        for name, m in tiny_models.denoising_unet.named_modules():
            if ".motion_modules." in name and name.endswith("attention_blocks.0.to_k"):
                assert m(tokens).pow(2).mean().sqrt() < 3, name  # ... met by projections of matching scale


def test_comfy_preset_cross_attends_to_the_full_image_encoder():
    sds = personalive_state_dicts("comfy")
    assert set(sds) == set(PERSONALIVE_FILES)
    for name in ("denoising_unet", "reference_unet"):
        widths = {v.shape[1] for k, v in sds[name].items() if k.endswith("attn2.to_k.weight")}
        assert widths == {FULL_CLIP.projection_dim}, name
    args = parser().parse_args(["make-random-weights", "w", "--preset", "comfy"])
    assert args.preset == "comfy"


def test_build_personalive_networks(tiny_weights, tiny_models):
    files = find_layout(tiny_weights).personalive
    nets = build_personalive_networks(files)
    assert sorted(nets) == sorted(n for n in tiny_models.modules() if n not in ("image_encoder", "vae"))
    for name, net in nets.items():
        want = getattr(tiny_models, name).state_dict()
        assert all(torch.equal(v, want[k]) for k, v in net.state_dict().items()), name
    with pytest.raises(WeightsError, match="missing pose_guider.pth"):
        build_personalive_networks({**files, "pose_guider": None})


def test_build_personalive_networks_refuses_mixed_releases(tiny_weights, tmp_path):
    files = dict(find_layout(tiny_weights).personalive)
    files["reference_unet"] = str(
        save_state_dict(personalive_state_dicts("comfy")["reference_unet"], tmp_path / "reference_unet.pth")
    )
    with pytest.raises(WeightsError, match="different cross-attention widths") as e:
        build_personalive_networks(files)
    assert files["reference_unet"] in str(e.value) and files["denoising_unet"] in str(e.value)
    sd = read_state_dict(files["motion_encoder"])
    files["motion_encoder"] = str(save_state_dict({**sd, "final_proj.bias": torch.zeros(3)}, tmp_path / "m.pth"))
    with pytest.raises(WeightsError, match=r"m\.pth.*final_proj.bias"):
        build_personalive_networks(files)
    assert os.path.isfile(files["motion_encoder"])
