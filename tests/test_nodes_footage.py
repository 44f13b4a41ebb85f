"""The footage nodes called directly inside ComfyUI's Python, no server: Crop Face, Paste Back, Render Video.

Needs `COMFYUI_PATH` (a ComfyUI checkout, v0.3.64 or newer) and a Python with ComfyUI's requirements
(e.g. `COMFYUI_PATH=... $COMFY_VENV/bin/python -m pytest tests/test_nodes_footage.py`). The host's CLIP
vision and VAE are stand-ins here (the tiny core VAE behind the host VAE interface, a fixed
embedding), so the test runs on the tiny random weights in seconds; the real host loaders are
exercised by test_comfy_host.py.
"""

import os
import types

import av
import numpy as np
import pytest
import torch

COMFY = os.environ.get("COMFYUI_PATH")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.skipif(
    not COMFY or not os.path.isfile(os.path.join(COMFY, "comfy", "model_management.py")),
    reason="set COMFYUI_PATH to a ComfyUI checkout to run the node tests",
)

from conftest import SIZE, moving_frames  # noqa: E402
from pack import call, load as load_pack  # noqa: E402
from personalive_core import InputError  # noqa: E402
from test_cli import write_video  # noqa: E402
from test_face_crop import background, frame_with_face  # noqa: E402
from test_render_crop import driving_path  # noqa: E402


@pytest.fixture(scope="module")
def ext(tmp_path_factory):
    """The extension package, imported the way ComfyUI imports custom nodes (tests/pack.py)."""
    pack = load_pack(COMFY)
    import folder_paths

    folder_paths.set_output_directory(str(tmp_path_factory.mktemp("output")))
    folder_paths.set_temp_directory(str(tmp_path_factory.mktemp("temp")))
    return pack.nodes


def image(frames):
    return torch.from_numpy(np.stack(frames)).float() / 255


# -- Crop Face / Paste Back -----------------------------------------------------------------------
def test_crop_face_tracks_a_batch_and_paste_back_restores_the_frames(ext):
    frames = [
        background(320, 180, seed=t) if t == 2 else frame_with_face(320, 180, *driving_path(t), seed=t)
        for t in range(5)
    ]
    crops, info = call(ext.face_crop.PersonaLiveCropFace, image(frames), SIZE).result
    assert crops.shape == (5, SIZE, SIZE, 3) and len(info) == 5 and info.missing == [2]
    assert info.infos[2].box == info.infos[1].box
    assert all(i.image_hw == (320, 180) for i in info.infos)
    (pasted,) = call(ext.face_crop.PersonaLivePasteBack, 1 - crops, info, image(frames)).result
    assert pasted.shape == (5, 320, 180, 3)
    for k, i in enumerate(info.infos):
        x0, y0, x1, y1 = i.box
        yy, xx = np.mgrid[:320, :180]
        outside = np.hypot(xx + 0.5 - (x0 + x1) / 2, yy + 0.5 - (y0 + y1) / 2) > 1.06 * (x1 - x0) / 2
        assert torch.equal(pasted[k][outside], image(frames)[k][outside])
        assert not torch.equal(pasted[k], image(frames)[k])


def test_crop_face_single_image_and_paste_back_broadcast(ext):
    ref = image([frame_with_face(180, 320, 170, 85, 60)])
    crops, info = call(ext.face_crop.PersonaLiveCropFace, ref, 128, smoothing=False).result
    assert crops.shape == (1, 128, 128, 3) and info.missing == []
    (pasted,) = call(ext.face_crop.PersonaLivePasteBack, torch.rand(3, 64, 64, 3), info, ref).result
    assert pasted.shape == (3, 180, 320, 3)
    two = ext.face_crop.FaceCrops([info.infos[0]] * 2)
    with pytest.raises(InputError, match="keep_warmup"):  # 2 frames + 12 warm-up frames
        call(ext.face_crop.PersonaLivePasteBack, torch.rand(14, 64, 64, 3), two, torch.cat([ref, ref]))
    with pytest.raises(InputError, match="crop_info is for"):
        call(ext.face_crop.PersonaLivePasteBack, torch.rand(1, 64, 64, 3), info, torch.rand(1, 100, 100, 3))


# -- Render Video ---------------------------------------------------------------------------------
class HostVAE:
    """The host VAE interface (`encode`/`decode` of IMAGE-layout pixels, unscaled latents) on the tiny core VAE."""

    latent_channels, downscale_ratio = 4, 8

    def __init__(self, vae):
        self.vae = vae

    def encode(self, pixels):
        from personalive_core.models.vae import SCALE, encode_mean

        return encode_mean(self.vae, pixels.movedim(-1, 1) * 2 - 1) / SCALE

    def decode(self, latents):
        from personalive_core.models.vae import SCALE, decode

        return decode(self.vae, latents * SCALE)


class HostCLIP:
    def __init__(self, width):
        self.width = width

    def encode_image(self, image):
        return types.SimpleNamespace(image_embeds=torch.linspace(-1, 1, self.width)[None])


@pytest.fixture(scope="module")
def stack(ext, tiny_weights, tiny_models, tmp_path_factory):
    """(model, host VAE, reference picture, its crop info, encoded reference crop, driving mp4)."""
    import comfy.model_patcher
    from personalive_core.models.loader import find_layout

    files = find_layout(tiny_weights).personalive
    networks = ext.load_model.load_personalive(files, torch.float32, "tiny")
    model = comfy.model_patcher.ModelPatcher(
        networks, load_device=torch.device("cpu"), offload_device=torch.device("cpu")
    )
    vae = HostVAE(tiny_models.vae)
    picture = image([frame_with_face(180, 320, 170, 85, 60)])
    crop, info = call(ext.face_crop.PersonaLiveCropFace, picture, SIZE).result
    clip = HostCLIP(networks.reference_unet.config.cross_attention_dim)
    (reference,) = call(ext.encode_reference.PersonaLiveEncodeReference, model, clip, vae, crop, SIZE, "stretch").result
    d = tmp_path_factory.mktemp("driving")
    frames = [
        background(320, 180, seed=t) if t == 3 else frame_with_face(320, 180, *driving_path(t), seed=t)
        for t in range(7)
    ]
    write_video(d / "drive.mp4", frames)
    return types.SimpleNamespace(
        model=model, vae=vae, picture=picture, info=info, reference=reference, driving=str(d / "drive.mp4")
    )


def probe(path):
    with av.open(path) as c:
        v = c.streams.video[0]
        return (v.width, v.height), sum(1 for _ in c.decode(video=0)), bool(c.streams.audio)


@pytest.mark.parametrize(
    "crop, paste_into, size",
    [
        ("center", "none", (SIZE, SIZE)),
        ("auto", "driving", (180, 320)),
        ("auto", "reference", (320, 180)),
    ],
)
def test_render_video_writes_the_file_it_returns(ext, stack, crop, paste_into, size):
    from comfy_api.latest import InputImpl

    node = ext.render_video.PersonaLiveRenderVideo
    out = call(
        node,
        stack.model,
        stack.reference,
        stack.vae,
        InputImpl.VideoFromFile(stack.driving),
        seed=0,
        crop=crop,
        paste_into=paste_into,
        reference_crop=stack.info,
        reference_image=stack.picture,
    )
    (video,) = out.result
    path = video.get_stream_source()
    assert os.path.isfile(path) and path.startswith(__import__("folder_paths").get_output_directory())
    assert probe(path) == (size, 7, True)
    assert out.ui.as_dict()["images"][0]["filename"] == os.path.basename(path)


def test_render_video_from_components_keeps_audio(ext, stack):
    from comfy_api.latest import InputImpl, Types
    from fractions import Fraction

    t = np.arange(16000) / 16000
    audio = {
        "waveform": torch.from_numpy(np.sin(2 * np.pi * 440 * t)).float()[None, None].repeat(1, 2, 1),
        "sample_rate": 16000,
    }
    video = InputImpl.VideoFromComponents(
        Types.VideoComponents(images=image(moving_frames(5, size=96)), frame_rate=Fraction(12), audio=audio)
    )
    (out,) = call(
        ext.render_video.PersonaLiveRenderVideo, stack.model, stack.reference, stack.vae, video, seed=0, max_frames=4
    ).result
    assert probe(out.get_stream_source()) == ((SIZE, SIZE), 4, True)


def test_render_video_option_errors(ext, stack):
    from comfy_api.latest import InputImpl

    node = ext.render_video.PersonaLiveRenderVideo
    video = InputImpl.VideoFromFile(stack.driving)
    with pytest.raises(InputError, match="needs crop 'auto'"):
        call(node, stack.model, stack.reference, stack.vae, video, seed=0, paste_into="driving")
    with pytest.raises(InputError, match="reference_crop"):
        call(node, stack.model, stack.reference, stack.vae, video, seed=0, paste_into="reference")


def test_render_video_motion_controls(ext, stack):
    """Explicit default controls give the default frames; other values change them; out of range is refused."""
    from comfy_api.latest import InputImpl

    node = ext.render_video.PersonaLiveRenderVideo
    video = InputImpl.VideoFromFile(stack.driving)

    def frames(**controls):
        (out,) = call(node, stack.model, stack.reference, stack.vae, video, seed=0, max_frames=5, **controls).result
        with av.open(out.get_stream_source()) as c:
            return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])

    plain = frames()
    assert np.array_equal(frames(expression=1.0, head_pose=1.0, smoothness=0.0), plain)
    assert not np.array_equal(frames(expression=0.0, smoothness=0.5), plain)
    with pytest.raises(InputError, match="smoothness 1.5: must be between 0 and 1"):
        call(node, stack.model, stack.reference, stack.vae, video, seed=0, smoothness=1.5)
